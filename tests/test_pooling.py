"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d against torch.nn (chapter 9)."""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, assert_close, to_torch

pytestmark = pytest.mark.ch09


def run_both(module, torch_module, x, dtype, device):
    """Forward and backward through both with the same upstream gradient; compare output,
    input gradient and (with return_indices) the indices exactly."""
    name = type(module).__name__
    x = x.astype(dtype)
    xt = to_torch(x, device, requires_grad=True)
    y, yt = module(x), torch_module(xt)
    if isinstance(yt, tuple):
        (y, indices), (yt, indices_t) = y, yt
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, indices_t.cpu().numpy(), err_msg=f"{name} indices")
    assert y.dtype == np.dtype(dtype), f"{name} returned {y.dtype} for a {np.dtype(dtype)} input"
    assert_close(y, yt, dtype, f"{name} forward")
    grad_output = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    grad_input = module.backward(grad_output)
    yt.backward(to_torch(grad_output, device))
    assert grad_input.dtype == np.dtype(dtype), f"{name} dinput is {grad_input.dtype}"
    assert_close(grad_input, xt.grad, dtype, f"{name} dinput")


def tied_input(rng, shape):
    """Small integers: most windows hold their maximum more than once."""
    return rng.integers(-2, 3, shape).astype(np.float64)


# (constructor arguments, input shape)
MAX_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 8, 8)),
    "overlapping_k3_s2": (dict(kernel_size=3, stride=2), (2, 3, 9, 8)),
    "padding_1": (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 7)),
    "non_square_2x3_stride_1_2": (dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)), (2, 2, 6, 9)),
    "dilation_2": (dict(kernel_size=3, stride=1, padding=1, dilation=2), (2, 2, 8, 7)),
    "ceil_mode": (dict(kernel_size=3, stride=2, ceil_mode=True), (2, 3, 8, 6)),
    "ceil_mode_padding_dilation": (dict(kernel_size=(2, 3), stride=(2, 3), padding=1, dilation=(2, 1), ceil_mode=True),
                                   (2, 2, 9, 10)),
    "unbatched": (dict(kernel_size=2, stride=1), (3, 5, 6)),
    "kernel_equals_input": (dict(kernel_size=(5, 4)), (2, 2, 5, 4)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", list(MAX_CASES))
def test_maxpool2d_forward_gradient_and_indices_match_torch(case, ties, dtype, device, rng):
    kwargs, shape = MAX_CASES[case]
    x = tied_input(rng, shape) if ties else rng.standard_normal(shape)
    run_both(nn.MaxPool2d(**kwargs, return_indices=True), torch.nn.MaxPool2d(**kwargs, return_indices=True),
             x, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_routes_tied_gradient_to_first_max_in_row_major_window_order(dtype, device):
    # Every window is constant: all of each window's gradient goes to its top-left element.
    x = np.ones((1, 1, 4, 4))
    run_both(nn.MaxPool2d(2), torch.nn.MaxPool2d(2), x, dtype, device)
    pool = nn.MaxPool2d(2)
    pool(x)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 2, 2)))[0, 0], expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_picks_torch_positions_for_minus_inf_and_nan_windows(dtype, device, rng):
    # torch replaces its running max (−∞ at the first in-bounds element) only by a larger
    # value or a NaN: an all −∞ window reports its first in-bounds element, a NaN window its last NaN.
    x = rng.standard_normal((2, 2, 6, 7))
    x[0, 0, 1, 1:3] = np.nan
    x[1, 1, :3, :3] = -np.inf
    for kwargs in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2), dict(kernel_size=2, padding=1)):
        module = nn.MaxPool2d(**kwargs, return_indices=True)
        torch_module = torch.nn.MaxPool2d(**kwargs, return_indices=True)
        xt = to_torch(x.astype(dtype), device, requires_grad=True)
        (y, indices), (yt, indices_t) = module(x.astype(dtype)), torch_module(xt)
        np.testing.assert_array_equal(indices, indices_t.cpu().numpy())
        np.testing.assert_array_equal(y, yt.detach().cpu().numpy())
        grad_output = rng.standard_normal(y.shape).astype(dtype)
        yt.backward(to_torch(grad_output, device))
        assert_close(module.backward(grad_output), xt.grad, dtype, "MaxPool2d dinput")


