"""L1 and L2 weight penalties against torch autograd of the same penalty (chapter 7)."""
import numpy as np
import pytest
import torch

from dlcourse import nn
from dlcourse.nn.regularization import l1_penalty, l2_penalty
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch07


def models(dtype, device):
    """The same small network on both sides, with non-zero gradients already accumulated
    and a few weights exactly zero (where |W| has the subgradient 0)."""
    tdtype = TORCH_DTYPE[np.dtype(dtype)]
    torch_model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4),
                                      torch.nn.Linear(4, 3)).to(device, tdtype)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        torch_model[0].weight[0, :2] = 0.0
        torch_model[1].weight.uniform_(0.5, 1.5)
        torch_model[2].bias[1] = 0.0
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    load_from_torch(model, torch_model)
    for (_, grad), parameter in zip(model.named_gradients(), torch_model.parameters()):
        grad[...] = rng.standard_normal(grad.shape)
        parameter.grad = to_torch(grad, device)
    return model, torch_model


def torch_penalty(torch_model, term, include_bias):
    return sum(term(parameter) for name, parameter in torch_model.named_parameters()
               if include_bias or "weight" in name.rsplit(".", 1)[-1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize("weight_decay", [1e-2, 0.5])
def test_l2_penalty_value_and_added_gradient_match_torch_autograd(weight_decay, include_bias, dtype, device):
    model, torch_model = models(dtype, device)
    value = l2_penalty(model, weight_decay, include_bias=include_bias)
    assert isinstance(value, float)
    theirs = torch_penalty(torch_model, lambda w: 0.5 * weight_decay * (w ** 2).sum(), include_bias)
    theirs.backward()
    assert_close(np.array(value), theirs, dtype, "l2_penalty value")
    assert_param_grads_close(model, torch_model, dtype, "l2_penalty")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize("l1_lambda", [1e-3, 0.3])
def test_l1_penalty_value_and_added_subgradient_match_torch_autograd(l1_lambda, include_bias, dtype, device):
    model, torch_model = models(dtype, device)
    value = l1_penalty(model, l1_lambda, include_bias=include_bias)
    assert isinstance(value, float)
    theirs = torch_penalty(torch_model, lambda w: l1_lambda * w.abs().sum(), include_bias)
    theirs.backward()
    assert_close(np.array(value), theirs, dtype, "l1_penalty value")
    assert_param_grads_close(model, torch_model, dtype, "l1_penalty")


@pytest.mark.parametrize("penalty", [l2_penalty, l1_penalty])
def test_penalty_leaves_biases_alone_unless_include_bias(penalty):
    layer = nn.Linear(3, 2)
    value = penalty(layer, 0.1)
    assert not layer.grads["bias"].any() and layer.grads["weight"].any()
    layer.zero_grad()
    assert penalty(layer, 0.1, include_bias=True) > value
    assert layer.grads["bias"].any()


def test_penalty_covers_every_weight_named_parameter_of_nested_modules():
    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("weight_ih_l0", np.full((2, 2), 2.0))
            self.register_parameter("bias_ih_l0", np.full(2, 3.0))

    model = nn.Sequential(Cell(), nn.LayerNorm(2))
    # (λ/2)·(4 entries·2² + 2 LayerNorm weights·1²) with λ = 1
    assert l2_penalty(model, 1.0) == pytest.approx(0.5 * (16 + 2))
    np.testing.assert_array_equal(model.grads["0.weight_ih_l0"], np.full((2, 2), 2.0))
    assert not model.grads["0.bias_ih_l0"].any() and not model.grads["1.bias"].any()
    assert l1_penalty(model, 1.0, include_bias=True) == pytest.approx(8 + 6 + 2 + 0)


def test_penalty_keeps_float32_gradients_float32():
    layer = nn.Linear(4, 3)
    l2_penalty(layer, 0.1)
    l1_penalty(layer, 0.1)
    assert layer.grads["weight"].dtype == np.float32


@pytest.mark.parametrize("penalty,name", [(l2_penalty, "weight_decay"), (l1_penalty, "l1_lambda")])
def test_penalty_rejects_negative_strength_and_non_modules(penalty, name):
    with pytest.raises(ValueError, match=f"{name} must be non-negative, got -0.1"):
        penalty(nn.Linear(2, 2), -0.1)
    with pytest.raises(TypeError, match="expected a dlcourse Module, got ndarray"):
        penalty(np.ones(3), 0.1)
