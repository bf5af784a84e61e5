"""One compact table per section for the book's comparisons with PyTorch.

A chapter checks every formula it states against torch. Printing one
``max |dlcourse − torch| = 1e-16`` line per comparison buries the ideas, so a section
gathers its comparisons into one table::

    table = ComparisonTable("Softmax against torch.softmax", tolerance=1e-12)
    table.add("forward", y_ours, y_torch)
    table.add("backward", dx_ours, x_torch.grad)
    table        # the last expression of a cell renders the table

``add`` raises ``AssertionError`` as soon as a difference exceeds the tolerance, so a chapter
that drifts from torch fails the (strict) book build at the line that drifted. Every
comparison is kept in the table, none is hidden.
"""
from __future__ import annotations

import html

import numpy as np

__all__ = ["ComparisonTable", "max_abs_difference"]


def _as_array(value) -> np.ndarray:
    """NumPy arrays, numbers and torch tensors (detached, moved to the CPU) as float64 arrays."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def max_abs_difference(ours, theirs) -> float:
    """max |ours − theirs| over all entries; shapes must agree exactly (no broadcasting)."""
    a, b = _as_array(ours), _as_array(theirs)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: dlcourse {a.shape}, torch {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


class ComparisonTable:
    """Rows of (what, shape, max |dlcourse − torch|) with one tolerance for the whole table."""

    def __init__(self, title: str, tolerance: float = 1e-10):
        self.title = title
        self.tolerance = float(tolerance)
        self.rows: list[tuple[str, tuple, float]] = []

    def add(self, what: str, ours, theirs, tolerance: float | None = None) -> float:
        """Compare one pair; returns the difference, raises AssertionError past the tolerance."""
        limit = self.tolerance if tolerance is None else float(tolerance)
        difference = max_abs_difference(ours, theirs)
        if not difference <= limit:  # also catches NaN
            raise AssertionError(f"{self.title}: {what}: max |dlcourse − torch| = {difference:.3g} "
                                 f"exceeds {limit:.3g}")
        self.rows.append((what, _as_array(ours).shape, difference))
        return difference

    @property
    def worst(self) -> float:
        return max((row[2] for row in self.rows), default=0.0)

    def __repr__(self) -> str:
        width = max([len("compared")] + [len(row[0]) for row in self.rows])
        lines = [f"{self.title} (tolerance {self.tolerance:.0e})",
                 f"{'compared':<{width}}  {'shape':<16}  max |dlcourse − torch|"]
        for what, shape, difference in self.rows:
            lines.append(f"{what:<{width}}  {str(shape):<16}  {difference:.1e}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><td>{html.escape(what)}</td><td><code>{html.escape(str(shape))}</code></td>"
                       f"<td style=\"text-align:right\">{difference:.1e}</td></tr>"
                       for what, shape, difference in self.rows)
        return (f"<table class=\"dlcourse-comparison\"><caption>{html.escape(self.title)} "
                f"(every row within {self.tolerance:.0e})</caption>"
                "<thead><tr><th>compared</th><th>shape</th><th>max |dlcourse − torch|</th></tr></thead>"
                f"<tbody>{body}</tbody></table>")
