"""Upsample (nearest, linear, bilinear, bicubic, trilinear) against torch.nn.Upsample (chapter 13)."""
import numpy as np
import pytest
import torch

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, assert_close, to_torch

pytestmark = pytest.mark.ch13

CASES = [
    ((2, 3, 4, 4), {"scale_factor": 2}),
    ((1, 2, 3, 5), {"scale_factor": 3}),
    ((2, 1, 4, 6), {"scale_factor": 1.5}),
    ((2, 2, 5, 4), {"scale_factor": (2, 0.5)}),
    ((3, 2, 8, 8), {"scale_factor": 0.5}),
    ((2, 2, 3, 4), {"size": (7, 9)}),
    ((1, 3, 6, 6), {"size": 4}),
    ((2, 1, 5, 3), {"size": (5, 3)}),
    ((1, 1, 4, 7), {"scale_factor": 1.7, "recompute_scale_factor": True}),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kwargs", CASES)
def test_upsample_nearest_forward_and_backward_match_torch(shape, kwargs, dtype, device, rng):
    x = rng.standard_normal(shape).astype(dtype)
    module = nn.Upsample(**kwargs)
    y = module(x)
    xt = to_torch(x, device, requires_grad=True)
    yt = torch.nn.Upsample(**kwargs)(xt)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, yt, dtype, "Upsample forward")
    grad_output = rng.standard_normal(y.shape).astype(dtype)
    grad_input = module.backward(grad_output)
    yt.backward(to_torch(grad_output, device))
    assert grad_input.dtype == np.dtype(dtype)
    assert_close(grad_input, xt.grad, dtype, "Upsample dinput")


def test_upsample_scale_two_repeats_each_pixel_in_a_block():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], dtype=float)
    np.testing.assert_array_equal(nn.Upsample(scale_factor=2)(x)[0, 0], expected)


@pytest.mark.parametrize("kwargs", [{"scale_factor": 2}, {"size": (5, 3)}, {"scale_factor": 0.5}])
def test_upsample_gradcheck(kwargs, rng):
    report = check_module(nn.Upsample(**kwargs), rng.standard_normal((2, 2, 4, 4)))
    assert report.worst < 1e-8, str(report)


def test_upsample_repr_reads_like_torch():
    for kwargs in ({"scale_factor": 2}, {"size": (3, 5)}, {"scale_factor": (2, 1.5)}):
        assert repr(nn.Upsample(**kwargs)) == repr(torch.nn.Upsample(**kwargs))


@pytest.mark.parametrize("kwargs,message", [
    ({"scale_factor": 2, "mode": "area"}, "'area' and 'nearest-exact' are not implemented"),
    ({}, "exactly one of size and scale_factor"),
    ({"size": 4, "scale_factor": 2}, "exactly one of size and scale_factor"),
    ({"scale_factor": -1}, "scale_factor must be positive"),
    ({"scale_factor": 2, "align_corners": True}, "align_corners"),
])
def test_upsample_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.Upsample(**kwargs)


@pytest.mark.parametrize("bad,error,message", [
    (np.ones((2, 4)), ValueError, r"Upsample with mode='nearest' expects input of shape \(N, C, W\) or "
                                  r"\(N, C, H, W\) or \(N, C, D, H, W\), got shape \(2, 4\)"),
    (np.ones((1, 1, 2, 2), dtype=np.int64), TypeError, "floating-point input"),
])
def test_upsample_rejects_bad_input_with_a_clear_message(bad, error, message):
    with pytest.raises(error, match=message):
        nn.Upsample(scale_factor=2)(bad)


def test_upsample_backward_checks_order_and_shape():
    module = nn.Upsample(scale_factor=2)
    with pytest.raises(RuntimeError, match=r"Upsample.backward\(\) was called before forward\(\)"):
        module.backward(np.ones((1, 1, 4, 4)))
    module(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"expects grad_output of shape \(1, 1, 4, 4\), got \(1, 1, 2, 2\)"):
        module.backward(np.ones((1, 1, 2, 2)))


INTERPOLATING_CASES = [
    ((2, 3, 5), {"scale_factor": 2.5, "mode": "linear"}),
    ((2, 3, 9), {"size": 4, "mode": "linear", "align_corners": True}),
    ((2, 2, 5, 7), {"scale_factor": (0.6, 1.7), "mode": "bilinear"}),
    ((1, 2, 3, 4), {"size": (7, 1), "mode": "bilinear", "align_corners": True}),
    ((2, 2, 4, 6), {"scale_factor": 1.5, "mode": "bicubic", "recompute_scale_factor": True}),
    ((2, 1, 8, 7), {"size": (3, 5), "mode": "bicubic"}),
    ((1, 2, 6, 5), {"scale_factor": 0.5, "mode": "bicubic", "align_corners": True}),
    ((1, 2, 3, 4, 2), {"size": (5, 2, 3), "mode": "trilinear"}),
    ((1, 1, 2, 3, 4), {"scale_factor": (2, 1, 0.5), "mode": "nearest"}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kwargs", INTERPOLATING_CASES)
def test_upsample_interpolating_modes_match_torch_also_downsampling(shape, kwargs, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    module = nn.Upsample(**kwargs)
    xt = to_torch(x, "cpu", requires_grad=True)
    yt = torch.nn.Upsample(**kwargs)(xt)
    y = module(x)
    assert_close(y, yt, dtype, "Upsample forward")
    grad_output = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(to_torch(grad_output, "cpu"))
    assert_close(module.backward(grad_output), xt.grad, dtype, "Upsample dinput")


def test_upsample_linear_with_align_corners_keeps_the_end_samples():
    x = np.array([[[1.0, 3.0, 7.0]]])
    y = nn.Upsample(size=5, mode="linear", align_corners=True)(x)
    np.testing.assert_allclose(y[0, 0], [1.0, 2.0, 3.0, 5.0, 7.0])


def test_upsample_mode_needs_its_input_rank():
    with pytest.raises(ValueError, match=r"mode='bilinear' expects input of shape \(N, C, H, W\), got shape \(1, 1, 4\)"):
        nn.Upsample(scale_factor=2, mode="bilinear")(np.ones((1, 1, 4)))
    with pytest.raises(ValueError, match=r"size=\(2, 3\) has 2 entries, but the input has 3 spatial dimensions"):
        nn.Upsample(size=(2, 3))(np.ones((1, 1, 2, 2, 2)))