def test_maxpool2d_sends_an_infinite_gradient_only_to_the_maximum(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    grad_output = rng.standard_normal((1, 2, 2, 2))
    grad_output[0, 0, 0, 0], grad_output[0, 1, 1, 1] = np.inf, np.nan
    module = nn.MaxPool2d(2)
    module(x)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.MaxPool2d(2)(xt).backward(torch.tensor(grad_output))
    np.testing.assert_array_equal(module.backward(grad_output), xt.grad.numpy())


def test_maxpool2d_window_wholly_in_padding_gives_minus_inf_and_torch_index():
    # Only a dilated window can miss the input entirely; torch reports −∞ and the flat index of
    # the window's first position at or after the input's start (its backward then adds the
    # gradient at that index even though it is outside the window, dlcourse drops it).
    kwargs = dict(kernel_size=2, stride=1, padding=1, dilation=2, return_indices=True)
    x = np.arange(5.0).reshape(1, 1, 5, 1)
    (y, indices), (yt, indices_t) = nn.MaxPool2d(**kwargs)(x), torch.nn.MaxPool2d(**kwargs)(torch.tensor(x))
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(indices, indices_t.numpy())
    assert np.isneginf(y).all()


def test_maxpool2d_without_return_indices_returns_an_array(rng):
    y = nn.MaxPool2d(2)(rng.standard_normal((1, 2, 4, 4)))
    assert isinstance(y, np.ndarray) and y.shape == (1, 2, 2, 2)


AVG_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 8, 8)),
    "overlapping_k3_s2": (dict(kernel_size=3, stride=2), (2, 3, 9, 8)),
    "padding_count_include_pad": (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 8)),
    "padding_exclude_pad": (dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), (2, 2, 7, 8)),
    "ceil_mode_include_pad": (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 6, 6)),
    "ceil_mode_exclude_pad": (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                              (2, 2, 6, 6)),
    "divisor_override": (dict(kernel_size=(2, 3), padding=(1, 1), divisor_override=5), (2, 2, 6, 7)),
    "non_square_stride_2_1": (dict(kernel_size=(3, 2), stride=(2, 1)), (2, 3, 7, 5)),
    "unbatched": (dict(kernel_size=2, stride=1, padding=1), (3, 5, 6)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(AVG_CASES))
def test_avgpool2d_forward_and_gradient_match_torch(case, dtype, device, rng):
    kwargs, shape = AVG_CASES[case]
    run_both(nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), rng.standard_normal(shape), dtype, device)


pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=30, deadline=None)
@given(size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=pairs, stride=pairs, dilation=pairs,
       padding=st.tuples(st.integers(0, 1), st.integers(0, 1)), ceil_mode=st.booleans(), ties=st.booleans())
def test_maxpool2d_matches_torch_on_generated_shapes(size, kernel, stride, dilation, padding, ceil_mode, ties):
    padding = tuple(min(p, k // 2) for p, k in zip(padding, kernel))
    if any(s + 2 * p < d * (k - 1) + 1 for s, p, d, k in zip(size, padding, dilation, kernel)):
        return  # no window fits: covered by the error-message tests
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                  return_indices=True)
    rng = np.random.default_rng(sum(size) + sum(kernel))
    x = tied_input(rng, (2, 2, *size)) if ties else rng.standard_normal((2, 2, *size))
    # A dilated window can fall wholly into the padding (output −∞); see the −∞ test for those.
    assume(torch.isfinite(torch.nn.MaxPool2d(**kwargs)(torch.tensor(x))[0]).all())
    run_both(nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), x, np.float64, "cpu")


@settings(max_examples=30, deadline=None)
@given(size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=pairs, stride=pairs,
       padding=st.tuples(st.integers(0, 1), st.integers(0, 1)), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), divisor_override=st.sampled_from([None, 3]))
def test_avgpool2d_matches_torch_on_generated_shapes(size, kernel, stride, padding, ceil_mode, count_include_pad,
                                                     divisor_override):
    padding = tuple(min(p, k // 2) for p, k in zip(padding, kernel))
    if any(s + 2 * p < k for s, p, k in zip(size, padding, kernel)):
        return
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    x = np.random.default_rng(sum(size) + sum(kernel)).standard_normal((2, 2, *size))
    run_both(nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), x, np.float64, "cpu")


@pytest.mark.parametrize("module", [
    nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d((2, 3), stride=1, dilation=(1, 2), ceil_mode=True),
    nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d((2, 3), padding=1, divisor_override=4),
], ids=repr)
def test_pooling_gradcheck(module, rng):
    # Distinct values keep every maximum at least 0.01 above the rest, so ±eps never changes the arg-max.
    x = rng.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) / 100.0
    report = check_module(module, x)
    assert report.worst < 1e-8, str(report)


