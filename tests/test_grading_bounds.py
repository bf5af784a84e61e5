"""The grader's own work on student data is bounded, and one student cannot harm another.

Each test reproduces an attack on the grader itself (not on the score): a verdict or restore
that would take the grading worker's memory or CPU, a directory flood or a FIFO that would
stall it, a neighbour starving an honest sandbox of CPU, two live sandboxes with one uid.
"""
from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from dlcourse.checks import CheckFailure
from dlcourse.grading import grade as grade_module
from dlcourse.grading import sandbox
from dlcourse.grading.bounded import LimitExceeded, run_bounded
from dlcourse.grading.grade import BREAKS_GRADER, GRADER_ERROR, read_submission
from dlcourse.grading.probe import judge
from dlcourse.grading.restore import MAX_PARSED_CELL_CHARS, restore_notebook
from test_grading_support import (A, correct_notebook, expect_full, first_helper_slot, grade, insert_code,
                                  registered_course, submit, xdist_group, course)  # noqa: F401 (fixtures)

SOURCE_NB = Path(__file__).resolve().parents[1] / "solutions" / A / f"{A}.ipynb"


# --- verdicts: the digits MLP a probe returns is judged in the grader's process --------------

def _probe_result(folder: Path, state: dict) -> Path:
    """What the probe of ch08.train_digits_mlp leaves for the grader: one state dict per case."""
    folder.mkdir(parents=True)
    for case in range(2):
        spec = {}
        for number, (key, array) in enumerate(state.items()):
            name = f"c{case}_{number}.npy"
            np.save(folder / name, array, allow_pickle=False)
            spec[key] = {"npy": name, "scalar": False}
        (folder / f"c{case}.json").write_text(json.dumps({"result": {"dict": spec}}))
    return folder


def _zero_size_state(width: int) -> dict:
    """About 1 KB on disk; its shapes declare MLP(64, (width, width), 10)."""
    return {"fc1.weight": np.zeros((width, 0), np.float32), "fc1.bias": np.zeros(0, np.float32),
            "fc2.weight": np.zeros((width, 0), np.float32), "fc2.bias": np.zeros(0, np.float32),
            "fc3.weight": np.zeros((10, 0), np.float32), "fc3.bias": np.zeros(10, np.float32)}


def _bounded_judge(folder: Path, memory_mb: int = 512, cpu_s: int = 60):
    verdict = run_bounded(lambda: judge("ch08.train_digits_mlp", "train_digits_mlp", folder, 7).__dict__,
                          memory_mb=memory_mb, cpu_s=cpu_s, wall_s=300, what="the check")
    return verdict


def test_declared_shapes_are_capped_before_a_model_is_built(tmp_path):
    folder = _probe_result(tmp_path / "p0", _zero_size_state(16000))
    verdict = _bounded_judge(folder)   # would need about 2 GB if a model were built from the shapes
    assert not verdict["passed"] and "fc1.weight has shape (16000, 0)" in verdict["message"]


