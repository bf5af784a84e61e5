"""`dlcourse grade` on every assignment: the solution earns every autograded point through the
probes, the unsolved release earns none. (The other grading tests go deep on chapter 7; this
one proves every chapter's parts survive the trip through the sandbox, including parts whose
arguments are objects, rebuilt from the seed inside the kernel.)"""
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from dlcourse.grading.course import assignments
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
    completed = subprocess.run([sys.executable, "-m", "dlcourse.cli", "grade", name, "--json", "--workers", "1"],
                               cwd=course, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = {record["student"]: record for record in map(json.loads, completed.stdout.splitlines())}
    points = autograded_points(ROOT / "solutions" / name / f"{name}.ipynb")
    assert lines["solution"]["status"] == "graded", lines["solution"]["reason"]
    assert lines["solution"]["score"] == points, lines["solution"]["reason"]
    assert lines["release"]["status"] == "graded" and lines["release"]["score"] == 0, lines["release"]["reason"]
