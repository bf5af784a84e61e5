"""The chapter 9 exercise checks (dlcourse/checks/ch09.py): every reference answer agrees with
PyTorch (torch.nn.functional and autograd, computed here independently), and `check()`
accepts the model solution of the notebook and rejects typical wrong answers by name."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES
import exercise_support
from exercise_support import close, t
from functools import partial

pytestmark = pytest.mark.ch09

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "ch09-convolutional-networks" / "ch09-convolutional-networks.ipynb"
SEEDS = [0, 1, 2]
PARTS = ["conv_output_size", "conv2d_forward", "conv2d_backward", "maxpool_forward", "maxpool_backward"]


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


# ---------------------------------------------------------------------- references vs torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv_output_size_reference_is_torchs_output_length(seed, device):
    part = get_part("ch09.conv_output_size")
    for size, kernel, stride, padding in cases("ch09.conv_output_size", seed):
        out = F.conv1d(torch.zeros(1, 1, size, device=device), torch.zeros(1, 1, kernel, device=device),
                       stride=stride, padding=padding)
        assert part.reference(size, kernel, stride, padding) == out.shape[-1], (size, kernel, stride, padding)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d_forward_reference_matches_torch(seed, device):
    part = get_part("ch09.conv2d_forward")
    for x, w, b, stride, padding in cases("ch09.conv2d_forward", seed):
        theirs = F.conv2d(t(x, device=device), t(w, device=device), t(b, device=device), stride=stride, padding=padding)
        close(part.reference(x, w, b, stride, padding), theirs,
              f"conv2d forward, x {x.shape}, w {w.shape}, stride {stride}, padding {padding}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d_backward_reference_matches_torch_autograd(seed, device):
    part = get_part("ch09.conv2d_backward")
    for grad_output, x, w, stride, padding in cases("ch09.conv2d_backward", seed):
        xt, wt, bt = t(x, True, device=device), t(w, True, device=device), t(np.zeros(w.shape[0]), True, device=device)
        F.conv2d(xt, wt, bt, stride=stride, padding=padding).backward(t(grad_output, device=device))
        dx, dw, db = part.reference(grad_output, x, w, stride, padding)
        for name, ours, theirs in [("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)]:
            close(ours, theirs, f"conv2d {name}, x {x.shape}, w {w.shape}, stride {stride}, padding {padding}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_maxpool_forward_reference_matches_torch(seed, device):
    part = get_part("ch09.maxpool_forward")
    for x, kernel, stride in cases("ch09.maxpool_forward", seed):
        close(part.reference(x, kernel, stride), F.max_pool2d(t(x, device=device), kernel, stride),
              f"max pool, x {x.shape}, kernel {kernel}, stride {stride}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_maxpool_backward_reference_matches_torch_autograd(seed, device):
    part = get_part("ch09.maxpool_backward")
    for grad_output, x, kernel, stride in cases("ch09.maxpool_backward", seed):
        xt = t(x, True, device=device)
        F.max_pool2d(xt, kernel, stride).backward(t(grad_output, device=device))
        close(part.reference(grad_output, x, kernel, stride), xt.grad,
              f"max pool dx, x {x.shape}, kernel {kernel}, stride {stride}")


def test_cases_cover_the_edge_cases():
    convs = cases("ch09.conv2d_forward")
    assert any(w.shape[2:] == (1, 1) for _, w, *_ in convs), "a 1x1 kernel"
    assert any(w.shape[2] != w.shape[3] for _, w, *_ in convs), "a rectangular kernel"
    assert any(x.shape[0] == 1 for x, *_ in convs) and any(x.shape[1] == 1 for x, *_ in convs)
    outs = [get_part("ch09.conv2d_forward").reference(*args).shape[2:] for args in convs]
    assert (1, 1) in outs, "a kernel as large as the (padded) input"
    assert any((h + 2 * p - w.shape[2]) % s for (x, w, _, s, p) in convs for h in [x.shape[2]]), "a floor"
    pools = cases("ch09.maxpool_forward")
    assert any(stride < kernel for _, kernel, stride in pools), "overlapping windows"
    assert any((x.shape[2] - kernel) % stride for x, kernel, stride in pools), "a floor"


def test_the_conv_backward_is_the_derived_part_and_refuses_numerical_differentiation():
    assert [p.function for p in parts_of("ch09") if p.derived] == ["conv2d_backward"]
    assert "dlcourse.gradcheck.numerical_gradient" in get_part("ch09.conv2d_backward").forbids
    statement = exercise_support.statement_of(NOTEBOOK, "conv2d_backward")
    assert "Part 3" in statement and "derive" in statement
    assert not exercise_support.GRADIENT_FORMULA.search(statement), "a derived part's statement gives no backward formula"


# ---------------------------------------------------------------------- check() on answers
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", PARTS)
def test_check_accepts_the_model_solution(solutions, name, seed):
    check(f"ch09.{name}", solutions[name], seed=seed)


def wrong_answers(s):
    """One typical mistake per part, built on the model solution."""
    def conv_backward_mean_db(g, x, w, stride, padding):
        dx, dw, db = s["conv2d_backward"](g, x, w, stride, padding)
        return dx, dw, db / x.shape[0]

    return {
        "conv_output_size": lambda size, kernel, stride, padding: (size + padding - kernel) // stride + 1,
        "conv2d_forward": lambda x, w, b, stride, padding: s["conv2d_forward"](x, w[:, :, ::-1, ::-1], b, stride,
                                                                              padding),
        "conv2d_backward": conv_backward_mean_db,
        "maxpool_forward": lambda x, kernel, stride: s["maxpool_forward"](x, kernel, 1),
        "maxpool_backward": lambda g, x, kernel, stride: np.zeros_like(x),
    }


@pytest.mark.parametrize("name", PARTS)
def test_check_rejects_a_wrong_answer_naming_the_function(solutions, name):
    with pytest.raises(CheckFailure, match=rf"^{name}, case \d+ of \d+"):
        check(f"ch09.{name}", wrong_answers(solutions)[name])


def test_check_explains_a_wrong_shape_and_a_wrong_count(solutions):
    with pytest.raises(CheckFailure, match=r"conv2d_backward.*returned 2 value\(s\), expected 3"):
        check("ch09.conv2d_backward", lambda g, x, w, s, p: solutions["conv2d_backward"](g, x, w, s, p)[:2])
    with pytest.raises(CheckFailure, match=r"maxpool_forward.*returned shape"):
        check("ch09.maxpool_forward", lambda x, k, s: x)


def test_an_answer_that_changes_its_input_in_place_cannot_change_the_reference(solutions):
    def spoils_input(x, w, b, stride, padding):
        y = solutions["conv2d_forward"](x, w, b, stride, padding)
        x[...] = 0
        w[...] = 0
        return y
    check("ch09.conv2d_forward", spoils_input)