@pytest.mark.parametrize("ours,theirs", [
    (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
    (nn.MaxPool2d((2, 3), stride=(1, 2), padding=1, dilation=2, return_indices=True, ceil_mode=True),
     torch.nn.MaxPool2d((2, 3), stride=(1, 2), padding=1, dilation=2, return_indices=True, ceil_mode=True)),
    (nn.AvgPool2d(2), torch.nn.AvgPool2d(2)),
    (nn.AvgPool2d(3, 2, 1, True, False, 2), torch.nn.AvgPool2d(3, 2, 1, True, False, 2)),
], ids=repr)
def test_pooling_repr_reads_like_torch(ours, theirs):
    assert repr(ours) == repr(theirs)


def test_pooling_has_no_parameters_and_an_empty_state_dict():
    for module in (nn.MaxPool2d(2), nn.AvgPool2d(2)):
        assert module.state_dict() == {} and module.params == {}


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
def test_pooling_rejects_bad_input_with_a_clear_message(pool, rng):
    name = pool.__name__
    with pytest.raises(ValueError, match=rf"{name} expects input of shape \(N, C, H, W\) or \(C, H, W\), "
                                         r"got shape \(3, 8\)"):
        pool(2)(np.ones((3, 8)))
    with pytest.raises(TypeError, match="floating-point input"):
        pool(2)(np.ones((1, 1, 4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match=rf"{name}: input of shape \(1, 1, 2, 2\) is too small for kernel_size=3 "
                                         r"with padding=0: output size would be 0 x 0"):
        pool(3)(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=rf"{name}: padding must be between 0 and half the kernel size, "
                                         r"got padding=2 with kernel_size=3"):
        pool(3, padding=2)
    with pytest.raises(RuntimeError, match=rf"{name}.backward\(\) was called before forward\(\)"):
        pool(2).backward(np.ones((1, 1, 2, 2)))
    module = pool(2)
    module(rng.standard_normal((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=rf"{name}.backward expects grad_output of shape \(1, 2, 2, 2\), "
                                         r"got \(1, 2, 4, 4\)"):
        module.backward(np.ones((1, 2, 4, 4)))


def test_pooling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisor_override must not be zero"):
        nn.AvgPool2d(2, divisor_override=0)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a pair of ints, got \(2, 2, 2\)"):
        nn.MaxPool2d((2, 2, 2))
    with pytest.raises(ValueError, match="kernel_size, stride and dilation must be positive"):
        nn.MaxPool2d(2, stride=0)


# ---------------------------------------------------------------------------- AdaptiveAvgPool2d

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size,shape", [
    ((1, 1), (2, 3, 7, 5)),        # ResNet's global average pool
    (3, (2, 2, 7, 9)),             # uneven, overlapping windows
    ((None, 2), (3, 5, 4)),        # None keeps the input size; unbatched input
    ((4, 3), (1, 1, 2, 2)),        # output larger than the input
    ((5, 7), (2, 2, 5, 7)),        # identity
])
def test_adaptive_avgpool2d_forward_and_gradient_match_torch(output_size, shape, dtype, device, rng):
    run_both(nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
             rng.standard_normal(shape), dtype, device)


def test_adaptive_avgpool2d_gradcheck_repr_and_errors(rng):
    report = check_module(nn.AdaptiveAvgPool2d((2, 3)), rng.standard_normal((2, 2, 5, 7)))
    assert report.worst < 1e-8, str(report)
    for output_size in ((1, 1), 3, (None, 2)):
        assert repr(nn.AdaptiveAvgPool2d(output_size)) == repr(torch.nn.AdaptiveAvgPool2d(output_size))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d expects input of shape \(N, C, H, W\) or \(C, H, W\), "
                                         r"got shape \(2, 2\)"):
        nn.AdaptiveAvgPool2d(1)(np.ones((2, 2)))
    with pytest.raises(ValueError, match="output_size must be an int, a pair of ints or None"):
        nn.AdaptiveAvgPool2d((1, 2, 3))
    with pytest.raises(RuntimeError, match=r"AdaptiveAvgPool2d.backward\(\) was called before forward\(\)"):
        nn.AdaptiveAvgPool2d(1).backward(np.ones((1, 1, 1, 1)))
