r"""Upsampling (chapter 13): `Upsample`, the decoder's way back up to the input resolution in
a convolutional autoencoder, with torch's interpolation modes.

Every mode is separable: along each spatial axis an output position i reads a source
coordinate src(i) on the input axis, and takes a weighted sum of nearby input samples.
Written as one matrix A (out_size, in_size) per axis, for a 2-D image

    forward:   y = A_h x A_wᵀ                (per sample and channel)
    backward:  dx = A_hᵀ dy A_w              (each input pixel collects what it gave)

and the same with three factors for volumes, one for sequences. The source coordinate is
torch's: with s = 1 / scale_factor when a scale factor is given (and
recompute_scale_factor is not set), s = in_size / out_size otherwise,

    nearest:                  src(i) = min(⌊i · s⌋, in_size − 1)          (float32, as torch)
    linear, align_corners:    src(i) = i · (in_size − 1) / (out_size − 1)
    linear, otherwise:        src(i) = max(s · (i + ½) − ½, 0)            (pixel centres)

- 'nearest' copies input sample src(i) (A has one 1 per row);
- 'linear' / 'bilinear' / 'trilinear' (3-, 4-, 5-D input) mix the two neighbours
  ⌊src⌋ and ⌊src⌋ + 1 with weights 1 − t and t, t = src − ⌊src⌋;
- 'bicubic' (4-D input) mixes the four neighbours ⌊src⌋ − 1 … ⌊src⌋ + 2 (clamped to the
  edge) with Keys' cubic convolution weights, a = −0.75; its src is not clamped at 0.
"""
import math

import numpy as np

from dlcourse.nn.module import Module, check_float_input

__all__ = ["Upsample"]

