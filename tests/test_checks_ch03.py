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
from dlcourse.checks.ch03 import EXPRESSIONS
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch03

# the module (torch.autograd.gradcheck is also the name of a function there)
torch_gradcheck = importlib.import_module("torch.autograd.gradcheck")

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch03-backpropagation" / "ch03-backpropagation.ipynb"
SEEDS = [0, 1, 2]
FUNCTIONS = ["softmax_cross_entropy_delta", "two_layer_backward", "numerical_gradient", "gradient_relative_error",
             "Value", "value_mlp_gradients", "train_value_mlp"]


PART_OF = {part.function: part.id for part in parts_of("ch03")}   # Value's part is ch03.value_expressions
solution = partial(exercise_support.solution, NOTEBOOK)


def exercise_support_source(grade_id):
    """The source of one solution cell of the notebook."""
    import nbformat
    return next(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def test_chapter_has_its_seven_parts_and_the_backward_pass_is_derived():
    assert {p.function for p in parts_of("ch03")} == set(FUNCTIONS)
    assert get_part("ch03.two_layer_backward").derived


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_cross_entropy_delta_reference_matches_torch_autograd(seed, device):
    for Z, y in cases("ch03.softmax_cross_entropy_delta", seed):
        Zt = to_torch(Z, device, requires_grad=True)
        torch.nn.functional.cross_entropy(Zt, to_torch(y, device)).backward()
        assert_close(reference("ch03.softmax_cross_entropy_delta", (Z, y)), Zt.grad, np.float64, "CrossEntropy delta")


def torch_tiny_mlp(X, W1, b1, W2, b2, device):
    """The tiny MLP's scores (N, 1) in torch, and its four weights as leaf tensors."""
    params = [to_torch(p, device, requires_grad=True) for p in (W1, b1, W2, b2)]
    W1t, b1t, W2t, b2t = params
    return torch.tanh(to_torch(X, device) @ W1t.T + b1t) @ W2t.T + b2t, params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_two_layer_backward_reference_matches_torch_autograd(seed, device):
    for X, T, W1, b1, W2, b2 in cases("ch03.two_layer_backward", seed):
        logits, params = torch_tiny_mlp(X, W1, b1, W2, b2, device)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, to_torch(T, device)).backward()
        ours = reference("ch03.two_layer_backward", (X, T, W1, b1, W2, b2))
        for name, grad, parameter in zip(["dW1", "db1", "dW2", "db2"], ours, params):
            assert_close(grad, parameter.grad, np.float64, f"two-layer {name}")


@pytest.mark.parametrize("seed", SEEDS)
def test_value_expressions_reference_matches_torch_autograd_on_the_same_expressions(seed):
    for expression, inputs in cases("ch03.value_expressions", seed):
        leaves = [torch.tensor(float(x), dtype=torch.float64, requires_grad=True) for x in inputs]
        output = EXPRESSIONS[expression](*leaves)   # the very code the adapter runs on Values
        output.backward()
        value, gradient = reference("ch03.value_expressions", (expression, inputs))
        assert np.isclose(value, output.item(), rtol=1e-12, atol=1e-14), expression
        np.testing.assert_allclose(gradient, [leaf.grad.item() for leaf in leaves], rtol=1e-12, atol=1e-14,
                                   err_msg=expression)


def test_value_expressions_cover_every_expression_and_a_node_used_twice():
    names = [expression for expression, _ in cases("ch03.value_expressions", 0)]
    assert set(names) == set(EXPRESSIONS) and names.count("shared_product") == 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_value_mlp_gradients_reference_matches_torch_autograd(seed, device):
    for X, y, W1, b1, W2, b2 in cases("ch03.value_mlp_gradients", seed):
        scores, params = torch_tiny_mlp(X, W1, b1, W2, b2, device)
        torch.nn.functional.mse_loss(scores[:, 0], to_torch(y, device)).backward()
        ours = reference("ch03.value_mlp_gradients", (X, y, W1, b1, W2, b2))
        for name, grad, parameter in zip(["dW1", "db1", "dW2", "db2"], ours, params):
            assert_close(grad, parameter.grad, np.float64, f"tiny MLP {name}")


