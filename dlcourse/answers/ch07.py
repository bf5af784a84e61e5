"""The answer key of ch07: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch07`.
"""
import numpy as np

from dlcourse.answers import reference
from dlcourse.checks.ch07 import _batchnorm, _run_dropout


@reference('ch07.dropout_forward')
def dropout_forward_reference(x, p, mask):
    return _run_dropout(x, p, mask)


@reference('ch07.dropout_backward')
def dropout_backward_reference(grad_output, p, mask):
    return _run_dropout(np.zeros_like(grad_output), p, mask, grad_output)


@reference('ch07.batchnorm_forward')
def batchnorm_forward_reference(x, gamma, beta, eps):
    return _batchnorm(x, gamma, beta, eps)(x)


@reference('ch07.batchnorm_backward')
def batchnorm_backward_reference(grad_output, x, gamma, eps):
    layer = _batchnorm(x, gamma, np.zeros_like(gamma), eps)
    layer(x)
    grad_input = layer.backward(grad_output)
    return grad_input, layer.grads["weight"].copy(), layer.grads["bias"].copy()
