"""Chapter 4's graded parts: each reference answer agrees with PyTorch (torch.nn.functional
and autograd), computed here independently, and `check` accepts the model solution and
rejects typical mistakes."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import erf

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch04

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch04-activation-functions" / "ch04-activation-functions.ipynb"
SEEDS = [0, 1, 2]

# part -> the torch function it must agree with (forward parts: f(x, *rest); backward parts:
# the gradient of sum(f(x, *rest) * grad_output) with respect to x, by autograd)
FORWARD = {
    "sigmoid": lambda x: torch.sigmoid(x),
    "leaky_relu": lambda x, slope: F.leaky_relu(x, slope),
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "gelu": lambda x: F.gelu(x),
}
BACKWARD = {
    "sigmoid_backward": lambda x: torch.sigmoid(x),
    "tanh_backward": lambda x: torch.tanh(x),
    "leaky_relu_backward": lambda x, slope: F.leaky_relu(x, slope),
    "softmax_backward": lambda x: torch.softmax(x, dim=-1),
}
FUNCTIONS = sorted(FORWARD) + sorted(BACKWARD)


solution = partial(exercise_support.solution, NOTEBOOK)


def test_chapter_has_the_eight_parts_and_softmax_backward_is_derived():
    assert {p.function for p in parts_of("ch04")} == set(FUNCTIONS)
    assert [p.function for p in parts_of("ch04") if p.derived] == ["softmax_backward"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("function", sorted(FORWARD))
def test_forward_reference_matches_torch(function, seed, device):
    for x, *rest in cases(f"ch04.{function}", seed):
        ours = get_part(f"ch04.{function}").reference(x, *rest)
        expected = FORWARD[function](to_torch(x, device), *rest)
        assert_close(ours, expected, np.float64, f"{function} forward")
        assert np.all(np.isfinite(ours))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("function", sorted(BACKWARD))
def test_backward_reference_matches_torch_autograd(function, seed, device):
    for grad_output, x, *rest in cases(f"ch04.{function}", seed):
        ours = get_part(f"ch04.{function}").reference(grad_output, x, *rest)
        xt = to_torch(x, device, requires_grad=True)
        BACKWARD[function](xt, *rest).backward(to_torch(grad_output, device))
        assert_close(ours, xt.grad, np.float64, f"{function} dinput")
        assert np.all(np.isfinite(ours))


@pytest.mark.parametrize("seed", SEEDS)
def test_relu_is_leaky_relu_with_slope_zero_in_torch_too(seed):
    """The slope-0 cases stand for ReLU: torch's relu agrees, at x = 0 included."""
    slope_zero = [args for args in cases("ch04.leaky_relu_backward", seed) if args[2] == 0.0]
    assert slope_zero
    for grad_output, x, slope in slope_zero:
        xt = torch.tensor(x, requires_grad=True)
        torch.relu(xt).backward(torch.tensor(grad_output))
        assert_close(get_part("ch04.leaky_relu_backward").reference(grad_output, x, slope), xt.grad,
                     np.float64, "ReLU dinput")
        assert_close(get_part("ch04.leaky_relu").reference(x, slope), torch.relu(torch.tensor(x)),
                     np.float64, "ReLU forward")


def test_cases_include_saturating_inputs_and_exact_zeros():
    xs = [x for (x,) in cases("ch04.sigmoid")]
    assert any(np.max(np.abs(x)) >= 1000 for x in xs)
    assert any(np.any(x == 0) for x in xs if x.ndim)
    assert any(np.max(np.abs(x)) >= 1000 for (x,) in cases("ch04.softmax"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_check_accepts_the_model_solution(function):
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # the model solutions never overflow
        for seed in SEEDS:
            check(f"ch04.{function}", solution(function), seed=seed)


WRONG = {
    "sigmoid": lambda x: np.exp(x) / (1 + np.exp(x)),                              # nan at x = 1000
    "sigmoid_backward": lambda g, x: g * np.exp(-np.logaddexp(0, -x)),             # σ, not σ(1 − σ)
    "tanh_backward": lambda g, x: g * (1 - x ** 2),
    "leaky_relu": lambda x, slope: np.where(x > 0, x, slope),
    "leaky_relu_backward": lambda g, x, slope: np.where(x >= 0, g, slope * g),     # slope 1 at x = 0
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True),        # overflows
    "softmax_backward": lambda g, x: g * (lambda y: y * (1 - y))(solution("softmax")(x)),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with np.errstate(all="ignore"), pytest.raises(CheckFailure, match=function):
        check(f"ch04.{function}", WRONG[function])


def test_check_rejects_softmax_along_the_wrong_axis_and_a_changed_shape():
    with pytest.raises(CheckFailure, match="softmax, case"):
        check("ch04.softmax", lambda x: np.exp(x) / np.exp(x).sum(axis=0, keepdims=True))
    with pytest.raises(CheckFailure, match="sigmoid.*shape"):
        check("ch04.sigmoid", lambda x: np.atleast_2d(solution("sigmoid")(x)))
