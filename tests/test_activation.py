"""Activation functions against torch.nn (chapter 4): values, derivatives, stability, errors."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, assert_close, to_torch

pytestmark = pytest.mark.ch04

# (class name, constructor kwargs): every activation with each of its modes.
CASES = [
    ("ReLU", {}),
    ("LeakyReLU", {}),
    ("LeakyReLU", {"negative_slope": 0.2}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("GELU", {}),
    ("GELU", {"approximate": "tanh"}),
    ("Softmax", {"dim": -1}),
    ("Softmax", {"dim": 0}),
    ("LogSoftmax", {"dim": -1}),
    ("LogSoftmax", {"dim": 0}),
]
ELEMENTWISE = [case for case in CASES if case[0] not in ("Softmax", "LogSoftmax")]
SHAPES = [(), (7,), (3, 4), (2, 3, 4, 5)]


def case_id(case):
    name, kwargs = case
    return name + "".join(f"-{key}={value}" for key, value in kwargs.items())


def run_both(name, kwargs, x, dtype, device, grad_seed=7):
    """Forward and backward through ours and torch's with the same upstream gradient."""
    module = getattr(nn, name)(**kwargs)
    torch_module = getattr(torch.nn, name)(**kwargs)
    x = np.asarray(x, dtype=dtype)
    y = module(x)
    xt = to_torch(x, device, requires_grad=True)
    yt = torch_module(xt)
    assert y.dtype == x.dtype and y.shape == tuple(yt.shape)
    assert_close(y, yt, dtype, f"{name} forward")
    grad_output = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(dtype)
    grad_input = module.backward(grad_output)
    yt.backward(to_torch(grad_output, device))
    assert grad_input.dtype == x.dtype
    assert_close(grad_input, xt.grad, dtype, f"{name} dinput")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_forward_and_backward_match_torch(case, shape, dtype, device, rng):
    run_both(*case, 3 * rng.standard_normal(shape), dtype, device)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=4),
       scale=st.floats(0.1, 30.0), case=st.sampled_from(ELEMENTWISE))
