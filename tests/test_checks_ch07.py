"""The chapter 7 exercise's references agree with PyTorch on every case the checks draw."""
import numpy as np
import pytest
import torch

from pathlib import Path

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
import exercise_support

pytestmark = pytest.mark.ch07


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropout_references_match_torch_dropout_with_torch_mask(seed):
    """torch draws the mask; our reference, given that mask, returns torch's output and gradient."""
    torch.manual_seed(seed)
    for x, p, _ in cases("ch07.dropout_forward", seed):
        x_torch = torch.tensor(x, requires_grad=True)
        y_torch = torch.nn.functional.dropout(x_torch, p, training=True)
        mask = (y_torch != 0).numpy() | (x == 0)
        np.testing.assert_allclose(get_part("ch07.dropout_forward").reference(x, p, mask), y_torch.detach().numpy(),
                                   rtol=1e-12, atol=0)
        grad = np.random.default_rng(seed).standard_normal(x.shape)
        y_torch.backward(torch.tensor(grad))
        np.testing.assert_allclose(get_part("ch07.dropout_backward").reference(grad, p, mask), x_torch.grad.numpy(),
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batchnorm_references_match_torch_training_mode(seed):
    for x, gamma, beta, eps in cases("ch07.batchnorm_forward", seed):
        layer = torch.nn.BatchNorm1d(x.shape[1], eps=eps, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(gamma))
            layer.bias.copy_(torch.tensor(beta))
        x_torch = torch.tensor(x, requires_grad=True)
        y_torch = layer(x_torch)
        np.testing.assert_allclose(get_part("ch07.batchnorm_forward").reference(x, gamma, beta, eps),
                                   y_torch.detach().numpy(), rtol=1e-9, atol=1e-12)
        grad = np.random.default_rng(seed).standard_normal(x.shape)
        y_torch.backward(torch.tensor(grad))
        dx, dgamma, dbeta = get_part("ch07.batchnorm_backward").reference(grad, x, gamma, eps)
        np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=1e-9, atol=1e-12)


NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch07-regularization" / "ch07-regularization.ipynb"


def batchnorm_backward_without_the_variance_path(grad_output, x, gamma, eps):
    """A typical derivation that follows the paths through x − μ and μ but forgets σ²."""
    inv_std = 1 / np.sqrt(x.var(axis=0) + eps)
    g = grad_output * gamma
    x_hat = (x - x.mean(axis=0)) * inv_std
    return inv_std * (g - g.mean(axis=0)), (grad_output * x_hat).sum(axis=0), grad_output.sum(axis=0)


def test_batchnorm_backward_is_derived_and_its_check_tells_a_right_derivation_from_a_forgotten_path():
    assert [p.function for p in parts_of("ch07") if p.derived] == ["batchnorm_backward"]
    for seed in [0, 1, 2]:
        check("ch07.batchnorm_backward", exercise_support.solution(NOTEBOOK, "batchnorm_backward"), seed=seed)
    with pytest.raises(CheckFailure, match=r"batchnorm_backward, case 1 of 3 .*return value 0"):
        check("ch07.batchnorm_backward", batchnorm_backward_without_the_variance_path)


def test_check_accepts_a_correct_dropout_and_names_a_wrong_one():
    check("ch07.dropout_forward", lambda x, p, mask: np.where(mask, x / (1 - p), 0.0))
    with pytest.raises(CheckFailure, match=r"dropout_forward, case 1 of 3 .* max \|difference\|"):
        check("ch07.dropout_forward", lambda x, p, mask: x * mask)


def test_check_gives_the_student_copies_of_the_inputs():
    def vandal(x, p, mask):
        y = np.where(mask, x / (1 - p), 0.0)
        x[...] = 0  # must not change what the reference sees
        mask[...] = False
        return y
    check("ch07.dropout_forward", vandal)


def test_check_reports_a_wrong_shape_and_a_missing_function():
    with pytest.raises(CheckFailure, match=r"returned shape \(4,\), expected \(6, 4\)"):
        check("ch07.batchnorm_forward", lambda x, gamma, beta, eps: gamma)
    with pytest.raises(CheckFailure, match="is not a function"):
        check("ch07.batchnorm_forward", None)
    with pytest.raises(KeyError, match="unknown exercise part 'ch07.nothing'"):
        get_part("ch07.nothing")
