"""`dlcourse grade ASSIGNMENT`: isolated, forgery-resistant, parallel grading of submitted/.

For every student (a folder of submitted/, or a student the gradebook knows):

1. the PARENT reads ``submitted/<student>/<assignment>/<notebook>.ipynb`` without following
   links and hashes it; a submission whose stored outcome has the same hash (and the same
   source notebook) is not graded again, so an interrupted run resumes;
2. a WORKER (a local process pool, or a Dask cluster with ``--scheduler``) validates the
   notebook (selfcheck.read_notebook), restores it from the source (restore.py), writes the
   probe inputs for a fresh secret seed (probe.py), runs it in the sandbox (sandbox.py,
   executor.py), judges the probes in its own process and returns a plain, JSON-able dict;
3. the PARENT alone writes: the autograded notebook, nbgrader's gradebook tables and our
   outcome row, committed after each submission; it prints one JSON line per submission
   with ``--json``, a progress bar on stderr and a summary table at the end.

The status of each submission is one of graded, timeout, crashed, invalid, missing, with a
one-line reason; every submission gets one, and then the exit status is 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.modules.setdefault("rfc3987_syntax", None)  # see executor.py: seconds of import time, unused

__all__ = ["GradeOptions", "grade_assignment", "grade_submission", "STATUSES", "read_submission"]

STATUSES = ("graded", "timeout", "crashed", "invalid", "missing")
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
MAX_REASON = 600
HIDDEN_CHECK_ENAME = "HiddenCheckFailed"
GRADER_ERROR = "grader-error"   # a flag: our failure, not the student's; the next run tries again


@dataclass
class GradeOptions:
    workers: int | None = None
    scheduler: str | None = None
    db_url: str | None = None
    timeout: int = 60                 # seconds per cell
    total_timeout: int | None = None  # seconds per notebook (default 3 × timeout + 30)
    memory_mb: int = 2048
    json: bool = False
    force: bool = False
    sandbox: str | None = None        # root / userns / none (default: what this machine allows)
    progress: bool | None = None      # None: a bar when stderr is a terminal

    @property
    def notebook_timeout(self) -> int:
        return int(self.total_timeout or 3 * self.timeout + 30)


# ----------------------------------------------------------------------------------------
# reading submissions (parent)
# ----------------------------------------------------------------------------------------

def source_notebook(root: Path, assignment: str) -> Path:
    from dlcourse.grading.course import CourseError, assignments

    names = assignments(root)
    if assignment not in names:
        raise CourseError(f"no assignment {assignment!r} in {root / 'solutions'}; there are: {', '.join(names) or 'none'}")
    notebooks = sorted((root / "solutions" / assignment).glob("*.ipynb"))
    preferred = root / "solutions" / assignment / f"{assignment}.ipynb"
    if preferred in notebooks:
        return preferred
    if len(notebooks) == 1:
        return notebooks[0]
    raise CourseError(f"solutions/{assignment} holds {len(notebooks)} notebooks; dlcourse grade expects "
                      f"one, named {assignment}.ipynb")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_submission(root: Path, student: str, assignment: str, notebook_id: str) -> dict:
    """{'state': ok|missing|invalid, 'reason', 'data', 'sha256', 'timestamp_text', 'display'};
    never follows a link, never writes."""
    base = root / "submitted"
    display = f"submitted/{student}/{assignment}/{notebook_id}.ipynb"
    found = {"state": "ok", "reason": "", "data": None, "sha256": None, "timestamp_text": None, "display": display}
    for path, label in ((base / student, f"submitted/{student}"),
                        (base / student / assignment, f"submitted/{student}/{assignment}")):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return {**found, "state": "missing", "reason": f"nothing handed in: no {label}/ folder"}
        if stat.S_ISLNK(info.st_mode):
            return {**found, "state": "invalid", "sha256": "link:" + _sha256(os.fsencode(os.readlink(path))),
                    "reason": f"{label} is a symbolic link, not a folder (links are never followed)"}
        if not stat.S_ISDIR(info.st_mode):
            return {**found, "state": "invalid", "sha256": "file:" + _sha256(path.read_bytes()[:1 << 20]),
                    "reason": f"{label} is a file, not a folder"}
    folder = base / student / assignment
    path = folder / f"{notebook_id}.ipynb"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        others = sorted(p.name for p in folder.iterdir() if p.name.endswith(".ipynb"))[:5]
        hint = f" (it holds {', '.join(others)}; the notebook must keep its name)" if others else ""
        return {**found, "state": "missing", "reason": f"no {display}{hint}"}
    if stat.S_ISLNK(info.st_mode):
        return {**found, "state": "invalid", "sha256": "link:" + _sha256(os.fsencode(os.readlink(path))),
                "reason": f"{display} is a symbolic link, not the notebook file (links are never followed)"}
    if not stat.S_ISREG(info.st_mode):
        return {**found, "state": "invalid", "reason": f"{display} is not a regular file"}
    if info.st_size > MAX_SUBMISSION_BYTES:
        return {**found, "state": "invalid", "sha256": f"size:{info.st_size}:{int(info.st_mtime)}",
                "reason": f"{display} is {info.st_size / 1e6:.0f} MB; notebooks over "
                          f"{MAX_SUBMISSION_BYTES // 1_000_000} MB are not graded (clear the outputs and resubmit)"}
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_SUBMISSION_BYTES + 1)
    found.update(data=data, sha256=_sha256(data))
    stamp = folder / "timestamp.txt"
    try:
        if stat.S_ISREG(os.lstat(stamp).st_mode) and os.lstat(stamp).st_size < 1000:
            found["timestamp_text"] = stamp.read_text(errors="replace").strip()
    except OSError:
        pass
    return found


# ----------------------------------------------------------------------------------------
# the worker
# ----------------------------------------------------------------------------------------

_SLOT = None


def _init_worker(counter) -> None:
    global _SLOT
    with counter.get_lock():
        counter.value += 1
        _SLOT = counter.value


def _slot() -> int:
    if _SLOT is not None:
        return _SLOT
    import threading
    return (os.getpid() * 7 + threading.get_ident() % 7) % 4000


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _clean_outputs(outputs) -> list:
    """Keep only well-formed outputs (they come from the sandbox: untrusted)."""
    import nbformat

    clean = []
    if not isinstance(outputs, list):
        return clean
    for out in outputs[:200]:
        if not isinstance(out, dict):
            continue
        kind = out.get("output_type")
        try:
            if kind == "stream" and out.get("name") in ("stdout", "stderr") and isinstance(out.get("text"), str):
                clean.append(nbformat.v4.new_output("stream", name=out["name"], text=out["text"]))
            elif kind == "error":
                tb = out.get("traceback") if isinstance(out.get("traceback"), list) else []
                clean.append(nbformat.v4.new_output("error", ename=str(out.get("ename", "Error"))[:200],
                                                    evalue=str(out.get("evalue", ""))[:2000],
                                                    traceback=[str(line)[:2000] for line in tb[:60]]))
            elif kind in ("display_data", "execute_result") and isinstance(out.get("data"), dict):
                data = {str(k): v for k, v in out["data"].items() if isinstance(v, (str, list, dict))}
                meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
                new = nbformat.v4.new_output(kind, data=data, metadata=meta)
                if kind == "execute_result":
                    count = out.get("execution_count")
                    new["execution_count"] = count if isinstance(count, int) else None
                nbformat.validate(new, ref=kind)
                clean.append(new)
        except Exception:
            continue
    return clean


def _partial_credit(outputs, points: float) -> float:
    """nbgrader's rule for a test cell without probes: a numeric result is partial credit."""
    for out in outputs:
        if out.get("output_type") == "execute_result":
            text = out.get("data", {}).get("text/plain", "")
            text = text[0] if isinstance(text, list) and len(text) == 1 else text
            try:
                value = float(text)
            except (TypeError, ValueError):
                return points
            return min(points, value) if value >= 0 else points
    return points


