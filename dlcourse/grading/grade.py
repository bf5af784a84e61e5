"""`dlcourse grade ASSIGNMENT`: isolated, forgery-resistant, parallel grading of submitted/.

For every student (a folder of submitted/, or a student the gradebook knows):

1. the PARENT reads ``submitted/<student>/<assignment>/<notebook>.ipynb`` without following
   links and hashes it; a submission whose stored outcome has the same hash (and the same
   source notebook) is not graded again, so an interrupted run resumes;
2. a WORKER (a local process pool, or a Dask cluster with ``--scheduler``) validates the
   notebook (selfcheck.read_notebook), restores it from the source (restore.py) and writes
   the probe inputs for a fresh secret seed (probe.py) in one forked child under memory and
   CPU limits (bounded.py), runs it in the sandbox (sandbox.py, executor.py), judges each
   test cell's probes in another bounded child and returns a plain, JSON-able dict;
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
from dataclasses import dataclass, field, fields
from pathlib import Path

sys.modules.setdefault("rfc3987_syntax", None)  # see executor.py: seconds of import time, unused

__all__ = ["GradeOptions", "GradeTask", "GradeOutcome", "grade_assignment", "grade_submission", "STATUSES",
           "read_submission", "source_notebook"]

STATUSES = ("graded", "timeout", "crashed", "invalid", "missing")
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
MAX_REASON = 4000               # the whole reason, in --json, the gradebook and the export
TABLE_REASON = 100              # the terminal table's cut
HIDDEN_CHECK_ENAME = "HiddenCheckFailed"
GRADER_ERROR = "grader-error"   # a flag: our failure, not the student's; the next run tries again
BREAKS_GRADER = "breaks the grader's limits"  # a flag: the submission's own doing; not re-graded
GRADER_MIN_CPU_S = 30           # CPU seconds per step of the grader's own work on a submission


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

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def sandbox_cpus(self) -> float:
        """Each sandbox's CPU quota (its cgroup's cap): twice an equal share of this machine's
        CPUs, between one CPU and all of them; while sandboxes compete, their equal cgroup
        weights split the CPUs evenly. On a Dask cluster, where the workers per machine are
        not known here: two CPUs."""
        cpus = os.cpu_count() or 1
        if self.scheduler:
            return 2.0
        if self.workers == 0:   # one submission at a time, in this process
            return float(cpus)
        return min(float(cpus), max(1.0, 2 * cpus / self.worker_count))


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


def _read_regular(path: Path, limit: int) -> bytes | None:
    """At most `limit` + 1 bytes of `path` if it is a regular file, else None: never follows a
    link, never blocks on a FIFO, never reads past `limit` (a sparse file of gigabytes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read(limit + 1)


def _fingerprint(path: Path) -> str:
    """What identifies a non-notebook in place of a folder or notebook: the hash of its first
    MB, or of its type and size (so that the next run sees whether it changed)."""
    data = _read_regular(path, 1 << 20)
    if data is not None:
        return _sha256(data[:1 << 20])
    try:
        info = os.lstat(path)
    except OSError:
        return "gone"
    return f"mode:{stat.S_IFMT(info.st_mode)}:{info.st_size}:{int(info.st_mtime)}"


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
            kind = "a file" if stat.S_ISREG(info.st_mode) else "not a folder or a file (a FIFO, a socket or a device)"
            return {**found, "state": "invalid", "sha256": "file:" + _fingerprint(path),
                    "reason": f"{label} is {kind}, not a folder"}
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
        return {**found, "state": "invalid", "sha256": "file:" + _fingerprint(path),
                "reason": f"{display} is not a regular file"}
    if info.st_size > MAX_SUBMISSION_BYTES:
        return {**found, "state": "invalid", "sha256": f"size:{info.st_size}:{int(info.st_mtime)}",
                "reason": f"{display} is {info.st_size / 1e6:.0f} MB; notebooks over "
                          f"{MAX_SUBMISSION_BYTES // 1_000_000} MB are not graded (clear the outputs and resubmit)"}
    data = _read_regular(path, MAX_SUBMISSION_BYTES)
    if data is None or len(data) > MAX_SUBMISSION_BYTES:
        return {**found, "state": "invalid", "sha256": "file:" + _fingerprint(path),
                "reason": f"{display} changed while it was read (no longer a regular file of at most "
                          f"{MAX_SUBMISSION_BYTES // 1_000_000} MB)"}
    found.update(data=data, sha256=_sha256(data))
    stamp = folder / "timestamp.txt"
    text = _read_regular(stamp, 1000)
    if text is not None and len(text) < 1000:
        found["timestamp_text"] = text.decode(errors="replace").strip()
    return found


# ----------------------------------------------------------------------------------------
# the worker
# ----------------------------------------------------------------------------------------

# Terminal control sequences: CSI (colours, cursor moves, clearing), OSC (window titles,
# links), and the other two-character escapes; also their one-byte C1 forms.
_TERMINAL_SEQUENCE = re.compile(r"(\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(\x1b\]|\x9d)[^\x07\x1b\x9c]*(\x07|\x1b\\|\x9c)?"
                                r"|\x1b[@-Z\\-_]")


def _one_line(text: str, limit: int = 300) -> str:
    """`text` on one line of printable characters, at most `limit` long: a student's error
    message reaches the instructor's terminal, so escape sequences, control and bidirectional
    formatting characters (which could clear the screen or make a line read otherwise) go."""
    text = _TERMINAL_SEQUENCE.sub("", str(text))
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _clean_outputs(outputs) -> list:
    """Keep only well-formed outputs (they come from the sandbox: untrusted); plots and tables stay."""
    from dlcourse.grading.outputs import clean_outputs

    return clean_outputs(outputs)


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
            value = _one_line(out.get("evalue", ""), 1500)
            return f"{out.get('ename', 'Error')}: {value}" if value else str(out.get("ename", "Error"))
    return ""


# ----------------------------------------------------------------------------------------
# one submission: the task a worker gets and the outcome it returns
# ----------------------------------------------------------------------------------------

@dataclass
class GradeTask:
    """One submission to grade: all that a worker needs (plain values, so it travels to a
    process pool or a Dask worker as a dict)."""
    student: str
    assignment: str
    notebook_id: str
    display: str                      # submitted/<student>/<assignment>/<notebook>.ipynb, for messages
    data: bytes | None                # the notebook file as handed in (None: missing or invalid)
    sha256: str | None
    source_sha256: str
    timestamp_text: str | None
    source: str                       # the source notebook's JSON text
    seed: int                         # the secret seed of the hidden probes
    timeout: int                      # seconds per cell
    total_timeout: int                # seconds per notebook
    memory_mb: int
    sandbox: str | None
    cpus: float                       # the sandbox's CPU share (its cgroup's quota)
    max_score: float
    grade_ids: list[str]
    probes: dict[str, list[list[str]]]   # grade_id -> [[part id, function name], …]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "GradeTask":
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass
class GradeOutcome:
    """What grading one submission decided; the parent records it (gradebook.record_result)."""
    student: str
    assignment: str
    notebook_id: str
    max_score: float
    seed: int | None
    sha256: str | None
    source_sha256: str | None
    timestamp_text: str | None
    status: str = "crashed"           # one of STATUSES
    reason: str = ""
    score: float = 0.0
    grades: dict = field(default_factory=dict)      # grade_id -> points (None: graded by hand)
    unanswered: dict = field(default_factory=dict)  # answer grade_id -> left as released
    flags: list = field(default_factory=list)
    details: dict = field(default_factory=dict)     # grade_id -> what happened; or a traceback
    notebook: str | None = None                     # the autograded notebook's JSON text
    timings: dict = field(default_factory=dict)

    @classmethod
    def of(cls, task: GradeTask) -> "GradeOutcome":
        return cls(student=task.student, assignment=task.assignment, notebook_id=task.notebook_id,
                   max_score=task.max_score, seed=task.seed, sha256=task.sha256,
                   source_sha256=task.source_sha256, timestamp_text=task.timestamp_text)

    def fail(self, status: str, reason: str, grade_ids, grader_error: bool = False) -> "GradeOutcome":
        """No points: `status` with `reason`; `grader_error` marks it as ours (re-graded next run)."""
        self.status, self.score = status, 0.0
        self.reason = _one_line(reason, MAX_REASON)
        self.grades = {gid: 0.0 for gid in grade_ids}
        if grader_error:
            self.flags = [GRADER_ERROR]
        return self

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "GradeOutcome":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def grade_submission(task: dict | GradeTask) -> dict:
    """Grade one submission (runs in a worker process or on a Dask worker); a plain dict back
    (GradeOutcome.to_dict)."""
    task = task if isinstance(task, GradeTask) else GradeTask.from_dict(task)
    started = time.monotonic()
    outcome = GradeOutcome.of(task)
    try:
        _grade(task, outcome)
    except Exception as error:  # a bug of ours must not cost the batch
        outcome.fail("crashed", f"internal grader error: {type(error).__name__}: {error}", task.grade_ids,
                     grader_error=True)
        outcome.details = {"traceback": traceback.format_exc()[-2000:]}
    outcome.timings["wall_s"] = round(time.monotonic() - started, 4)
    executed = outcome.timings.get("notebook_s")
    if executed is not None:
        outcome.timings["overhead_s"] = round(outcome.timings["wall_s"] - executed, 4)
    return outcome.to_dict()


@dataclass
class _Run:
    """What one grading learns, step by step (private to the worker)."""
    task: GradeTask
    outcome: GradeOutcome
    base: Path                                    # in/ (the job), out/ (what came back), root/
    graded: dict                                  # grade_id -> (source cell, points) of graded cells
    restored: object = None                       # restore.Restored
    flags: list = field(default_factory=list)
    tampering: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)      # restored cell index -> [(probe number, Probe)]
    mode: str = "root"                            # the sandbox: root, userns or none
    report: dict = field(default_factory=dict)    # the sandbox's setup report
    status: dict = field(default_factory=dict)    # the executor's status.json, sanitized
    readable: bool = False                        # the executed notebook came back, cell for cell
    ran: set = field(default_factory=set)         # cells with an execution count
    probed: bool = False                          # the probe phase ran to its end
    breaches: list = field(default_factory=list)  # bounded.LimitExceeded of the grader's own work

    def bounded(self, function, *args, what: str):
        """`function(*args)` in a forked child under the grader's limits (bounded.py)."""
        from dlcourse.grading.bounded import run_bounded

        return run_bounded(function, *args, memory_mb=self.task.memory_mb, cpu_s=_grader_cpu_s(self.task),
                           wall_s=3 * _grader_cpu_s(self.task) + 30, what=what)


