"""Pooling: `MaxPool2d`, `AvgPool2d` and `AdaptiveAvgPool2d` over (N, C, H, W) batches.

MaxPool2d and AvgPool2d read the same windows as a convolution (`conv.window_view`) and
reduce each one to a number; backward sends the gradient back through the windows
(`conv.add_windows`).
"""
import numpy as np

from dlcourse.nn.conv import add_windows, pair, window_view
from dlcourse.nn.module import Module, check_float_input

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's output length: ⌊ or ⌈(size + 2p − d·(k − 1) − 1) / s⌉ + 1, where with ceil_mode
    the last window must still start inside the input or its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def reduce_windows(ufunc, windows: np.ndarray) -> np.ndarray:
    """ufunc (np.add, np.maximum) over the kernel axes of windows (N, C, kh, kw, Ho, Wo).

    One kernel offset at a time, elementwise over whole planes: several times faster than a
    NumPy reduction over two strided axes.
    """
    kh, kw = windows.shape[2:4]
    result = windows[:, :, 0, 0].copy()
    for i in range(kh):
        for j in range(kw):
            if i or j:
                ufunc(result, windows[:, :, i, j], out=result)
    return result


class _Pool2d(Module):
    """What both pools share: argument handling, the input check and the padded windows."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        super().__init__()
        name = type(self).__name__
        # torch keeps the arguments as given (an int stays an int in the repr).
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._kernel = pair(kernel_size, "kernel_size", name)
        self._stride = pair(self.stride, "stride", name)
        self._pad = pair(padding, "padding", name)
        self._dilation = pair(dilation, "dilation", name)
        if min(self._kernel + self._stride + self._dilation) < 1:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive, got "
                             f"{kernel_size}, {self.stride} and {dilation}")
        if any(p < 0 or p > k // 2 for p, k in zip(self._pad, self._kernel)):
            raise ValueError(f"{name}: padding must be between 0 and half the kernel size, "
                             f"got padding={padding} with kernel_size={kernel_size}")
        self._cache = None

    def _padded_windows(self, x, fill):
        """Check x, pad it with `fill` and return (windows, padded shape, input, unbatched).

        windows: (N, C, kh, kw, Ho, Wo). The padding on the bottom/right is whatever the
        last window needs (ceil_mode may reach past the padded input, torch clips there).
        """
        name = type(self).__name__
        x = check_float_input(self, x)
        if x.ndim not in (3, 4):
            raise ValueError(f"{name} expects input of shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]
        n, c, h, w = x.shape
        out_size = tuple(pooled_size(size, k, s, p, d, self.ceil_mode) for size, k, s, p, d
                         in zip((h, w), self._kernel, self._stride, self._pad, self._dilation))
        if min(out_size) < 1:
            raise ValueError(f"{name}: input of shape {tuple(x.shape)} is too small for kernel_size="
                             f"{self.kernel_size} with padding={self.padding}: output size would be "
                             f"{out_size[0]} x {out_size[1]}")
        ph, pw = self._pad
        needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k
                  in zip(out_size, self._stride, self._dilation, self._kernel)]
        padded_shape = (n, c, max(needed[0], h + ph), max(needed[1], w + pw))
        if padded_shape == x.shape:
            padded = x  # no padding needed: the windows read the input itself
        else:
            padded = np.full(padded_shape, fill, dtype=x.dtype)
            padded[:, :, ph:ph + h, pw:pw + w] = x
        windows = window_view(padded, self._kernel, self._stride, self._dilation, out_size)
        return windows, padded.shape, x, unbatched

    def _check_grad(self, grad_output, out_shape, dtype, unbatched):
        expected = out_shape[1:] if unbatched else out_shape
        grad_output = np.asarray(grad_output)
        if grad_output.shape != expected:
            raise ValueError(f"{type(self).__name__}.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        grad_output = grad_output.astype(dtype, copy=False)
        return grad_output[None] if unbatched else grad_output

    def _unpad(self, grad_padded, input_shape):
        (ph, pw), (h, w) = self._pad, input_shape[-2:]
        return grad_padded[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_Pool2d):
    r"""y[n, c, oh, ow] = max_{i,j} x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw], x_pad padded with −∞.

    Backward sends each output's gradient to the input element that was the maximum; where
    a window holds the maximum several times, to the first in row-major window order (as
    torch does). Overlapping windows (stride < kernel) add their gradients.

    Shape:
        input: (N, C, H, W) or (C, H, W)
        output: (N, C, H_out, W_out), H_out = ⌊(H + 2p − d·(k − 1) − 1) / s⌋ + 1
            (⌈·⌉ with ceil_mode, as long as the last window starts inside the input or the
            left padding)
        indices (return_indices=True): int64, same shape; the flat index h·W + w of each
            maximum in its (H, W) input plane, as torch returns it
    stride defaults to kernel_size; padding ≤ kernel_size / 2.

    One difference from torch: a dilated window can miss the input entirely (output −∞);
    torch's backward adds that output's gradient at the flat index it reports, which lies
    outside the window, while here it is dropped.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.dilation = dilation
        self.return_indices = bool(return_indices)

    def forward(self, x):
        windows, padded_shape, x, unbatched = self._padded_windows(x, -np.inf)
        *_, kw, out_h, out_w = windows.shape
        y = reduce_windows(np.maximum, windows)  # np.maximum propagates NaN, as torch does
        argmax = self._torch_argmax(windows, y)
        self._cache = (argmax, padded_shape, x.shape, x.dtype, unbatched)
        if not self.return_indices:
            return y[0] if unbatched else y
        i, j = np.divmod(argmax, kw)
        (sh, sw), (dh, dw), (ph, pw) = self._stride, self._dilation, self._pad
        rows = np.arange(out_h)[:, None] * sh - ph + i * dh
        cols = np.arange(out_w) * sw - pw + j * dw
        indices = (rows * x.shape[3] + cols).astype(np.int64)
        return (y[0], indices[0]) if unbatched else (y, indices)

    def _torch_argmax(self, windows, y):
        """Position (i·kw + j) of each window's maximum, chosen as torch chooses it.

        torch scans a window row by row from its first in-bounds element, replacing its running
        maximum (initially −∞) only by a strictly larger value or by a NaN. So a tie goes to
        the first maximum, a window holding nothing above −∞ reports its first in-bounds
        position, and a window holding NaN its last NaN.

        windows: (N, C, kh, kw, Ho, Wo), y: their maxima → (N, C, Ho, Wo) int
        """
        n, c, kh, kw, out_h, out_w = windows.shape
        argmax = np.zeros(y.shape, dtype=np.int32)
        # Descending, so the first maximum is written last. A loop over the few kernel
        # positions is several times faster than argmax over a middle axis, and the
        # arithmetic update than a masked assignment (which branches on every element).
        for position in reversed(range(kh * kw)):
            is_max = windows[:, :, position // kw, position % kw] == y
            argmax += is_max * (position - argmax)
        nothing_above_minus_inf = y == -np.inf
        if nothing_above_minus_inf.any():
            # First i with oh·s − p + i·d ≥ 0, i.e. i = ⌈(p − oh·s) / d⌉ where positive.
            first = [-(-np.maximum(p - np.arange(out) * s, 0) // d) for out, s, p, d
                     in zip(y.shape[2:], self._stride, self._pad, self._dilation)]
            argmax = np.where(nothing_above_minus_inf, first[0][:, None] * self._kernel[1] + first[1], argmax)
        if np.isnan(y).any():
            is_nan = np.isnan(windows).reshape(n, c, kh * kw, out_h, out_w)
            last_nan = kh * kw - 1 - is_nan[:, :, ::-1].argmax(axis=2)
            argmax = np.where(np.isnan(y), last_nan, argmax)
        return argmax

    def backward(self, grad_output):
        argmax, padded_shape, input_shape, dtype, unbatched = self._saved(self._cache)
        grad_output = self._check_grad(grad_output, (*input_shape[:2], *argmax.shape[2:]), dtype, unbatched)
        kh, kw = self._kernel
        n, c, out_h, out_w = grad_output.shape
        grad_windows = np.empty((n, c, kh * kw, out_h, out_w), dtype=grad_output.dtype)
        # Multiplying by the 0/1 mask is several times faster than np.where, but 0·inf is NaN.
        finite = np.isfinite(grad_output).all()
        for position in range(kh * kw):
            chosen = argmax == position
            grad_windows[:, :, position] = grad_output * chosen if finite else np.where(chosen, grad_output, 0)
        grad_padded = add_windows(grad_windows.reshape(n, c, kh, kw, out_h, out_w),
                                  self._stride, self._dilation, padded_shape)
        grad_input = self._unpad(grad_padded, input_shape)
        return grad_input[0] if unbatched else grad_input

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    r"""y[n, c, oh, ow] = (1 / divisor) Σ_{i,j} x_pad[n, c, oh·sh + i, ow·sw + j], x_pad zero-padded.

    The divisor is, as in torch: divisor_override if given; else with count_include_pad the
    window's area clipped to the padded input (k_h·k_w except where ceil_mode lets a window
    hang over it); else the number of real input elements in the window. Backward spreads
    each output's gradient / divisor evenly over its window.

    Shape:
        input: (N, C, H, W) or (C, H, W)
        output: (N, C, H_out, W_out), H_out = ⌊(H + 2p − k) / s⌋ + 1 (⌈·⌉ with ceil_mode)
    stride defaults to kernel_size; padding ≤ kernel_size / 2.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and divisor_override == 0:
            raise ValueError("AvgPool2d: divisor_override must not be zero")
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def _divisor(self, input_size, out_size, dtype) -> np.ndarray:
        """(Ho, Wo) divisor of every window, from torch's start/end clipping rules."""
        if self.divisor_override is not None:
            return np.full(out_size, self.divisor_override, dtype=dtype)
        lengths = []
        for size, out, k, s, p in zip(input_size, out_size, self._kernel, self._stride, self._pad):
            start = np.arange(out) * s - p
            end = np.minimum(start + k, size + p)
            if not self.count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, size)
            lengths.append(end - start)
        return np.outer(*lengths).astype(dtype)

    def forward(self, x):
        windows, padded_shape, x, unbatched = self._padded_windows(x, 0.0)
        divisor = self._divisor(x.shape[2:], windows.shape[4:], x.dtype)
        y = reduce_windows(np.add, windows) / divisor
        self._cache = (divisor, padded_shape, x.shape, unbatched)
        return y[0] if unbatched else y

    def backward(self, grad_output):
        divisor, padded_shape, input_shape, unbatched = self._saved(self._cache)
        grad_output = self._check_grad(grad_output, (*input_shape[:2], *divisor.shape),
                                       divisor.dtype, unbatched)
        n, c, out_h, out_w = grad_output.shape
        share = (grad_output / divisor)[:, :, None, None]
        grad_windows = np.broadcast_to(share, (n, c, *self._kernel, out_h, out_w))
        grad_padded = add_windows(grad_windows, self._stride, self._dilation, padded_shape)
        grad_input = self._unpad(grad_padded, input_shape)
        return grad_input[0] if unbatched else grad_input

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    r"""Average pooling to a fixed output size, whatever the input size (ResNet's global pool).

    Output row oh averages input rows [⌊oh·H/Ho⌋, ⌈(oh+1)·H/Ho⌉) (torch's windows), and
    columns alike. The average is separable, so with the (Ho, H) matrix A_h holding
    1/window-length on each window (A_w likewise):

        y[n, c] = A_h · x[n, c] · A_wᵀ,    dx[n, c] = A_hᵀ · dy[n, c] · A_w.

    Shape:
        input: (N, C, H, W) or (C, H, W)
        output: (N, C, Ho, Wo) or (C, Ho, Wo); output_size is an int, a pair, or a pair
            with None for "same as the input"
    """

    def __init__(self, output_size):
        super().__init__()
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if len(sizes) != 2 or not all(size is None or (isinstance(size, (int, np.integer)) and size >= 0)
                                      for size in sizes):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be an int, a pair of ints or None, "
                             f"got {output_size!r}")
        self.output_size = output_size  # kept as given, for torch's repr
        self._sizes = sizes
        self._cache = None

    @staticmethod
    def _averaging_matrix(size: int, out: int, dtype) -> np.ndarray:
        """(out, size): row o is 1/length on [⌊o·size/out⌋, ⌈(o+1)·size/out⌉), zero elsewhere."""
        start = (np.arange(out) * size) // out
        end = -((-(np.arange(out) + 1) * size) // out)
        position = np.arange(size)
        inside = (position >= start[:, None]) & (position < end[:, None])
        return (inside / (end - start)[:, None]).astype(dtype)

    def forward(self, x):
        x = check_float_input(self, x)
        if x.ndim not in (3, 4):
            raise ValueError(f"AdaptiveAvgPool2d expects input of shape (N, C, H, W) or (C, H, W), "
                             f"got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        out_h, out_w = (size if size is not None else full for size, full in zip(self._sizes, (h, w)))
        rows = self._averaging_matrix(h, out_h, x.dtype)
        cols = self._averaging_matrix(w, out_w, x.dtype)
        self._cache = (rows, cols, x.shape)
        return rows @ x @ cols.T

    def backward(self, grad_output):
        rows, cols, input_shape = self._saved(self._cache)
        expected = (*input_shape[:-2], rows.shape[0], cols.shape[0])
        grad_output = np.asarray(grad_output)
        if grad_output.shape != expected:
            raise ValueError(f"AdaptiveAvgPool2d.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        return rows.T @ grad_output.astype(rows.dtype, copy=False) @ cols

    def extra_repr(self):
        return f"output_size={self.output_size}"
