"""Convolution: `Conv2d`, computed as im2col + one matrix product.

A convolution is a matrix product once every receptive field is laid out as a column
("im2col"): with cols[(c, i, j), (n, oh, ow)] = x_pad[n, c, oh·s + i·d, ow·s + j·d],

    y[n, o, oh, ow] = b[o] + Σ_(c,i,j) W[o, c, i, j] · cols[(c, i, j), (n, oh, ow)].

Backward is the same product read the other way: dW = dY · colsᵀ, and dcols = Wᵀ · dY is
summed back into the receptive fields ("col2im"), one kernel offset at a time. For stride 1
both run on shifted views of the flattened padded image instead of im2col copies
(`Conv2d._stride_one_backward`). The im2col arrays are built a few images at a time, so
that they stay in cache.

`window_view` and `add_windows` (the two directions of that reshuffle) are shared with the
pooling layers.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dlcourse._random import default_dtype
from dlcourse.nn import init
from dlcourse.nn._elementwise import aligned_empty
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
        y = aligned_empty((n, self.out_channels, *out_size), x.dtype)
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
        buffer = aligned_empty((min(per_block, n), self.groups, rows // self.groups + 1, positions), x.dtype, offset=1024)
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
        padded_shape = (n, c, h + sum(self._pads[0]), w + sum(self._pads[1]))
        if self.stride == (1, 1):
            grad_weight, grad_padded = self._stride_one_backward(grad_y, x, padded_shape)
        else:
            grad_weight = self._im2col_weight_backward(grad_y, x, out_size)
            grad_padded = self._grad_padded(grad_y, padded_shape, out_size)
        self.grads["weight"] += grad_weight.reshape(self.weight.shape)
        if self.bias is not None:
            self.grads["bias"] += grad_y.sum(axis=(0, 3)).reshape(-1)
        grad_input = self._pad_backward(grad_padded, (h, w))
        return grad_input[0] if unbatched else grad_input

    def _im2col_weight_backward(self, grad_y, x, out_size):
        """dW = Σ_images dY · colsᵀ, as (groups, C_out/g, C_in/g·kh·kw)."""
        groups, c = self.groups, x.shape[1]
        grad_weight = np.zeros((groups, c // groups * math.prod(self.kernel_size) + 1,
                                self.out_channels // groups), x.dtype)
        for start, cols in self._im2col_blocks(x, out_size):
            grad_block = grad_y[start:start + cols.shape[0]]
            grad_weight += np.matmul(cols, grad_block.transpose(0, 1, 3, 2)).sum(axis=0)
        # The last row of cols is the ones that carry the bias; dW leaves it out.
        return grad_weight[:, :-1].transpose(0, 2, 1)

    def _stride_one_backward(self, grad_y, x, padded_shape):
        r"""(dW as (groups, C_out/g, C_in/g, kh, kw), d x_pad (N, C, Hp, Wp)) for stride 1,
        without im2col arrays.

        With stride 1, window (oh, ow) at kernel offset (i, j) reads x_pad[oh + i·dh, ow + j·dw]:
        position p + s_ij of the flattened padded channel, p = oh·Wp + ow, s_ij = i·dh·Wp + j·dw.
        With dY laid out on rows of Wp columns (the columns from Wo on zero) and every channel
        P ≥ Hp·Wp + s long (the rest zero too), both gradients are products with shifted views:
            dW[:, :, i, j] = Σ_p dY[:, p] · x_pad.flat[:, p + s_ij]ᵀ          (no copy of x)
            dx_pad.flat[c·P + p + s_ij] += dcols[(i, j, c), p],  dcols = Wᵀ · dY
        the second one contiguous add per kernel offset over all channels at once.
        Chosen for speed: no kh·kw-times-larger im2col copies, and no scatter in Wo-element
        pieces; the extra Wp − Wo columns cost a few percent more arithmetic.
        """
        n, groups = grad_y.shape[:2]
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        c_in, c_out, (padded_h, padded_w) = self.in_channels, self.out_channels, padded_shape[2:]
        out_h, out_w = self._cache[1]
        wide, length = out_h * padded_w, padded_h * padded_w + (kw - 1) * dw
        dtype, size = grad_y.dtype, grad_y.itemsize
        # Wᵀ per group with rows (i, j, c): (groups, kh·kw·C_in/g, C_out/g), contiguous for BLAS.
        weight_t = np.ascontiguousarray(self.weight.astype(dtype, copy=False).reshape(
            groups, c_out // groups, c_in // groups, kh, kw).transpose(0, 3, 4, 2, 1)).reshape(groups, -1, c_out // groups)
        block = max(1, min(n, (1 << 20) // max(1, c_in * kh * kw * length * size)))
        padded_x = np.zeros((block, c_in, length), dtype)
        grad_wide = np.zeros((block, groups, c_out // groups, length), dtype)
        dcols = aligned_empty((block, groups, kh, kw, c_in // groups * length), dtype)
        grad_flat = aligned_empty((block, groups, c_in // groups * length + length), dtype, offset=1024)
        grad_weight = np.zeros((groups, kh, kw, c_out // groups, c_in // groups), dtype)
        grad_padded = aligned_empty(padded_shape, dtype, offset=2048)
        for start in range(0, n, block):
            count = min(block, n - start)
            padded_x[:count, :, :padded_h * padded_w] = self._pad(x[start:start + count]).reshape(count, c_in, -1)
            rows = grad_wide[:count, :, :, :wide].reshape(count, c_out, out_h, padded_w)
            rows[..., :out_w] = grad_y[start:start + count].reshape(count, c_out, out_h, out_w)
            # x_pad.flat[c, p + s_ij] for every (i, j): a view (images, groups, kh, kw, p, c).
            shifted = as_strided(padded_x[:count], shape=(count, groups, kh, kw, wide, c_in // groups),
                                 strides=(padded_x.strides[0], c_in // groups * padded_x.strides[1],
                                          dh * padded_w * size, dw * size, size, padded_x.strides[1]),
                                 writeable=False)
            grad_weight += np.matmul(grad_wide[:count, :, None, None, :, :wide], shifted).sum(axis=0)
            np.matmul(weight_t, grad_wide[:count], out=dcols[:count].reshape(count, groups, -1, length))
            grad_flat[:count] = 0
            for i in range(kh):
                for j in range(kw):
                    shift = i * dh * padded_w + j * dw
                    grad_flat[:count, :, shift:shift + dcols.shape[-1]] += dcols[:count, :, i, j]
            channels = grad_flat[:count, :, :dcols.shape[-1]].reshape(count, c_in, length)
            grad_padded[start:start + count] = channels[:, :, :padded_h * padded_w].reshape(
                count, c_in, padded_h, padded_w)
        return grad_weight.transpose(0, 3, 4, 1, 2), grad_padded

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