def _grader_cpu_s(task: GradeTask) -> int:
    """CPU seconds the grader spends, at most, on one step of one submission outside the sandbox."""
    return max(GRADER_MIN_CPU_S, int(task.timeout))


def _breach_flags(breach) -> list[str]:
    """A wall-clock overrun without the CPU time to show for it is a busy or stuck machine: ours,
    so the next run grades again. Any other breach is the submission's and stays recorded."""
    if breach.kind == "time":
        return [GRADER_ERROR]
    return [f"{BREAKS_GRADER}: {breach}"]


def _graded_cells(source) -> dict:
    graded = {}
    for cell in source.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id"):
            graded[meta["grade_id"]] = (cell, float(meta.get("points", 0)))
    return graded


def _grade(task: GradeTask, outcome: GradeOutcome) -> None:
    import nbformat

    source = nbformat.reads(task.source, as_version=4)
    run = _Run(task, outcome, Path(tempfile.mkdtemp(prefix="dlcourse-grade-")), _graded_cells(source))
    outcome.grades = {gid: 0.0 for gid in run.graded}
    try:
        if not _read_and_restore(run, source):
            return
        _run_job(run)
        _map_outputs(run)
        score, manual, failures = _score(run)
        _decide_status(run, score, manual, failures)
        outcome.notebook = nbformat.writes(run.restored.notebook)
    finally:
        shutil.rmtree(run.base, ignore_errors=True)


