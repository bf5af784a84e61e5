r"""Upsampling (chapter 13): `Upsample` with nearest-neighbour interpolation, the decoder's
way back up to the input resolution in a convolutional autoencoder.

Nearest neighbour copies each input pixel into a block of output pixels. Output row i reads
input row src(i) = min(⌊i · s⌋, H_in − 1), with s = 1 / scale_factor when a scale factor is
given and s = H_in / H_out when a size is given (torch's rule, evaluated in float32 as torch
does). Written with a 0/1 selection matrix S_h (H_out, H_in) per axis:

    forward:   y = S_h x S_wᵀ                (per sample and channel)
    backward:  dx = S_hᵀ dy S_w              (each input pixel sums the gradients of its copies)
"""
import math

import numpy as np

from dlcourse.nn.module import Module, check_float_input, check_ndim

__all__ = ["Upsample"]


def _pair(value, what):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"Upsample: {what} must be a number or a pair (H, W) for 4-D input, "
                             f"got {tuple(value)}")
        return tuple(value)
    return (value, value)


def _source_index(in_size: int, out_size: int, scale_factor) -> np.ndarray:
    """src(i) for i = 0 … out_size − 1 (torch's `nearest_idx`, in float32 arithmetic)."""
    if scale_factor is not None and scale_factor > 0:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


class Upsample(Module):
    r"""Nearest-neighbour upsampling of (N, C, H, W) images, torch's `nn.Upsample`.

    Args:
        size: output (H_out, W_out), or one int for both.
        scale_factor: multiplier of H and W (a number or a pair); H_out = ⌊H · scale⌋.
            Give exactly one of size and scale_factor.
        mode: only 'nearest' is implemented.
        align_corners, recompute_scale_factor: accepted for torch compatibility;
            align_corners must stay None for 'nearest'; recompute_scale_factor=True uses
            s = H_in / H_out instead of 1 / scale_factor.

    Shape:
        input: (N, C, H_in, W_in)
        output: (N, C, H_out, W_out)
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is implemented in dlcourse, got mode={mode!r}")
        if align_corners is not None:
            raise ValueError("Upsample: align_corners option can only be set with the interpolating "
                             "modes: linear | bilinear | bicubic | trilinear")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor, "
                             f"got size={size!r}, scale_factor={scale_factor!r}")
        if size is not None and any(int(s) < 1 for s in _pair(size, "size")):
            raise ValueError(f"Upsample: size must be positive, got {size!r}")
        if scale_factor is not None and any(float(s) <= 0 for s in _pair(scale_factor, "scale_factor")):
            raise ValueError(f"Upsample: scale_factor must be positive, got {scale_factor!r}")
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) else (
            None if scale_factor is None else tuple(float(s) for s in scale_factor))
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._cache = None

    def _selection(self, in_size: int, out_size: int, scale_factor, dtype) -> np.ndarray:
        """The 0/1 matrix S (out_size, in_size) with S[i, src(i)] = 1."""
        if self.recompute_scale_factor:
            scale_factor = None
        selection = np.zeros((out_size, in_size), dtype)
        selection[np.arange(out_size), _source_index(in_size, out_size, scale_factor)] = 1
        return selection

    def forward(self, x):
        x = check_float_input(self, x)
        check_ndim(self, x, (4,), "(N, C, H, W)")
        height, width = x.shape[2:]
        if self.size is not None:
            out_h, out_w = (int(s) for s in _pair(self.size, "size"))
            scale_h = scale_w = None
        else:
            scale_h, scale_w = _pair(self.scale_factor, "scale_factor")
            out_h, out_w = math.floor(height * scale_h), math.floor(width * scale_w)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"Upsample: input of shape {tuple(x.shape)} with scale_factor="
                             f"{self.scale_factor} gives an empty output ({out_h}, {out_w})")
        select_h = self._selection(height, out_h, scale_h, x.dtype)
        select_w = self._selection(width, out_w, scale_w, x.dtype)
        self._cache = (x.shape, select_h, select_w)
        # Indexing copies values exactly; the matrices are kept for the backward sum.
        rows, cols = select_h.argmax(axis=1), select_w.argmax(axis=1)
        return x[:, :, rows[:, None], cols[None, :]]

    def backward(self, grad_output):
        shape, select_h, select_w = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        expected = shape[:2] + (select_h.shape[0], select_w.shape[0])
        if grad_output.shape != expected:
            raise ValueError(f"Upsample.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        return select_h.T @ grad_output.astype(select_h.dtype, copy=False) @ select_w

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"
