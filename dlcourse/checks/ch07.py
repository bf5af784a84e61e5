"""Chapter 7 (regularization): dropout and batch normalization, forward and backward.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.Dropout` and
`dlcourse.nn.BatchNorm1d`, which the test suite holds to PyTorch.
"""
import numpy as np

from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.checks import part

# Library implementations of the mechanics this chapter's parts ask for (Part.forbids).
_BATCHNORM_IMPLEMENTATIONS = (
    "dlcourse.nn.BatchNorm1d",
    "dlcourse.nn.BatchNorm2d",
    "dlcourse.nn.LayerNorm",
    "dlcourse.nn.normalization._BatchNorm",
    "dlcourse.nn.normalization._normalized_input_backward",
)


class _ReplayMask:
    """Stands in for the random generator: Dropout keeps where U(0, 1) < 1 − p, so draws of
    0 (keep) and 1 (drop) make it use exactly `mask`."""

    def __init__(self, mask):
        self.mask = mask

    def random(self, shape):
        return np.where(self.mask, 0.0, 1.0).reshape(shape)


def _run_dropout(x, p, mask, grad_output=None):
    layer = nn.Dropout(p)
    with using_generator(_ReplayMask(mask)):
        out = layer(x)
    return out if grad_output is None else layer.backward(grad_output)


def _dropout_inputs(rng):
    cases = []
    for shape, p in [((4, 5), 0.5), ((3, 2, 6), 0.2), ((8,), 0.9)]:
        x = rng.standard_normal(shape)
        mask = rng.random(shape) < 1 - p
        cases.append((x, p, mask))
    return cases


@part("ch07.dropout_forward", "dropout_forward", asks="dropout's forward pass",
      forbids=("dlcourse.nn.Dropout",))
def dropout_forward_cases(rng):
    """Inverted dropout forward with a given keep-mask."""
    return _dropout_inputs(rng)


@part("ch07.dropout_backward", "dropout_backward", asks="dropout's backward pass",
      forbids=("dlcourse.nn.Dropout",))
def dropout_backward_cases(rng):
    """Inverted dropout backward: the same mask and scale applied to the upstream gradient."""
    return [(rng.standard_normal(x.shape), p, mask) for x, p, mask in _dropout_inputs(rng)]


def _batchnorm(x, gamma, beta, eps):
    layer = nn.BatchNorm1d(x.shape[1], eps=eps, dtype=np.float64)
    layer.weight[...] = gamma
    layer.bias[...] = beta
    return layer


def _batchnorm_inputs(rng):
    cases = []
    for n, d, eps in [(6, 4, 1e-5), (10, 3, 1e-3), (2, 5, 1e-5)]:
        x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-2, 2, d)
        cases.append((x, rng.standard_normal(d), rng.standard_normal(d), eps))
    return cases


@part("ch07.batchnorm_forward", "batchnorm_forward", asks="batch normalization's forward pass",
      forbids=_BATCHNORM_IMPLEMENTATIONS)
def batchnorm_forward_cases(rng):
    """Training-mode batch norm of (N, D) features: batch mean, biased variance, γ, β."""
    return _batchnorm_inputs(rng)


@part("ch07.batchnorm_backward", "batchnorm_backward", asks="batch normalization's backward pass",
      forbids=_BATCHNORM_IMPLEMENTATIONS, derived=True)
def batchnorm_backward_cases(rng):
    """Training-mode batch norm backward: (dx, dgamma, dbeta)."""
    return [(rng.standard_normal(x.shape), x, gamma, eps) for x, gamma, _, eps in _batchnorm_inputs(rng)]


