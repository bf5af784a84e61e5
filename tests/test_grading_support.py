"""Helpers for the grading tests (no tests here): a temporary course with chapter 7,
submissions built from the released notebook, and the `dlcourse grade` command.

The course is a copy of nbgrader_config.py + solutions/ch07-regularization in a temporary
folder; its gradebook is registered once per session and copied into each test.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
A = "ch07-regularization"
SOURCE = ROOT / "solutions" / A / f"{A}.ipynb"
RELEASE = ROOT / "exercises" / A / f"{A}.ipynb"
PARTS = {"dropout_forward_tests": 2.0, "dropout_backward_tests": 2.0, "batchnorm_forward_tests": 3.0,
         "batchnorm_backward_tests": 5.0}
AUTO = sum(PARTS.values())      # 12 autograded points
TOTAL = AUTO + 3.0              # plus the written answer, graded by hand
FULL = f"{AUTO:g} of {TOTAL:g} points"
WRONG = {  # one typical mistake per answer cell: (answer cell, text, replacement, test cell that loses)
    "dropout_forward": ("return x * mask / (1 - p)", "return x * mask * (1 - p)", "dropout_forward_tests"),
    "dropout_backward": ("return grad_output * mask / (1 - p)", "return grad_output / (1 - p)", "dropout_backward_tests"),
    "batchnorm_forward": ("var = x.var(axis=0)", "var = x.var(axis=0, ddof=1)", "batchnorm_forward_tests"),
    "batchnorm_backward": ("dx = inv_std * (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0))",
                           "dx = inv_std * (g - g.mean(axis=0))", "batchnorm_backward_tests"),
}

xdist_group = pytest.mark.xdist_group("grading")


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_text(cell) -> str:
    return "\n".join(line for line in cell.source.splitlines()
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)


def correct_notebook() -> nbformat.NotebookNode:
    """The released notebook with every answer filled in as a student would."""
    source = {meta(c).get("grade_id"): c for c in nbformat.read(SOURCE, as_version=4).cells}
    notebook = nbformat.read(RELEASE, as_version=4)
    for cell in notebook.cells:
        grade_id = meta(cell).get("grade_id")
        if meta(cell).get("solution"):
            if cell.cell_type == "code":
                cell.source = solution_text(source[grade_id])
            else:
                cell.source = "Running averages of the mean and variance, kept during training."
    return notebook


def released_notebook() -> nbformat.NotebookNode:
    return nbformat.read(RELEASE, as_version=4)


def cell_of(notebook, grade_id):
    return next(c for c in notebook.cells if meta(c).get("grade_id") == grade_id)


def wrong(notebook, *answer_cells):
    """Apply the typical mistake to each named answer cell."""
    for name in answer_cells:
        text, replacement, _ = WRONG[name]
        cell = cell_of(notebook, name)
        assert text in cell.source
        cell.source = cell.source.replace(text, replacement)
    return notebook


def insert_code(notebook, code: str, before: str | None = None, at: int | None = None):
    """A helper cell (no nbgrader metadata) before the cell `before`, or at index `at`, or at the end."""
    cell = nbformat.v4.new_code_cell(code)
    if before is not None:
        at = notebook.cells.index(cell_of(notebook, before))
    notebook.cells.insert(len(notebook.cells) if at is None else at, cell)
    return notebook


def first_helper_slot(notebook) -> int:
    """Right after the setup cell: helper code there runs before every test."""
    return notebook.cells.index(cell_of(notebook, "setup")) + 1


def new_course(tmp_path: Path) -> Path:
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / A, course / "solutions" / A)
    return course


@pytest.fixture(scope="session")
def registered_course(tmp_path_factory) -> Path:
    """A course whose gradebook already knows chapter 7 (nbgrader generate_assignment, once)."""
    from dlcourse.grading.gradebook import course_settings, ensure_assignment

    course = new_course(tmp_path_factory.mktemp("template"))
    course_id, db_url = course_settings(course)
    source = nbformat.read(course / "solutions" / A / f"{A}.ipynb", as_version=4)
    ensure_assignment(course, A, A, source, db_url, course_id)
    assert (course / "gradebook.db").exists()
    return course


@pytest.fixture
def course(registered_course, tmp_path) -> Path:
    target = tmp_path / "course"
    shutil.copytree(registered_course, target)
    return target


def submit(course: Path, student: str, notebook=None, raw: bytes | None = None) -> Path:
    folder = course / "submitted" / student / A
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{A}.ipynb"
    if raw is not None:
        path.write_bytes(raw)
    else:
        nbformat.write(notebook, path)
    return path


def hashes(course: Path) -> dict:
    """sha256 of everything under submitted/ (links recorded by their target, never followed)."""
    found = {}
    for path in sorted((course / "submitted").rglob("*")):
        if path.is_symlink():
            found[str(path)] = "link:" + os.readlink(path)
        elif path.is_file() and path.stat().st_size > 64 * 1024 * 1024:   # a planted sparse file
            found[str(path)] = f"size:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_dlcourse(course: Path, *args, timeout: float = 900, env: dict | None = None):
    completed = subprocess.run([sys.executable, "-m", "dlcourse.cli", *args], cwd=course, capture_output=True,
                               text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return completed


def grade(course: Path, *args, timeout: float = 900, env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    """`dlcourse grade ch07-regularization --json ARGS`: {student: json line} and the process."""
    completed = run_dlcourse(course, "grade", A, "--json", *args, timeout=timeout, env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = {}
    for line in completed.stdout.splitlines():
        record = json.loads(line)   # nothing but JSON objects on stdout
        assert set(record) == {"student", "assignment", "score", "max_score", "status", "reason"}, record
        assert record["student"] not in lines, f"two lines for {record['student']}"
        lines[record["student"]] = record
    return lines, completed


def autograded(course: Path, student: str) -> nbformat.NotebookNode:
    return nbformat.read(course / "autograded" / student / A / f"{A}.ipynb", as_version=4)


def outputs_text(notebook) -> str:
    text = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or "")
            text.append(str(out.get("evalue", "")))
            text.extend(str(line) for line in out.get("traceback", []))
            data = out.get("data", {})
            text.append(str(data.get("text/plain", "")))
    return "\n".join(text)


def gradebook_scores(course: Path, student: str, db_url: str | None = None) -> dict:
    """auto_score per autograded part, read back through nbgrader's own API."""
    from nbgrader.api import Gradebook

    from dlcourse.grading.gradebook import with_driver

    url = with_driver(db_url or f"sqlite:///{course / 'gradebook.db'}")
    with Gradebook(url, "dlcourse") as gradebook:
        notebook = gradebook.find_submission_notebook(A, A, student)
        return {g.name: g.auto_score for g in notebook.grades if g.name in PARTS}


def outcome_rows(course: Path, db_url: str | None = None) -> list[dict]:
    from sqlalchemy import create_engine, text

    from dlcourse.grading.gradebook import with_driver

    engine = create_engine(with_driver(db_url or f"sqlite:///{course / 'gradebook.db'}"))
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(text("select * from dlcourse_outcome")).mappings()]
    engine.dispose()
    return rows


def expect_full(line: dict) -> None:
    assert line["status"] == "graded", line
    assert line["score"] == AUTO and line["max_score"] == TOTAL, line


def copy_notebook(notebook):
    return copy.deepcopy(notebook)
