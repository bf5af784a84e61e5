"""Normalization layers: `BatchNorm1d`, `BatchNorm2d` (Ioffe & Szegedy, 2015) and
`LayerNorm` (Ba et al., 2016).

Both normalise x̂ = (x − μ) / √(σ² + ε) and apply y = γ ⊙ x̂ + β; they differ in the axes
μ and σ² (the biased variance) are taken over: every axis but the channel one for batch
norm, the trailing `normalized_shape` axes for layer norm. Their backward passes therefore
share one formula, `_normalized_input_backward`.
"""
import math
import numbers

import numpy as np

from dlcourse._random import default_dtype
from dlcourse.nn._elementwise import aligned_empty, row_broadcasting
from dlcourse.nn.module import Module, check_float_input

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm"]


def _mean(x, axes):
    """mean(x) over `axes`, keeping them as length-1 axes.

    Speed: over the last axis or the first axis of a 2-D array the mean is a BLAS
    matrix-vector product with 1/n, several times faster than NumPy's reduction.
    """
    if axes == (x.ndim - 1,) and x.ndim > 1:
        return (x @ np.full(x.shape[-1], 1 / max(x.shape[-1], 1), x.dtype))[..., None]
    if axes == (0,) and x.ndim == 2:
        return (np.full(x.shape[0], 1 / max(x.shape[0], 1), x.dtype) @ x)[None, :]
    return x.mean(axis=axes, keepdims=True)


def _mean_of_product(a, b, axes):
    """mean(a ⊙ b) over `axes`, keeping them as length-1 axes.

    Speed: vecdot (last axis) and einsum multiply and sum in one pass, without the
    temporary array a ⊙ b.
    """
    count = math.prod(a.shape[axis] for axis in axes)  # a Python int keeps float32 float32
    if axes == (a.ndim - 1,):
        return (np.vecdot(a, b) / max(count, 1))[..., None]
    letters = "abcdefghijklmnop"[:a.ndim]
    kept = "".join(letter for axis, letter in enumerate(letters) if axis not in axes)
    total = np.einsum(f"{letters},{letters}->{kept}", a, b)
    return (total / count).reshape([1 if axis in axes else n for axis, n in enumerate(a.shape)])


def _normalize(x, axes, eps, mean=None, var=None):
    """x̂ = (x − μ) / √(σ² + ε) with μ and the biased σ² over `axes` unless given.

    Returns (x̂, inv_std, μ, σ²), x̂ a new array (written in place to save passes).
    """
    if mean is None:
        mean = _mean(x, axes)
    x_hat = np.subtract(x, mean, out=aligned_empty(x.shape, x.dtype))
    if var is None:
        var = _mean_of_product(x_hat, x_hat, axes)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat *= inv_std
    return x_hat, inv_std, mean, var


def _affine(x_hat, weight, bias):
    """y = γ ⊙ x̂ + β (either may be None), as a new array."""
    if weight is None:
        return x_hat + bias if bias is not None else x_hat.copy()
    y = np.multiply(x_hat, weight, out=aligned_empty(x_hat.shape, x_hat.dtype, offset=1024))
    if bias is not None:
        y += bias
    return y


def _normalized_input_backward(grad_x_hat, x_hat, inv_std, axes):
    r"""Gradient w.r.t. x of x̂ = (x − μ)·inv_std, with μ and the biased σ² over `axes`.

    dx = inv_std ⊙ (dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂)),  means over `axes`.
    The two mean terms are the paths through μ and through σ².

    grad_x_hat, x_hat: the input's shape; inv_std: broadcastable to it.
    """
    # In place where possible: each pass over the array costs as much as the arithmetic.
    grad = np.multiply(x_hat, _mean_of_product(grad_x_hat, x_hat, axes),
                       out=aligned_empty(x_hat.shape, x_hat.dtype, offset=3072))
    grad += _mean(grad_x_hat, axes)
    np.subtract(grad_x_hat, grad, out=grad)
    grad *= inv_std
    return grad


def _channel_run(x):
    """Contiguous elements per channel factor: C for (N, C), else the spatial size."""
    return x.shape[1] if x.ndim == 2 else math.prod(x.shape[2:])


