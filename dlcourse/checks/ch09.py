"""Chapter 9 (convolutional networks): the output-size formula, conv2d forward and backward
(the backward derived by the student), max pooling forward and backward.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.Conv2d` and
`dlcourse.nn.MaxPool2d` (and the size formula `dlcourse.nn.conv.output_size` that Conv2d
uses), which the test suite holds to PyTorch. Everything is float64, so the default rtol
1e-6 leaves room only for summation order.
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import part

# Library implementations of the mechanics this chapter's parts ask for (Part.forbids).
_CONV_IMPLEMENTATIONS = (
    "dlcourse.nn.Conv2d",
    "dlcourse.nn.conv.window_view",
    "dlcourse.nn.conv.add_windows",
    "scipy.signal",
    "scipy.ndimage",
)
_POOL_IMPLEMENTATIONS = (
    "dlcourse.nn.MaxPool2d",
    "dlcourse.nn.AvgPool2d",
    "dlcourse.nn.pooling._Pool2d",
    "dlcourse.nn.pooling.reduce_windows",
    "dlcourse.nn.conv.window_view",
    "dlcourse.nn.conv.add_windows",
    "scipy.ndimage",
)


# ---------------------------------------------------------------------- output size
@part("ch09.conv_output_size", "conv_output_size", asks='the output-size formula',
      forbids=("dlcourse.nn.conv.output_size", "dlcourse.nn.pooling.pooled_size", "dlcourse.nn.Conv2d"))
def conv_output_size_cases(rng):
    """⌊(size + 2·padding − kernel) / stride⌋ + 1 for one spatial axis (ints)."""
    fixed = [(32, 3, 1, 1), (28, 5, 1, 0), (7, 3, 2, 1), (8, 3, 2, 0), (5, 5, 1, 0), (1, 3, 1, 1),
             (10, 4, 3, 2), (224, 7, 2, 3), (6, 1, 4, 0)]
    drawn = []
    for _ in range(6):
        kernel = int(rng.integers(1, 8))
        padding = int(rng.integers(0, 4))
        size = int(rng.integers(max(1, kernel - 2 * padding), 40))
        drawn.append((size, kernel, int(rng.integers(1, 5)), padding))
    return fixed + drawn


# ---------------------------------------------------------------------- conv2d
def _conv(w, b, stride, padding):
    out_channels, in_channels, kh, kw = w.shape
    layer = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride, padding=padding, dtype=np.float64)
    layer.weight[...] = w
    layer.bias[...] = b
    return layer


# (N, C, H, W), (F, kh, kw), stride, padding: square and rectangular, strided, padded, a 1×1
# kernel, a kernel as large as the padded input (1×1 output), a stride that leaves the last
# rows unread (floor), a single image and a single channel.
_CONV_SHAPES = [
    ((2, 3, 5, 5), (4, 3, 3), 1, 1),
    ((3, 2, 7, 6), (3, 3, 2), 2, 1),
    ((1, 1, 4, 4), (2, 1, 1), 1, 0),
    ((2, 4, 3, 3), (5, 3, 3), 1, 0),
    ((2, 2, 8, 7), (3, 4, 3), 3, 2),
    ((1, 3, 6, 6), (1, 5, 5), 2, 2),
]


def _conv_inputs(rng):
    cases = []
    for (n, c, h, w), (f, kh, kw), stride, padding in _CONV_SHAPES:
        cases.append((rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, kh, kw)),
                      rng.standard_normal(f), stride, padding))
    return cases


@part("ch09.conv2d_forward", "conv2d_forward", asks="convolution's forward pass",
      forbids=_CONV_IMPLEMENTATIONS)
def conv2d_forward_cases(rng):
    """Conv2d (cross-correlation) of an (N, C, H, W) batch with (F, C, kh, kw) filters, stride, zero padding."""
    return _conv_inputs(rng)


# Numerical differentiation would answer a derived part without deriving anything.
_NUMERICAL_GRADIENTS = ("dlcourse.gradcheck.numerical_gradient", "dlcourse.gradcheck.check_module")


@part("ch09.conv2d_backward", "conv2d_backward", asks="convolution's backward pass",
      forbids=_CONV_IMPLEMENTATIONS + _NUMERICAL_GRADIENTS, derived=True)
def conv2d_backward_cases(rng):
    """Conv2d backward: (dx, dw, db) for an upstream gradient of the output's shape."""
    cases = []
    for x, w, b, stride, padding in _conv_inputs(rng):
        out = _conv(w, b, stride, padding)(x)
        cases.append((rng.standard_normal(out.shape), x, w, stride, padding))
    return cases


# ---------------------------------------------------------------------- max pooling
# (N, C, H, W), kernel, stride: the usual 2/2, overlapping windows (stride < kernel, where
# one input can be the maximum of several windows), sizes that do not divide (floor),
# a window as large as the input, a 1×1 window.
_POOL_SHAPES = [
    ((2, 3, 4, 4), 2, 2),
    ((1, 2, 7, 7), 3, 2),
    ((2, 1, 5, 6), 2, 1),
    ((3, 2, 5, 5), 2, 2),
    ((1, 1, 3, 3), 3, 3),
    ((2, 2, 4, 3), 1, 1),
]


def _pool_inputs(rng):
    # Standard normal entries: ties (where the gradient's target would be ambiguous) have
    # probability zero.
    return [(rng.standard_normal(shape), kernel, stride) for shape, kernel, stride in _POOL_SHAPES]


@part("ch09.maxpool_forward", "maxpool_forward", asks="max pooling's forward pass",
      forbids=_POOL_IMPLEMENTATIONS)
def maxpool_forward_cases(rng):
    """Max pooling of an (N, C, H, W) batch with a square window and a stride, no padding."""
    return _pool_inputs(rng)


@part("ch09.maxpool_backward", "maxpool_backward", asks="max pooling's backward pass",
      forbids=_POOL_IMPLEMENTATIONS)
def maxpool_backward_cases(rng):
    """Max pooling backward: each output's gradient goes to its window's maximum (summed where windows overlap)."""
    cases = []
    for x, kernel, stride in _pool_inputs(rng):
        out = nn.MaxPool2d(kernel, stride)(x)
        cases.append((rng.standard_normal(out.shape), x, kernel, stride))
    return cases


