"""The answer key of ch04: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch04`.
"""
from dlcourse import nn

from dlcourse.answers import reference
from dlcourse.checks.ch04 import _backward, _forward


@reference('ch04.sigmoid')
def sigmoid_reference(x):
    return _forward(nn.Sigmoid(), x)


@reference('ch04.sigmoid_backward')
def sigmoid_backward_reference(grad_output, x):
    return _backward(nn.Sigmoid(), grad_output, x)


@reference('ch04.tanh_backward')
def tanh_backward_reference(grad_output, x):
    return _backward(nn.Tanh(), grad_output, x)


@reference('ch04.leaky_relu')
def leaky_relu_reference(x, negative_slope):
    return _forward(nn.LeakyReLU(negative_slope), x)


@reference('ch04.leaky_relu_backward')
def leaky_relu_backward_reference(grad_output, x, negative_slope):
    return _backward(nn.LeakyReLU(negative_slope), grad_output, x)


@reference('ch04.softmax')
def softmax_reference(x):
    return _forward(nn.Softmax(dim=-1), x)


@reference('ch04.softmax_backward')
def softmax_backward_reference(grad_output, x):
    return _backward(nn.Softmax(dim=-1), grad_output, x)


@reference('ch04.gelu')
def gelu_reference(x):
    return _forward(nn.GELU(), x)