def _error_of(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = _one_line(out.get("evalue", ""), 200)
            return f"{out.get('ename', 'Error')}: {value}" if value else str(out.get("ename", "Error"))
    return ""


def _result_base(task: dict) -> dict:
    return {"student": task["student"], "assignment": task["assignment"], "notebook_id": task["notebook_id"],
            "status": "crashed", "reason": "", "score": 0.0, "max_score": task["max_score"], "grades": {},
            "unanswered": {}, "flags": [], "details": {}, "notebook": None, "seed": task["seed"],
            "sha256": task["sha256"], "source_sha256": task["source_sha256"],
            "timestamp_text": task.get("timestamp_text"), "timings": {}}


def grade_submission(task: dict) -> dict:
    """Grade one submission (runs in a worker process or on a Dask worker); a plain dict back."""
    started = time.monotonic()
    result = _result_base(task)
    try:
        _grade(task, result)
    except Exception as error:  # a bug of ours must not cost the batch
        result.update(status="crashed", score=0.0, grades={gid: 0.0 for gid in task["grade_ids"]}, flags=[GRADER_ERROR],
                      reason=_one_line(f"internal grader error: {type(error).__name__}: {error}", MAX_REASON))
        result["details"] = {"traceback": traceback.format_exc()[-2000:]}
    result["timings"]["wall_s"] = round(time.monotonic() - started, 4)
    executed = result["timings"].get("notebook_s")
    if executed is not None:
        result["timings"]["overhead_s"] = round(result["timings"]["wall_s"] - executed, 4)
    return result


def _grade(task: dict, result: dict) -> None:
    import nbformat

    from dlcourse.grading.probe import Probe, judge, write_probe_job
    from dlcourse.grading.restore import restore_notebook, scan_tampering
    from dlcourse.grading.sandbox import PROBE_DIR, available_mode, run_sandboxed
    from dlcourse.grading.selfcheck import NotebookError, read_notebook

    source = nbformat.reads(task["source"], as_version=4)
    grade_cells = {}
    for cell in source.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id"):
            grade_cells[meta["grade_id"]] = (cell, float(meta.get("points", 0)))
    result["grades"] = {gid: 0.0 for gid in grade_cells}

    base = Path(tempfile.mkdtemp(prefix="dlcourse-grade-"))
    try:
        # 1. a readable nbformat-4 notebook?
        raw = base / f"{task['notebook_id']}.ipynb"
        raw.write_bytes(task["data"])
        try:
            student = read_notebook(raw)
        except NotebookError as error:
            result.update(status="invalid", reason=_one_line(str(error).replace(str(raw), task["display"]), MAX_REASON))
            return
        # 2. restore from the source; probes for each test cell
        restored = restore_notebook(student, source)
        flags = list(restored.flags)
        tampering = scan_tampering(restored.student_code)
        probes = {gid: [Probe(part, function) for part, function in found] for gid, found in task["probes"].items()}
        (base / "in").mkdir()
        (base / "out").mkdir()
        (base / "root").mkdir()
        mode = task.get("sandbox") or available_mode()
        probes_by_cell = {index: probes[grade_id] for index, grade_id in restored.grade_ids.items() if grade_id in probes}
        plan: dict[int, list] = {}
        for number, index, probe in write_probe_job(base / "in" / PROBE_DIR, restored.notebook, probes_by_cell,
                                                    task["seed"], task["timeout"], isolated=mode != "none"):
            plan.setdefault(index, []).append((number, probe))
        nbformat.write(restored.notebook, base / "in" / "notebook.ipynb")
        kernel = source.metadata.get("kernelspec", {}).get("name", "python3")
        job = {"notebook": "notebook.ipynb", "kernel_name": kernel, "timeout": task["timeout"],
               "cell_output_cap": 100_000, "total_output_cap": 1_000_000, "startup_timeout": 60}
        (base / "in" / "job.json").write_text(json.dumps(job))

        # 3. run it, sandboxed
        report = run_sandboxed(str(base / "in"), str(base / "out"), str(base / "root"), slot=_slot(),
                               memory_mb=task["memory_mb"], cell_timeout=task["timeout"],
                               total_timeout=task["total_timeout"], mode=mode,
                               probe_deadline=task["total_timeout"] if plan else None)
        status = _sane_status(_load_json(base / "out" / "status.json"))
        executed = _load_json(base / "out" / "notebook.ipynb")
        timings = result["timings"]
        timings.update(sandbox_s=report.get("wall_s"), setup_s=report.get("setup_s"),
                       kernel_start_s=_num(status.get("kernel_start_s")), cells_s=_num(status.get("cells_s")),
                       probes_s=_num(report.get("probe_s")), executor_s=_num(status.get("total_s")))
        if timings["kernel_start_s"] is not None and timings["cells_s"] is not None:
            timings["notebook_s"] = round(timings["kernel_start_s"] + timings["cells_s"], 4)

        # 4. outputs from the sandbox onto OUR restored cells (sources and metadata stay ours)
        notebook = restored.notebook
        ran: set[int] = set()
        readable = isinstance(executed, dict) and isinstance(executed.get("cells"), list) \
            and len(executed["cells"]) == len(notebook.cells)
        if readable:
            for index, (mine, theirs) in enumerate(zip(notebook.cells, executed["cells"])):
                if mine.cell_type != "code" or not isinstance(theirs, dict):
                    continue
                mine.outputs = _clean_outputs(theirs.get("outputs"))
                count = theirs.get("execution_count")
                if isinstance(count, int) and not isinstance(count, bool):
                    mine.execution_count = count
                    ran.add(index)
        probed = bool(plan) and report.get("probe_error") is None and not report.get("error")

        # 5. points: the source's, if the cell ran without error and every probe passed
        score, manual, failures = 0.0, 0.0, []
        for index, grade_id in restored.grade_ids.items():
            if grade_id not in grade_cells:
                continue
            cell, points = notebook.cells[index], grade_cells[grade_id][1]
            smeta = grade_cells[grade_id][0].metadata.nbgrader
            if smeta.get("solution") or cell.cell_type != "code":
                unanswered = restored.unanswered.get(grade_id, False)
                result["grades"][grade_id] = 0.0 if unanswered else None
                if not unanswered:
                    manual += points
                result["details"][grade_id] = "unanswered" if unanswered else "graded by the instructor"
                continue
            error = _error_of(cell)
            verdicts = []
            if index in ran and not error and index in plan:
                for number, probe in plan[index]:
                    folder = base / "out" / "probe" / f"p{number}"
                    verdicts.append(judge(probe.part_id, probe.function, folder if probed else None, task["seed"]))
            if index not in ran:
                message = "not run (the notebook stopped before this cell)"
            elif error:
                message = error
            else:
                failed = [v for v in verdicts if not v.passed]
                message = "hidden check failed: " + failed[0].message if failed else ""
                if failed:
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename=HIDDEN_CHECK_ENAME, evalue=_one_line(failed[0].message, 500),
                        traceback=[f"{HIDDEN_CHECK_ENAME}: {_one_line(failed[0].message, 500)}",
                                   "(the grader called your function on inputs you have not seen and "
                                   "compared the results outside your notebook)"]))
            if message:
                result["grades"][grade_id] = 0.0
                failures.append(f"{grade_id}: {_one_line(message, 160)}")
                result["details"][grade_id] = _one_line(message, 500)
                if index in ran and not error and any(not v.passed for v in verdicts) and \
                        "passed in the notebook" not in " ".join(flags):
                    flags.append("a test cell passed in the notebook but failed the grader's re-check")
            else:
                earned = points if index in plan else _partial_credit(cell.outputs, points)
                result["grades"][grade_id] = earned
                score += earned
                result["details"][grade_id] = "passed"
        result["unanswered"] = {gid: restored.unanswered.get(gid, False) for gid in restored.unanswered}

        # 6. status and reason
        head = ""
        if report.get("error"):
            result["status"], head = "crashed", report["error"]
            flags.append(GRADER_ERROR)
        elif report.get("killed_at_deadline") or report.get("hard_killed"):
            result["status"] = "timeout"
            head = f"the notebook ran longer than {task['total_timeout']} s in all and was stopped"
        elif report.get("probe_error") and "longer than" in report["probe_error"]:
            result["status"], head = "timeout", report["probe_error"]
        elif report.get("probe_error"):
            result["status"], head = "crashed", report["probe_error"]
            flags.append(GRADER_ERROR)
        elif status.get("dead_kernel_cell") is not None:
            result["status"] = "crashed"
            where = _cell_label(status["dead_kernel_cell"], restored.grade_ids)
            exit_code = status.get("kernel_exit")
            how = (f"killed by signal {-exit_code}" if isinstance(exit_code, int) and exit_code < 0 else
                   f"exit status {exit_code}" if isinstance(exit_code, int) else "it exited")
            head = f"the kernel died in {where} ({how}: os._exit, a signal or running out of memory)"
            if exit_code == "shutdown":
                head = f"the kernel died in {where}: the notebook shut it down (exit(), quit() or a kernel shutdown)"
            head += "; the rest of the notebook did not run"
        elif status.get("executor_error"):
            result["status"] = "crashed"
            head = "the kernel could not run the notebook: " + _one_line(status["executor_error"], 200)
        elif not readable:
            result["status"] = "crashed"
            head = "the run left no readable record" + (
                f" (executor exit status {report.get('executor_exit')})" if report.get("executor_exit") else "")
        elif status.get("timeouts"):
            result["status"] = "timeout"
            where = ", ".join(_cell_label(i, restored.grade_ids) for i in status["timeouts"][:3])
            head = f"{where} ran longer than {task['timeout']} s and was interrupted"
            if status.get("unresponsive_cell") is not None:
                head += "; the kernel did not recover, the rest of the notebook did not run"
        else:
            result["status"] = "graded"
        if status.get("truncated"):
            flags.append(f"output truncated in {len(status['truncated'])} cell(s)")
        result["score"] = round(score, 6)
        pieces = [head] if head else []
        pieces.append(f"{result['score']:g} of {task['max_score']:g} points")
        if manual:
            pieces.append(f"{manual:g} awaiting manual grading")
        if failures:
            pieces.append("lost: " + "; ".join(failures[:4]) + ("; …" if len(failures) > 4 else ""))
        if tampering:
            pieces.append("tampering suspected: " + ", ".join(tampering))
        notes = [f for f in flags if f != GRADER_ERROR]
        if notes:
            pieces.append("notes: " + "; ".join(notes[:6]) + ("; …" if len(notes) > 6 else ""))
        result["reason"] = _one_line(" — ".join(pieces[:1]) + ("; " if len(pieces) > 1 else "")
                                     + "; ".join(pieces[1:]), MAX_REASON)
        result["flags"] = flags + [f"tampering: {t}" for t in tampering]
        result["notebook"] = nbformat.writes(notebook)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _sane_status(raw) -> dict:
    """The executor's status.json, written next to student code: keep only well-typed fields."""
    raw = raw if isinstance(raw, dict) else {}

    def integer(value):
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def integers(value):
        return [v for v in value if integer(v) is not None][:100] if isinstance(value, list) else []

    exit_code = raw.get("kernel_exit")
    return {"timeouts": integers(raw.get("timeouts")), "probed": integers(raw.get("probed")),
            "truncated": integers(raw.get("truncated")), "dead_kernel_cell": integer(raw.get("dead_kernel_cell")),
            "unresponsive_cell": integer(raw.get("unresponsive_cell")),
            "kernel_exit": exit_code if integer(exit_code) is not None or exit_code == "shutdown" else None,
            "executor_error": str(raw["executor_error"])[:300] if raw.get("executor_error") else None,
            **{k: raw.get(k) for k in ("kernel_start_s", "cells_s", "probes_s", "total_s")}}