def test_elementwise_activations_match_torch_on_generated_shapes(shape, scale, case):
    x = scale * np.random.default_rng(len(shape)).standard_normal(shape)
    run_both(*case, x, np.float64, "cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_is_stable_and_matches_torch_for_logits_of_1000(case, dtype, device):
    x = np.array([[-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0], [1000.0, 999.0, 0.0, -5.0, 2.0, 1000.0, -1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        run_both(*case, x, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU"])
def test_relu_family_derivative_at_zero_is_torchs(name, dtype, device):
    # torch takes f'(0) = 0 for ReLU and negative_slope for LeakyReLU.
    run_both(name, {}, np.array([-1.0, 0.0, 0.0, 2.0]), dtype, device)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 2)], ids=str)
def test_softmax_dim_none_follows_torchs_implicit_dim_rule(name, shape, rng):
    # torch's _get_softmax_dim: dim 0 for 0-, 1- and 3-dimensional inputs, else dim 1.
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        run_both(name, {"dim": None}, rng.standard_normal(shape), np.float64, "cpu")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_are_probabilities_and_log_softmax_is_their_log(dtype, rng):
    x = (10 * rng.standard_normal((4, 6))).astype(dtype)
    p = nn.Softmax(dim=1)(x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(nn.LogSoftmax(dim=1)(x), np.log(p), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck_of_activations(case, rng):
    name, kwargs = case
    # Stay away from ReLU's kink at 0, where the central difference is not the derivative.
    x = rng.standard_normal((3, 5))
    x = np.where(np.abs(x) < 1e-3, 0.5, x)
    report = check_module(getattr(nn, name)(**kwargs), x)
    assert report.worst < 1e-8, str(report)


@pytest.mark.parametrize("args", [
    ("ReLU", {}), ("ReLU", {"inplace": True}), ("LeakyReLU", {}),
    ("LeakyReLU", {"negative_slope": 0.2, "inplace": True}), ("Sigmoid", {}), ("Tanh", {}),
    ("GELU", {}), ("GELU", {"approximate": "tanh"}), ("Softmax", {}), ("Softmax", {"dim": 1}),
    ("LogSoftmax", {}), ("LogSoftmax", {"dim": -1}),
], ids=case_id)
def test_activation_repr_and_state_dict_are_torchs(args):
    name, kwargs = args
    module, torch_module = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert repr(module) == repr(torch_module)
    assert list(module.state_dict()) == list(torch_module.state_dict()) == []


def test_activation_in_sequential_backpropagates_like_torch(rng):
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.GELU(), torch.nn.Linear(6, 3),
                                      torch.nn.LogSoftmax(dim=1)).double()
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3), nn.LogSoftmax(dim=1))
    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
    x = rng.standard_normal((5, 4))
    xt = torch.tensor(x, requires_grad=True)
    g = rng.standard_normal((5, 3))
    assert_close(model(x), torch_model(xt), np.float64, "GELU sequential forward")
    torch_model(xt).backward(torch.tensor(g))
    assert_close(model.backward(g), xt.grad, np.float64, "GELU sequential dinput")


def test_float32_input_with_float64_grad_output_stays_float32(rng):
    for name, kwargs in CASES:
        module = getattr(nn, name)(**kwargs)
        module(rng.standard_normal((2, 3)).astype(np.float32))
        assert module.backward(np.ones((2, 3))).dtype == np.float32, name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_rejects_integer_input_and_torch_tensors(case):
    module = getattr(nn, case[0])(**case[1])
    with pytest.raises(TypeError, match=f"{case[0]} expects a floating-point input.*got dtype int64"):
        module(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="got a torch tensor"):
        module(torch.ones(2, 3))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_backward_before_forward_is_a_clear_error(case):
    with pytest.raises(RuntimeError, match=rf"{case[0]}.backward\(\) was called before forward\(\)"):
        getattr(nn, case[0])(**case[1]).backward(np.ones(3))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_backward_names_the_expected_grad_output_shape(case):
    module = getattr(nn, case[0])(**case[1])
    module(np.ones((2, 3)))
    with pytest.raises(ValueError, match=rf"{case[0]}.backward expects grad_output of shape \(2, 3\).*got \(3, 2\)"):
        module.backward(np.ones((3, 2)))


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU(approximate="erf")


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_softmax_dim_out_of_range_names_the_valid_range(name):
    with pytest.raises(ValueError, match=rf"{name}: dim=2 is out of range .* 2 dimensions \(expected dim in \[-2, 1\]\)"):
        getattr(nn, name)(dim=2)(np.ones((2, 3)))


def test_float32_exact_gelu_keeps_the_erf_error_bound_over_the_whole_float_range():
    # Abramowitz & Stegun 7.1.26 states |erf error| ≤ 1.5e-7, i.e. ≤ 0.75e-7 on Φ = ½(1 + erf);
    # float32 rounding of the ~23 passes adds at most a few ulp of 1. Reference: SciPy in float64.
    from scipy.special import ndtr

    magnitudes = np.geomspace(1e-38, 3e38, 200_001)
    x = np.concatenate([np.linspace(-12, 12, 2_000_001), magnitudes, -magnitudes, [0.0, -0.0]]).astype(np.float32)
    module = nn.GELU()
    y = module(x)
    slope = module.backward(np.ones_like(x))
    exact = x.astype(np.float64)
    cdf, pdf = ndtr(exact), np.exp(-0.5 * np.minimum(exact * exact, 1e4)) / np.sqrt(2 * np.pi)
    assert np.all(np.abs(y - exact * cdf) <= 4e-7 * np.abs(exact))
    assert np.max(np.abs(slope - (cdf + exact * pdf))) <= 4e-7
    # ±inf and NaN as torch computes them in float64: x Φ(x) is inf at +inf, NaN at −inf
    # (−inf · 0) and at NaN (torch's float32 kernel gives NaN at +inf as well).
    special = np.array([np.inf, -np.inf, np.nan])
    torch_y = torch.nn.GELU()(torch.tensor(special)).numpy()
    np.testing.assert_array_equal(module(special.astype(np.float32)), torch_y.astype(np.float32))
