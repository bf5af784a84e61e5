"""`dlcourse check`: a table of the visible tests, part by part, whatever the notebook does."""
from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from test_grading_support import A, cell_of, correct_notebook, released_notebook

pytestmark = pytest.mark.slow


def check(tmp_path, notebook, *args) -> subprocess.CompletedProcess:
    path = tmp_path / f"{A}.ipynb"
    nbformat.write(notebook, path)
    return subprocess.run([sys.executable, "-m", "dlcourse.cli", "check", str(path), *args], capture_output=True,
                          text=True, timeout=600)


def row(table: str, grade_id: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(grade_id))


def test_a_looping_cell_is_reported_as_timed_out_and_the_other_parts_still_run(tmp_path):
    notebook = correct_notebook()
    cell_of(notebook, "dropout_backward").source += "\n\nwhile True:\n    pass\n"
    completed = check(tmp_path, notebook, "--timeout", "5")
    table = completed.stdout
    assert "Traceback" not in completed.stdout + completed.stderr, completed.stderr[-2000:]
    assert "timed out" in row(table, "dropout_backward_tests") and "5 s" in row(table, "dropout_backward_tests")
    assert row(table, "dropout_forward_tests").endswith("passed")
    assert row(table, "batchnorm_backward_tests").endswith("passed")


def test_an_unanswered_written_part_is_called_unanswered(tmp_path):
    notebook = correct_notebook()
    written = next(c for c in notebook.cells
                   if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution"))
    written.source = "YOUR ANSWER HERE"
    table = check(tmp_path, notebook).stdout
    assert "unanswered" in row(table, written.metadata["nbgrader"]["grade_id"]), table


def test_the_notebooks_last_cell_runs_the_check_and_stays_quiet_when_graded():
    last = released_notebook().cells[-1]
    assert last.cell_type == "code" and "self_check()" in last.source
    code = "from dlcourse.grading.selfcheck import self_check; print(self_check('missing.ipynb'))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "NBGRADER_EXECUTION": "autograde"})
    assert completed.stdout.strip() == "[]", completed.stderr[-2000:]
