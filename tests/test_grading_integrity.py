"""Students never hold the answer key, and a part's own mechanic cannot be borrowed.

- The guard (dlcourse/grading/guard.py): every name a part forbids exists, no forbidden
  dlcourse original survives its installation (so no walk of `gc` or `__subclasses__` finds
  one), and a stand-in refuses with a message naming what was used and what the part asks for.
- The probe process (probe_runner.py, here without the sandbox, as `dlcourse check` runs it):
  in every part of every assignment, each way of reaching the answer key and the answer key
  pasted whole are refused, while the instructor's solution still passes; library wrappers
  that do compute the right answer (proved without the guard) are refused too.
- `dlcourse check` tells the student before they submit.

The sandbox's share — the answer key and the package's files absent from disk — is proven by
`dlcourse grade` in tests/test_grading_assignments.py.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from dlcourse.checks import cases, get_part, parts_of, verdict
from dlcourse.grading.course import assignments
from dlcourse.grading.guard import resolve
from dlcourse.grading.probe import Probe, judge, write_probe_job
from dlcourse.grading.probe_runner import run_unsandboxed
from exercise_attacks import (ANSWER_KEY_ATTACKS, GRAPH_AND_DISK_ATTACKS, LIBRARY_WRAPPERS, REFUSALS, ROOT,
                              answer_cell_defining, answer_key_attack, solution_notebook, standalone_answer)

ASSIGNMENTS = {name[:4]: name for name in assignments(ROOT)}
SEED = 11
# Parts whose "reference" is the target an answer must reach (a test accuracy, PCA's error),
# not an answer: handing it in fails the comparison without any refusal being needed.
TARGETS_NOT_ANSWERS = {"ch08.train_digits_mlp", "ch13.train_autoencoder", "ch14.fine_tune"}


def _setup_cells(notebook) -> list:
    """The solution's locked, ungraded code cells that come before its first answer (imports, helpers)."""
    found = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            break
        if cell.cell_type == "code" and not meta.get("grade"):
            found.append(copy.deepcopy(cell))
    return found


