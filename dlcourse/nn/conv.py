"""Convolution: `Conv2d`, computed as im2col + one matrix product.

A convolution is a matrix product once every receptive field is laid out as a column
("im2col"): with cols[(c, i, j), (n, oh, ow)] = x_pad[n, c, oh·s + i·d, ow·s + j·d],

    y[n, o, oh, ow] = b[o] + Σ_(c,i,j) W[o, c, i, j] · cols[(c, i, j), (n, oh, ow)].

Backward is the same product read the other way: dW = dY · colsᵀ; for stride 1 dx is itself a
convolution (of dY with the flipped kernel), otherwise dcols = Wᵀ · dY is summed back into
the receptive fields ("col2im"), one kernel offset at a time. The im2col arrays are built a
few images at a time, so that they stay in cache.

`window_view` and `add_windows` (the two directions of that reshuffle) are shared with the
pooling layers.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dlcourse._random import default_dtype
from dlcourse.nn import init
from dlcourse.nn.module import Module, check_float_input

__all__ = ["Conv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def pair(value, name: str, owner: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair (torch's `_pair`), with a clear error otherwise."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v in values):
        raise ValueError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    return int(values[0]), int(values[1])


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_total: int) -> int:
    """Number of window positions along one axis: ⌊(size + pad − d·(k−1) − 1) / s⌋ + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def window_view(padded: np.ndarray, kernel_size, stride, dilation, out_size) -> np.ndarray:
    """Every receptive field of `padded`, without copying.

    view[..., i, j, oh, ow] = padded[..., oh·sh + i·dh, ow·sw + j·dw]

    Shape:
        padded: (..., Hp, Wp), large enough for every window
        returns: (..., kh, kw, Ho, Wo), read-only
    """
    (kh, kw), (sh, sw), (dh, dw), (out_h, out_w) = kernel_size, stride, dilation, out_size
    *leading, row, col = padded.strides
    return as_strided(padded, shape=(*padded.shape[:-2], kh, kw, out_h, out_w),
                      strides=(*leading, dh * row, dw * col, sh * row, sw * col), writeable=False)


def add_windows(grad_windows: np.ndarray, stride, dilation, padded_shape) -> np.ndarray:
    """The adjoint of `window_view`: add each window's gradient back where it was read.

    Windows overlap, so the sum runs over the kh·kw kernel offsets; for a fixed offset the
    positions read by different windows are distinct, so a strided `+=` is exact.

    Shape:
        grad_windows: (..., kh, kw, Ho, Wo)
        returns: padded_shape = (..., Hp, Wp)
    """
    *_, kh, kw, out_h, out_w = grad_windows.shape
    (sh, sw), (dh, dw) = stride, dilation
    grad = np.zeros(padded_shape, dtype=grad_windows.dtype)
    for i in range(kh):
        for j in range(kw):
            grad[..., i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                 j * dw: j * dw + sw * (out_w - 1) + 1: sw] += grad_windows[..., i, j, :, :]
    return grad