def _read_and_restore(run: _Run, source) -> bool:
    """Steps 1 and 2, in a bounded child: read the submission, restore it, write the job.
    False when there is nothing to run (the outcome then says why)."""
    import nbformat

    from dlcourse.grading.bounded import LimitExceeded
    from dlcourse.grading.probe import Probe
    from dlcourse.grading.restore import Restored

    try:
        reply = run.bounded(_prepare_in_child, run, source, what="reading and restoring the notebook")
    except LimitExceeded as breach:
        student_side = breach.kind != "time"
        run.outcome.status = "invalid" if student_side else "crashed"
        run.outcome.reason = _one_line(f"{breach} (a limit of the grader; see docs/grading-security.md)",
                                       MAX_REASON)
        run.outcome.flags = _breach_flags(breach)
        return False
    if "invalid" in reply:
        run.outcome.status, run.outcome.reason = "invalid", reply["invalid"]
        return False
    notebook = nbformat.read(run.base / "in" / "notebook.ipynb", as_version=4)
    run.restored = Restored(notebook, reply["flags"], reply["unanswered"],
                            {int(index): gid for index, gid in reply["grade_ids"].items()}, [])
    run.flags, run.tampering = list(reply["flags"]), list(reply["tampering"])
    run.plan = {int(index): [(number, Probe(part, function)) for number, part, function in probes]
                for index, probes in reply["plan"].items()}
    return True


def _prepare_in_child(run: _Run, source) -> dict:
    """Runs in the bounded child: {'invalid': reason}, or what the parent needs of the restore
    (the restored notebook itself is written to in/notebook.ipynb)."""
    student = _read_student(run)
    if student is None:
        return {"invalid": run.outcome.reason}
    _prepare_job(run, student, source)
    restored = run.restored
    return {"flags": run.flags, "tampering": run.tampering, "unanswered": restored.unanswered,
            "grade_ids": {str(index): gid for index, gid in restored.grade_ids.items()},
            "plan": {str(index): [[number, probe.part_id, probe.function] for number, probe in probes]
                     for index, probes in run.plan.items()}}


