"""Verdicts that student code cannot forge.

A hidden test cell calls ``check("<part id>", <function>)``. Whatever that call says inside
the kernel can be faked by the student's code (patched ``numpy.testing``, an IPython input
transformer that blanks later cells, replaced builtins, a no-op ``dlcourse.checks.check``).
So the grader does not believe it alone:

1. :func:`find_probes` reads the SOURCE test cells (``ast``) for ``check("id", name)`` calls;
2. :func:`write_inputs` draws each part's argument tuples with ``dlcourse.checks.cases``
   and a fresh secret seed per submission and writes them as plain data (JSON + ``.npy``);
3. inside the sandbox, after the notebook ran and its kernel is gone, the probe phase
   (:func:`write_probe_job`, ``probe_runner.py``) runs the student's code cells again in a
   fresh process per part, where the part's forbidden mechanics are absent (``guard.py``),
   calls the student's function by name on those arguments and saves ONLY plain returned
   data (``np.save(..., allow_pickle=False)``, JSON; anything else is a failure);
4. back in the grader's own process, :func:`judge` loads them (``allow_pickle=False``, size
   capped, structure checked) and asks ``dlcourse.checks.verdict`` — where student code
   cannot reach — with arguments the grader draws again itself.

A test cell earns its points only if it ran without error AND every probe of it passed,
so tampering can only lower a score. Nothing produced in the sandbox is unpickled.
"""
from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Probe", "find_probes", "write_inputs", "write_probe_job", "judge", "PartVerdict",
           "MAX_NPY_BYTES", "MAX_JSON_BYTES"]

MAX_NPY_BYTES = 64 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
MAX_DEPTH = 8
MAX_ITEMS = 1000


@dataclass(frozen=True)
class Probe:
    part_id: str
    function: str


def _cell_python(source: str) -> str:
    """IPython syntax (magics, `!`) turned into plain Python so that ast can read it."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython missing or confused: fall back to the raw text
        return source


def find_probes(source_notebook) -> dict[str, list[Probe]]:
    """grade_id -> the check() calls of that autograded test cell, in order."""
    found: dict[str, list[Probe]] = {}
    for cell in source_notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or not meta.get("grade_id"):
            continue
        try:
            tree = ast.parse(_cell_python(cell.source))
        except SyntaxError as error:
            raise ValueError(f"test cell {meta['grade_id']} of the source is not valid Python: {error}") from None
        probes = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            first, second = node.args[0], node.args[1]
            if name == "check" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                if not isinstance(second, ast.Name):
                    raise ValueError(f"test cell {meta['grade_id']}: check({first.value!r}, …) must name the "
                                     "student's function directly so that the grader can call it")
                probe = Probe(first.value, second.id)
                if probe not in probes:
                    probes.append(probe)
        if probes:
            found[meta["grade_id"]] = probes
    return found


# --- the grader writes the arguments ------------------------------------------------------

def _encode_arg(value, folder: Path, stem: str, counter: list) -> dict:
    if isinstance(value, (np.ndarray, np.generic)):
        counter[0] += 1
        name = f"{stem}_{counter[0]}.npy"
        np.save(folder / name, np.asarray(value), allow_pickle=False)
        return {"npy": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, tuple):
        return {"tuple": [_encode_arg(v, folder, stem, counter) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode_arg(v, folder, stem, counter) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"json": value}
    raise TypeError(f"cannot pass a {type(value).__name__} to a probe")


def write_inputs(folder: Path, part_id: str, seed: int) -> int:
    """Write the part's argument tuples for `seed` into `folder` (c<k>.json + .npy); return the count."""
    from dlcourse.checks import cases

    folder.mkdir(parents=True, exist_ok=True)
    all_cases = cases(part_id, seed)
    try:
        specs = []
        for number, args in enumerate(all_cases):
            counter = [0]
            specs.append({"args": [_encode_arg(a, folder, f"c{number}a", counter) for a in args]})
    except TypeError:
        # Some arguments are objects (a function to differentiate, a model to step): the
        # kernel rebuilds the cases from the seed with dlcourse.checks instead. The verdict
        # is still decided here, on cases the grader draws itself; the seed is then visible
        # inside the kernel (see docs/grading-security.md).
        (folder / "from_seed.json").write_text(json.dumps({"part": part_id, "seed": seed}))
        return len(all_cases)
    for number, spec in enumerate(specs):
        (folder / f"c{number}.json").write_text(json.dumps(spec))
    return len(all_cases)


# --- the probe phase's job ---------------------------------------------------------------

