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


def _parameter_grads(model):
    grads = model.grads
    return grads["0.weight"].copy(), grads["0.bias"].copy(), grads["2.weight"].copy(), grads["2.bias"].copy()


@reference('ch03.two_layer_backward')
def two_layer_backward_reference(X, T, W1, b1, W2, b2):
    model = _tanh_network(W1, b1, W2, b2)
    loss = nn.BCEWithLogitsLoss()
    loss(model(X), T)
    model.backward(loss.backward())
    return _parameter_grads(model)


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


def _squared_error_grads(model, X, y):
    loss = nn.MSELoss()
    loss(model(X), y.reshape(-1, 1))
    model.zero_grad()
    model.backward(loss.backward())
    return _parameter_grads(model)


@reference('ch03.value_mlp_gradients')
def value_mlp_gradients_reference(X, y, W1, b1, W2, b2):
    return _squared_error_grads(_tanh_network(W1, b1, W2, b2), X, y)


@reference('ch03.train_value_mlp')
def train_value_mlp_reference(X, y, W1, b1, W2, b2, lr, steps):
    model = _tanh_network(W1, b1, W2, b2)
    optimizer = optim.SGD(model, lr=lr)
    for _ in range(int(steps)):
        _squared_error_grads(model, X, y)
        optimizer.step()
    state = model.state_dict()
    return state["0.weight"].copy(), state["0.bias"].copy(), state["2.weight"].copy(), state["2.bias"].copy()