def _read_student(run: _Run):
    """Step 1: the submission as an nbformat-4 notebook, or None (the outcome says invalid)."""
    from dlcourse.grading.selfcheck import NotebookError, read_notebook

    raw = run.base / f"{run.task.notebook_id}.ipynb"
    raw.write_bytes(run.task.data)
    try:
        return read_notebook(raw)
    except NotebookError as error:
        run.outcome.status = "invalid"
        run.outcome.reason = _one_line(str(error).replace(str(raw), run.task.display), MAX_REASON)
        return None


def _prepare_job(run: _Run, student, source) -> None:
    """Step 2: restore the notebook from the source; write the job and the probe phase's job
    (its inputs for the secret seed, the code cells to run before each graded function)."""
    import nbformat

    from dlcourse.grading.probe import Probe, write_probe_job
    from dlcourse.grading.restore import restore_notebook, scan_tampering
    from dlcourse.grading.sandbox import PROBE_DIR, available_mode

    restored = run.restored = restore_notebook(student, source)
    run.flags = list(restored.flags)
    run.tampering = scan_tampering(restored.student_code)
    run.mode = run.task.sandbox or available_mode()
    probes = {gid: [Probe(part, function) for part, function in found] for gid, found in run.task.probes.items()}
    for sub in ("in", "out", "root"):
        (run.base / sub).mkdir()
    probes_by_cell = {index: probes[gid] for index, gid in restored.grade_ids.items() if gid in probes}
    for number, index, probe in write_probe_job(run.base / "in" / PROBE_DIR, restored.notebook, probes_by_cell,
                                                run.task.seed, run.task.timeout, isolated=run.mode != "none"):
        run.plan.setdefault(index, []).append((number, probe))
    nbformat.write(restored.notebook, run.base / "in" / "notebook.ipynb")
    kernel = source.metadata.get("kernelspec", {}).get("name", "python3")
    job = {"notebook": "notebook.ipynb", "kernel_name": kernel, "timeout": run.task.timeout,
           "cell_output_cap": 100_000, "total_output_cap": 1_000_000, "startup_timeout": 60}
    (run.base / "in" / "job.json").write_text(json.dumps(job))


def _run_job(run: _Run) -> None:
    """Step 3: run the job in the sandbox; read back its status and timings."""
    from dlcourse.grading.sandbox import run_sandboxed

    base, task = run.base, run.task
    run.report = run_sandboxed(str(base / "in"), str(base / "out"), str(base / "root"), cpus=task.cpus,
                               memory_mb=task.memory_mb, cell_timeout=task.timeout,
                               total_timeout=task.total_timeout, mode=run.mode,
                               probe_dirs=sum(len(probes) for probes in run.plan.values()),
                               probe_deadline=task.total_timeout if run.plan else None)
    run.status = status = _sane_status(_load_json(base / "out" / "status.json"))
    timings = run.outcome.timings
    timings.update(sandbox_s=run.report.get("wall_s"), setup_s=run.report.get("setup_s"),
                   kernel_start_s=_num(status.get("kernel_start_s")), cells_s=_num(status.get("cells_s")),
                   probes_s=_num(run.report.get("probe_s")), executor_s=_num(status.get("total_s")))
    if timings["kernel_start_s"] is not None and timings["cells_s"] is not None:
        timings["notebook_s"] = round(timings["kernel_start_s"] + timings["cells_s"], 4)


def _map_outputs(run: _Run) -> None:
    """Step 4: outputs from the sandbox onto OUR restored cells (sources and metadata stay ours)."""
    executed = _load_json(run.base / "out" / "notebook.ipynb")
    cells = run.restored.notebook.cells
    run.readable = isinstance(executed, dict) and isinstance(executed.get("cells"), list) \
        and len(executed["cells"]) == len(cells)
    if run.readable:
        for index, (mine, theirs) in enumerate(zip(cells, executed["cells"])):
            if mine.cell_type != "code" or not isinstance(theirs, dict):
                continue
            mine.outputs = _clean_outputs(theirs.get("outputs"))
            count = theirs.get("execution_count")
            if isinstance(count, int) and not isinstance(count, bool):
                mine.execution_count = count
                run.ran.add(index)
    run.probed = bool(run.plan) and not run.report.get("error") and run.report.get("probe_error") is None
    _add_audit_notes(run)