def _is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def write_probe_job(folder: Path, notebook, probes_by_cell: dict[int, list[Probe]], seed: int,
                    timeout: float, isolated: bool) -> list[tuple[int, int, Probe]]:
    """Write the probe phase's job into `folder` (the sandbox input's ``probe/``): each probe's
    inputs in ``p<k>/`` and ``job.json`` with the code cells to run before calling it.

    `probes_by_cell` maps a test cell's index in the restored `notebook` to its probes. The
    cells are the notebook's code cells that are not tests (setup cells, the student's
    answers and helpers), IPython syntax turned into Python; a probe runs those that come
    before its test cell, as the notebook would have. Returns (k, cell index, probe)."""
    from dlcourse.checks import get_part

    folder.mkdir(parents=True, exist_ok=True)
    cells, positions = [], []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and not _is_test_cell(cell):
            cells.append(_cell_python(cell.source))
            positions.append(index)
    plan, job_probes = [], []
    for index in sorted(probes_by_cell):
        for probe in probes_by_cell[index]:
            number = len(plan)
            count = write_inputs(folder / f"p{number}", probe.part_id, seed)
            part = get_part(probe.part_id)
            job_probes.append({"name": f"p{number}", "inputs": f"p{number}", "part": probe.part_id,
                               "function": probe.function, "count": count, "timeout": float(timeout),
                               "test_cell": index, "forbids": list(part.all_forbidden), "asks": part.asks})
            plan.append((number, index, probe))
    (folder / "job.json").write_text(json.dumps({"cells": cells, "positions": positions, "probes": job_probes,
                                                 "isolated": isolated}))
    return plan


# --- the grader decides -------------------------------------------------------------------

class _Untrusted(Exception):
    pass


def _read_bytes(path: Path, limit: int) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise _Untrusted(f"no result ({error.strerror})") from None
    try:
        import stat
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Untrusted("the result is not a regular file")
        if info.st_size > limit:
            raise _Untrusted(f"the result is larger than {limit // (1024 * 1024)} MB")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise _Untrusted("the result is too large")
        return data
    finally:
        os.close(fd)


def _decode(spec, folder: Path, budget: list, depth: int = 0):
    """Plain data only: JSON scalars, .npy without pickles, tuples/lists/dicts of them."""
    if depth > MAX_DEPTH:
        raise _Untrusted("the returned value is nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise _Untrusted("the returned value has too many parts")
    if not isinstance(spec, dict) or len(spec) not in (1, 2):
        raise _Untrusted("malformed result")
    if "json" in spec:
        value = spec["json"]
        if value is not None and type(value) not in (bool, int, float, str):
            raise _Untrusted("malformed result")
        return value
    if "npy" in spec:
        name = spec["npy"]
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not name.endswith(".npy"):
            raise _Untrusted("malformed result")
        import io
        raw = _read_bytes(folder / name, MAX_NPY_BYTES)
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as error:
            raise _Untrusted(f"unreadable array ({type(error).__name__})") from None
        if not isinstance(array, np.ndarray):
            raise _Untrusted("malformed result")
        return array[()] if spec.get("scalar") is True else array
    for kind in ("tuple", "list"):
        if kind in spec:
            items = spec[kind]
            if not isinstance(items, list):
                raise _Untrusted("malformed result")
            values = [_decode(item, folder, budget, depth + 1) for item in items]
            return tuple(values) if kind == "tuple" else values
    if "dict" in spec and isinstance(spec["dict"], dict):
        return {str(k): _decode(v, folder, budget, depth + 1) for k, v in spec["dict"].items()}
    raise _Untrusted("malformed result")


@dataclass
class PartVerdict:
    part_id: str
    function: str
    passed: bool
    message: str = ""
    cases: int = 0


def judge(part_id: str, function: str, folder: Path | None, seed: int) -> PartVerdict:
    """Decide one part from the probe's saved results in `folder` (None: the probe never ran)."""
    from dlcourse.checks import CheckFailure, cases, verdict

    all_cases = cases(part_id, seed)
    result = PartVerdict(part_id, function, False, cases=len(all_cases))
    if folder is None or not folder.is_dir():
        result.message = f"{function}: the hidden check did not run"
        return result
    for number, args in enumerate(all_cases):
        where = f"{function}, hidden case {number + 1} of {len(all_cases)}"
        try:
            record = json.loads(_read_bytes(folder / f"c{number}.json", MAX_JSON_BYTES).decode("utf-8"))
            if not isinstance(record, dict):
                raise _Untrusted("malformed result")
            if "error" in record:
                result.message = f"{where}: raised {str(record['error'])[:300]}"
                return result
            if "result" not in record:
                raise _Untrusted("malformed result")
            got = _decode(record["result"], folder, [MAX_ITEMS])
        except _Untrusted as error:
            result.message = f"{where}: {error}"
            return result
        except (ValueError, UnicodeDecodeError):
            result.message = f"{where}: malformed result"
            return result
        try:
            verdict(part_id, args, got)
        except CheckFailure as failure:
            result.message = f"{where}: {str(failure)[:300]}"
            return result
        except Exception as error:  # the comparison itself choked on what came back
            result.message = f"{where}: returned a value that cannot be compared ({type(error).__name__})"
            return result
    result.passed = True
    return result
