"""Reshaping layers: `Flatten` and `Unflatten` (the bridge between convolutional and linear layers)."""
import math

import numpy as np

from dlcourse.nn.module import Module

__all__ = ["Flatten", "Unflatten"]


class _Reshape(Module):
    """A layer that only reshapes: its backward reshapes the gradient back to the input's
    shape. Subclasses cache (input shape, output shape) in forward."""

    def backward(self, grad_output):
        input_shape, output_shape = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        if grad_output.shape != output_shape:
            raise ValueError(f"{type(self).__name__}.backward expects grad_output of shape {output_shape}, "
                             f"got {grad_output.shape}")
        return grad_output.reshape(input_shape)


class Flatten(_Reshape):
    """Merges dimensions start_dim … end_dim into one; backward restores the input's shape.

    Shape:
        input: (*, S_start, …, S_end, *)
        output: (*, S_start · … · S_end, *)   e.g. (N, C, H, W) → (N, C·H·W) by default
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._cache = None

    def forward(self, x):
        x = np.asarray(x)
        ndim = max(x.ndim, 1)  # torch treats a 0-d tensor as having one dimension here
        start, end = (d + ndim if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not (0 <= start < ndim and 0 <= end < ndim):
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) needs an input with "
                             f"dimensions {self.start_dim} and {self.end_dim}, got shape {tuple(x.shape)}")
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after end_dim={self.end_dim} "
                             f"for input of shape {tuple(x.shape)}")
        shape = x.shape if x.ndim else (1,)
        y = x.reshape(*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])
        self._cache = (x.shape, y.shape)
        return y

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(_Reshape):
    """Splits dimension `dim` into `unflattened_size` (one entry may be −1, inferred).

    Shape:
        input: (*, S_dim, *)
        output: (*, U_1, …, U_k, *) with U_1 · … · U_k = S_dim   e.g. (N, 784) → (N, 1, 28, 28)
    """

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(f"unflattened_size must be a tuple of ints, but found type "
                            f"{type(unflattened_size).__name__}")
        for position, size in enumerate(unflattened_size):
            if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
                raise TypeError(f"unflattened_size must be tuple of ints, but found element of type "
                                f"{type(size).__name__} at pos {position}")
        if sum(size == -1 for size in unflattened_size) > 1 or any(size < -1 for size in unflattened_size):
            raise ValueError(f"Unflatten: unflattened_size may hold one -1 and otherwise non-negative sizes, "
                             f"got {unflattened_size}")
        self.dim = int(dim)
        self.unflattened_size = unflattened_size  # kept as given: torch's repr shows a list as a list
        self._cache = None

    def forward(self, x):
        x = np.asarray(x)
        dim = self.dim + x.ndim if self.dim < 0 else self.dim
        if not 0 <= dim < x.ndim:
            raise ValueError(f"Unflatten(dim={self.dim}) needs an input with dimension {self.dim}, "
                             f"got shape {tuple(x.shape)}")
        sizes = list(self.unflattened_size)
        known = math.prod(size for size in sizes if size != -1)
        if -1 in sizes and known > 0 and x.shape[dim] % known == 0:
            sizes[sizes.index(-1)] = x.shape[dim] // known
        if math.prod(sizes) != x.shape[dim] or -1 in sizes:
            raise ValueError(f"Unflatten expects dimension {self.dim} of size {' · '.join(map(str, sizes))}, "
                             f"got shape {tuple(x.shape)}")
        y = x.reshape(*x.shape[:dim], *sizes, *x.shape[dim + 1:])
        self._cache = (x.shape, y.shape)
        return y

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
