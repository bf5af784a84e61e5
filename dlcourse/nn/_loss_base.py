"""The base of every loss: reduction handling and the `forward`/`backward` protocol."""
import numpy as np

from dlcourse.nn.module import Module

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """A loss (torch's repr shows no arguments for losses, so neither does ours): `forward(input, target)` returns a float (an array for reduction='none'),
    `backward(grad_output=1.0)` returns d loss / d input with the input's shape."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            )
        self.reduction = reduction
        self._cache = None

    def _reduce(self, per_element: np.ndarray):
        # Arithmetic on 0-d arrays yields NumPy scalars; reduction='none' promises an array.
        per_element = np.asarray(per_element)
        if self.reduction == "mean":
            return float(per_element.mean()) if per_element.size else float("nan")
        if self.reduction == "sum":
            return float(per_element.sum())
        return per_element

    def _reduction_grad(self, per_element_shape, dtype, grad_output=None) -> np.ndarray:
        """d reduced / d per-element loss, times the upstream gradient."""
        if self.reduction == "none":
            g = np.ones(per_element_shape, dtype) if grad_output is None else np.asarray(grad_output, dtype)
            if g.shape != tuple(per_element_shape):
                raise ValueError(f"{type(self).__name__}.backward with reduction='none' expects "
                                 f"grad_output of shape {tuple(per_element_shape)}, got {g.shape}")
            return g
        scale = 1.0 if grad_output is None else float(np.asarray(grad_output))
        if self.reduction == "mean":
            scale /= max(int(np.prod(per_element_shape)), 1)
        return np.full(per_element_shape, scale, dtype)
