"""Linear, Sequential and the Module contract against torch.nn (chapter 2)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch02


def run_both(module, torch_module, x, dtype, device):
    """Forward and backward through both with the same upstream gradient; compare everything."""
    load_from_torch(module, torch_module)
    name = type(module).__name__
    x = x.astype(dtype)
    y = module(x)
    xt = to_torch(x, device, requires_grad=True)
    yt = torch_module(xt)
    assert_close(y, yt, dtype, f"{name} forward")
    grad_output = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    grad_input = module.backward(grad_output)
    yt.backward(to_torch(grad_output, device))
    assert_close(grad_input, xt.grad, dtype, f"{name} dinput")
    assert_param_grads_close(module, torch_module, dtype, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,bias", [((5, 3), True), ((2, 4, 3), False), ((3,), True), ((2, 1, 2, 3), True)])
def test_linear_matches_torch_any_leading_dims(shape, bias, dtype, device, rng):
    torch_linear = torch.nn.Linear(3, 4, bias=bias, dtype=TORCH_DTYPE[np.dtype(dtype)], device=device)
    run_both(nn.Linear(3, 4, bias=bias), torch_linear, rng.standard_normal(shape), dtype, device)


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(st.integers(1, 4), min_size=0, max_size=3),
       in_features=st.integers(1, 9), out_features=st.integers(1, 9), bias=st.booleans())
def test_linear_matches_torch_on_generated_shapes(batch, in_features, out_features, bias):
    torch_linear = torch.nn.Linear(in_features, out_features, bias=bias, dtype=torch.float64)
    x = np.random.default_rng(len(batch) + in_features).standard_normal((*batch, in_features))
    run_both(nn.Linear(in_features, out_features, bias=bias), torch_linear, x, np.float64, "cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch_and_has_torch_state_dict_keys(dtype, device, rng):
    tdtype = TORCH_DTYPE[np.dtype(dtype)]
    torch_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)).to(device, tdtype)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2))
    assert list(model.state_dict()) == list(torch_model.state_dict())
    for key, value in torch_model.state_dict().items():
        assert model.state_dict()[key].shape == tuple(value.shape)
    run_both(model, torch_model, rng.standard_normal((4, 6)), dtype, device)


def test_linear_default_init_has_torch_bounds():
    layer = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (300, 400)
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    # A uniform on (−b, b) has standard deviation b/√3: the init is not just bounded but spread.
    torch_std = torch.nn.Linear(400, 300).weight.std().item()
    assert abs(layer.weight.std() - torch_std) / torch_std < 0.02


def test_linear_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = rng.standard_normal((4, 2)).astype(np.float32)
    layer(x)
    layer.backward(g)
    once = layer.grads["weight"].copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.grads["weight"], 2 * once, rtol=1e-6)
    layer.zero_grad()
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


def test_gradcheck_of_linear_and_sequential(rng):
    assert check_module(nn.Linear(4, 3), rng.standard_normal((5, 4))).worst < 1e-7
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    report = check_module(model, rng.standard_normal((2, 5, 4)))
    assert set(report.errors) == {"input 0", "0.weight", "0.bias", "1.weight", "1.bias"}
    assert report.worst < 1e-7, str(report)


def test_gradcheck_detects_a_wrong_backward(rng):
    class WrongLinear(nn.Linear):
        def backward(self, grad_output):
            return super().backward(grad_output) * 2.0
    report = check_module(WrongLinear(3, 2), rng.standard_normal((4, 3)))
    assert report.errors["input 0"] > 0.1
    assert "input 0" in str(report)


def test_load_state_dict_from_torch_then_same_function(rng):
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    load_from_torch(model, torch_model)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x), torch_model(torch.tensor(x)).detach().numpy(), rtol=1e-5)


def test_params_and_grads_share_keys_and_arrays():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1, bias=False))
    assert list(model.params) == ["0.weight", "0.bias", "1.weight"] == list(model.grads)
    assert model.params["0.weight"] is model[0].weight
    assert model[1].bias is None and "bias" not in model[1].state_dict()


def test_repr_reads_like_torch():
    model = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 10, bias=False))
    torch_model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 10, bias=False))
    assert repr(model) == repr(torch_model)


@pytest.mark.parametrize("bad,message", [
    (np.ones((2, 5)), r"Linear expects input of shape \(\*, 3\), got shape \(2, 5\)"),
    (np.ones((2, 3), dtype=np.int64), "floating-point input"),
])
def test_linear_rejects_bad_input_with_a_clear_message(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        nn.Linear(3, 2)(bad)


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"Linear.backward\(\) was called before forward\(\)"):
        nn.Linear(3, 2).backward(np.ones((1, 2)))


def test_load_state_dict_names_missing_keys_and_wrong_shapes():
    model = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(KeyError, match="missing keys \\['0.bias'\\]"):
        model.load_state_dict({"0.weight": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="'0.weight' has shape \\(3, 4\\)"):
        model.load_state_dict({"0.weight": np.zeros((3, 4)), "0.bias": np.zeros(4)})