def _num(value):
    return round(float(value), 4) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _load_json(path: Path):
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read(16 * 1024 * 1024).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _cell_label(index, grade_ids: dict) -> str:
    try:
        index = int(index)
    except (TypeError, ValueError):
        return "a cell"
    if index < 0:
        return "kernel start-up"
    return f"cell {index + 1}" + (f" ({grade_ids[index]})" if index in grade_ids else "")


# ----------------------------------------------------------------------------------------
# the parent
# ----------------------------------------------------------------------------------------

def _students(root: Path, gradebook) -> list[str]:
    names = set()
    submitted = root / "submitted"
    if submitted.is_dir():
        for entry in os.scandir(submitted):
            if not entry.name.startswith(".") and (entry.is_dir(follow_symlinks=False) or entry.is_symlink()):
                names.add(entry.name)
    for student in gradebook.students:
        names.add(student.id)
    return sorted(names)


def _direct_result(task: dict, state: dict) -> dict:
    """missing / invalid found by the parent itself: no worker needed."""
    result = _result_base(task)
    result.update(status=state["state"], reason=_one_line(state["reason"], MAX_REASON),
                  grades={gid: 0.0 for gid in task["grade_ids"]})
    return result


def _stored_line(row: dict) -> dict:
    return {"student": row["student"], "assignment": row["assignment"], "score": row["score"],
            "max_score": row["max_score"], "status": row["status"], "reason": row["reason"]}


