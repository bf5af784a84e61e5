"""`dlcourse grade`: restoring cells, probes and verdicts (fast), then whole runs: the --json
format, the gradebook, resuming a killed run, re-grading a changed submission."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from dlcourse.grading.probe import Probe, find_probes, judge, write_probe_job
from dlcourse.grading.probe_runner import run_unsandboxed
from dlcourse.grading.restore import restore_notebook, scan_tampering
from test_grading_support import (A, AUTO, FULL, PARTS, SOURCE, TOTAL, cell_of, correct_notebook, course,  # noqa: F401
                                  expect_full, grade, gradebook_scores, hashes, insert_code, meta, outcome_rows,
                                  registered_course, released_notebook, solution_text, submit, wrong)

SOURCE_NB = nbformat.read(SOURCE, as_version=4)


# --- restoring the notebook from the source ------------------------------------------------

def test_restore_keeps_answers_and_puts_back_hidden_tests():
    restored = restore_notebook(correct_notebook(), SOURCE_NB)
    assert restored.flags == []
    for grade_id in PARTS:
        assert "### BEGIN HIDDEN TESTS" in cell_of(restored.notebook, grade_id).source
        assert meta(cell_of(restored.notebook, grade_id))["points"] == meta(cell_of(SOURCE_NB, grade_id))["points"]
    assert cell_of(restored.notebook, "dropout_forward").source == solution_text(cell_of(SOURCE_NB, "dropout_forward"))
    assert restored.unanswered == {"dropout_forward": False, "dropout_backward": False, "batchnorm_forward": False,
                                   "batchnorm_backward": False, "batchnorm_eval_answer": False}


def test_restore_never_inserts_the_instructors_solution():
    notebook = released_notebook()
    notebook.cells.remove(cell_of(notebook, "dropout_forward"))
    restored = restore_notebook(notebook, SOURCE_NB)
    text = "\n".join(c.source for c in restored.notebook.cells)
    assert "BEGIN SOLUTION" not in text and "return x * mask / (1 - p)" not in text
    assert "answer cell dropout_forward is missing (graded as unanswered)" in restored.flags
    assert restored.unanswered["dropout_forward"] is True


def test_restore_puts_deleted_cells_where_the_source_has_them():
    notebook = correct_notebook()
    notebook.cells.remove(cell_of(notebook, "dropout_backward_tests"))
    restored = restore_notebook(notebook, SOURCE_NB).notebook
    ids = [meta(c).get("grade_id") for c in restored.cells if meta(c).get("grade_id")]
    assert ids.index("dropout_backward_tests") == ids.index("dropout_backward") + 1


def test_restore_drops_duplicated_test_cells_and_flags_points_and_kernelspec():
    notebook = correct_notebook()
    test = cell_of(notebook, "dropout_forward_tests")
    copy = nbformat.from_dict(json.loads(json.dumps(test)))
    copy.source = "pass"
    notebook.cells.append(copy)
    test.metadata["nbgrader"]["points"] = 99
    notebook.metadata["kernelspec"]["name"] = "other"
    restored = restore_notebook(notebook, SOURCE_NB)
    assert sum(meta(c).get("grade_id") == "dropout_forward_tests" for c in restored.notebook.cells) == 1
    text = " | ".join(restored.flags)
    assert "appears twice (the copy was dropped)" in text and "changed to 99" in text and "kernelspec 'other'" in text
    assert restored.notebook.metadata.kernelspec.name == "python3"


def test_static_scan_names_the_tampering():
    found = scan_tampering([("a", "get_ipython().input_transformers_cleanup.append(f)"),
                            ("b", "import builtins\nbuiltins.len = None"), ("", "np.testing.assert_allclose = f"),
                            ("c", "import dlcourse.checks"), ("d", "def check(*a):\n    pass")])
    joined = " ".join(found)
    for words in ("transformers", "builtins", "numpy.testing", "dlcourse.checks", "redefines check()"):
        assert words in joined
    assert scan_tampering([("a", "def dropout_forward(x, p, mask):\n    return x * mask / (1 - p)")]) == []


# --- probes and verdicts ------------------------------------------------------------------

def test_probes_are_read_from_the_source_test_cells():
    probes = find_probes(SOURCE_NB)
    assert {gid: [(p.part_id, p.function) for p in found] for gid, found in probes.items()} == {
        "dropout_forward_tests": [("ch07.dropout_forward", "dropout_forward")],
        "dropout_backward_tests": [("ch07.dropout_backward", "dropout_backward")],
        "batchnorm_forward_tests": [("ch07.batchnorm_forward", "batchnorm_forward")],
        "batchnorm_backward_tests": [("ch07.batchnorm_backward", "batchnorm_backward")]}


def run_probe_here(tmp_path: Path, part: str, function: str, code: str, seed: int = 7) -> Path:
    """The probe phase (probe_runner.py, without the sandbox) on a notebook whose only code
    cell is `code`, followed by the part's test cell; the folder of its results."""
    test = nbformat.v4.new_code_cell("check()", metadata={"nbgrader": {"grade": True, "solution": False}})
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code), test])
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_probe_job(tmp_path / "probe", notebook, {1: [Probe(part, function)]}, seed, timeout=60, isolated=False)
    return run_unsandboxed(tmp_path, tmp_path / "probe" / "job.json", deadline=120) / "p0"