def _add_audit_notes(run: _Run) -> None:
    """Run-time notes (imports, replaced objects) beside the static scan's, once each."""
    from dlcourse.grading.restore import audit_tampering

    audit = _load_json(run.base / "out" / "audit.json")
    notes = audit_tampering(audit, run.status.get("counts", {}), run.restored.notebook)
    if audit is None and run.status.get("finished"):
        notes.append("the grader's run-time audit record was removed")
    run.tampering.extend(note for note in notes if note not in run.tampering)


def _score(run: _Run) -> tuple[float, float, list[str]]:
    """Step 5: each graded cell's points: the source's, if it ran without error and every
    probe passed. Returns (score, points awaiting manual grading, what was lost)."""
    outcome, restored = run.outcome, run.restored
    score, manual, failures = 0.0, 0.0, []
    for index, grade_id in restored.grade_ids.items():
        if grade_id not in run.graded:
            continue
        cell, points = restored.notebook.cells[index], run.graded[grade_id][1]
        smeta = run.graded[grade_id][0].metadata.nbgrader
        if smeta.get("solution") or cell.cell_type != "code":
            unanswered = restored.unanswered.get(grade_id, False)
            outcome.grades[grade_id] = 0.0 if unanswered else None
            if not unanswered:
                manual += points
            outcome.details[grade_id] = "unanswered" if unanswered else "graded by the instructor"
            continue
        message = _test_cell_failure(run, index, cell)
        if message:
            outcome.grades[grade_id] = 0.0
            failures.append(f"{grade_id}: {_one_line(message, 1500)}")
            outcome.details[grade_id] = _one_line(message, 2000)
        else:
            earned = points if index in run.plan else _partial_credit(cell.outputs, points)
            outcome.grades[grade_id] = earned
            score += earned
            outcome.details[grade_id] = "passed"
    outcome.unanswered = {gid: restored.unanswered.get(gid, False) for gid in restored.unanswered}
    return score, manual, failures


def _test_cell_failure(run: _Run, index: int, cell) -> str:
    """Why the test cell at `index` earns nothing ("" if it earns its points); a failed hidden
    check is also shown in the cell's outputs."""
    import nbformat

    from dlcourse.grading.bounded import LimitExceeded

    error = _error_of(cell)
    if index not in run.ran:
        return "not run (the notebook stopped before this cell)"
    if error:
        return error
    if not run.plan.get(index):
        return ""
    try:
        failed = run.bounded(_judge_cell, run, index, what="the grader's check of your results")
    except LimitExceeded as breach:
        run.breaches.append(breach)
        return f"hidden check stopped: {breach}"
    if failed is None:
        return ""
    message = _one_line(failed, 500)
    cell.outputs.append(nbformat.v4.new_output(
        "error", ename=HIDDEN_CHECK_ENAME, evalue=message,
        traceback=[f"{HIDDEN_CHECK_ENAME}: {message}",
                   "(the grader called your function on inputs you have not seen and "
                   "compared the results outside your notebook)"]))
    if "passed in the notebook" not in " ".join(run.flags):
        run.flags.append("a test cell passed in the notebook but failed the grader's re-check")
    return "hidden check failed: " + failed


def _judge_cell(run: _Run, index: int) -> str | None:
    """Runs in the bounded child: the first failed verdict's message of the cell's probes, or None."""
    from dlcourse.grading.probe import judge

    for number, probe in run.plan[index]:
        folder = run.base / "out" / "probe" / f"p{number}"
        verdict = judge(probe.part_id, probe.function, folder if run.probed else None, run.task.seed)
        if not verdict.passed:
            return verdict.message
    return None