def _warm() -> int:
    return _slot()


class _Runner:
    """Where the work goes: a local process pool, a Dask cluster, or in-process (workers=0)."""

    def __init__(self, options: GradeOptions):
        self.options = options
        self.pool = self.client = None

    def __enter__(self):
        if self.options.scheduler:
            try:
                from distributed import Client
            except ImportError:
                from dlcourse.grading.course import CourseError
                raise CourseError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
            try:
                self.client = Client(self.options.scheduler, timeout=30)
            except Exception as error:
                from dlcourse.grading.course import CourseError
                raise CourseError(f"cannot reach the Dask scheduler {self.options.scheduler}: {error}") from None
        elif (self.options.workers or 0) > 0 or self.options.workers is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # what a worker needs, imported once here and inherited by fork
            import dlcourse.grading.probe  # noqa: F401
            import dlcourse.grading.restore  # noqa: F401
            import dlcourse.grading.sandbox  # noqa: F401
            import dlcourse.grading.selfcheck  # noqa: F401
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            counter = context.Value("i", 0)
            workers = self.options.workers or os.cpu_count() or 1
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                            initargs=(counter,))
        return self

    def warm_up(self) -> None:
        """Start the worker processes now, while the parent still reads the gradebook."""
        if self.pool is not None:
            self._warm = [self.pool.submit(_warm) for _ in range(self.pool._max_workers)]

    def __exit__(self, exc_type, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=exc_type is None, cancel_futures=True)
            self.pool = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def run(self, tasks: list[dict]):
        """Yield (task, result) as they finish."""
        if self.client is not None:
            from distributed import as_completed
            futures = {}
            for task in tasks:
                futures[self.client.submit(grade_submission, task, pure=False, key=f"grade-{task['student']}-"
                                           f"{secrets.token_hex(4)}")] = task
            for future in as_completed(list(futures)):
                task = futures[future]
                try:
                    yield task, future.result()
                except Exception as error:
                    yield task, self._failed(task, error)
        elif self.pool is not None:
            from concurrent.futures import as_completed
            futures = {self.pool.submit(grade_submission, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    yield task, future.result()
                except Exception as error:
                    yield task, self._failed(task, error)
        else:
            for task in tasks:
                yield task, grade_submission(task)

    @staticmethod
    def _failed(task: dict, error: Exception) -> dict:
        result = _result_base(task)
        result.update(status="crashed", grades={gid: 0.0 for gid in task["grade_ids"]}, flags=[GRADER_ERROR],
                      reason=_one_line(f"the grading worker failed: {type(error).__name__}: {error}", MAX_REASON))
        return result


def _summary(rows: list[dict], stream, elapsed: float, graded_now: int, skipped: int) -> None:
    if not rows:
        print("no submissions", file=stream)
        return
    width = max(7, *(len(r["student"]) for r in rows))
    print(f"{'student':<{width}}  {'status':<8}  {'score':>11}  reason", file=stream)
    print(f"{'-' * width}  {'-' * 8}  {'-' * 11}  {'-' * 6}", file=stream)
    for row in sorted(rows, key=lambda r: r["student"]):
        score = f"{row['score']:g}/{row['max_score']:g}"
        print(f"{row['student']:<{width}}  {row['status']:<8}  {score:>11}  {_one_line(row['reason'], 100)}",
              file=stream)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    print("", file=stream)
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) +
          f" — {graded_now} graded in this run, {skipped} already graded; {elapsed:.1f} s", file=stream)