def _check_grad_output(module, grad_output, shape, dtype):
    grad_output = np.asarray(grad_output)
    if grad_output.shape != shape:
        raise ValueError(f"{type(module).__name__}.backward expects grad_output of shape {shape}, "
                         f"got {grad_output.shape}")
    return grad_output.astype(dtype, copy=False)


class _BatchNorm(Module):
    r"""Batch normalization over every axis except the channel axis 1.

    Training (or track_running_stats=False): μ, σ² are the batch mean and biased variance
    per channel, and the running estimates move towards the batch's mean and *unbiased*
    variance: running ← (1 − momentum)·running + momentum·batch (momentum=None: the
    cumulative average, momentum = 1 / num_batches_tracked).
    Evaluation: μ, σ² are running_mean and running_var.

    Parameters weight γ (ones) and bias β (zeros), shape (C,); buffers running_mean (zeros),
    running_var (ones), num_batches_tracked (int64, shape ()) — torch's names and order.
    Subclasses set the input ranks they accept (`_ndims`) and the layout that the error
    message shows (`_layout`).
    """

    _ndims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        shape = (self.num_features,)
        self.register_parameter("weight", np.ones(shape, dtype) if affine else None)
        self.register_parameter("bias", np.zeros(shape, dtype) if affine and bias else None)
        self.register_buffer("running_mean", np.zeros(shape, dtype) if track_running_stats else None)
        self.register_buffer("running_var", np.ones(shape, dtype) if track_running_stats else None)
        self.register_buffer("num_batches_tracked",
                             np.zeros((), np.int64) if track_running_stats else None)
        self._cache = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked.fill(0)

    def forward(self, x):
        x = check_float_input(self, x)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            layout = self._layout.format(C=self.num_features)
            raise ValueError(f"{type(self).__name__} expects input of shape {layout}, "
                             f"got shape {tuple(x.shape)}")
        axes = (0,) + tuple(range(2, x.ndim))
        per_channel = (1, -1) + (1,) * (x.ndim - 2)
        # torch falls back to batch statistics in eval mode when it keeps no running ones.
        use_batch_stats = self.training or self.running_mean is None
        if x.size == 0:
            return self._empty_batch(x)
        count = x.size // self.num_features
        if use_batch_stats and count == 1:
            raise ValueError(
                f"{type(self).__name__} expects more than 1 value per channel when training "
                f"(batch statistics), got input of shape {tuple(x.shape)}")
        weight, bias = (None if p is None else p.astype(x.dtype, copy=False).reshape(per_channel)
                        for p in (self.weight, self.bias))
        with row_broadcasting(_channel_run(x)):
            if use_batch_stats:
                x_hat, inv_std, mean, var = _normalize(x, axes, self.eps)
                if self.training and self.track_running_stats:
                    self._update_running_stats(mean.reshape(-1), var.reshape(-1) * (count / (count - 1)))
            else:
                x_hat, inv_std, _, _ = _normalize(x, axes, self.eps,
                                                  self.running_mean.astype(x.dtype, copy=False).reshape(per_channel),
                                                  self.running_var.astype(x.dtype, copy=False).reshape(per_channel))
            self._cache = (x_hat, inv_std, use_batch_stats)
            return _affine(x_hat, weight, bias)

    def _empty_batch(self, x):
        """An empty batch (N = 0) as torch treats it: an empty output, running statistics
        unchanged (torch still counts the batch in num_batches_tracked), no gradient."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
        inv_std = np.ones((1, self.num_features) + (1,) * (x.ndim - 2), x.dtype)
        self._cache = (np.zeros_like(x), inv_std, False)
        return np.zeros_like(x)

    def _update_running_stats(self, batch_mean, batch_var_unbiased):
        self.num_batches_tracked += 1
        factor = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
        # In place, so that arrays handed out by `running_mean` stay current.
        self.running_mean *= 1 - factor
        self.running_mean += factor * batch_mean
        self.running_var *= 1 - factor
        self.running_var += factor * batch_var_unbiased

    def backward(self, grad_output):
        x_hat, inv_std, used_batch_stats = self._saved(self._cache)
        grad_output = _check_grad_output(self, grad_output, x_hat.shape, x_hat.dtype)
        axes = (0,) + tuple(range(2, x_hat.ndim))
        grad_x_hat = grad_output
        if self.weight is not None:
            self.grads["weight"] += _mean_of_product(grad_output, x_hat, axes).reshape(-1) * (x_hat.size // x_hat.shape[1])
        if self.bias is not None:
            self.grads["bias"] += grad_output.sum(axis=axes)
        with row_broadcasting(_channel_run(x_hat)):
            if self.weight is not None:
                grad_x_hat = np.multiply(grad_output, self.weight.astype(x_hat.dtype, copy=False).reshape(inv_std.shape),
                                         out=aligned_empty(x_hat.shape, x_hat.dtype, offset=2048))
            if not used_batch_stats:
                # Running statistics are constants: the layer is affine in x.
                return grad_x_hat * inv_std
            return _normalized_input_backward(grad_x_hat, x_hat, inv_std, axes)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization of features (N, C) or channels of sequences (N, C, L); statistics
    per channel over N (and L). See `_BatchNorm` for the mathematics.

    Shape:
        input: (N, C) or (N, C, L)
        output: same shape as the input
    """

    _ndims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization of images; statistics per channel over N, H and W.
    See `_BatchNorm` for the mathematics.

    Shape:
        input: (N, C, H, W)
        output: (N, C, H, W)
    """

    _ndims = (4,)
    _layout = "(N, {C}, H, W)"


class LayerNorm(Module):
    r"""Layer normalization over the trailing dimensions given by `normalized_shape`:

        y = (x − E[x]) / √(Var[x] + ε) ⊙ γ + β,

    with the mean and biased variance taken per sample over those trailing dimensions, in
    training and evaluation alike (no running statistics).

    Shape:
        input: (*, *normalized_shape)
        output: same shape as the input
        weight γ (ones), bias β (zeros): normalized_shape — present when elementwise_affine
        (bias only when bias=True)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        shape = self.normalized_shape
        self.register_parameter("weight", np.ones(shape, dtype) if elementwise_affine else None)
        self.register_parameter("bias", np.zeros(shape, dtype) if elementwise_affine and bias else None)
        self._cache = None

    def forward(self, x):
        x = check_float_input(self, x)
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            layout = ", ".join(["*", *map(str, self.normalized_shape)])
            raise ValueError(f"LayerNorm expects input of shape ({layout}), got shape {tuple(x.shape)}")
        # One row per sample: the statistics then run over the last axis (BLAS and vecdot).
        features = math.prod(self.normalized_shape)
        rows = x.reshape(math.prod(x.shape[:x.ndim - k]), features)
        weight, bias = (None if p is None else p.astype(x.dtype, copy=False).reshape(-1)
                        for p in (self.weight, self.bias))
        with row_broadcasting(features):
            x_hat, inv_std, _, _ = _normalize(rows, (1,), self.eps)
            self._cache = (x_hat, inv_std, x.shape)
            return _affine(x_hat, weight, bias).reshape(x.shape)

    def backward(self, grad_output):
        x_hat, inv_std, shape = self._saved(self._cache)
        grad_output = _check_grad_output(self, grad_output, shape, x_hat.dtype).reshape(x_hat.shape)
        grad_x_hat = grad_output
        with row_broadcasting(x_hat.shape[1]):
            if self.weight is not None:
                # einsum: dγ = Σ dy ⊙ x̂ over the samples in one pass, no temporary array.
                self.grads["weight"] += np.einsum("ij,ij->j", grad_output, x_hat).reshape(self.normalized_shape)
                grad_x_hat = np.multiply(grad_output, self.weight.astype(x_hat.dtype, copy=False).reshape(-1),
                                         out=aligned_empty(x_hat.shape, x_hat.dtype, offset=2048))
            if self.bias is not None:
                # Σ dy over the samples as a BLAS product with ones, faster than sum(axis=0).
                ones = np.ones(grad_output.shape[0], grad_output.dtype)
                self.grads["bias"] += (ones @ grad_output).reshape(self.normalized_shape)
            return _normalized_input_backward(grad_x_hat, x_hat, inv_std, (1,)).reshape(shape)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
