"""Conv2d, Flatten and Unflatten against torch.nn (chapter 9)."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch09


def run_both(module, torch_module, x, dtype, device):
    """Forward and backward through both with the same upstream gradient; compare everything."""
    load_from_torch(module, torch_module)
    name = type(module).__name__
    x = x.astype(dtype)
    y = module(x)
    xt = to_torch(x, device, requires_grad=True)
    with warnings.catch_warnings():
        # torch warns that padding='same' with an even kernel copies the input; not our concern.
        warnings.simplefilter("ignore", UserWarning)
        yt = torch_module(xt)
    assert y.dtype == np.dtype(dtype), f"{name} returned {y.dtype} for a {np.dtype(dtype)} input"
    assert_close(y, yt, dtype, f"{name} forward")
    grad_output = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    grad_input = module.backward(grad_output)
    yt.backward(to_torch(grad_output, device))
    assert grad_input.dtype == np.dtype(dtype), f"{name} dinput is {grad_input.dtype}"
    assert_close(grad_input, xt.grad, dtype, f"{name} dinput")
    assert_param_grads_close(module, torch_module, dtype, name)


# (constructor arguments, input shape): every feature of torch's Conv2d that dlcourse supports.
CONV_CASES = {
    "3x3": (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 8, 8)),
    "non_square_kernel_2x3": (dict(in_channels=2, out_channels=3, kernel_size=(2, 3)), (2, 2, 6, 7)),
    "stride_2": (dict(in_channels=3, out_channels=5, kernel_size=3, stride=2), (3, 3, 9, 9)),
    "stride_2_1_padding_1_2": (dict(in_channels=2, out_channels=4, kernel_size=3, stride=(2, 1), padding=(1, 2)),
                               (2, 2, 7, 6)),
    "dilation_2": (dict(in_channels=3, out_channels=2, kernel_size=3, dilation=2, padding=1), (2, 3, 9, 8)),
    "padding_same": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"), (2, 3, 6, 7)),
    "padding_same_even_kernel_dilated": (dict(in_channels=2, out_channels=3, kernel_size=(2, 4), dilation=(1, 2),
                                              padding="same"), (2, 2, 5, 9)),
    "padding_valid": (dict(in_channels=2, out_channels=3, kernel_size=2, padding="valid"), (2, 2, 5, 5)),
    "no_bias": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, bias=False), (2, 3, 6, 6)),
    "unbatched": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (3, 7, 5)),
    "odd_sizes_stride_2": (dict(in_channels=5, out_channels=3, kernel_size=3, stride=2, padding=1), (3, 5, 11, 7)),
    "1x1": (dict(in_channels=6, out_channels=4, kernel_size=1), (2, 6, 5, 3)),
    "groups_2": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1), (2, 4, 6, 5)),
    "depthwise": (dict(in_channels=3, out_channels=6, kernel_size=(3, 2), groups=3, stride=(1, 2)), (2, 3, 7, 8)),
    "kernel_equals_input": (dict(in_channels=2, out_channels=3, kernel_size=(4, 5)), (3, 2, 4, 5)),
    "empty_batch": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (0, 3, 7, 5)),
    "reflect": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=(2, 1), padding_mode="reflect"),
                (2, 2, 5, 4)),
    "replicate_stride_dilation": (dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=2, dilation=(1, 2),
                                       padding=(3, 2), padding_mode="replicate"), (2, 2, 6, 5)),
    "circular_groups": (dict(in_channels=4, out_channels=2, kernel_size=3, groups=2, padding=(1, 3),
                             padding_mode="circular"), (2, 4, 4, 3)),
    "reflect_same_unbatched": (dict(in_channels=3, out_channels=2, kernel_size=(2, 4), padding="same",
                                    padding_mode="reflect"), (3, 5, 6)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_forward_and_all_gradients_match_torch(case, dtype, device, rng):
    kwargs, shape = CONV_CASES[case]
    torch_conv = torch.nn.Conv2d(**kwargs, dtype=TORCH_DTYPE[np.dtype(dtype)], device=device)
    run_both(nn.Conv2d(**kwargs), torch_conv, rng.standard_normal(shape), dtype, device)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), in_channels=st.integers(1, 4), out_channels=st.integers(1, 4),
       size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), bias=st.booleans())
def test_conv2d_matches_torch_on_generated_shapes(batch, in_channels, out_channels, size, kernel, stride, padding,
                                                  dilation, bias):
    reach = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    if any(s + 2 * p < r for s, p, r in zip(size, padding, reach)):
        return  # no valid output position: covered by the error-message tests
    kwargs = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                  padding=padding, dilation=dilation, bias=bias)
    x = np.random.default_rng(batch + 7 * in_channels).standard_normal((batch, in_channels, *size))
    run_both(nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs, dtype=torch.float64), x, np.float64, "cpu")


@pytest.mark.parametrize("kwargs,shape", [
    (dict(in_channels=2, out_channels=3, kernel_size=(2, 3)), (2, 2, 4, 5)),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (2, 2, 5, 4)),
    (dict(in_channels=4, out_channels=2, kernel_size=2, groups=2, padding="same", bias=False), (1, 4, 3, 4)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 4, 3)),
])
def test_conv2d_gradcheck(kwargs, shape, rng):
    report = check_module(nn.Conv2d(**kwargs), rng.standard_normal(shape))
    assert report.worst < 1e-8, str(report)


def test_conv2d_state_dict_has_torch_keys_and_shapes():
    for kwargs in (dict(kernel_size=(2, 3)), dict(kernel_size=3, groups=2, bias=False)):
        ours = nn.Conv2d(4, 6, **kwargs).state_dict()
        theirs = torch.nn.Conv2d(4, 6, **kwargs).state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == tuple(v.shape) for k, v in theirs.items())


def test_conv2d_default_init_has_torch_bounds_and_spread():
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform_(a=√5) reduces to U(±1/√fan_in)
    assert conv.weight.dtype == np.float32 and conv.weight.shape == (32, 16, 3, 3)
    assert np.abs(conv.weight).max() <= bound and np.abs(conv.bias).max() <= bound
    torch_std = torch.nn.Conv2d(16, 32, 3).weight.std().item()
    assert abs(conv.weight.std() - torch_std) / torch_std < 0.05
    grouped = nn.Conv2d(16, 32, 3, groups=4)
    assert np.abs(grouped.bias).max() <= 1 / np.sqrt(4 * 9) and np.abs(grouped.bias).max() > bound


def test_conv2d_dtype_argument_picks_parameter_dtype_and_float32_stays_float32(rng):
    assert nn.Conv2d(2, 3, 3, dtype=np.float64).weight.dtype == np.float64
    conv = nn.Conv2d(2, 3, 3, dtype=np.float64)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = conv(x)
    assert y.dtype == np.float32 and conv.backward(np.ones_like(y)).dtype == np.float32


def test_conv2d_gradients_accumulate_until_zero_grad(rng):
    conv = nn.Conv2d(2, 3, 3)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    g = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    for _ in range(2):
        conv(x)
        conv.backward(g)
    once = nn.Conv2d(2, 3, 3)
    once.load_state_dict(conv.state_dict())
    once(x)
    once.backward(g)
    np.testing.assert_allclose(conv.grads["weight"], 2 * once.grads["weight"], rtol=1e-5)
    np.testing.assert_allclose(conv.grads["bias"], 2 * once.grads["bias"], rtol=1e-5)
    conv.zero_grad()
    assert not conv.grads["weight"].any() and not conv.grads["bias"].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_cnn_of_conv_pool_flatten_linear_matches_torch(dtype, device, rng):
    t = torch.nn
    torch_model = t.Sequential(t.Conv2d(1, 4, 3, padding=1), t.MaxPool2d(2), t.Conv2d(4, 6, 3, stride=2),
                               t.AvgPool2d(2, ceil_mode=True), t.Flatten(), t.Linear(6 * 2 * 1, 5))
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2),
                          nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(6 * 2 * 1, 5))
    assert repr(model) == repr(torch_model)
    assert list(model.state_dict()) == list(torch_model.state_dict())
    run_both(model, torch_model.to(device, TORCH_DTYPE[np.dtype(dtype)]), rng.standard_normal((3, 1, 14, 13)),
             dtype, device)


@pytest.mark.parametrize("args,kwargs", [
    ((3, 16, 3), {}),
    ((3, 16, (2, 3)), dict(stride=(2, 1), padding=(1, 2), dilation=2, bias=False)),
    ((4, 8, 3), dict(padding="same", groups=2)),
    ((4, 8, 1), dict(padding="valid", stride=2)),
])
def test_conv2d_repr_reads_like_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


@pytest.mark.parametrize("bad,error,message", [
    (np.ones((2, 4, 8, 8)), ValueError, r"Conv2d expects input of shape \(N, 3, H, W\), got shape \(2, 4, 8, 8\)"),
    (np.ones((4, 8, 8)), ValueError, r"Conv2d expects input of shape \(3, H, W\), got shape \(4, 8, 8\)"),
    (np.ones((3, 8)), ValueError, r"Conv2d expects input of shape \(N, 3, H, W\) or \(3, H, W\), got shape \(3, 8\)"),
    (np.ones((1, 3, 2, 8)), ValueError,
     r"padded input is 2 x 8 per channel, smaller than the \(dilated\) kernel 3 x 3"),
    (np.ones((1, 3, 8, 8), dtype=np.int64), TypeError, "floating-point input"),
    (torch.ones(1, 3, 8, 8), TypeError, "got a torch tensor"),
])
def test_conv2d_rejects_bad_input_with_a_clear_message(bad, error, message):
    with pytest.raises(error, match=message):
        nn.Conv2d(3, 2, 3)(bad)


def test_conv2d_kernel_larger_than_padded_input_counts_dilation_and_padding():
    message = r"padded input is 6 x 6 per channel, smaller than the \(dilated\) kernel 7 x 7"
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(1, 1, 4, dilation=2, padding=1)(np.ones((1, 1, 4, 4)))
    assert nn.Conv2d(1, 1, 4, dilation=2, padding=2)(np.ones((1, 1, 4, 4))).shape == (1, 1, 2, 2)


def test_conv2d_backward_errors_are_clear(rng):
    conv = nn.Conv2d(3, 2, 3)
    with pytest.raises(RuntimeError, match=r"Conv2d.backward\(\) was called before forward\(\)"):
        conv.backward(np.ones((1, 2, 6, 6)))
    conv(rng.standard_normal((1, 3, 8, 8)))
    message = r"Conv2d.backward expects grad_output of shape \(1, 2, 6, 6\), got \(1, 2, 8, 8\)"
    with pytest.raises(ValueError, match=message):
        conv.backward(np.ones((1, 2, 8, 8)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(padding="full"), r"Invalid padding string 'full', should be one of \{'same', 'valid'\}"),
    (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
    (dict(groups=2), "in_channels must be divisible by groups"),
    (dict(groups=0), "groups must be a positive integer"),
    (dict(padding_mode="mirror"), "padding_mode must be one of"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size must be an int or a pair of ints, got \(3, 3, 3\)"),
    (dict(stride=0), r"kernel_size, stride and dilation must be positive"),
    (dict(padding=-1), r"padding must be non-negative, got \(-1, -1\)"),
])
def test_conv2d_rejects_bad_arguments_like_torch(kwargs, message):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(**args)


# ---------------------------------------------------------------------------- Flatten, Unflatten

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("args,shape", [((), (2, 3, 4, 5)), ((0, -1), (2, 3, 4)), ((1, 2), (2, 3, 4, 5)),
                                        ((-3, -2), (2, 3, 4, 5)), ((2, 2), (2, 3, 4))])
def test_flatten_matches_torch(args, shape, dtype, device, rng):
    run_both(nn.Flatten(*args), torch.nn.Flatten(*args), rng.standard_normal(shape), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("args,shape", [((1, (2, 5)), (3, 10)), ((1, (1, 4, 4)), (2, 16)), ((-1, [2, -1]), (3, 2, 6)),
                                        ((0, (3, 1)), (3, 4))])
def test_unflatten_matches_torch(args, shape, dtype, device, rng):
    run_both(nn.Unflatten(*args), torch.nn.Unflatten(*args), rng.standard_normal(shape), dtype, device)


def test_flatten_and_unflatten_repr_reads_like_torch():
    for ours, theirs in [(nn.Flatten(), torch.nn.Flatten()), (nn.Flatten(0, 2), torch.nn.Flatten(0, 2)),
                         (nn.Unflatten(1, (2, 5)), torch.nn.Unflatten(1, (2, 5))),
                         (nn.Unflatten(-1, [4, -1]), torch.nn.Unflatten(-1, [4, -1]))]:
        assert repr(ours) == repr(theirs)


def test_flatten_and_unflatten_gradcheck(rng):
    assert check_module(nn.Flatten(), rng.standard_normal((2, 3, 2))).worst < 1e-9
    assert check_module(nn.Unflatten(1, (2, 3)), rng.standard_normal((2, 6))).worst < 1e-9


def test_flatten_and_unflatten_errors_are_clear():
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1, end_dim=-1\) needs an input with dimensions 1 and -1, "
                                         r"got shape \(5,\)"):
        nn.Flatten()(np.ones(5))
    with pytest.raises(ValueError, match="start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1)(np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match=r"Unflatten expects dimension 1 of size 2 · 5, got shape \(3, 7\)"):
        nn.Unflatten(1, (2, 5))(np.ones((3, 7)))
    with pytest.raises(TypeError, match="unflattened_size must be a tuple of ints, but found type int"):
        nn.Unflatten(1, 2)
    with pytest.raises(RuntimeError, match=r"Flatten.backward\(\) was called before forward\(\)"):
        nn.Flatten().backward(np.ones((2, 3)))
    flatten = nn.Flatten()
    flatten(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Flatten.backward expects grad_output of shape \(2, 12\), got \(2, 3, 4\)"):
        flatten.backward(np.ones((2, 3, 4)))


@pytest.mark.parametrize("mode,padding,shape", [("reflect", 3, (1, 1, 3, 8)), ("circular", (1, 4), (1, 1, 5, 3))])
def test_conv2d_padding_mode_too_wide_for_the_input_is_a_clear_error(mode, padding, shape):
    with pytest.raises(ValueError, match=f"padding_mode='{mode}' needs padding at most"):
        nn.Conv2d(1, 1, 2, padding=padding, padding_mode=mode)(np.zeros(shape))
