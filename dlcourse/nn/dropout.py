"""Dropout: randomly zero activations while training (Srivastava et al., 2014)."""
import numpy as np

from dlcourse._random import get_rng
from dlcourse.nn.module import Module, check_float_input

__all__ = ["Dropout"]


class Dropout(Module):
    r"""Inverted dropout.

    Training:  y = x ⊙ m / (1 − p),  m_i ~ Bernoulli(1 − p) drawn afresh on every call.
    Evaluation: y = x.
    Dividing by the keep probability 1 − p while training keeps E[y] = x, so nothing needs
    rescaling at test time. The backward pass reuses the mask: dx = dy ⊙ m / (1 − p).

    Shape:
        input: (*) — any shape
        output: (*) — same shape as the input

    Args:
        p: probability of zeroing an element, in [0, 1]; p = 1 zeroes everything.
        inplace: write the result into the input array, as torch's `inplace=True`.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace
        self._cache = None

    def forward(self, x):
        x = check_float_input(self, x)
        if not self.training or self.p == 0:
            # Scale 1 broadcasts against any grad_output: backward is the identity.
            # (p = 0 keeps everything, so no mask is drawn and the random stream is untouched.)
            self._cache = (x.shape, x.dtype.type(1))
            return x
        keep = get_rng().random(x.shape) < 1 - self.p
        # p = 1 keeps nothing; scale by 0 rather than divide by zero.
        scale = 0.0 if self.p == 1 else 1.0 / (1 - self.p)
        scaled_mask = (keep * scale).astype(x.dtype)
        self._cache = (x.shape, scaled_mask)
        if self.inplace:
            return np.multiply(x, scaled_mask, out=x)
        return x * scaled_mask

    def backward(self, grad_output):
        shape, scaled_mask = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        if grad_output.shape != shape:
            raise ValueError(f"Dropout.backward expects grad_output of shape {shape}, "
                             f"got {grad_output.shape}")
        return grad_output * scaled_mask

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
