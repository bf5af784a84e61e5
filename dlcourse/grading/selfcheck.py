"""`dlcourse check NOTEBOOK`: run a notebook's visible tests and show what they say, part by part.

A student runs it from a terminal (`dlcourse check exercises/ch07-regularization/ch07-regularization.ipynb`)
or from inside the notebook (`from dlcourse.grading.selfcheck import self_check; self_check()`).
The notebook is executed in a fresh kernel on a temporary copy; the file itself is never
changed. Hidden tests are not in a student's notebook: they run at grading time.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["PartResult", "NotebookError", "read_notebook", "run_visible_tests", "format_table", "self_check"]


class NotebookError(Exception):
    """The notebook cannot be read or run; the message says what to do."""


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
    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # nbformat raises several types for schema problems
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotebookError(f"{path} is not a valid notebook: {first}") from None
    return notebook


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


def run_visible_tests(path, timeout: int = 120, kernel_name: str = "python3") -> list[PartResult]:
    """Execute a copy of the notebook in a fresh kernel; one result per graded cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from dlcourse.kernels import ipc_kernel_config

    notebook = read_notebook(path)
    with tempfile.TemporaryDirectory(prefix="dlcourse-check-") as work:
        # Run beside a copy of the assignment's other files, so relative paths still work.
        source_dir = Path(path).resolve().parent
        for item in source_dir.iterdir():
            if item.is_file() and item.suffix != ".ipynb" and item.stat().st_size < 50_000_000:
                shutil.copy2(item, work)
        client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                                resources={"metadata": {"path": work}}, config=ipc_kernel_config(work))
        # A notebook that calls self_check() must not start itself again inside the check.
        previous = os.environ.get("DLCOURSE_SELF_CHECK")
        os.environ["DLCOURSE_SELF_CHECK"] = "1"
        try:
            client.execute()
        except CellTimeoutError:
            raise NotebookError(f"a cell ran longer than {timeout} s; look for an endless loop") from None
        except DeadKernelError:
            raise NotebookError("the kernel died while running the notebook (out of memory, or os._exit)") from None
        finally:
            if previous is None:
                os.environ.pop("DLCOURSE_SELF_CHECK", None)
            else:
                os.environ["DLCOURSE_SELF_CHECK"] = previous
    results = []
    for cell, meta in _graded_cells(notebook):
        points = float(meta.get("points", 0))
        if meta.get("solution") and cell.cell_type == "markdown":
            results.append(PartResult(meta.get("grade_id", "?"), points, "written", None,
                                      "written answer, graded by the instructor"))
            continue
        error = _first_error_line(cell)
        results.append(PartResult(meta.get("grade_id", "?"), points, "autograded", not error, error))
    return results


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
    if os.environ.get("DLCOURSE_SELF_CHECK"):
        return []  # already inside a check of this notebook
    path = path or os.environ.get("JPY_SESSION_NAME")
    if not path:
        raise NotebookError("cannot tell which notebook this is: call self_check('name.ipynb')")
    results = run_visible_tests(path, timeout=timeout)
    print(format_table(results))
    return results
