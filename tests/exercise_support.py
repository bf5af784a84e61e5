"""Helpers shared by the tests of the exercises' reference checks (tests/test_checks_chNN.py)."""
import re
from pathlib import Path

import nbformat
import numpy as np
import torch

__all__ = ["solution_functions", "solution", "t", "close"]


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


# A gradient written out as a formula, "\frac{\partial L}{\partial W} = …" or "∂L/∂W = …": what the
# statement of a derived part (Part.derived) must not print.
GRADIENT_FORMULA = re.compile(r"\\frac\{\\partial L\}\{\\partial .{1,40}?\}\s*=|\\partial L\s*/\s*\\partial \S{1,30}\s*=")


def statement_of(notebook: Path, function: str) -> str:
    """The markdown cells between the answer cell before `function`'s and `function`'s own: its statement."""
    statement = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            if re.search(rf"^def {re.escape(function)}\s*\(", cell.source, re.M):
                return "\n".join(statement)
            statement = []
        elif cell.cell_type == "markdown" and not meta:
            statement.append(cell.source)
    raise KeyError(f"{Path(notebook).name} defines no {function!r}")


def t(array, grad=False, device="cpu"):
    """A float64 tensor of `array` on `device`."""
    return torch.tensor(np.asarray(array, dtype=np.float64), device=device, requires_grad=grad)


def close(ours, theirs, what):
    """Same shape, and equal to torch's value within rtol 1e-9 / atol 1e-11."""
    theirs = theirs.detach().cpu().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11, err_msg=what)