def _status_head(run: _Run) -> tuple[str, str]:
    """(status, what went wrong in the run as a whole; "" when nothing did)."""
    report, status, task = run.report, run.status, run.task
    if report.get("error"):
        run.flags.append(GRADER_ERROR)
        return "crashed", report["error"]
    if run.breaches:
        run.flags.extend(flag for breach in run.breaches for flag in _breach_flags(breach))
        return "crashed", f"{run.breaches[0]} (a limit of the grader; see docs/grading-security.md)"
    if report.get("killed_at_deadline") or report.get("hard_killed"):
        return "timeout", f"the notebook ran longer than {task.total_timeout} s in all and was stopped"
    if report.get("probe_error"):
        if "longer than" in report["probe_error"]:
            return "timeout", report["probe_error"]
        run.flags.append(GRADER_ERROR)
        return "crashed", report["probe_error"]
    if status.get("dead_kernel_cell") == -1:
        # no line of the notebook has run yet: a busy machine or our own failure
        run.flags.append(GRADER_ERROR)
        return "crashed", "the kernel died while starting, before any cell ran; the next run grades it again"
    if status.get("dead_kernel_cell") is not None:
        where = _cell_label(status["dead_kernel_cell"], run.restored.grade_ids)
        exit_code = status.get("kernel_exit")
        how = (f"killed by signal {-exit_code}" if isinstance(exit_code, int) and exit_code < 0 else
               f"exit status {exit_code}" if isinstance(exit_code, int) else "it exited")
        head = f"the kernel died in {where} ({how}: os._exit, a signal or running out of memory)"
        if exit_code == "shutdown":
            head = f"the kernel died in {where}: the notebook shut it down (exit(), quit() or a kernel shutdown)"
        return "crashed", head + "; the rest of the notebook did not run"
    if status.get("executor_error"):
        return "crashed", "the kernel could not run the notebook: " + _one_line(status["executor_error"], 200)
    if not run.readable:
        return "crashed", "the run left no readable record" + (
            f" (executor exit status {report.get('executor_exit')})" if report.get("executor_exit") else "")
    if status.get("timeouts"):
        where = ", ".join(_cell_label(i, run.restored.grade_ids) for i in status["timeouts"][:3])
        head = f"{where} ran longer than {task.timeout} s and was interrupted"
        if status.get("unresponsive_cell") is not None:
            head += "; the kernel did not recover, the rest of the notebook did not run"
        return "timeout", head
    return "graded", ""


def _decide_status(run: _Run, score: float, manual: float, failures: list[str]) -> None:
    """Step 6: the status, the one-line reason and the flags."""
    outcome = run.outcome
    outcome.status, head = _status_head(run)
    if run.status.get("truncated"):
        run.flags.append(f"output truncated in {len(run.status['truncated'])} cell(s)")
    outcome.score = round(score, 6)
    pieces = [head] if head else []
    pieces.append(f"{outcome.score:g} of {run.task.max_score:g} points")
    if manual:
        pieces.append(f"{manual:g} awaiting manual grading")
    if run.tampering:   # before the list of lost parts, which can be long
        pieces.append("tampering suspected: " + ", ".join(run.tampering))
    if failures:
        pieces.append("lost: " + "; ".join(failures[:4]) + ("; …" if len(failures) > 4 else ""))
    notes = [f for f in run.flags if f != GRADER_ERROR]
    if notes:
        pieces.append("notes: " + "; ".join(notes[:6]) + ("; …" if len(notes) > 6 else ""))
    outcome.reason = _one_line(" — ".join(pieces[:1]) + ("; " if len(pieces) > 1 else "")
                               + "; ".join(pieces[1:]), MAX_REASON)
    outcome.flags = run.flags + [f"tampering: {t}" for t in run.tampering]


