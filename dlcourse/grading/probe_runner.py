"""The probe phase: call each graded function on the grader's inputs, in a process of its own.

Runs INSIDE the sandbox after the notebook (see sandbox.py), as the unprivileged grading
user, started as a script (``python -I probe_runner.py probe/job.json``). The notebook's
kernel is gone by then: nothing the student's code captured, patched or cached there exists
here. The job (written by the grader, never seen by the notebook run) holds the student's own
code cells and the setup cells, IPython syntax already turned into Python, and for each
probe the part id, the function's name, where its inputs are, which cells precede its test
cell, and what the part forbids.

1. The runner imports the whole `dlcourse` package (never its answer key, which is not in
   the sandbox), reads every probe's inputs into memory and deletes them from the work
   directory, then prints ``ready`` and waits for ``go``: meanwhile the sandbox hides the
   package's directory (and torch's) from the file system, so no source file can be read and
   executed later;
2. for each probe it empties the work directory and forks a child which keeps only its own
   probe's inputs, builds from-seed cases, installs the guard (`guard.install`: the part's
   forbidden mechanics replaced by stand-ins everywhere, originals garbage-collected), then
   executes the cells that precede the part's test cell and calls the function on every case,
   saving ONLY plain data (JSON, ``.npy`` without pickles) into the work directory;
3. after each child the runner kills every process left (``kill(-1)``: it is the only other
   process of its uid in the sandbox's PID namespace), reads the child's results into memory
   with size caps, and at the end writes them to ``probe/out/p<k>/``, where the sandbox's
   copy-out and the grader's `probe.judge` find them.

Everything written here is still untrusted: the grader reads it with ``allow_pickle=False``,
caps and checks it, and decides verdicts in its own process with arguments it draws itself.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time

__all__ = ["main", "run_unsandboxed", "save_result", "load_args", "execute_cells"]

MAX_RESULT_BYTES = 64 * 1024 * 1024
MAX_RESULT_FILES = 200


def load_args(spec, indir: str):
    """A probe input spec (written by probe.write_inputs) as Python values; arrays from .npy."""
    import numpy

    if "npy" in spec:
        value = numpy.load(os.path.join(indir, spec["npy"]), allow_pickle=False)
        return value[()] if spec.get("scalar") else value
    if "tuple" in spec:
        return tuple(load_args(s, indir) for s in spec["tuple"])
    if "list" in spec:
        return [load_args(s, indir) for s in spec["list"]]
    return spec["json"]


def save_result(value, outdir: str, stem: str, counter: list, depth: int = 0):
    """Plain data only: JSON scalars, arrays as .npy (no pickles), tuples/lists/str-keyed dicts."""
    import numpy

    if depth > 8:
        raise TypeError("the returned value is nested too deeply")
    if value is None or type(value) in (bool, int, float, str):
        return {"json": value}
    if isinstance(value, (numpy.ndarray, numpy.generic)):
        array = numpy.asarray(value)
        if array.dtype.hasobject:
            raise TypeError("returned an array of Python objects, not numbers")
        counter[0] += 1
        name = f"{stem}_{counter[0]}.npy"
        numpy.save(os.path.join(outdir, name), array, allow_pickle=False)
        return {"npy": name, "scalar": isinstance(value, numpy.generic)}
    if type(value) in (tuple, list):
        return {type(value).__name__: [save_result(v, outdir, stem, counter, depth + 1) for v in value]}
    # dict subclasses too: state_dict() returns an OrderedDict
    if isinstance(value, dict) and all(type(k) is str for k in value):
        return {"dict": {k: save_result(v, outdir, stem, counter, depth + 1) for k, v in value.items()}}
    raise TypeError("returned a " + type(value).__name__ + ", not numbers or arrays")


class _Quiet:
    """What IPython-only names do outside IPython: nothing (``%matplotlib``, ``!pip``, display)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class CellTimeout(BaseException):
    """A cell ran past its budget (a BaseException, so that `except Exception` does not hide it)."""


def _on_alarm(signum, frame):
    raise CellTimeout("the cell ran past its time budget")


