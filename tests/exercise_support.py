"""Helpers shared by the tests of the exercises' reference checks (tests/test_checks_chNN.py)."""
from pathlib import Path

import nbformat

__all__ = ["solution_functions", "solution"]


def solution_functions(notebook: Path) -> dict:
    """The model solutions: the notebook's setup cell and every solution cell, executed in
    order in one namespace (as a student's kernel would run them)."""
    namespace = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "setup"):
            exec(compile(cell.source, f"{Path(notebook).name}:{meta['grade_id']}", "exec"), namespace)
    return namespace


def solution(notebook: Path, function: str):
    """One model solution by its function name."""
    namespace = solution_functions(notebook)
    if function not in namespace:
        raise KeyError(f"{Path(notebook).name} defines no {function!r}")
    return namespace[function]