def _sane_status(raw) -> dict:
    """The executor's status.json, written next to student code: keep only well-typed fields."""
    raw = raw if isinstance(raw, dict) else {}

    def integer(value):
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def integers(value):
        return [v for v in value if integer(v) is not None][:100] if isinstance(value, list) else []

    exit_code = raw.get("kernel_exit")
    counts = raw.get("counts") if isinstance(raw.get("counts"), dict) else {}
    return {"timeouts": integers(raw.get("timeouts")), "finished": raw.get("finished") is True,
            "counts": {str(k)[:8]: integer(v) for k, v in list(counts.items())[:2000]},
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

def _students(root: Path, gradebook, stderr) -> list[str]:
    """Every student with a folder in submitted/ or a place in the gradebook; folders whose
    names are not student ids are named on stderr and left alone."""
    from dlcourse.grading.course import NOT_A_STUDENT_ID, submitted_students

    names, passed_over = submitted_students(root)
    for name in passed_over:
        print(f"note: submitted/{name} is not graded: {NOT_A_STUDENT_ID}; rename the folder", file=stderr)
    return sorted(set(names) | {student.id for student in gradebook.students})


def _direct_outcome(task: GradeTask, state: dict) -> GradeOutcome:
    """missing / invalid found by the parent itself: no worker needed."""
    return GradeOutcome.of(task).fail(state["state"], state["reason"], task.grade_ids)


def _line(row) -> dict:
    """The JSON line (and summary row) of an outcome or a stored outcome row."""
    return {key: row[key] for key in ("student", "assignment", "score", "max_score", "status", "reason")}


def _warm() -> int:
    return os.getpid()


class _Runner:
    """Where the work goes: a local process pool, a Dask cluster, or in-process (workers=0)."""

    def __init__(self, options: GradeOptions):
        self.options = options
        self.pool = self.client = None

    def __enter__(self):
        if self.options.scheduler:
            self.client = self._dask_client(self.options.scheduler)
        elif (self.options.workers or 0) > 0 or self.options.workers is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # what a worker needs, imported once here and inherited by fork
            import dlcourse.grading.probe  # noqa: F401
            import dlcourse.grading.restore  # noqa: F401
            import dlcourse.grading.sandbox  # noqa: F401
            import dlcourse.grading.selfcheck  # noqa: F401
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self.pool = ProcessPoolExecutor(max_workers=self.options.worker_count, mp_context=context)
        return self

    @staticmethod
    def _dask_client(address: str):
        from dlcourse.grading.course import CourseError
        try:
            from distributed import Client
        except ImportError:
            raise CourseError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
        try:
            return Client(address, timeout=30)
        except Exception as error:
            raise CourseError(f"cannot reach the Dask scheduler {address}: {error}") from None

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

    def run(self, tasks: list[GradeTask]):
        """Yield (task, outcome) as they finish; tasks and outcomes travel as plain dicts."""
        if self.client is not None:
            from distributed import as_completed
            futures = {self.client.submit(grade_submission, task.to_dict(), pure=False,
                                          key=f"grade-{task.student}-{secrets.token_hex(4)}"): task
                       for task in tasks}
        elif self.pool is not None:
            from concurrent.futures import as_completed
            futures = {self.pool.submit(grade_submission, task.to_dict()): task for task in tasks}
        else:
            for task in tasks:
                yield task, GradeOutcome.from_dict(grade_submission(task))
            return
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                yield task, GradeOutcome.from_dict(future.result())
            except Exception as error:
                yield task, self._failed(task, error)

    @staticmethod
    def _failed(task: GradeTask, error: Exception) -> GradeOutcome:
        return GradeOutcome.of(task).fail("crashed", f"the grading worker failed: {type(error).__name__}: {error}",
                                          task.grade_ids, grader_error=True)


def _summary(rows: list[dict], stream, elapsed: float, processed: int, skipped: int) -> None:
    if not rows:
        print("no submissions", file=stream)
        return
    width = max(7, *(len(r["student"]) for r in rows))
    print(f"{'student':<{width}}  {'status':<8}  {'score':>11}  reason", file=stream)
    print(f"{'-' * width}  {'-' * 8}  {'-' * 11}  {'-' * 6}", file=stream)
    for row in sorted(rows, key=lambda r: r["student"]):
        score = f"{row['score']:g}/{row['max_score']:g}"
        print(f"{row['student']:<{width}}  {row['status']:<8}  {score:>11}  {_one_line(row['reason'], TABLE_REASON)}",
              file=stream)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    print("", file=stream)
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) +
          f" — {processed} processed in this run, {skipped} already graded; {elapsed:.1f} s", file=stream)


@dataclass
class _Assignment:
    """The assignment as the parent reads it once: its source notebook and its hidden probes."""
    root: Path
    name: str
    source_path: Path
    source_text: str
    source: object                    # nbformat.NotebookNode
    probes: dict                      # grade_id -> [probe.Probe]

    @property
    def notebook_id(self) -> str:
        return self.source_path.stem

    @property
    def grade_ids(self) -> list[str]:
        return list(_graded_cells(self.source))

    @property
    def max_score(self) -> float:
        return sum(float(c.metadata["nbgrader"].get("points", 0)) for c in self.source.cells
                   if c.get("metadata", {}).get("nbgrader", {}).get("grade"))

    @classmethod
    def read(cls, root: Path, name: str) -> "_Assignment":
        """The source notebook; every probe it names must be a known part (CourseError if not)."""
        import nbformat

        from dlcourse.checks import get_part
        from dlcourse.grading.course import CourseError
        from dlcourse.grading.probe import find_probes

        source_path = source_notebook(root, name)
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
        return cls(root, name, source_path, source_text, source, probes)

    def task(self, student: str, state: dict, options: GradeOptions) -> GradeTask:
        return GradeTask(student=student, assignment=self.name, notebook_id=self.notebook_id,
                         display=state["display"], data=state["data"], sha256=state["sha256"],
                         source_sha256=_sha256(self.source_text.encode()), timestamp_text=state["timestamp_text"],
                         source=self.source_text, seed=secrets.randbits(62), timeout=int(options.timeout),
                         total_timeout=options.notebook_timeout, memory_mb=int(options.memory_mb),
                         sandbox=options.sandbox, cpus=options.sandbox_cpus, max_score=self.max_score, grade_ids=self.grade_ids,
                         probes={gid: [[p.part_id, p.function] for p in found] for gid, found in self.probes.items()})