def test_a_verdict_memory_bomb_ends_the_child_not_the_worker(tmp_path, monkeypatch):
    import dlcourse.checks.ch08 as ch08

    # the caps switched off: the child's limits alone still hold
    monkeypatch.setattr(ch08, "_bounded_state", lambda state, layers: state)
    folder = _probe_result(tmp_path / "p0", _zero_size_state(16000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LimitExceeded) as caught:
        _bounded_judge(folder, memory_mb=512)
    assert caught.value.kind in ("memory", "crash"), caught.value
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: this process stayed small


def test_a_large_float16_state_is_refused_and_a_small_one_judged_with_blas(tmp_path):
    from dlcourse.checks.ch08 import load_digits_mlp
    from dlcourse.models import MLP

    big = {"fc1.weight": np.zeros((4096, 64), np.float16), "fc1.bias": np.zeros(4096, np.float16),
           "fc2.weight": np.zeros((4096, 4096), np.float16), "fc2.bias": np.zeros(4096, np.float16),
           "fc3.weight": np.zeros((4096, 4096), np.float16), "fc3.bias": np.zeros(4096, np.float16),
           "fc4.weight": np.zeros((10, 4096), np.float16), "fc4.bias": np.zeros(10, np.float16)}
    with pytest.raises(CheckFailure, match="parameters; at most"):
        load_digits_mlp(big)
    small = {k: v.astype(np.float16) for k, v in MLP(64, hidden_sizes=(32,), num_classes=10).state_dict().items()}
    assert load_digits_mlp(small).fc1.weight.dtype == np.float32


def test_a_verdict_cpu_bomb_is_stopped_at_its_cpu_limit():
    def spin():
        while True:
            pass
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as caught:
        run_bounded(spin, memory_mb=64, cpu_s=2, wall_s=120, what="the check")
    assert caught.value.kind == "cpu" and "2 s of CPU time" in str(caught.value)
    assert time.monotonic() - started < 100


# --- who is to blame: sticky for the submission, re-gradable for the grader ------------------

def _run_with(status: dict, breaches=()) -> grade_module._Run:
    task = grade_module.GradeTask(
        student="s", assignment=A, notebook_id=A, display="x", data=b"", sha256="h", source_sha256="h",
        timestamp_text=None, source="", seed=1, timeout=10, total_timeout=40, memory_mb=512, sandbox="none",
        cpus=1.0, max_score=15.0, grade_ids=[], probes={})
    run = grade_module._Run(task, grade_module.GradeOutcome.of(task), Path("."), {})
    run.status, run.readable, run.breaches = status, True, list(breaches)
    run.restored = type("R", (), {"grade_ids": {}})()
    return run


def test_a_limit_broken_by_the_submission_is_sticky_and_the_graders_own_is_not():
    run = _run_with({}, [LimitExceeded("memory", "the check needed more than 512 MB")])
    assert grade_module._status_head(run)[0] == "crashed"
    assert any(f.startswith(BREAKS_GRADER) for f in run.flags) and GRADER_ERROR not in run.flags
    run = _run_with({}, [LimitExceeded("time", "the check took longer than 60 s")])
    grade_module._status_head(run)
    assert GRADER_ERROR in run.flags
    run = _run_with({"dead_kernel_cell": -1, "kernel_exit": 1})   # e.g. a neighbour's processes
    status, head = grade_module._status_head(run)
    assert status == "crashed" and GRADER_ERROR in run.flags and "next run" in head


# --- restore: a crafted helper cell is not parsed outside the sandbox -------------------------

def test_a_huge_helper_cell_is_not_parsed_and_is_flagged():
    source = nbformat.read(SOURCE_NB, as_version=4)
    student = correct_notebook()
    student.cells.insert(first_helper_slot(student), nbformat.v4.new_code_cell("a=1\n" * 1_900_000))  # 7.6 MB
    restored = run_bounded(lambda: restore_notebook(student, source).flags, memory_mb=400, cpu_s=60, wall_s=300,
                           what="the restore")   # ast.parse of this cell needs about 3.5 GB
    assert any(f"over the grader's {MAX_PARSED_CELL_CHARS // 1024} KB limit" in flag for flag in restored)


# --- copy-out: only the job's probe folders come back ----------------------------------------

def _work_with_flood(tmp_path: Path, flood: int, inside: int = 0) -> Path:
    work = tmp_path / "work"
    (work / "result").mkdir(parents=True)
    out = work / "probe" / "out"
    (out / "p0").mkdir(parents=True)
    (out / "p0" / "c0.json").write_text('{"result": {"json": 1}}')
    for number in range(1, flood + 1):
        (out / f"p{number}").mkdir()
    for number in range(inside):
        (out / "p0" / f"d{number}").mkdir()
    (tmp_path / "out").mkdir()
    return work


def _copy_out(work: Path, out: Path, probe_dirs: int, deadline: float) -> list[str]:
    out_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sandbox._copy_out(str(work), out_fd, probe_dirs, deadline)
    finally:
        os.close(out_fd)


def test_a_directory_flood_is_not_copied_out(tmp_path):
    work = _work_with_flood(tmp_path, 50_000)
    started = time.monotonic()
    problems = _copy_out(work, tmp_path / "out", 1, time.monotonic() + 30)
    assert problems == [] and sorted(os.listdir(tmp_path / "out" / "probe")) == ["p0"]
    assert (tmp_path / "out" / "probe" / "p0" / "c0.json").is_file()
    assert time.monotonic() - started < 10


def test_folders_count_against_the_cap_and_the_copy_out_has_a_deadline(tmp_path):
    work = _work_with_flood(tmp_path, 0, inside=sandbox.MAX_PROBE_FILES + 10)
    assert _copy_out(work, tmp_path / "out", 1, time.monotonic() + 30) == ["probe: too many files"]
    second = tmp_path / "again"
    second.mkdir()
    work = _work_with_flood(second, 0)
    assert _copy_out(work, second / "out", 1, time.monotonic() - 1) == ["probe: the copy-out ran past its deadline"]


# --- the parent reads only regular files, never blocking --------------------------------------

def _read_in_thread(root: Path, student: str) -> dict:
    box = {}
    reader = threading.Thread(target=lambda: box.update(read_submission(root, student, A, A)), daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "read_submission hangs"
    return box


def test_a_fifo_or_a_sparse_file_instead_of_the_assignment_folder(tmp_path):
    (tmp_path / "submitted" / "fifo").mkdir(parents=True)
    os.mkfifo(tmp_path / "submitted" / "fifo" / A)
    (tmp_path / "submitted" / "sparse").mkdir()
    with open(tmp_path / "submitted" / "sparse" / A, "wb") as handle:
        handle.truncate(3 * 1024**3)
    (tmp_path / "submitted" / "nb_fifo" / A).mkdir(parents=True)
    os.mkfifo(tmp_path / "submitted" / "nb_fifo" / A / f"{A}.ipynb")
    (tmp_path / "submitted" / "nb_sparse" / A).mkdir(parents=True)
    with open(tmp_path / "submitted" / "nb_sparse" / A / f"{A}.ipynb", "wb") as handle:
        handle.truncate(3 * 1024**3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = {student: _read_in_thread(tmp_path, student) for student in ("fifo", "sparse", "nb_fifo", "nb_sparse")}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000   # KB, not 3 GB
    assert all(state["state"] == "invalid" and state["data"] is None for state in found.values()), found
    assert "FIFO" in found["fifo"]["reason"] and "a file, not a folder" in found["sparse"]["reason"]
    assert "not a regular file" in found["nb_fifo"]["reason"] and "3221 MB" in found["nb_sparse"]["reason"]


# --- sandbox uids: one per live sandbox on the machine -----------------------------------------

def _hold_uids(count: int, hold_s: float, queue) -> None:
    leases = [sandbox.UidLease.take(check_processes=False) for _ in range(count)]
    queue.put([lease.uid for lease in leases])
    time.sleep(hold_s)
    for lease in leases:
        lease.release()


def test_sandbox_uids_are_never_shared_across_runs_and_threads(monkeypatch):
    import multiprocessing

    base = 50000 + (os.getpid() % 1000) * 20
    monkeypatch.setenv("DLCOURSE_SANDBOX_UID_BASE", str(base))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    other_run = context.Process(target=_hold_uids, args=(3, 5.0, queue))   # another `dlcourse grade`
    other_run.start()
    theirs = queue.get(timeout=30)
    mine, threads = [], []
    for _ in range(8):   # a Dask worker's threads
        threads.append(threading.Thread(target=lambda: mine.append(sandbox.UidLease.take(check_processes=False))))
        threads[-1].start()
    for thread in threads:
        thread.join()
    uids = theirs + [lease.uid for lease in mine]
    assert len(set(uids)) == 11 and all(base <= uid < base + 11 for uid in uids), uids
    for lease in mine:
        lease.release()
    other_run.join()
    again = sandbox.UidLease.take(check_processes=False)   # released uids are free again
    assert again.uid == base
    again.release()


# --- CPU: a neighbour's busy processes do not starve an honest sandbox -------------------------

def _cgroups_writable() -> bool:
    from dlcourse.grading import cgroups

    group = cgroups.create(f"dlcourse-test-{os.getpid()}", cpus=1.0, memory_bytes=1 << 30, pids=64)
    if group:
        group.remove()
    return group is not None


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spin_side_by_side(groups: bool, seconds: float = 4.0) -> tuple[float, float]:
    """CPU seconds of one busy process and of 50 busy processes (each in a session of its own,
    so that per-session autogroups do not gather them) running side by side; with `groups`,
    the one and the 50 are in a sandbox cgroup each."""
    import subprocess
    import sys

    from dlcourse.grading import cgroups

    made = [cgroups.create(f"dlcourse-test-{os.getpid()}-{side}", cpus=float(os.cpu_count() or 1),
                           memory_bytes=1 << 30, pids=128) if groups else None for side in ("one", "many")]
    spin = [sys.executable, "-c", "while True: pass"]
    procs = []
    try:
        for group, count in zip(made, (1, 50)):
            procs.append([subprocess.Popen(spin, start_new_session=True, preexec_fn=group.enter if group else None)
                          for _ in range(count)])
        time.sleep(seconds)
        one, many = (sum(_cpu_seconds(p.pid) for p in side) for side in procs)
    finally:
        for proc in (p for side in procs for p in side):
            proc.kill()
            proc.wait()
        for group in made:
            if group:
                group.remove()
    return one, many


@pytest.mark.skipif(os.geteuid() != 0 or not _cgroups_writable(), reason="needs root and a writable cgroup")
def test_a_cgroup_per_sandbox_splits_the_cpu_evenly_however_many_processes_run():
    one, many = _spin_side_by_side(groups=False)
    assert one / many < 0.2, (one, many)        # the attack: 1 process against 50 gets about 1/50
    one, many = _spin_side_by_side(groups=True)
    assert one / many > 0.5, (one, many)        # a sandbox against a sandbox: about even


@pytest.mark.slow
@xdist_group
@pytest.mark.skipif(os.geteuid() != 0 or not _cgroups_writable(), reason="needs root and a writable cgroup")
def test_an_honest_neighbour_keeps_its_score_next_to_100_busy_forks(course):
    # The bomber is graded first; the honest students that follow run while its forks spin.
    # Each fork starts a session of its own, so the scheduler's per-session autogroups do
    # not hold them together. (On the 2-core development machine without cgroups, an honest
    # sandbox took 15-51 s next to them instead of 2.5 s; how much depends on the timing, so
    # the even split itself is measured by the test above.)
    for number in range(3):
        submit(course, f"honest{number}", correct_notebook())
    bomber = correct_notebook()
    submit(course, "bomber", insert_code(bomber, "import os\nfor _ in range(100):\n    if os.fork() == 0:\n"
                                                "        os.setsid()\n        while True:\n            pass", at=first_helper_slot(bomber)))
    lines, completed = grade(course, "--workers", "2", "--timeout", "10", "--notebook-timeout", "15", timeout=900)
    for number in range(3):
        expect_full(lines[f"honest{number}"])
    assert lines["bomber"]["status"] in ("graded", "timeout", "crashed"), lines["bomber"]
    assert "no writable cgroup" not in completed.stderr
