"""`dlcourse grade` on every assignment: the solution earns every autograded point through the
probes, the unsolved release earns none, and a copier who hands in the answer key (imported,
reached by computed names, through get_part or sys.modules, or read from its file and
executed) earns none either. (The other grading tests go deep on chapter 7; this one proves
every chapter's parts survive the trip through the sandbox, including parts whose arguments
are objects, rebuilt from the seed inside the probe process.)"""
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from dlcourse.checks import parts_of
from dlcourse.grading.course import assignments
from exercise_attacks import ANSWER_KEY_ATTACKS, GRAPH_AND_DISK_ATTACKS, answer_cell_defining, answer_key_attack
from test_grading_support import ROOT, xdist_group

pytestmark = [pytest.mark.slow, xdist_group]


def autograded_points(notebook_path) -> float:
    notebook = nbformat.read(notebook_path, as_version=4)
    return sum(float(cell.metadata["nbgrader"].get("points", 0)) for cell in notebook.cells
               if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code")


@pytest.mark.parametrize("name", assignments(ROOT))
def test_dlcourse_grade_gives_the_solution_every_autograded_point_and_the_release_none(name, tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / name, course / "solutions" / name)
    for student, source in [("solution", ROOT / "solutions"), ("release", ROOT / "exercises")]:
        folder = course / "submitted" / student / name
        folder.mkdir(parents=True)
        shutil.copy(source / name / f"{name}.ipynb", folder)
    copier = copier_notebook(name)
    (course / "submitted" / "copier" / name).mkdir(parents=True)
    nbformat.write(copier, course / "submitted" / "copier" / name / f"{name}.ipynb")
    completed = subprocess.run([sys.executable, "-m", "dlcourse.cli", "grade", name, "--json", "--workers", "1"],
                               cwd=course, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = {record["student"]: record for record in map(json.loads, completed.stdout.splitlines())}
    points = autograded_points(ROOT / "solutions" / name / f"{name}.ipynb")
    assert lines["solution"]["status"] == "graded", lines["solution"]["reason"]
    assert lines["solution"]["score"] == points, lines["solution"]["reason"]
    assert lines["release"]["status"] == "graded" and lines["release"]["score"] == 0, lines["release"]["reason"]
    assert lines["copier"]["status"] == "graded" and lines["copier"]["score"] == 0, lines["copier"]["reason"]


def copier_notebook(name: str):
    """The solution with every graded function replaced by the answer key, each part reached
    another way (and in chapter 11 one part by executing the package's LSTM source from disk)."""
    notebook = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    kinds = list(ANSWER_KEY_ATTACKS)
    for number, part in enumerate(parts_of(name[:4])):
        cell = answer_cell_defining(notebook, part.function)
        if part.id == "ch11.lstm_cell_forward":
            cell.source = GRAPH_AND_DISK_ATTACKS["package source from disk"]
        else:
            cell.source = answer_key_attack(kinds[number % len(kinds)], part.id, part.function)
    return notebook
