"""The graded parts of exercise 5 (loss functions): every reference answer agrees with PyTorch's
autograd on every seeded case, check() accepts the model solution and rejects typical mistakes."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch05

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch05-loss-functions" / "ch05-loss-functions.ipynb"
SEEDS = [0, 1, 7]


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


def torch_value_and_grad(loss, x, *rest, device):
    """A torch loss of x (float64, on `device`) and its gradient by autograd."""
    xt = to_torch(x, device, requires_grad=True)
    value = loss(xt, *(to_torch(r, device) for r in rest))
    value.backward()
    return value, xt.grad


TORCH_LOSSES = {
    "ch05.mse_loss": F.mse_loss,
    "ch05.cross_entropy": F.cross_entropy,
    "ch05.bce_with_logits": F.binary_cross_entropy_with_logits,
    "ch05.multi_margin_loss": lambda x, y: F.multi_margin_loss(x, y, p=1, margin=1.0),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("part_id", sorted(TORCH_LOSSES))
def test_reference_loss_and_gradient_match_torch_autograd(part_id, seed, device):
    spec = get_part(part_id)
    for number, (x, target) in enumerate(cases(part_id, seed), start=1):
        value, grad = spec.reference(x, target)
        assert isinstance(value, float) and grad.shape == x.shape and grad.dtype == np.float64
        value_t, grad_t = torch_value_and_grad(TORCH_LOSSES[part_id], x, target, device=device)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), f"{part_id} case {number} is not finite"
        assert_close(value, value_t, np.float64, f"{spec.function} value, case {number}")
        assert_close(grad, grad_t, np.float64, f"{spec.function} gradient, case {number}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_log_softmax_matches_torch_and_stays_finite(seed, device):
    spec = get_part("ch05.log_softmax")
    for number, (x,) in enumerate(cases("ch05.log_softmax", seed), start=1):
        ours = spec.reference(x)
        assert np.all(np.isfinite(ours))
        assert_close(ours, torch.log_softmax(to_torch(x, device), dim=1), np.float64, f"log_softmax case {number}")


def test_the_cross_entropy_gradient_is_the_derived_part():
    assert [p.function for p in parts_of("ch05") if p.derived] == ["cross_entropy"]


def test_cases_cover_saturated_logits_and_inactive_margins():
    assert any(np.abs(x).max() >= 999 for x, _ in cases("ch05.cross_entropy"))
    assert any(np.abs(x).max() >= 999 for x, _ in cases("ch05.bce_with_logits"))
    assert any(np.abs(x).max() >= 999 for (x,) in cases("ch05.log_softmax"))
    scores, target = cases("ch05.multi_margin_loss")[-1]
    _, grad = get_part("ch05.multi_margin_loss").reference(scores, target)
    assert np.all(grad[:3] == 0) and np.any(grad[3:] != 0), "some rows must meet every margin, others not"


@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


@pytest.mark.parametrize("name", ["mse_loss", "log_softmax", "cross_entropy", "bce_with_logits", "multi_margin_loss"])
def test_check_accepts_the_model_solution(solutions, name):
    for seed in SEEDS:
        assert check(f"ch05.{name}", solutions[name], seed=seed) is None


def naive_cross_entropy(logits, target):
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    n = len(target)
    grad = probabilities.copy()
    grad[np.arange(n), target] -= 1
    return -np.log(probabilities[np.arange(n), target]).mean(), grad / n


def hinge_including_the_target(scores, target):
    n, classes = scores.shape
    margins = np.maximum(0, 1 - scores[np.arange(n), target][:, None] + scores)
    return margins.sum() / (n * classes), np.zeros_like(scores)


WRONG = {
    "mse_loss": lambda x, t: (np.sum((x - t) ** 2), 2 * (x - t) / x.size),
    "log_softmax": lambda x: x - np.log(np.exp(x).sum(axis=1, keepdims=True)),
    "cross_entropy": naive_cross_entropy,
    "bce_with_logits": lambda x, y: (np.mean(np.logaddexp(0, x) - x * y), (y - 1 / (1 + np.exp(-x))) / x.size),
    "multi_margin_loss": hinge_including_the_target,
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_a_wrong_answer_naming_the_function(name):
    with pytest.raises(CheckFailure, match=name), np.errstate(all="ignore"):
        check(f"ch05.{name}", WRONG[name])


def test_check_rejects_a_wrong_shape_with_a_clear_message(solutions):
    def flattened(input, target):
        value, grad = solutions["mse_loss"](input, target)
        return value, grad.reshape(-1)

    with pytest.raises(CheckFailure, match=r"mse_loss, case 1 of 4 .*return value 1: returned shape \(12,\), expected \(4, 3\)"):
        check("ch05.mse_loss", flattened)