def grade_assignment(root: Path, assignment: str, options: GradeOptions, stdout=None, stderr=None) -> int:
    """Grade every submission of `assignment`; 0 when every one got an outcome."""
    import nbformat

    from dlcourse.checks import get_part
    from dlcourse.grading.course import CourseError
    from dlcourse.grading.probe import find_probes

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    started = time.monotonic()
    root = Path(root).resolve()
    source_path = source_notebook(root, assignment)
    source_text = source_path.read_text()
    source = nbformat.reads(source_text, as_version=4)
    try:
        probes = find_probes(source)
    except ValueError as error:
        raise CourseError(f"{source_path.relative_to(root)}: {error}") from None
    for grade_id, found in probes.items():
        for probe in found:
            try:
                get_part(probe.part_id)   # imports the chapter's checks: the workers inherit them
            except KeyError as error:
                raise CourseError(f"{source_path.relative_to(root)}, cell {grade_id}: {error.args[0]}") from None
    # the workers start now, forked from this process with everything they need imported,
    # before any database connection or thread exists here; they warm up while this process
    # checks the sandbox and reads the gradebook
    runner = _Runner(options)
    if (root / "submitted").is_dir() and any((root / "submitted").iterdir()):
        runner.__enter__()
        runner.warm_up()
    try:
        code = _grade_all(root, assignment, options, stdout, stderr, started, runner, source_path, source_text,
                          source, probes)
    except BaseException:
        runner.__exit__(*sys.exc_info())   # Ctrl-C or an error: do not wait for running notebooks
        raise
    runner.__exit__(None, None, None)
    return code


