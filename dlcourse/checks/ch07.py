"""Chapter 7 (regularization): dropout and batch normalization, forward and backward.

References come from `dlcourse.nn.Dropout` and `dlcourse.nn.BatchNorm1d`, which the test
suite holds to PyTorch.
"""
import numpy as np

from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.checks import part


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


@part("ch07.dropout_forward", "dropout_forward")
def dropout_forward_cases(rng):
    """Inverted dropout forward with a given keep-mask."""
    return _dropout_inputs(rng)


@dropout_forward_cases.reference
def dropout_forward_reference(x, p, mask):
    return _run_dropout(x, p, mask)


@part("ch07.dropout_backward", "dropout_backward")
def dropout_backward_cases(rng):
    """Inverted dropout backward: the same mask and scale applied to the upstream gradient."""
    return [(rng.standard_normal(x.shape), p, mask) for x, p, mask in _dropout_inputs(rng)]


@dropout_backward_cases.reference
def dropout_backward_reference(grad_output, p, mask):
    return _run_dropout(np.zeros_like(grad_output), p, mask, grad_output)


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


@part("ch07.batchnorm_forward", "batchnorm_forward")
def batchnorm_forward_cases(rng):
    """Training-mode batch norm of (N, D) features: batch mean, biased variance, γ, β."""
    return _batchnorm_inputs(rng)


@batchnorm_forward_cases.reference
def batchnorm_forward_reference(x, gamma, beta, eps):
    return _batchnorm(x, gamma, beta, eps)(x)


@part("ch07.batchnorm_backward", "batchnorm_backward")
def batchnorm_backward_cases(rng):
    """Training-mode batch norm backward: (dx, dgamma, dbeta)."""
    return [(rng.standard_normal(x.shape), x, gamma, eps) for x, gamma, _, eps in _batchnorm_inputs(rng)]


@batchnorm_backward_cases.reference
def batchnorm_backward_reference(grad_output, x, gamma, eps):
    layer = _batchnorm(x, gamma, np.zeros_like(gamma), eps)
    layer(x)
    grad_input = layer.backward(grad_output)
    return grad_input, layer.grads["weight"].copy(), layer.grads["bias"].copy()