@pytest.mark.parametrize("seed", SEEDS)
def test_train_value_mlp_reference_matches_torch_sgd_and_reaches_the_target(seed):
    (args,) = cases("ch03.train_value_mlp", seed)
    X, y, W1, b1, W2, b2, lr, steps = args
    params = [torch.tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]
    optimizer = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        scores = torch.tanh(torch.from_numpy(X) @ params[0].T + params[1]) @ params[2].T + params[3]
        torch.nn.functional.mse_loss(scores[:, 0], torch.from_numpy(y)).backward()
        optimizer.step()
    ours = reference("ch03.train_value_mlp", args)
    for name, weight, parameter in zip(["W1", "b1", "W2", "b2"], ours, params):
        np.testing.assert_allclose(weight, parameter.detach().numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
    get_part("ch03.train_value_mlp").compare(ours, ours, args)   # the target holds for the reference's run


def test_train_value_mlp_target_fails_the_untrained_network():
    (args,) = cases("ch03.train_value_mlp", 0)
    with pytest.raises(CheckFailure, match="loss .* and accuracy"):
        get_part("ch03.train_value_mlp").compare(tuple(args[2:6]), None, args)


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
        check(PART_OF[function], solution(function), seed=seed)


def softmax(Z):
    exp = np.exp(Z - Z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def delta_without_mean(Z, y):
    P = softmax(Z)
    P[np.arange(len(y)), y] -= 1
    return P


def backward_with_the_sigmoids_derivative(X, T, W1, b1, W2, b2):
    """The book's sigmoid derivative A (1 − A) where tanh needs 1 − A²."""
    A1 = np.tanh(X @ W1.T + b1)
    delta2 = (1 / (1 + np.exp(-(A1 @ W2.T + b2))) - T) / T.size
    delta1 = (delta2 @ W2) * A1 * (1 - A1)
    return delta1.T @ X, delta1.sum(axis=0), delta2.T @ A1, delta2.sum(axis=0)


def value_that_overwrites(function="Value"):
    """The model solution's Value with every `+=` of a gradient turned into `=`: right on a
    tree, wrong wherever a node is used twice."""
    source = exercise_support_source("value").replace("grad += ", "grad = ")
    namespace = {}
    exec(source, namespace)
    return namespace[function]


def mlp_gradients_of_the_sum(X, y, W1, b1, W2, b2):
    """The squared errors summed, not averaged."""
    grads = solution("value_mlp_gradients")(X, y, W1, b1, W2, b2)
    return tuple(len(y) * g for g in grads)


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
    "two_layer_backward": backward_with_the_sigmoids_derivative,
    "numerical_gradient": forward_difference,
    "gradient_relative_error": lambda a, n: float(np.max(np.abs(a - n)) / np.max(np.abs(a))),
    "Value": value_that_overwrites(),
    "value_mlp_gradients": mlp_gradients_of_the_sum,
    "train_value_mlp": lambda X, y, W1, b1, W2, b2, lr, steps: (W1, b1, W2, b2),   # no step taken
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with pytest.raises(CheckFailure, match=function):
        check(PART_OF[function], WRONG[function])


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
    def wrong_db1(X, T, W1, b1, W2, b2):
        dW1, db1, dW2, db2 = solution("two_layer_backward")(X, T, W1, b1, W2, b2)
        return dW1, db1 / len(T), dW2, db2

    with pytest.raises(CheckFailure, match="two_layer_backward.*return value 1"):
        check("ch03.two_layer_backward", wrong_db1)


def test_value_is_graded_through_its_adapter_and_must_be_a_class():
    with pytest.raises(AttributeError, match="'float' object has no attribute"):
        check("ch03.value_expressions", float)   # the adapter needs Value's operations and backward()
    with pytest.raises(CheckFailure, match="Value is not a class"):
        check("ch03.value_expressions", None)


def test_a_value_without_reverse_operators_fails_the_expressions_that_need_them():
    class ValueWithoutReverse(solution("Value")):
        __radd__ = __rmul__ = __rsub__ = __rtruediv__ = None

    with pytest.raises(TypeError):
        check("ch03.value_expressions", ValueWithoutReverse)
