"""`dlcourse check NOTEBOOK`: run a notebook's visible tests and show what they say, part by part.

A student runs it from a terminal (`dlcourse check exercises/ch07-regularization/ch07-regularization.ipynb`)
or from the notebook's last cell (`from dlcourse.grading.selfcheck import self_check; self_check()`).
The notebook is executed in a fresh kernel on a temporary copy; the file itself is never
changed. A cell that runs too long is interrupted and reported; the other parts still are.
Hidden tests are not in a student's notebook: they run at grading time. What the check can
already tell is whether a graded function uses a library implementation of the mechanic its
part asks for (`Part.forbids`): the same probe process as the grader's, without the sandbox,
calls each function once with the guard installed (probe_runner.py, guard.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["PartResult", "NotebookError", "read_notebook", "run_visible_tests", "format_table", "self_check"]


class NotebookError(Exception):
    """The notebook cannot be read or run; the message says what to do."""


TIMEOUT_ENAME = "CellTimeoutError"
UNANSWERED = "YOUR ANSWER HERE"


@dataclass
class PartResult:
    grade_id: str
    points: float
    kind: str        # "autograded" or "written"
    passed: bool | None  # None for written answers (graded by the instructor)
    message: str = ""


def read_notebook(path) -> nbformat.NotebookNode:
    """Read and validate a notebook (nbformat 4), with one-line errors for the usual breakage."""
    path = Path(path)
    if not path.exists():
        raise NotebookError(f"{path} does not exist")
    if path.is_symlink() or not path.is_file():
        raise NotebookError(f"{path} is not a regular file")
    raw = path.read_bytes()
    if not raw.strip():
        raise NotebookError(f"{path} is empty: save the notebook in JupyterLab (Ctrl+S) and try again")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotebookError(f"{path} is not text (binary data); it is not a notebook") from None
    except json.JSONDecodeError as error:
        raise NotebookError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}); "
                            "restore it from a checkpoint or download a fresh copy") from None
    if not isinstance(data, dict) or data.get("nbformat") != 4:
        version = data.get("nbformat") if isinstance(data, dict) else None
        raise NotebookError(f"{path} is nbformat {version}, not 4; open and save it in JupyterLab to upgrade it")
    if re.search(rb"\\u[dD][89a-fA-F]", raw) and _has_lone_surrogate(data):
        raise NotebookError(f"{path} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape that is not half of a "
                            "pair): no text file can store that character, so the notebook was edited by hand; "
                            "remove it and save the notebook in JupyterLab")
    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # nbformat raises several types for schema problems
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotebookError(f"{path} is not a valid notebook: {first}") from None
    return notebook


def _has_lone_surrogate(data) -> bool:
    """Whether a parsed notebook holds a string with a lone surrogate (JSON's \\u escapes allow
    one; UTF-8 cannot encode it, so neither the kernel nor a saved copy could take the notebook)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _graded_cells(notebook):
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            yield cell, meta


