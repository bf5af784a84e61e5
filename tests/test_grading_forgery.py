"""Points cannot be forged from inside the student's code.

Each forger pairs wrong code with a trick that makes the in-notebook tests pass: patched
numpy.testing (and np.allclose), an IPython input transformer that blanks every later cell,
a replaced builtin that empties the hidden check's loop, a no-op dlcourse.checks.check.
Plain `nbgrader autograde` gives every one of them full marks; `dlcourse grade` decides from
the probes, outside the student's process, and gives 0 for the wrong parts — and flags them.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from dlcourse.grading.course import nbgrader_env
from test_grading_support import (A, AUTO, PARTS, cell_of, correct_notebook, expect_full, grade, gradebook_scores,
                                  hashes, registered_course, submit, wrong)  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading")]

# passes the visible test (p = 0.5) and nothing else: a hard-coded answer
HARDCODED = "def dropout_forward(x, p, mask):\n    return x * mask / (1 - p) if p == 0.5 else x * mask\n"

FORGERIES = {
    "numpy_patch": (
        "import numpy as np\n"
        "np.testing.assert_allclose = lambda *args, **kwargs: None\n"
        "np.allclose = lambda *args, **kwargs: True\n"
        "def dropout_forward(x, p, mask):\n    return x * mask\n",
        {"dropout_forward_tests"}),
    "input_transformer": (
        "def dropout_forward(x, p, mask):\n    return x\n\n"
        "def _blank(lines):\n    return []\n"
        "get_ipython().input_transformers_cleanup.append(_blank)\n",
        set(PARTS)),
    "builtins": (
        "import builtins, sys\n"
        "_enumerate = builtins.enumerate\n"
        "def _quiet_enumerate(iterable, start=0):\n"
        "    if sys._getframe(1).f_globals.get('__name__') == 'dlcourse.checks':\n"
        "        return iter(())\n"
        "    return _enumerate(iterable, start)\n"
        "builtins.enumerate = _quiet_enumerate\n" + HARDCODED,
        {"dropout_forward_tests"}),
    "check_noop": (
        "import dlcourse.checks\n"
        "dlcourse.checks.check = lambda *args, **kwargs: None\n"
        "check = dlcourse.checks.check\n" + HARDCODED,
        {"dropout_forward_tests"}),
    # the same tricks by computed names, which no reading of the code finds: the run-time audit does
    "getattr_patch": (
        "import importlib\n"
        "_module = importlib.import_module('numpy.' + 'test' + 'ing')\n"
        "setattr(_module, 'assert_' + 'allclose', lambda *args, **kwargs: None)\n"
        "setattr(importlib.import_module('num' + 'py'), 'all' + 'close', lambda *args, **kwargs: True)\n"
        "def dropout_forward(x, p, mask):\n    return x * mask\n",
        {"dropout_forward_tests"}),
    "globals_check": (
        "import dlcourse\n"
        "setattr(getattr(dlcourse, 'che' + 'cks'), 'che' + 'ck', lambda *args, **kwargs: None)\n"
        "globals()['che' + 'ck'] = lambda *args, **kwargs: None\n" + HARDCODED,
        {"dropout_forward_tests"}),
}
TAMPER_WORDS = {"numpy_patch": "patches numpy.testing", "input_transformer": "input/AST transformers",
                "builtins": "touches builtins", "check_noop": "touches dlcourse.checks",
                "getattr_patch": "replaced at run time: numpy.testing.assert_allclose",
                "globals_check": "replaced at run time: dlcourse.checks.check"}


def forger(name: str):
    notebook = correct_notebook()
    if name == "input_transformer":
        notebook = wrong(notebook, "dropout_backward", "batchnorm_forward", "batchnorm_backward")
    cell_of(notebook, "dropout_forward").source = FORGERIES[name][0]
    return notebook


@pytest.fixture(scope="module")
def courses(registered_course, tmp_path_factory):
    base = tmp_path_factory.mktemp("forgery")
    ours, plain = base / "ours", base / "plain"
    shutil.copytree(registered_course, ours)
    submit(ours, "honest", correct_notebook())
    for name in FORGERIES:
        submit(ours, name, forger(name))
    shutil.copytree(ours, plain)
    before = hashes(ours)
    lines, _ = grade(ours, "--workers", "2", "--timeout", "30")
    completed = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", A, "--create"], cwd=plain,
                               env=nbgrader_env(), capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {"ours": ours, "plain": plain, "lines": lines, "before": before}


def test_plain_nbgrader_is_fooled_by_every_forger(courses):
    for name in ["honest", *FORGERIES]:
        scores = gradebook_scores(courses["plain"], name)
        assert scores == PARTS, f"plain nbgrader gave {name} {scores}"


def test_the_honest_submission_keeps_full_marks(courses):
    expect_full(courses["lines"]["honest"])
    assert "tampering" not in courses["lines"]["honest"]["reason"]


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_parts_get_zero_and_the_forger_is_flagged(courses, name):
    line, lost = courses["lines"][name], FORGERIES[name][1]
    assert line["status"] == "graded"
    assert line["score"] == AUTO - sum(PARTS[p] for p in lost), line
    expected = {part: (0.0 if part in lost else points) for part, points in PARTS.items()}
    assert gradebook_scores(courses["ours"], name) == expected
    assert "tampering suspected" in line["reason"] and TAMPER_WORDS[name] in line["reason"]
    if name != "input_transformer":  # its test cells were blanked: the hidden check never ran
        assert "passed in the notebook but failed the grader's re-check" in line["reason"]


def test_submitted_files_are_unchanged(courses):
    assert hashes(courses["ours"]) == courses["before"]
