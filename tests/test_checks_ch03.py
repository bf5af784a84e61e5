"""Chapter 3's graded parts: each reference answer agrees with PyTorch (autograd, torch.nn,
torch's own finite differences), computed here independently, and `check` accepts the
model solution and rejects typical mistakes."""
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch03

# the module (torch.autograd.gradcheck is also the name of a function there)
torch_gradcheck = importlib.import_module("torch.autograd.gradcheck")

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch03-backpropagation" / "ch03-backpropagation.ipynb"
SEEDS = [0, 1, 2]
FUNCTIONS = ["softmax_cross_entropy_delta", "two_layer_backward", "numerical_gradient", "gradient_relative_error"]


solution = partial(exercise_support.solution, NOTEBOOK)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def test_chapter_has_the_four_parts():
    assert {p.function for p in parts_of("ch03")} == set(FUNCTIONS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_cross_entropy_delta_reference_matches_torch_autograd(seed, device):
    for Z, y in cases("ch03.softmax_cross_entropy_delta", seed):
        Zt = to_torch(Z, device, requires_grad=True)
        torch.nn.functional.cross_entropy(Zt, to_torch(y, device)).backward()
        assert_close(reference("ch03.softmax_cross_entropy_delta", (Z, y)), Zt.grad, np.float64, "CrossEntropy delta")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_two_layer_backward_reference_matches_torch_autograd(seed, device):
    for X, y, W1, b1, W2, b2 in cases("ch03.two_layer_backward", seed):
        params = [to_torch(p, device, requires_grad=True) for p in (W1, b1, W2, b2)]
        W1t, b1t, W2t, b2t = params
        hidden = torch.sigmoid(to_torch(X, device) @ W1t.T + b1t)
        torch.nn.functional.cross_entropy(hidden @ W2t.T + b2t, to_torch(y, device)).backward()
        ours = reference("ch03.two_layer_backward", (X, y, W1, b1, W2, b2))
        for name, grad, parameter in zip(["dW1", "db1", "dW2", "db2"], ours, params):
            assert_close(grad, parameter.grad, np.float64, f"two-layer {name}")


def torch_scalar(f, x):
    """The same function as the case's SmoothScalar, written in torch."""
    A, c, r = (torch.tensor(v) for v in (f.A, f.c, f.r))
    return (r * torch.tanh(A @ x.reshape(-1) + c)).sum() + f.q * (x ** 3).sum()


@pytest.mark.parametrize("seed", SEEDS)
def test_numerical_gradient_reference_matches_torchs_central_differences(seed):
    for f, x, eps in cases("ch03.numerical_gradient", seed):
        ours = reference("ch03.numerical_gradient", (f, x, eps))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch calls it semi-private; pinned torch keeps it
            (jacobian,) = torch_gradcheck.get_numerical_jacobian(
                lambda inputs: torch_scalar(f, inputs[0]), (torch.tensor(x, requires_grad=True),), eps=eps)
        assert_close(ours, jacobian.reshape(x.shape), np.float64, "numerical_gradient vs torch finite differences")


@pytest.mark.parametrize("seed", SEEDS)
def test_numerical_gradient_reference_is_within_central_difference_error_of_autograd(seed):
    for f, x, eps in cases("ch03.numerical_gradient", seed):
        xt = torch.tensor(x, requires_grad=True)
        torch_scalar(f, xt).backward()
        exact = xt.grad.numpy()
        ours = reference("ch03.numerical_gradient", (f, x, eps))
        # truncation error ε²/6·f''' (+ rounding ~1e-16/ε); f''' here stays below ~100
        assert np.max(np.abs(ours - exact)) < 100 * eps ** 2 + 1e-9, eps


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_relative_error_reference_matches_torch(seed, device):
    for analytic, numeric in cases("ch03.gradient_relative_error", seed):
        a, n = to_torch(analytic, device), to_torch(numeric, device)
        scale = (a.abs() + n.abs()).max()
        expected = 0.0 if scale == 0 else float((a - n).abs().max() / scale)
        got = reference("ch03.gradient_relative_error", (analytic, numeric))
        assert np.isclose(got, expected, rtol=1e-12, atol=0), (got, expected)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_check_accepts_the_model_solution(function):
    for seed in SEEDS:
        check(f"ch03.{function}", solution(function), seed=seed)


def softmax(Z):
    exp = np.exp(Z - Z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def delta_without_mean(Z, y):
    P = softmax(Z)
    P[np.arange(len(y)), y] -= 1
    return P


def backward_without_sigmoid_derivative(X, y, W1, b1, W2, b2):
    A1 = 1 / (1 + np.exp(-(X @ W1.T + b1)))
    delta2 = softmax(A1 @ W2.T + b2)
    delta2[np.arange(len(y)), y] -= 1
    delta2 /= len(y)
    delta1 = delta2 @ W2
    return delta1.T @ X, delta1.sum(axis=0), delta2.T @ A1, delta2.sum(axis=0)


def forward_difference(f, x, eps):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    base = f(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        grad[index] = (f(x) - base) / eps
        x[index] = original
    return grad


WRONG = {
    "softmax_cross_entropy_delta": delta_without_mean,
    "two_layer_backward": backward_without_sigmoid_derivative,
    "numerical_gradient": forward_difference,
    "gradient_relative_error": lambda a, n: float(np.max(np.abs(a - n)) / np.max(np.abs(a))),
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with pytest.raises(CheckFailure, match=function):
        check(f"ch03.{function}", WRONG[function])


def test_check_rejects_an_unstable_softmax_and_a_missing_zero_case():
    def unstable(Z, y):
        P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
        P[np.arange(len(y)), y] -= 1
        return P / len(y)

    with np.errstate(all="ignore"), pytest.raises(CheckFailure, match="NaN or infinity"):
        check("ch03.softmax_cross_entropy_delta", unstable)
    with np.errstate(all="ignore"), pytest.raises(CheckFailure, match="gradient_relative_error.*NaN"):
        check("ch03.gradient_relative_error", lambda a, n: np.max(np.abs(a - n)) / np.max(np.abs(a) + np.abs(n)))


def test_check_names_the_gradient_that_is_wrong():
    def wrong_db1(X, y, W1, b1, W2, b2):
        dW1, db1, dW2, db2 = solution("two_layer_backward")(X, y, W1, b1, W2, b2)
        return dW1, db1 / len(y), dW2, db2

    with pytest.raises(CheckFailure, match="two_layer_backward.*return value 1"):
        check("ch03.two_layer_backward", wrong_db1)