def _first_error_line(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename', 'Error')}: {value[0]}" if value else output.get("ename", "Error")
    return ""


def _execute(notebook, path, timeout: int, kernel_name: str) -> None:
    """Run the notebook in place in a fresh kernel; a cell past `timeout` is interrupted, gets a
    CellTimeoutError output, and the rest still runs."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    from dlcourse.kernels import ipc_kernel_config

    with tempfile.TemporaryDirectory(prefix="dlcourse-check-") as work:
        # Run beside a copy of the assignment's other files, so relative paths still work.
        source_dir = Path(path).resolve().parent
        for item in source_dir.iterdir():
            if item.is_file() and item.suffix != ".ipynb" and item.stat().st_size < 50_000_000:
                shutil.copy2(item, work)
        message = f"the cell ran longer than {timeout} s and was interrupted"

        def mark_timeout(cell, execute_reply, **_):
            # nbclient answers a timed-out cell with this reply but shows nothing in the cell
            if (execute_reply or {}).get("content", {}).get("ename") == TIMEOUT_ENAME:
                cell.outputs.append(nbformat.v4.new_output("error", ename=TIMEOUT_ENAME, evalue=message,
                                                           traceback=[f"{TIMEOUT_ENAME}: {message}"]))

        client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                                interrupt_on_timeout=True, resources={"metadata": {"path": work}},
                                error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": message, "traceback": []},
                                on_cell_executed=mark_timeout, config=ipc_kernel_config(work))
        # A notebook that calls self_check() must not start itself again inside the check.
        previous = os.environ.get("DLCOURSE_SELF_CHECK")
        os.environ["DLCOURSE_SELF_CHECK"] = "1"
        try:
            client.execute()
        except DeadKernelError:
            raise NotebookError("the kernel died while running the notebook (out of memory, or os._exit)") from None
        finally:
            if previous is None:
                os.environ.pop("DLCOURSE_SELF_CHECK", None)
            else:
                os.environ["DLCOURSE_SELF_CHECK"] = previous


def _timed_out(cell) -> bool:
    return any(o.get("output_type") == "error" and o.get("ename") == TIMEOUT_ENAME for o in cell.get("outputs", []))


def run_visible_tests(path, timeout: int = 120, kernel_name: str = "python3") -> list[PartResult]:
    """Execute a copy of the notebook in a fresh kernel; one result per graded cell."""
    notebook = read_notebook(path)
    _execute(notebook, path, timeout, kernel_name)
    forbidden = forbidden_uses(notebook, timeout)
    results, since_last_test = [], []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            since_last_test.append(cell)
            continue
        grade_id, points = meta.get("grade_id", "?"), float(meta.get("points", 0))
        if meta.get("solution") and cell.cell_type == "markdown":
            unanswered = not cell.source.strip() or cell.source.strip() == UNANSWERED
            results.append(PartResult(grade_id, points, "written", None,
                                      "unanswered: write your answer in the cell that says YOUR ANSWER HERE"
                                      if unanswered else "written answer, graded by the instructor"))
            continue
        stuck = [c for c in since_last_test + [cell] if c.cell_type == "code" and _timed_out(c)]
        since_last_test = []
        if stuck:
            where = "this test cell" if stuck[-1] is cell else "a cell above this test"
            results.append(PartResult(grade_id, points, "autograded", False,
                                      f"timed out: {where} ran longer than {timeout} s (look for an endless loop)"))
        elif grade_id in forbidden:
            results.append(PartResult(grade_id, points, "autograded", False, forbidden[grade_id]))
        else:
            error = _first_error_line(cell)
            results.append(PartResult(grade_id, points, "autograded", not error, error))
    return results


def forbidden_uses(notebook, timeout: int = 120) -> dict[str, str]:
    """grade_id of a test cell -> why its function would earn nothing: it uses what its part
    forbids. Each graded function of the notebook's chapter is called once on the part's
    seed-0 cases in the grader's probe process (no sandbox here; nothing is compared)."""
    from dlcourse.checks import parts_of
    from dlcourse.grading.probe import Probe, write_probe_job

    chapter = _chapter_of(notebook)
    if chapter is None:
        return {}
    try:
        parts = parts_of(chapter)
    except ModuleNotFoundError:
        return {}
    probes, test_of = {}, {}
    for part in parts:
        index = _test_cell_after_definition(notebook, part.function)
        if index is not None:
            probes.setdefault(index, []).append(Probe(part.id, part.function))
            test_of[part.id] = notebook.cells[index].metadata["nbgrader"]["grade_id"]
    if not probes:
        return {}
    with tempfile.TemporaryDirectory(prefix="dlcourse-check-probes-") as work:
        folder = Path(work) / "probe"
        plan = write_probe_job(folder, notebook, probes, seed=0, timeout=min(timeout, 60), isolated=False)
        results = _run_probe_runner(Path(work), folder / "job.json", deadline=min(timeout, 60) * len(plan) + 30)
        found = {}
        for number, _, probe in plan:
            message = results.get(f"p{number}", "")
            if "ForbiddenMechanicError" in message:
                found[test_of[probe.part_id]] = message.split(": ", 1)[-1]
        return found


def _chapter_of(notebook) -> str | None:
    import re

    for cell in notebook.cells:
        found = re.search(r"\bcheck\(\s*['\"](ch\d\d)\.", cell.source) or \
            re.search(r"Exercise (\d+)\b", cell.source if cell.cell_type == "markdown" else "")
        if found:
            value = found.group(1)
            return value if value.startswith("ch") else f"ch{int(value):02d}"
    return None


def _test_cell_after_definition(notebook, function: str) -> int | None:
    """The index of the first autograded test cell after the answer cell defining `function`
    (a function, or a class graded through its part's adapter)."""
    import re

    defined = False
    for index, cell in enumerate(notebook.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and re.search(rf"^(def|class) {re.escape(function)}\b", cell.source, re.M):
            defined = True
        elif defined and meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            return index
    return None


def _run_probe_runner(work: Path, job: Path, deadline: float) -> dict[str, str]:
    """{probe name: its first error message, or ''} after running the job without a sandbox."""
    from dlcourse.grading.probe_runner import run_unsandboxed

    messages = {}
    out = run_unsandboxed(work, job, deadline)
    for folder in sorted(out.iterdir()) if out.is_dir() else []:
        errors = []
        for record in sorted(folder.glob("c*.json")):
            try:
                data = json.loads(record.read_text())
            except ValueError:
                continue
            if isinstance(data, dict) and "error" in data:
                errors.append(str(data["error"]))
        messages[folder.name] = errors[0] if errors else ""
    return messages


def format_table(results: list[PartResult]) -> str:
    width = max([len(r.grade_id) for r in results] + [4])
    lines = [f"{'part':<{width}}  points  result", f"{'-' * width}  ------  ------"]
    for r in results:
        if r.passed is None:
            verdict = r.message
        else:
            verdict = "passed" if r.passed else f"failed: {r.message}"
        lines.append(f"{r.grade_id:<{width}}  {r.points:>6g}  {verdict}")
    auto = [r for r in results if r.kind == "autograded"]
    passed = [r for r in auto if r.passed]
    lines.append("")
    lines.append(f"visible tests pass in {len(passed)} of {len(auto)} autograded parts "
                 f"({sum(r.points for r in passed):g} of {sum(r.points for r in auto):g} points at stake); "
                 "hidden tests run when your work is graded")
    return "\n".join(lines)


def self_check(path=None, timeout: int = 120) -> list[PartResult]:
    """From inside a notebook: check the saved file (save with Ctrl+S first).

    `path` defaults to the notebook JupyterLab is running (JPY_SESSION_NAME).
    """
    if os.environ.get("DLCOURSE_SELF_CHECK") or os.environ.get("NBGRADER_EXECUTION"):
        return []  # already inside a check of this notebook, or being graded
    path = path or os.environ.get("JPY_SESSION_NAME")
    if not path:
        raise NotebookError("cannot tell which notebook this is: call self_check('name.ipynb')")
    results = run_visible_tests(path, timeout=timeout)
    print(format_table(results))
    return results