def test_a_correct_function_passes_the_probe(tmp_path):
    code = "import numpy as np\n" + solution_text(cell_of(SOURCE_NB, "batchnorm_backward"))
    out = run_probe_here(tmp_path, "ch07.batchnorm_backward", "batchnorm_backward", code)
    verdict = judge("ch07.batchnorm_backward", "batchnorm_backward", out, 7)
    assert verdict.passed, verdict.message


def test_a_wrong_function_a_missing_one_and_an_object_all_fail(tmp_path):
    out = run_probe_here(tmp_path / "a", "ch07.dropout_forward", "dropout_forward",
                         "def dropout_forward(x, p, mask):\n    return x * mask")
    verdict = judge("ch07.dropout_forward", "dropout_forward", out, 7)
    assert not verdict.passed and "max |difference|" in verdict.message
    out = run_probe_here(tmp_path / "b", "ch07.dropout_forward", "dropout_forward", "")
    assert "is not defined" in judge("ch07.dropout_forward", "dropout_forward", out, 7).message
    out = run_probe_here(tmp_path / "c", "ch07.dropout_forward", "dropout_forward",
                         "class Sneaky:\n    pass\ndef dropout_forward(x, p, mask):\n    return Sneaky()")
    assert "returned a Sneaky" in judge("ch07.dropout_forward", "dropout_forward", out, 7).message


def test_results_are_never_unpickled_or_followed(tmp_path):
    out = run_probe_here(tmp_path, "ch07.dropout_forward", "dropout_forward",
                         "def dropout_forward(x, p, mask):\n    return x * mask / (1 - p)")
    assert judge("ch07.dropout_forward", "dropout_forward", out, 7).passed
    record = json.loads((out / "c0.json").read_text())
    name = record["result"]["npy"]
    np.save(out / name, np.array([object()], dtype=object), allow_pickle=True)   # a pickle inside
    message = judge("ch07.dropout_forward", "dropout_forward", out, 7).message
    assert "unreadable array" in message
    os.remove(out / name)
    os.symlink("/etc/passwd", out / name)
    assert "no result" in judge("ch07.dropout_forward", "dropout_forward", out, 7).message
    # answers computed for another seed are wrong for this one
    assert not judge("ch07.dropout_forward", "dropout_forward", out, 8).passed


