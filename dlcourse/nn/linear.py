"""Fully connected layers: `Linear` and `Identity`."""
import math

import numpy as np

from dlcourse._random import default_dtype
from dlcourse.nn import init
from dlcourse.nn.module import Module, check_float_input

__all__ = ["Linear", "Identity"]


class Linear(Module):
    r"""y = x Wᵀ + b.

    Shape:
        input: (*, in_features) — any number of leading dimensions
        output: (*, out_features)
        weight: (out_features, in_features), bias: (out_features,)

    Initialised as torch does: W, b ~ U(−1/√in_features, 1/√in_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        self.register_parameter("weight", np.empty((self.out_features, self.in_features), dtype))
        self.register_parameter("bias", np.empty(self.out_features, dtype) if bias else None)
        self.reset_parameters()
        self._cache = None

    def reset_parameters(self) -> None:
        # kaiming_uniform_ with a=√5 is torch's choice; it reduces to U(−1/√fan_in, 1/√fan_in).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        x = check_float_input(self, input)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expects input of shape (*, {self.in_features}), got shape {tuple(x.shape)}"
            )
        self._cache = x
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return y

    def backward(self, grad_output):
        x = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        expected = x.shape[:-1] + (self.out_features,)
        if grad_output.shape != expected:
            raise ValueError(f"Linear.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        g2 = grad_output.reshape(-1, self.out_features)
        self.grads["weight"] += g2.T @ x.reshape(-1, self.in_features)
        if self.bias is not None:
            self.grads["bias"] += g2.sum(axis=0)
        return grad_output @ self.weight

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Returns its input unchanged; a placeholder that keeps `state_dict` keys aligned."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output
