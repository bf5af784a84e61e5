"""The answer key of ch09: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch09`.
"""
import numpy as np
from dlcourse import nn
from dlcourse.nn.conv import output_size

from dlcourse.answers import reference
from dlcourse.checks.ch09 import _conv


@reference('ch09.conv_output_size')
def conv_output_size_reference(size, kernel, stride, padding):
    return output_size(size, kernel, stride, 1, 2 * padding)


@reference('ch09.conv2d_forward')
def conv2d_forward_reference(x, w, b, stride, padding):
    return _conv(w, b, stride, padding)(x)


@reference('ch09.conv2d_backward')
def conv2d_backward_reference(grad_output, x, w, stride, padding):
    layer = _conv(w, np.zeros(w.shape[0]), stride, padding)
    layer(x)
    grad_input = layer.backward(grad_output)
    return grad_input, layer.grads["weight"].copy(), layer.grads["bias"].copy()


@reference('ch09.maxpool_forward')
def maxpool_forward_reference(x, kernel, stride):
    return nn.MaxPool2d(kernel, stride)(x)


@reference('ch09.maxpool_backward')
def maxpool_backward_reference(grad_output, x, kernel, stride):
    layer = nn.MaxPool2d(kernel, stride)
    layer(x)
    return layer.backward(grad_output)