# --- whole runs -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.xdist_group("grading")
def test_json_lines_gradebook_and_unchanged_submissions(course):
    submit(course, "alice", correct_notebook())
    submit(course, "bob", wrong(correct_notebook(), "batchnorm_forward"))
    submit(course, "carol", released_notebook())
    (course / "submitted" / "dave").mkdir(parents=True)
    before = hashes(course)
    lines, completed = grade(course, "--workers", "2")
    assert sorted(lines) == ["alice", "bob", "carol", "dave"]
    assert all(line["status"] in ("graded", "timeout", "crashed", "invalid", "missing") for line in lines.values())
    expect_full(lines["alice"])
    assert lines["alice"]["reason"] == f"{FULL}; 3 awaiting manual grading"
    assert lines["bob"]["score"] == AUTO - 3 and "batchnorm_forward_tests" in lines["bob"]["reason"]
    assert lines["carol"]["score"] == 0 and "NotImplementedError" in lines["carol"]["reason"]
    assert lines["dave"]["status"] == "missing" and lines["dave"]["max_score"] == TOTAL
    assert "student" in completed.stderr and "1 missing" in completed.stderr  # the summary goes to stderr
    assert hashes(course) == before
    assert gradebook_scores(course, "bob") == {**PARTS, "batchnorm_forward_tests": 0.0}
    rows = {r["student"]: r for r in outcome_rows(course)}
    # the whole reason in --json and the gradebook; only the terminal table cuts it
    assert "(DESIRED)" in lines["bob"]["reason"] and "…" not in lines["bob"]["reason"], lines["bob"]
    assert rows["bob"]["reason"] == lines["bob"]["reason"] and len(lines["bob"]["reason"]) > 100
    table_row = next(line for line in completed.stderr.splitlines() if line.startswith("bob "))
    assert table_row.endswith("…") and lines["bob"]["reason"] not in table_row
    assert "4 processed in this run, 0 already graded" in completed.stderr
    assert rows["alice"]["status"] == "graded" and rows["alice"]["score"] == AUTO
    assert rows["alice"]["sha256"] == before[str(course / "submitted" / "alice" / A / f"{A}.ipynb")]
    assert json.loads(rows["alice"]["timings"])["overhead_s"] < 30
    autograded = nbformat.read(course / "autograded" / "bob" / A / f"{A}.ipynb", as_version=4)
    assert "HiddenCheckFailed" in json.dumps(autograded) or "AssertionError" in json.dumps(autograded)
    assert all("checksum" in meta(c) for c in autograded.cells if meta(c).get("grade_id"))


@pytest.mark.slow
@pytest.mark.xdist_group("grading")
def test_a_killed_run_resumes_without_regrading_or_duplicates(course, tmp_path):
    students = [f"s{i}" for i in range(5)]
    for index, student in enumerate(students):
        notebook = correct_notebook() if index % 2 == 0 else wrong(correct_notebook(), "dropout_backward")
        submit(course, student, notebook)
    before = hashes(course)
    scratch = tmp_path / "scratch"   # the killed workers' temporary folders stay in here
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "dlcourse.cli", "grade", A, "--json", "--workers", "1"],
                               cwd=course, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.monotonic() + 600
    first = []
    while time.monotonic() < deadline and process.poll() is None:
        if (course / "gradebook.db").exists():
            try:
                first = outcome_rows(course)
            except Exception:  # the table may not exist yet
                first = []
            if first:
                break
        time.sleep(0.2)
    assert first, "no outcome was written"
    os.killpg(process.pid, signal.SIGKILL)   # the whole run: parent, workers, sandboxes
    process.wait()
    first = {r["student"]: r for r in outcome_rows(course)}
    assert 1 <= len(first) < len(students), "the run was not killed half-way"

    lines, completed = grade(course, "--workers", "2")
    rows = outcome_rows(course)
    assert sorted(r["student"] for r in rows) == students          # exactly one outcome each
    for student, row in first.items():                               # not graded again
        again = next(r for r in rows if r["student"] == student)
        assert again["graded_at"] == row["graded_at"] and again["seed"] == row["seed"]
    assert f"{len(first)} already graded" in completed.stderr
    for index, student in enumerate(students):
        assert lines[student]["score"] == (AUTO if index % 2 == 0 else AUTO - 2), lines[student]
    assert hashes(course) == before

    # a changed submission is graded again, nothing else is
    submit(course, "s1", correct_notebook())
    stamps = {r["student"]: r["graded_at"] for r in rows}
    lines, completed = grade(course)
    expect_full(lines["s1"])
    after = {r["student"]: r["graded_at"] for r in outcome_rows(course)}
    assert [s for s in students if after[s] != stamps[s]] == ["s1"]
    assert "1 processed in this run" in completed.stderr