@dataclass
class _Console:
    """Where the run reports: JSON lines on stdout (--json), the summary table at the end."""
    options: GradeOptions
    stdout: object
    stderr: object
    started: float
    lines: dict = field(default_factory=dict)     # student -> their line

    def emit(self, line: dict, quiet: bool = False) -> None:
        self.lines[line["student"]] = line
        if self.options.json and not quiet:
            print(json.dumps(line), file=self.stdout, flush=True)

    def summary(self, processed: int, skipped: int) -> None:
        _summary(list(self.lines.values()), self.stderr if self.options.json else self.stdout,
                 time.monotonic() - self.started, processed, skipped)


def grade_assignment(root: Path, assignment: str, options: GradeOptions, stdout=None, stderr=None) -> int:
    """Grade every submission of `assignment`; 0 when every one got an outcome."""
    console = _Console(options, stdout or sys.stdout, stderr or sys.stderr, time.monotonic())
    root = Path(root).resolve()
    course = _Assignment.read(root, assignment)
    # the workers start now, forked from this process with everything they need imported,
    # before any database connection or thread exists here; they warm up while this process
    # checks the sandbox and reads the gradebook
    runner = _Runner(options)
    if (root / "submitted").is_dir() and any((root / "submitted").iterdir()):
        runner.__enter__()
        runner.warm_up()
    try:
        code = _grade_all(course, options, runner, console)
    except BaseException:
        runner.__exit__(*sys.exc_info())   # Ctrl-C or an error: do not wait for running notebooks
        raise
    runner.__exit__(None, None, None)
    return code


def _open_course_gradebook(course: _Assignment, options: GradeOptions, console: _Console):
    """Check the sandbox, register the assignment, and open the gradebook."""
    from dlcourse.grading.course import CourseError
    from dlcourse.grading.gradebook import absolute_db_url, course_settings, ensure_assignment, open_gradebook

    course_id, default_url = course_settings(course.root)
    db_url = absolute_db_url(options.db_url, Path.cwd()) if options.db_url else default_url
    if not options.scheduler:  # a Dask cluster's machines are checked by their own workers
        from dlcourse.grading.sandbox import preflight
        from dlcourse.grading.cgroups import unavailable_note
        problem = preflight(options.sandbox)
        if problem:
            raise CourseError(f"{problem} (see docs/grading-security.md; --sandbox none grades without isolation)")
        if unavailable_note():
            print(f"note: {unavailable_note()} (see docs/grading-security.md)", file=console.stderr)
    ensure_assignment(course.root, course.name, course.notebook_id, course.source, db_url, course_id)
    return open_gradebook(db_url, course_id)


def _sort_students(course: _Assignment, options: GradeOptions, gradebook, console: _Console):
    """Each student: already graded (their stored line), for a worker, or decided here.
    Returns (tasks for workers, [(task, state)] decided here, how many were already graded,
    every student)."""
    from dlcourse.grading.gradebook import stored_outcomes

    stored = stored_outcomes(gradebook, course.name)
    todo, direct, skipped = [], [], 0
    source_sha = _sha256(course.source_text.encode())
    students = _students(course.root, gradebook, console.stderr)
    for student in students:
        state = read_submission(course.root, student, course.name, course.notebook_id)
        previous = stored.get(student)
        if previous and not options.force and previous["sha256"] == state["sha256"] \
                and (previous["source_sha256"] == source_sha or state["state"] == "missing") \
                and GRADER_ERROR not in json.loads(previous["flags"] or "[]"):
            console.emit(_line(previous), quiet=True)
            skipped += 1
        elif state["state"] == "ok":
            todo.append(course.task(student, state, options))
        else:
            direct.append((course.task(student, state, options), state))
    return todo, direct, skipped, students


def _grade_all(course: _Assignment, options: GradeOptions, runner: _Runner, console: _Console) -> int:
    from tqdm import tqdm

    from dlcourse.grading.gradebook import record_result

    gradebook = _open_course_gradebook(course, options, console)
    try:
        todo, direct, skipped, students = _sort_students(course, options, gradebook, console)
        if options.json:
            for student in sorted(console.lines):
                print(json.dumps(console.lines[student]), file=console.stdout, flush=True)
        bar = tqdm(total=len(todo) + len(direct), file=console.stderr, unit="submission",
                   desc=f"grading {course.name}", leave=False,
                   disable=(not options.progress) if options.progress is not None else None)

        def record(outcome: GradeOutcome) -> None:
            result = outcome.to_dict()
            record_result(gradebook, course.root, result)
            console.emit(_line(result))
            bar.update(1)

        for task, state in direct:
            record(_direct_outcome(task, state))
        if todo:
            if runner.pool is None and runner.client is None:
                runner.__enter__()
            for _, outcome in runner.run(todo):
                record(outcome)
        bar.close()
    finally:
        gradebook.close()
    console.summary(len(todo) + len(direct), skipped)
    return 0 if all(student in console.lines for student in students) else 1
