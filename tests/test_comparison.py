"""The book's comparison tables: exact differences, and a failure past the tolerance."""
import numpy as np
import pytest
import torch

from dlcourse.comparison import ComparisonTable, max_abs_difference


def test_max_abs_difference_is_the_largest_entrywise_gap_and_accepts_tensors():
    ours = np.array([[1.0, 2.0], [3.0, 4.0]])
    theirs = torch.tensor([[1.0, 2.5], [3.0, 3.75]], dtype=torch.float64, requires_grad=True)
    assert max_abs_difference(ours, theirs) == 0.5


def test_table_keeps_every_row_and_renders_them():
    table = ComparisonTable("Softmax", tolerance=1e-3)
    table.add("forward", np.zeros(3), np.full(3, 1e-4))
    table.add("backward", np.ones((2, 2)), np.ones((2, 2)))
    assert [row[0] for row in table.rows] == ["forward", "backward"]
    assert table.worst == pytest.approx(1e-4)
    assert "forward" in table._repr_html_() and "backward" in repr(table)


@pytest.mark.parametrize("theirs", [np.full(3, 2e-3), np.array([0.0, np.nan, 0.0])])
def test_table_raises_past_the_tolerance_or_on_nan(theirs):
    table = ComparisonTable("Softmax", tolerance=1e-3)
    with pytest.raises(AssertionError, match="Softmax: forward"):
        table.add("forward", np.zeros(3), theirs)


def test_shapes_must_match_exactly():
    with pytest.raises(AssertionError, match="shapes differ"):
        max_abs_difference(np.zeros((3, 1)), np.zeros(3))
