"""The answer key of ch03: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch03`.
"""
import numpy as np
from dlcourse import gradcheck, nn, optim

from dlcourse.answers import reference
from dlcourse.checks.ch03 import _linear


@reference('ch03.softmax_cross_entropy_delta')
def softmax_cross_entropy_delta_reference(Z, y):
    loss = nn.CrossEntropyLoss()
    loss(Z, y)
    return loss.backward()


def _tanh_network(W1, b1, W2, b2):
    return nn.Sequential(_linear(W1, b1), nn.Tanh(), _linear(W2, b2))


def _gradients(model, loss, X, target):
    """The four parameter gradients of loss(model(X), target), in torch's state_dict order."""
    loss(model(X), target)
    model.zero_grad()
    model.backward(loss.backward())
    return tuple(model.grads[name].copy() for name in ("0.weight", "0.bias", "2.weight", "2.bias"))


@reference('ch03.two_layer_backward')
def two_layer_backward_reference(X, T, W1, b1, W2, b2):
    return _gradients(_tanh_network(W1, b1, W2, b2), nn.BCEWithLogitsLoss(), X, T)


@reference('ch03.numerical_gradient')
def numerical_gradient_reference(f, x, eps):
    x = np.array(x, dtype=np.float64, copy=True)
    return gradcheck.numerical_gradient(lambda: f(x), x, eps)


@reference('ch03.gradient_relative_error')
def gradient_relative_error_reference(analytic, numeric):
    return gradcheck.relative_error(analytic, numeric)


def _expression_and_gradient(expression, inputs):
    """The value of one of dlcourse.checks.ch03.EXPRESSIONS and its gradient, by hand."""
    if expression == "shared_product":
        a, b = inputs
        d = a * b
        outer = 2 * d + (1 - np.tanh(d) ** 2)
        return d * d + np.tanh(d), [outer * b, outer * a]
    if expression == "leaf_twice":
        a, b = inputs
        return a * a + 3 * a - b, [2 * a + 3, -1.0]
    if expression == "neuron":
        x1, x2, w1, w2, bias = inputs
        out = np.tanh(x1 * w1 + x2 * w2 + bias)
        slope = 1 - out ** 2
        return out, [w1 * slope, w2 * slope, x1 * slope, x2 * slope, slope]
    if expression == "two_way_softmax":
        a, b = inputs
        p = 1 / (1 + np.exp(b - a))
        return p, [p * (1 - p), -p * (1 - p)]
    if expression == "powers":
        a, b = inputs
        return (a - b) ** 2 / 2 - b ** 3 + (1 - a) / 4, [(a - b) - 0.25, -(a - b) - 3 * b ** 2]
    if expression == "diamond":
        (a,) = inputs
        t = np.tanh(a)
        through_t = 2 * t * a + 2 * t - 4 * t / (1 + t * t) ** 2
        return t * t * a + t * t + 2 / (1 + t * t), [t * t + through_t * (1 - t * t)]
    raise KeyError(expression)


@reference('ch03.value_expressions')
def value_expressions_reference(expression, inputs):
    value, gradient = _expression_and_gradient(str(expression), [float(x) for x in inputs])
    return float(value), np.array(gradient, dtype=np.float64)


@reference('ch03.value_mlp_gradients')
def value_mlp_gradients_reference(X, y, W1, b1, W2, b2):
    return _gradients(_tanh_network(W1, b1, W2, b2), nn.MSELoss(), X, y.reshape(-1, 1))


@reference('ch03.train_value_mlp')
def train_value_mlp_reference(X, y, W1, b1, W2, b2, lr, steps):
    model = _tanh_network(W1, b1, W2, b2)
    optimizer = optim.SGD(model, lr=lr)
    for _ in range(int(steps)):
        _gradients(model, nn.MSELoss(), X, y.reshape(-1, 1))
        optimizer.step()
    state = model.state_dict()
    return tuple(state[name].copy() for name in ("0.weight", "0.bias", "2.weight", "2.bias"))