# The input rank each mode works on (torch's rule); 'nearest' works on all three.
MODE_NDIM = {"nearest": (3, 4, 5), "linear": (3,), "bilinear": (4,), "bicubic": (4,), "trilinear": (5,)}
LAYOUTS = {3: "(N, C, W)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}
CUBIC_A = -0.75  # torch's (and OpenCV's) choice of Keys' free parameter


def _per_axis(value, axes: int, what: str):
    """A number or a sequence of one per spatial axis, as a tuple of `axes` entries."""
    if isinstance(value, (tuple, list)):
        if len(value) != axes:
            raise ValueError(f"Upsample: {what}={tuple(value)} has {len(value)} entries, but the input "
                             f"has {axes} spatial dimension{'s' * (axes > 1)}")
        return tuple(value)
    return (value,) * axes


def _nearest_index(in_size: int, out_size: int, scale_factor) -> np.ndarray:
    """src(i) for i = 0 … out_size − 1 (torch's `nearest_idx`, in float32 arithmetic)."""
    if scale_factor is not None and scale_factor > 0:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def _source_coordinate(in_size, out_size, scale_factor, align_corners, cubic):
    """src(i) of the interpolating modes (torch's `area_pixel_compute_source_index`)."""
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        return i * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    scale = 1.0 / scale_factor if scale_factor is not None and scale_factor > 0 else in_size / out_size
    source = scale * (i + 0.5) - 0.5
    return source if cubic else np.maximum(source, 0.0)


def _cubic_weights(t):
    """Keys' cubic convolution weights of the neighbours at offsets −1, 0, 1, 2 from ⌊src⌋."""
    def near(x):  # |x| ≤ 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def interpolation_matrix(mode, in_size, out_size, scale_factor, align_corners) -> np.ndarray:
    """The matrix A (out_size, in_size) of one axis: output = A @ input along that axis."""
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if mode == "nearest":
        matrix[rows, _nearest_index(in_size, out_size, scale_factor)] = 1
        return matrix
    source = _source_coordinate(in_size, out_size, scale_factor, align_corners, mode == "bicubic")
    floor = np.floor(source)
    t = source - floor
    floor = floor.astype(np.int64)
    if mode == "bicubic":
        neighbours = np.clip(floor[:, None] + np.arange(-1, 3), 0, in_size - 1)
        # Clamped neighbours can coincide at the edges: their weights add up.
        np.add.at(matrix, (rows[:, None], neighbours), _cubic_weights(t))
        return matrix
    left = np.minimum(floor, in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    t = np.clip(t, 0.0, 1.0)
    np.add.at(matrix, (rows, left), 1 - t)
    np.add.at(matrix, (rows, right), t)
    return matrix


def _along_axis(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Multiply every 1-D slice of x along `axis` by `matrix` (m, x.shape[axis])."""
    return np.moveaxis(np.moveaxis(x, axis, -1) @ matrix.T, -1, axis)


class Upsample(Module):
    r"""Upsampling of (N, C, W), (N, C, H, W) or (N, C, D, H, W) inputs, torch's `nn.Upsample`.

    Args:
        size: the output's spatial size: one int for every axis, or one per axis.
        scale_factor: multiplier of each spatial size (a number or one per axis);
            out = ⌊in · scale_factor⌋. Give exactly one of size and scale_factor.
        mode: 'nearest' (any of the three ranks), 'linear' (3-D input), 'bilinear' or
            'bicubic' (4-D), 'trilinear' (5-D); torch's 'area' and 'nearest-exact' are not
            implemented. The module docstring gives each mode's formula.
        align_corners: for the interpolating modes, True maps the corner samples of input and
            output onto each other; False or None (the default, False) maps pixel centres.
            Must stay None for 'nearest'.
        recompute_scale_factor: True interpolates with s = in / out (computed from the output
            size) instead of 1 / scale_factor.

    Shape:
        input: (N, C, *spatial_in) with 1, 2 or 3 spatial axes
        output: (N, C, *spatial_out)
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if mode not in MODE_NDIM:
            raise ValueError(f"Upsample: mode must be one of {', '.join(map(repr, MODE_NDIM))} "
                             f"(torch's 'area' and 'nearest-exact' are not implemented), got mode={mode!r}")
        if align_corners is not None and mode == "nearest":
            raise ValueError("Upsample: align_corners option can only be set with the interpolating "
                             "modes: linear | bilinear | bicubic | trilinear")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor, "
                             f"got size={size!r}, scale_factor={scale_factor!r}")
        if size is not None and any(int(s) < 1 for s in np.atleast_1d(size)):
            raise ValueError(f"Upsample: size must be positive, got {size!r}")
        if scale_factor is not None and any(float(s) <= 0 for s in np.atleast_1d(scale_factor)):
            raise ValueError(f"Upsample: scale_factor must be positive, got {scale_factor!r}")
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) else (
            None if scale_factor is None else tuple(float(s) for s in scale_factor))
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._cache = None

    def _matrices(self, x):
        """One interpolation matrix per spatial axis of x."""
        spatial = x.shape[2:]
        if self.size is not None:
            out_sizes = tuple(int(s) for s in _per_axis(self.size, len(spatial), "size"))
            scales = (None,) * len(spatial)
        else:
            scales = _per_axis(self.scale_factor, len(spatial), "scale_factor")
            out_sizes = tuple(math.floor(n * s) for n, s in zip(spatial, scales))
            if self.recompute_scale_factor:
                scales = (None,) * len(spatial)
        if min(out_sizes) < 1:
            raise ValueError(f"Upsample: input of shape {tuple(x.shape)} with scale_factor="
                             f"{self.scale_factor} gives an empty output {out_sizes}")
        return [interpolation_matrix(self.mode, n, out, scale, bool(self.align_corners)).astype(x.dtype)
                for n, out, scale in zip(spatial, out_sizes, scales)]

    def forward(self, x):
        x = check_float_input(self, x)
        allowed = MODE_NDIM[self.mode]
        if x.ndim not in allowed:
            layouts = " or ".join(LAYOUTS[n] for n in allowed)
            raise ValueError(f"Upsample with mode={self.mode!r} expects input of shape {layouts}, "
                             f"got shape {tuple(x.shape)}")
        matrices = self._matrices(x)
        self._cache = (x.shape, matrices)
        y = x
        for axis, matrix in enumerate(matrices, start=2):
            if self.mode == "nearest":
                # Indexing copies values exactly; the matrices are kept for the backward sum.
                y = np.take(y, matrix.argmax(axis=1), axis=axis)
            else:
                y = _along_axis(y, matrix, axis)
        return np.ascontiguousarray(y)

    def backward(self, grad_output):
        shape, matrices = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        expected = shape[:2] + tuple(matrix.shape[0] for matrix in matrices)
        if grad_output.shape != expected:
            raise ValueError(f"Upsample.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        grad = grad_output.astype(matrices[0].dtype, copy=False)
        for axis, matrix in enumerate(matrices, start=2):
            grad = _along_axis(grad, matrix.T, axis)
        return np.ascontiguousarray(grad)

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"