def execute_cells(cells: list[str], seconds: float | None = None) -> tuple[dict, list[str]]:
    """Run code cells in order in a fresh __main__ namespace, like a notebook that goes on
    after an error, each interrupted after `seconds`; (namespace, each cell's first error line)."""
    import builtins

    quiet = _Quiet()
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": lambda: quiet,
                 "display": lambda *args, **kwargs: None}
    errors = []
    signal.signal(signal.SIGALRM, _on_alarm)
    for number, source in enumerate(cells, start=1):
        try:
            if seconds:
                signal.setitimer(signal.ITIMER_REAL, seconds)
            exec(compile(source, f"<cell {number}>", "exec"), namespace)
        except BaseException as error:   # SystemExit too: a cell cannot end the probe
            errors.append(f"cell {number}: {type(error).__name__}: {str(error)[:200]}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return namespace, errors


def _import_package() -> None:
    """Every dlcourse module, so that nothing is read from disk once the package is hidden."""
    import importlib
    import pkgutil

    import dlcourse
    for module in pkgutil.walk_packages(dlcourse.__path__, "dlcourse."):
        if module.name.startswith(("dlcourse.answers", "dlcourse.grading", "dlcourse.cli")):
            continue
        importlib.import_module(module.name)
    importlib.import_module("dlcourse.grading.guard")


def _read_inputs(probe: dict, probe_root: str):
    """('cases', [args, ...]) from .npy/.json, or ('seed', (part, seed)) for object arguments."""
    indir = os.path.join(probe_root, probe["inputs"])
    recipe = os.path.join(indir, "from_seed.json")
    if os.path.exists(recipe):
        with open(recipe) as handle:
            data = json.load(handle)
        return ("seed", (data["part"], int(data["seed"])))
    cases = []
    for case in range(int(probe["count"])):
        with open(os.path.join(indir, f"c{case}.json")) as handle:
            spec = json.load(handle)
        cases.append([load_args(s, indir) for s in spec["args"]])
    return ("cases", cases)


def _skipped_cells(probe_root: str) -> list[int]:
    """Notebook cells that timed out in the notebook run (written by the sandbox's setup step
    from that run's status): running them again would only spend each probe's time."""
    try:
        with open(os.path.join(probe_root, "skip.json")) as handle:
            cells = json.load(handle).get("cells", [])
        return [c for c in cells if isinstance(c, int)]
    except (OSError, ValueError, AttributeError):
        return []


def _empty(folder: str) -> None:
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _run_child(probe: dict, all_inputs: list, index: int, cells: list[str], outdir: str) -> None:
    """In the forked child: never returns. Keeps only its own probe's inputs in memory, so
    that the student's code cannot find another part's arguments (or seed) through gc."""
    import gc

    try:
        os.setpgid(0, 0)
        inputs = all_inputs[index]
        all_inputs[:] = [None] * len(all_inputs)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.makedirs(outdir, exist_ok=True)
        if inputs[0] == "seed":
            from dlcourse.checks import cases
            all_cases = [list(args) for args in cases(*inputs[1])]
        else:
            all_cases = inputs[1]
        inputs = None
        gc.collect()
        from dlcourse.checks import get_part
        from dlcourse.grading import guard
        # fetched before any student code runs (a part whose graded object is a class has an
        # adapter that drives it); what it returns is judged by the grader all the same
        call = get_part(probe["part"]).call
        guard.install(tuple(probe["forbids"]), probe["function"], probe["asks"])
        seconds = float(probe["timeout"])
        namespace, cell_errors = execute_cells(cells, seconds)
        function = namespace.get(probe["function"])
        signal.setitimer(signal.ITIMER_REAL, seconds)   # one budget for all the cases
        for number, args in enumerate(all_cases):
            try:
                if not callable(function):
                    hint = f" (the grader's run of your code cells: {cell_errors[0]})" if cell_errors else ""
                    raise NameError(f"{probe['function']} is not defined (or not a function){hint}")
                record = {"result": save_result(call(function, args), outdir, f"c{number}", [0])}
            except BaseException as error:
                record = {"error": (type(error).__name__ + ": " + str(error))[:2000]}
            with open(os.path.join(outdir, f"c{number}.json"), "w") as handle:
                json.dump(record, handle)
    finally:
        os._exit(0)


def _collect(outdir: str) -> dict[str, bytes]:
    """The child's result files (names and bytes), never following links, size-capped."""
    import stat

    found, total = {}, 0
    if not os.path.isdir(outdir):
        return found
    for name in sorted(os.listdir(outdir))[:MAX_RESULT_FILES]:
        if not (name.endswith(".json") or name.endswith(".npy")) or name.startswith("."):
            continue
        try:
            fd = os.open(os.path.join(outdir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = handle.read(MAX_RESULT_BYTES + 1)
        total += len(data)
        if len(data) > MAX_RESULT_BYTES or total > 4 * MAX_RESULT_BYTES:
            break
        found[name] = data
    return found


def _kill_leftovers(pid: int, isolated: bool) -> None:
    """What the child left running (its descendants, daemons): SIGKILL.

    In the sandbox (`isolated`) that is every other process this uid can signal — the PID
    namespace holds only this runner, its children and the sandbox's PID 1, which is root.
    Without a sandbox only the child's process group can be reached."""
    try:
        if isolated:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _wait(pid: int, seconds: float) -> bool:
    """Wait for the child; False (and the child killed) past the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    work = os.getcwd()
    with open(argv[0]) as handle:
        job = json.load(handle)
    probe_root = os.path.dirname(os.path.abspath(argv[0]))
    _import_package()
    inputs = [_read_inputs(probe, probe_root) for probe in job["probes"]]
    _empty(work)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    results: list[dict[str, bytes]] = []
    scratch = os.path.join(work, "out")
    skipped = set(_skipped_cells(probe_root))
    for index, probe in enumerate(job["probes"]):
        # the cells before this part's test cell, less those the notebook run had to interrupt
        cells = [source for source, position in zip(job["cells"], job["positions"])
                 if position < probe["test_cell"] and position not in skipped]
        _empty(work)
        pid = os.fork()
        if pid == 0:
            _run_child(probe, inputs, index, cells, scratch)
        finished = _wait(pid, float(probe["timeout"]) * (len(cells) + 1) + 5)
        _kill_leftovers(pid, bool(job.get("isolated")))
        found = _collect(scratch)
        if not finished:
            found = {"c0.json": json.dumps({"error": f"TimeoutError: the grader's call of {probe['function']} "
                                                     f"ran longer than {probe['timeout']:g} s"}).encode()}
        results.append(found)
    _empty(work)
    for probe, found in zip(job["probes"], results):
        folder = os.path.join(work, "probe", "out", probe["name"])
        os.makedirs(folder, exist_ok=True)
        for name, data in found.items():
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(data)
    return 0


def run_unsandboxed(work, job, deadline: float):
    """Run the probe job `job` (a path under `work`) in a child process WITHOUT a sandbox, as
    `dlcourse check` and the tests do: the guard holds, nothing is hidden from the file
    system. Returns the folder of the results (``work/probe/out``)."""
    import subprocess
    from pathlib import Path

    work, job = Path(work), Path(job)
    process = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(job.relative_to(work))],
                               cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        process.communicate(b"go\n", timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return work / "probe" / "out"


if __name__ == "__main__":
    sys.exit(main())
