"""The graded exercises: exercises/ is nbgrader's release of solutions/, and the marking is right.

Marking is proven with plain `nbgrader autograde` on a copy of the course directory:
the solution notebook earns every autograded point, the released notebook none, and each
typical wrong answer listed in tests/exercise_mutations/<assignment>.json loses exactly the
points of the parts it names.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading.course import assignments, nbgrader_env

import exercise_support

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = assignments(ROOT)
MUTATIONS = ROOT / "tests" / "exercise_mutations"


def copy_course(tmp_path) -> Path:
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    return course


def nbgrader(course, *args):
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=nbgrader_env(),
                               capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return completed.stdout + completed.stderr


def test_every_chapter_from_2_to_14_has_an_assignment():
    chapters = sorted(int(name[2:4]) for name in ASSIGNMENTS)
    assert chapters == list(range(2, 15)), ASSIGNMENTS


def test_exercises_are_nbgraders_release_of_solutions(tmp_path):
    course = copy_course(tmp_path)
    for name in ASSIGNMENTS:
        nbgrader(course, "generate_assignment", name, "--force", "--create")
    for name in ASSIGNMENTS:
        for fresh in sorted((course / "exercises" / name).glob("*.ipynb")):
            committed = ROOT / "exercises" / name / fresh.name
            assert committed.exists(), f"{committed} is missing: run `dlcourse release`"
            assert json.loads(committed.read_text()) == json.loads(fresh.read_text()), \
                f"{committed} is out of date with solutions/: run `dlcourse release {name}`"
    released = {p.relative_to(ROOT / "exercises") for p in (ROOT / "exercises").rglob("*.ipynb")}
    expected = {p.relative_to(course / "exercises") for p in (course / "exercises").rglob("*.ipynb")}
    assert released == expected, "exercises/ holds notebooks that solutions/ does not generate"


def grade_cells(notebook):
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            yield cell, meta


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_notebooks_open_with_how_to_and_points_and_have_three_graded_parts(name):
    notebook = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    first = notebook.cells[0].source
    assert "How to work on this notebook" in first and "points" in first
    autograded = [meta for cell, meta in grade_cells(notebook) if cell.cell_type == "code"]
    assert len(autograded) >= 3, f"{name} has {len(autograded)} autograded parts"
    for cell, meta in grade_cells(notebook):
        assert f"`{meta['grade_id']}`" in first, f"the opening table lacks {meta['grade_id']}"
    hidden = [cell for cell, meta in grade_cells(notebook) if "### BEGIN HIDDEN TESTS" in cell.source]
    assert len(hidden) >= 3, f"{name}: fewer than three parts have hidden tests"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_assignment_has_a_written_question_with_a_rubric(name):
    notebook = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    written = [(cell, meta) for cell, meta in grade_cells(notebook) if cell.cell_type == "markdown"]
    assert written, f"{name} has no written (manually graded) question"
    for cell, meta in written:
        assert "rubric" in cell.source.lower(), f"{name}: the model answer of {meta['grade_id']} has no rubric"


def _visible(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS")[0]


def _solved_gradients(statement: str) -> list[str]:
    """The equations `∂L/∂… = …` whose right side holds no derivative left to work out: answers.
    The chain rule written as a scaffold (`∂L/∂x_j = Σ g_i ∂y_i/∂x_j`) still asks for one."""
    solved = []
    for match in exercise_support.GRADIENT_FORMULA.finditer(statement):
        right = re.split(r"\$|\\qquad|(?<!\\),\s", statement[match.end():], maxsplit=1)[0]
        if "\\partial" not in right.replace("\\partial L", ""):
            solved.append(match.group(0) + right)
    return solved


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_assignment_has_a_derived_part_checked_numerically(name):
    """A derived part (Part.derived): its visible test is a numerical gradient check, its hidden
    test the answer key's comparison."""
    from dlcourse.checks import parts_of

    derived = [p for p in parts_of(name[:4]) if p.derived]
    assert derived, f"{name} has no part whose formula the student derives (Part.derived)"
    notebook = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    tests_of = {meta["grade_id"]: cell.source for cell, meta in grade_cells(notebook) if cell.cell_type == "code"}
    for part in derived:
        test = next((source for source in tests_of.values() if f'check("{part.id}"' in source), None)
        assert test is not None, f"{name}: no test cell checks {part.id}"
        assert re.search(r"\b(numerical_gradient|gradcheck)\b", _visible(test)), \
            f"{name}: the visible test of {part.id} is not a numerical gradient check (dlcourse.gradcheck)"
        assert "### BEGIN HIDDEN TESTS" in test, f"{name}: {part.id} has no hidden test"
        statement = exercise_support.statement_of(ROOT / "solutions" / name / f"{name}.ipynb", part.function)
        assert statement, f"{name}: no statement before {part.function}"
        assert not _solved_gradients(statement), \
            f"{name}: the statement of the derived part {part.id} gives a backward formula: {_solved_gradients(statement)}"


def mutate(notebook, mutation):
    """Apply one typical mistake to the solution cell it names; fail if the text is not there."""
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == mutation["cell"]:
            assert mutation["replace"] in cell.source, f"{mutation['cell']} lacks {mutation['replace']!r}"
            cell.source = cell.source.replace(mutation["replace"], mutation["with"])
            return notebook
    raise AssertionError(f"no cell {mutation['cell']!r}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_plain_nbgrader_autograde_marks_solution_release_and_typical_mistakes(name, tmp_path):
    course = copy_course(tmp_path)
    nbgrader(course, "generate_assignment", name, "--force", "--create")
    source = nbformat.read(course / "solutions" / name / f"{name}.ipynb", as_version=4)
    mutations = json.loads((MUTATIONS / f"{name}.json").read_text())["mutations"]
    assert mutations, f"{name}: list at least one typical mistake"
    submissions = {"solution": source,
                   "released": nbformat.read(course / "exercises" / name / f"{name}.ipynb", as_version=4)}
    for index, mutation in enumerate(mutations):
        submissions[f"mistake{index}"] = mutate(nbformat.read(course / "solutions" / name / f"{name}.ipynb",
                                                              as_version=4), mutation)
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / name
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / f"{name}.ipynb")
    nbgrader(course, "autograde", name, "--create")

    from nbgrader.api import Gradebook
    autograded = {meta["grade_id"]: float(meta["points"]) for cell, meta in grade_cells(source)
                  if cell.cell_type == "code"}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        def scores(student):
            notebook = gradebook.find_submission_notebook(name, name, student)
            return {g.name: (g.auto_score or 0.0) for g in notebook.grades if g.name in autograded}
        assert scores("solution") == autograded, "the solution must earn every autograded point"
        assert sum(scores("released").values()) == 0, "the unsolved release must earn nothing"
        for index, mutation in enumerate(mutations):
            expected = {k: (0.0 if k in mutation["loses"] else v) for k, v in autograded.items()}
            assert scores(f"mistake{index}") == expected, f"{mutation['mistake']}: wrong parts lost points"