class Conv2d(Module):
    r"""2-D convolution (cross-correlation, as in torch) over an (N, C, H, W) batch.

        y[n, o, oh, ow] = b[o] + Σ_{c ∈ group(o), i, j} W[o, c', i, j] · x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw]

    where c' = c − (first channel of o's group): each group of C_in / groups input channels
    feeds its own C_out / groups output channels.

    Shape:
        input: (N, C_in, H, W) or unbatched (C_in, H, W)
        output: (N, C_out, H_out, W_out) or (C_out, H_out, W_out), with
            H_out = ⌊(H + pad_top + pad_bottom − dh·(kh − 1) − 1) / sh⌋ + 1 (W_out alike)
        weight: (C_out, C_in / groups, kh, kw), bias: (C_out,)

    padding is an int, a pair, 'valid' (none) or 'same' (output size = input size; stride 1
    only; for an even effective kernel the extra row/column goes at the bottom/right, as in
    torch). padding_mode says what the padding holds: 'zeros'; 'reflect' (the input mirrored
    about its edge row/column, which is not repeated); 'replicate' (the edge repeated);
    'circular' (the input wrapped around, as on a torus). groups splits the channels into independent convolutions (groups = C_in is a
    depthwise convolution). Initialised as torch does: W by kaiming_uniform_(a=√5),
    b ~ U(−1/√fan_in, 1/√fan_in) with fan_in = C_in / groups · kh · kw.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        super().__init__()
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {set(PADDING_MODES)}, "
                             f"but got padding_mode={padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = pair(stride, "stride", "Conv2d")
        self.dilation = pair(dilation, "dilation", "Conv2d")
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError(f"Conv2d: kernel_size, stride and dilation must be positive, got "
                             f"{self.kernel_size}, {self.stride} and {self.dilation}")
        self.groups, self.padding_mode = int(groups), padding_mode
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
            # 'same' pads d·(k − 1) in total; torch puts the odd one at the bottom/right.
            totals = [0, 0] if padding == "valid" else [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            self._pads = tuple((total // 2, total - total // 2) for total in totals)
        else:
            self.padding = pair(padding, "padding", "Conv2d")
            if min(self.padding) < 0:
                raise ValueError(f"Conv2d: padding must be non-negative, got {self.padding}")
            self._pads = tuple((p, p) for p in self.padding)
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        weight_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.register_parameter("weight", np.empty(weight_shape, dtype))
        self.register_parameter("bias", np.empty(self.out_channels, dtype) if bias else None)
        self.reset_parameters()
        self._cache = None

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].size
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x) -> np.ndarray:
        x = check_float_input(self, x)
        c = self.in_channels
        if x.ndim not in (3, 4) or x.shape[-3] != c:
            layout = {4: f"(N, {c}, H, W)", 3: f"({c}, H, W)"}.get(x.ndim, f"(N, {c}, H, W) or ({c}, H, W)")
            raise ValueError(f"Conv2d expects input of shape {layout}, got shape {tuple(x.shape)}")
        (top, bottom), (left, right) = self._pads
        largest_pad = max(top, bottom, left, right)
        limit = {"reflect": min(x.shape[-2:]) - 1, "circular": min(x.shape[-2:])}.get(self.padding_mode)
        if limit is not None and largest_pad > limit:
            raise ValueError(f"Conv2d: padding_mode={self.padding_mode!r} needs padding at most {limit} "
                             f"for input of shape {tuple(x.shape)}, got {largest_pad}")
        padded = (x.shape[-2] + top + bottom, x.shape[-1] + left + right)
        reach = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
        if padded[0] < reach[0] or padded[1] < reach[1]:
            raise ValueError(f"Conv2d: the padded input is {padded[0]} x {padded[1]} per channel, smaller "
                             f"than the (dilated) kernel {reach[0]} x {reach[1]}; got input shape {tuple(x.shape)}")
        return x

    def forward(self, x):
        x = self._check_input(x)
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]
        n, c, h, w = x.shape
        out_size = tuple(output_size(size, k, s, d, sum(p)) for size, k, s, d, p
                         in zip((h, w), self.kernel_size, self.stride, self.dilation, self._pads))
        weight = self._weight_with_bias(x.dtype)
        y = np.empty((n, self.out_channels, *out_size), x.dtype)
        # A few images at a time: their im2col block stays in the core's cache, and the
        # product of each image lands directly in its slice of y (no transposed copy).
        for start, cols in self._im2col_blocks(x, out_size):
            block = y[start:start + cols.shape[0]].reshape(cols.shape[0], self.groups, -1, cols.shape[-1])
            np.matmul(weight, cols, out=block)
        self._cache = (x, out_size, unbatched)
        return y[0] if unbatched else y

    def _weight_with_bias(self, dtype):
        """W as (groups, C_out/g, C_in/g·kh·kw + 1), the bias as its last column: each im2col
        block carries a row of ones, so that one product adds the bias too."""
        groups = self.groups
        weight = self.weight.astype(dtype, copy=False).reshape(groups, self.out_channels // groups, -1)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.astype(dtype, copy=False)
        return np.concatenate([weight, bias.reshape(groups, -1, 1)], axis=2)

    def _im2col_blocks(self, x, out_size):
        """Yield (first image, cols) over the batch x (N, C, H, W); cols (images, groups,
        C_in/g·kh·kw + 1, Ho·Wo) holds every receptive field of those images (padded by
        padding_mode), rows (c, i, j), then a row of ones.

        Chosen for speed: blocks of about 1 MiB, padded, written and read while in cache,
        instead of one im2col array kh·kw times the size of the input.
        """
        n, c = x.shape[:2]
        rows, positions = c * math.prod(self.kernel_size), math.prod(out_size)
        per_block = max(1, (1 << 20) // max(1, (rows + self.groups) * positions * x.itemsize))
        buffer = np.empty((min(per_block, n), self.groups, rows // self.groups + 1, positions), x.dtype)
        buffer[:, :, -1] = 1
        for start in range(0, n, per_block):
            images = self._pad(x[start:start + per_block])
            cols = buffer[:images.shape[0]]
            windows = window_view(images, self.kernel_size, self.stride, self.dilation, out_size)
            # Split the channels by group on both sides: those reshapes are views.
            shape = (images.shape[0], self.groups, c // self.groups, *self.kernel_size, *out_size)
            np.copyto(cols[:, :, :-1].reshape(shape), windows.reshape(shape))
            yield start, cols

    def backward(self, grad_output):
        x, out_size, unbatched = self._saved(self._cache)
        n, c, h, w = x.shape
        expected = (n, self.out_channels, *out_size)[1 if unbatched else 0:]
        grad_output = np.asarray(grad_output)
        if grad_output.shape != expected:
            raise ValueError(f"Conv2d.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        grad_output = grad_output.astype(x.dtype, copy=False)
        if unbatched:
            grad_output = grad_output[None]
        groups = self.groups
        # (N, groups, C_out/g, Ho·Wo): each image's dY, in the layout of the forward product.
        grad_y = np.ascontiguousarray(grad_output).reshape(n, groups, self.out_channels // groups,
                                                            math.prod(out_size))
        # dW (with the bias as its last column) = Σ_images cols · dYᵀ, as (rows, C_out/g) products.
        grad_weight = np.zeros((groups, c // groups * math.prod(self.kernel_size) + 1,
                                self.out_channels // groups), x.dtype)
        for start, cols in self._im2col_blocks(x, out_size):
            grad_block = grad_y[start:start + cols.shape[0]]
            grad_weight += np.matmul(cols, grad_block.transpose(0, 1, 3, 2)).sum(axis=0)
        grad_weight = grad_weight.transpose(0, 2, 1)
        self.grads["weight"] += grad_weight[:, :, :-1].reshape(self.weight.shape)
        if self.bias is not None:
            self.grads["bias"] += grad_weight[:, :, -1].reshape(-1)
        if self.stride == (1, 1) and self.padding_mode == "zeros":
            grad_input = self._transposed_convolution(grad_y, (h, w))
        else:
            padded_shape = (n, c, h + sum(self._pads[0]), w + sum(self._pads[1]))
            grad_input = self._pad_backward(self._grad_padded(grad_y, padded_shape, out_size), (h, w))
        return grad_input[0] if unbatched else grad_input

    def _transposed_convolution(self, grad_y, size):
        r"""dx for stride 1 and zero padding: dx = dY ⋆ W flipped, itself a convolution.

        dx[c, r, q] = Σ_{o,i,j} W[o, c, i, j] · dY[o, r + top − i·dh, q + left − j·dw]; with dY
        padded by d·(k − 1) on every side and i' = k − 1 − i that is a cross-correlation of the
        padded dY with W[:, :, ::-1, ::-1], read from row `top` and column `left` on.
        Chosen for speed: one product per block of images with inner dimension C_out·kh·kw,
        no col2im scatter.
        """
        n, groups = grad_y.shape[:2]
        (kh, kw), (dh, dw), (top, _), (left, _) = self.kernel_size, self.dilation, *self._pads
        out_h, out_w = self._cache[1]
        reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)
        h, w = size
        flipped = self.weight.astype(grad_y.dtype, copy=False)[:, :, ::-1, ::-1].reshape(
            groups, self.out_channels // groups, self.in_channels // groups, kh, kw)
        flipped = np.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(groups, self.in_channels // groups, -1)
        grad_input = np.empty((n, self.in_channels, h, w), grad_y.dtype)
        rows = self.out_channels * kh * kw
        per_block = max(1, (1 << 20) // max(1, rows * h * w * grad_y.itemsize))
        cols = np.empty((min(per_block, n), groups, rows // groups, h * w), grad_y.dtype)
        # dY padded by the kernel's reach, a block at a time; the border stays zero.
        padded = np.zeros((min(per_block, n), self.out_channels, out_h + 2 * reach_h, out_w + 2 * reach_w), grad_y.dtype)
        for start in range(0, n, per_block):
            count = min(per_block, n - start)
            padded[:count, :, reach_h:reach_h + out_h, reach_w:reach_w + out_w] = \
                grad_y[start:start + count].reshape(count, self.out_channels, out_h, out_w)
            # The rows and columns of padded dY that the windows of dx read start at (top, left).
            source = padded[:count, :, top:top + h + reach_h, left:left + w + reach_w]
            windows = window_view(source, self.kernel_size, (1, 1), self.dilation, (h, w))
            np.copyto(cols[:count].reshape(count, self.out_channels, kh, kw, h, w), windows)
            out = grad_input[start:start + count].reshape(count, groups, -1, h * w)
            np.matmul(flipped, cols[:count], out=out)
        return grad_input

    def _grad_padded(self, grad_y, padded_shape, out_size):
        """d x_pad (N, C, Hp, Wp) for any stride: dcols = Wᵀ · dY, one kernel offset (i, j) at a
        time, each landing on the strided slice that offset read (the kh·kw-times-larger dcols
        is never stored)."""
        groups, (kh, kw), (sh, sw), (dh, dw) = self.groups, self.kernel_size, self.stride, self.dilation
        n, c = padded_shape[:2]
        out_h, out_w = out_size
        # (kh, kw, groups, C_in/g, C_out/g), contiguous so that each product goes to BLAS.
        weight_t = np.ascontiguousarray(self.weight.astype(grad_y.dtype, copy=False).reshape(
            groups, self.out_channels // groups, c // groups, kh, kw).transpose(3, 4, 0, 2, 1))
        grad = np.zeros(padded_shape, dtype=grad_y.dtype)
        for i in range(kh):
            for j in range(kw):
                # (groups, C_in/g, C_out/g) @ (N, groups, C_out/g, Ho·Wo) → (N, C, Ho, Wo)
                grad_offset = (weight_t[i, j] @ grad_y).reshape(n, c, out_h, out_w)
                grad[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                     j * dw: j * dw + sw * (out_w - 1) + 1: sw] += grad_offset
        return grad

    def _pad(self, x):
        """x (N, C, H, W) → (N, C, H + top + bottom, W + left + right), filled by padding_mode."""
        (top, bottom), (left, right) = self._pads
        h, w = x.shape[2:]
        if self.padding_mode == "zeros":
            padded = np.zeros((*x.shape[:2], h + top + bottom, w + left + right), dtype=x.dtype)
            padded[:, :, top:top + h, left:left + w] = x
            return padded
        rows, cols = self._source_indices(h, w)
        return x[:, :, rows[:, None], cols[None, :]]

    def _pad_backward(self, grad_padded, size):
        """The adjoint of `_pad`: each input pixel collects the gradient of every copy of it."""
        (top, _), (left, _) = self._pads
        h, w = size
        if self.padding_mode == "zeros":
            return grad_padded[:, :, top:top + h, left:left + w]
        rows, cols = self._source_indices(h, w)
        # One-hot matrices P (padded, input) per axis: padded = P_h x P_wᵀ, so dx = P_hᵀ dpadded P_w.
        select_rows = (rows[:, None] == np.arange(h)).astype(grad_padded.dtype)
        select_cols = (cols[:, None] == np.arange(w)).astype(grad_padded.dtype)
        return select_rows.T @ grad_padded @ select_cols

    def _source_indices(self, h, w):
        """For every padded row and column, the input row/column it copies
        (NumPy's pad modes 'reflect', 'edge' and 'wrap' are torch's reflect, replicate, circular)."""
        numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[self.padding_mode]
        (top, bottom), (left, right) = self._pads
        return (np.pad(np.arange(h), (top, bottom), mode=numpy_mode),
                np.pad(np.arange(w), (left, right), mode=numpy_mode))

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text
