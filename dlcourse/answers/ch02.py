"""The answer key of ch02: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch02`.
"""
import numpy as np
from dlcourse import nn
from dlcourse.nn import init

from dlcourse.answers import reference
from dlcourse.checks.ch02 import _linear, _quietly_built, _uniform_bound


@reference('ch02.neuron_forward')
def neuron_forward_reference(x, w, b):
    z = _linear(w[None, :], np.array([b]))(x)          # (1,): a layer with one output unit
    a = nn.Sigmoid()(z)
    return float(z[0]), float(a[0])


@reference('ch02.dense_forward')
def dense_forward_reference(X, W, b):
    return _linear(W, b)(X)


@reference('ch02.dense_backward')
def dense_backward_reference(grad_output, X, W):
    layer = _linear(W, np.zeros(W.shape[0]))
    layer(X)
    grad_input = layer.backward(grad_output)
    return grad_input, layer.grads["weight"].copy(), layer.grads["bias"].copy()


@reference('ch02.mlp_forward')
def mlp_forward_reference(X, W1, b1, W2, b2):
    model = nn.Sequential(_linear(W1, b1), nn.Sigmoid(), _linear(W2, b2), nn.Sigmoid())
    return model(X)


@reference('ch02.count_parameters')
def count_parameters_reference(layer_sizes):
    sizes = list(layer_sizes)
    model = _quietly_built(lambda: nn.Sequential(*[nn.Linear(n_in, n_out, dtype=np.float64)
                                                   for n_in, n_out in zip(sizes[:-1], sizes[1:])]))
    return model.num_parameters()


@reference('ch02.init_bounds')
def init_bounds_reference(fan_in, fan_out):
    return (_uniform_bound(init.xavier_uniform_, fan_in, fan_out),
            _uniform_bound(init.kaiming_uniform_, fan_in, fan_out, nonlinearity="relu"))