def run_probes(tmp_path, chapter: str, answers: list[tuple[str, str]]) -> list[dict]:
    """Probe `answers` [(part id, answer cell), ...] in one probe run: the notebook is the
    solution's setup cells, then each answer cell followed by a test cell for its part.
    One record per answer: {'part', 'error' (first case's, or None), 'verdict' (PartVerdict)}."""
    notebook = nbformat.v4.new_notebook(cells=_setup_cells(solution_notebook(ASSIGNMENTS[chapter])))
    probes_by_cell = {}
    for part_id, text in answers:
        # each answer alone: the function an earlier answer defined is gone first
        notebook.cells.append(nbformat.v4.new_code_cell(f"globals().pop({get_part(part_id).function!r}, None)"))
        notebook.cells.append(nbformat.v4.new_code_cell(text))
        notebook.cells.append(nbformat.v4.new_code_cell(
            "# test", metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": f"t{len(notebook.cells)}"}}))
        probes_by_cell[len(notebook.cells) - 1] = [Probe(part_id, get_part(part_id).function)]
    plan = write_probe_job(tmp_path / "probe", notebook, probes_by_cell, SEED, timeout=60, isolated=False)
    out = run_unsandboxed(tmp_path, tmp_path / "probe" / "job.json", deadline=60 * len(plan) + 60)
    records = []
    for number, _, probe in plan:
        folder = out / f"p{number}"
        first = folder / "c0.json"
        record = json.loads(first.read_text()) if first.exists() else {"error": "no result"}
        records.append({"part": probe.part_id, "error": record.get("error"),
                        "verdict": judge(probe.part_id, probe.function, folder, SEED)})
    return records


def test_every_name_a_part_forbids_exists():
    for chapter in ASSIGNMENTS:
        for part in parts_of(chapter):
            assert "torch" in part.all_forbidden and "dlcourse.answers" in part.all_forbidden
            for name in part.forbids:
                resolve(name)   # LookupError names a typo


_SURVIVORS_SCRIPT = r"""
import gc, json, os, sys, importlib, pkgutil
import dlcourse
for module in pkgutil.walk_packages(dlcourse.__path__, "dlcourse."):
    if not module.name.startswith(("dlcourse.answers", "dlcourse.grading", "dlcourse.cli")):
        importlib.import_module(module.name)
from dlcourse.checks import parts_of
from dlcourse.grading import guard
found = {}
for part in parts_of(sys.argv[1]):
    read, write = os.pipe()
    if os.fork() == 0:
        names = {n.rpartition(".")[2] for n in part.forbids if n.startswith("dlcourse.")}
        guard.install(part.all_forbidden, part.function, part.asks)
        gc.collect()
        alive = sorted({o.__module__ + "." + o.__qualname__ for o in gc.get_objects()
                        if isinstance(o, type) and str(o.__module__).startswith("dlcourse") and o.__name__ in names})
        os.write(write, json.dumps(alive).encode())
        os._exit(0)
    os.close(write)
    found[part.id] = json.loads(os.read(read, 1 << 20))
    os.wait()
print(json.dumps(found))
"""


@pytest.mark.parametrize("chapter", sorted(ASSIGNMENTS))
def test_no_forbidden_class_survives_the_guard(chapter):
    completed = subprocess.run([sys.executable, "-c", _SURVIVORS_SCRIPT, chapter], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    survivors = {part: alive for part, alive in json.loads(completed.stdout).items() if alive}
    assert survivors == {}, f"forbidden classes still reachable through gc: {survivors}"


@pytest.mark.parametrize("chapter", sorted(ASSIGNMENTS))
def test_the_solution_passes_and_the_answer_key_is_refused_in_every_part(chapter, tmp_path):
    notebook = solution_notebook(ASSIGNMENTS[chapter])
    answers = []
    for part in parts_of(chapter):
        answers.append((part.id, standalone_answer(notebook, part.id, part.function)))
        for kind in [*ANSWER_KEY_ATTACKS, "pasted answer key"]:
            answers.append((part.id, answer_key_attack(kind, part.id, part.function)))
    records = run_probes(tmp_path, chapter, answers)
    kinds = ["solution", *ANSWER_KEY_ATTACKS, "pasted answer key"]
    for number, record in enumerate(records):
        kind = kinds[number % len(kinds)]
        if kind == "solution":
            assert record["verdict"].passed, f"{record['part']}: the solution fails: {record['verdict'].message}"
        else:
            assert not record["verdict"].passed, f"{record['part']}: the answer key ({kind}) earned the points"
            # without the sandbox the answer key's file is on disk: the sandbox run proves that refusal
            # a class graded through an adapter: the pasted key's reference is a function of the
            # case, not a class, so it fails the adapter's first call without a refusal
            pasted_for_a_class = kind == "pasted answer key" and get_part(record["part"]).adapter is not None
            if kind != "source file" and record["part"] not in TARGETS_NOT_ANSWERS and not pasted_for_a_class:
                assert any(word in str(record["error"]) for word in REFUSALS), \
                    f"{record['part']} ({kind}): refused without saying why: {record['error']}"


@pytest.mark.parametrize("part_id", sorted(LIBRARY_WRAPPERS))
def test_each_library_wrapper_computes_the_answer_without_the_guard(part_id):
    namespace = {"np": np}
    exec(LIBRARY_WRAPPERS[part_id], namespace)
    part = get_part(part_id)
    function = namespace[part.function]
    for args in cases(part_id, SEED):
        verdict(part_id, args, part.call(function, copy.deepcopy(args)))   # raises CheckFailure if it were wrong


def test_library_wrappers_and_walks_of_the_object_graph_are_refused(tmp_path):
    by_chapter: dict[str, list] = {}
    for part_id, text in LIBRARY_WRAPPERS.items():
        by_chapter.setdefault(part_id[:4], []).append(("wrapper", part_id, text))
    for name in ("subclasses walk", "gc walk"):   # reading the package from disk: the sandbox's job
        by_chapter["ch11"].append((name, "ch11.lstm_cell_forward", GRAPH_AND_DISK_ATTACKS[name]))
    for chapter, answers in by_chapter.items():
        records = run_probes(tmp_path / chapter, chapter, [(part_id, text) for _, part_id, text in answers])
        for record, (kind, part_id, text) in zip(records, answers):
            assert not record["verdict"].passed, f"{part_id} earned its points with:\n{text}"
            if kind == "wrapper":
                assert "ForbiddenMechanicError" in str(record["error"]), record
            else:   # the class is gone: the walk finds nothing to call
                assert record["error"] and "LSTMCell" not in str(record["verdict"].message).split(":")[0], record


def test_a_refusal_names_what_was_used_and_what_the_part_asks_for(tmp_path):
    record, = run_probes(tmp_path, "ch11", [("ch11.lstm_cell_forward", LIBRARY_WRAPPERS["ch11.lstm_cell_forward"])])
    assert "ForbiddenMechanicError" in record["error"]
    assert "dlcourse.nn.LSTMCell" in record["error"] and "the LSTM cell's forward pass" in record["error"]


def test_dlcourse_check_tells_the_student_before_they_submit(tmp_path):
    assignment = ASSIGNMENTS["ch11"]
    notebook = solution_notebook(assignment)
    answer_cell_defining(notebook, "lstm_cell_forward").source = LIBRARY_WRAPPERS["ch11.lstm_cell_forward"]
    path = tmp_path / f"{assignment}.ipynb"
    nbformat.write(notebook, path)
    completed = subprocess.run([sys.executable, "-m", "dlcourse.cli", "check", str(path)], capture_output=True,
                               text=True, timeout=600)
    table = completed.stdout
    line = next(row for row in table.splitlines() if row.startswith("lstm_cell_forward_tests"))
    assert "failed" in line and "dlcourse.nn.LSTMCell" in line, table
    assert next(row for row in table.splitlines() if row.startswith("lstm_forward_tests")).endswith("passed"), table