def _grade_all(root, assignment, options, stdout, stderr, started, runner, source_path, source_text, source,
               probes) -> int:
    from tqdm import tqdm

    from dlcourse.grading.course import CourseError
    from dlcourse.grading.gradebook import (absolute_db_url, course_settings, ensure_assignment, open_gradebook,
                                            record_result, stored_outcomes)

    notebook_id = source_path.stem
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in source.cells
                 if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("grade_id")]
    max_score = sum(float(c.metadata["nbgrader"].get("points", 0)) for c in source.cells
                    if c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    course_id, default_url = course_settings(root)
    db_url = absolute_db_url(options.db_url, Path.cwd()) if options.db_url else default_url
    source_sha = _sha256(source_text.encode())
    if not options.scheduler:  # a Dask cluster's machines are checked by their own workers
        from dlcourse.grading.sandbox import preflight
        problem = preflight(options.sandbox)
        if problem:
            raise CourseError(f"{problem} (see docs/grading-security.md; --sandbox none grades without isolation)")
    ensure_assignment(root, assignment, notebook_id, source, db_url, course_id)
    gradebook = open_gradebook(db_url, course_id)
    try:
        stored = stored_outcomes(gradebook, assignment)
        students = _students(root, gradebook)
        lines: dict[str, dict] = {}
        todo, direct, skipped = [], [], 0
        for student in students:
            state = read_submission(root, student, assignment, notebook_id)
            task = {"student": student, "assignment": assignment, "notebook_id": notebook_id,
                    "display": state["display"], "data": state["data"], "sha256": state["sha256"],
                    "source_sha256": source_sha, "timestamp_text": state["timestamp_text"], "source": source_text,
                    "seed": secrets.randbits(62), "timeout": int(options.timeout),
                    "total_timeout": options.notebook_timeout, "memory_mb": int(options.memory_mb),
                    "sandbox": options.sandbox, "max_score": max_score, "grade_ids": grade_ids,
                    "probes": {gid: [[p.part_id, p.function] for p in found] for gid, found in probes.items()}}
            previous = stored.get(student)
            if previous and not options.force and previous["sha256"] == state["sha256"] \
                    and (previous["source_sha256"] == source_sha or state["state"] == "missing") \
                    and GRADER_ERROR not in json.loads(previous["flags"] or "[]"):
                lines[student] = _stored_line(previous)
                skipped += 1
            elif state["state"] == "ok":
                todo.append(task)
            else:
                direct.append((task, state))

        def emit(result: dict) -> None:
            line = {"student": result["student"], "assignment": result["assignment"], "score": result["score"],
                    "max_score": result["max_score"], "status": result["status"], "reason": result["reason"]}
            lines[result["student"]] = line
            if options.json:
                print(json.dumps(line), file=stdout, flush=True)

        if options.json:
            for student in sorted(lines):
                print(json.dumps(lines[student]), file=stdout, flush=True)
        bar = tqdm(total=len(todo) + len(direct), file=stderr, unit="submission", desc=f"grading {assignment}",
                   disable=(not options.progress) if options.progress is not None else None, leave=False)
        for task, state in direct:
            result = _direct_result(task, state)
            record_result(gradebook, root, result)
            emit(result)
            bar.update(1)
        if todo:
            if runner.pool is None and runner.client is None:
                runner.__enter__()
            for task, result in runner.run(todo):
                record_result(gradebook, root, result)
                emit(result)
                bar.update(1)
        bar.close()
    finally:
        gradebook.close()
    _summary(list(lines.values()), stderr if options.json else stdout, time.monotonic() - started,
             len(todo) + len(direct), skipped)
    missing_outcomes = [s for s in students if s not in lines]
    return 0 if not missing_outcomes else 1
