"""The answer key of ch03: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch03`.
"""
import numpy as np
from dlcourse import gradcheck, nn

from dlcourse.answers import reference
from dlcourse.checks.ch03 import _linear


@reference('ch03.softmax_cross_entropy_delta')
def softmax_cross_entropy_delta_reference(Z, y):
    loss = nn.CrossEntropyLoss()
    loss(Z, y)
    return loss.backward()


@reference('ch03.two_layer_backward')
def two_layer_backward_reference(X, y, W1, b1, W2, b2):
    model = nn.Sequential(_linear(W1, b1), nn.Sigmoid(), _linear(W2, b2))
    loss = nn.CrossEntropyLoss()
    loss(model(X), y)
    model.backward(loss.backward())
    grads = model.grads
    return grads["0.weight"].copy(), grads["0.bias"].copy(), grads["2.weight"].copy(), grads["2.bias"].copy()


@reference('ch03.numerical_gradient')
def numerical_gradient_reference(f, x, eps):
    x = np.array(x, dtype=np.float64, copy=True)
    return gradcheck.numerical_gradient(lambda: f(x), x, eps)


@reference('ch03.gradient_relative_error')
def gradient_relative_error_reference(analytic, numeric):
    return gradcheck.relative_error(analytic, numeric)
