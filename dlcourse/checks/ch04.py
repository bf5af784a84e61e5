"""Chapter 4 (activation functions): sigmoid, tanh, (leaky) ReLU, softmax and GELU,
forward and backward.

Every reference is the `dlcourse.nn` layer (`Sigmoid`, `Tanh`, `LeakyReLU`, `Softmax`,
`GELU`), which the test suite holds to PyTorch. Each backward part takes the forward's input
`x` and the upstream gradient, as a layer that cached its input would.
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import part


def _forward(layer, x):
    return layer(x)


def _backward(layer, grad_output, x):
    layer(x)
    return layer.backward(grad_output)


def _elementwise_inputs(rng):
    """Several shapes, including a 0-d array, exact zeros and saturating values (±1000)."""
    extreme = np.array([-1000.0, -40.0, -1.0, 0.0, 1e-12, 1.0, 40.0, 1000.0])
    return [rng.standard_normal((4, 5)) * 3,
            extreme,
            rng.standard_normal((2, 3, 4)),
            np.array(rng.standard_normal()),
            rng.permutation(np.concatenate([np.zeros(3), -np.abs(rng.standard_normal(4)),
                                            np.abs(rng.standard_normal(5))]))]  # exact zeros, both signs


@part("ch04.sigmoid", "sigmoid")
def sigmoid_cases(rng):
    """σ(x) = 1 / (1 + e^{−x}) elementwise, finite for |x| = 1000."""
    return [(x,) for x in _elementwise_inputs(rng)]


@sigmoid_cases.reference
def sigmoid_reference(x):
    return _forward(nn.Sigmoid(), x)


@part("ch04.sigmoid_backward", "sigmoid_backward")
def sigmoid_backward_cases(rng):
    """grad_output ⊙ σ(x)(1 − σ(x)), finite for |x| = 1000."""
    return [(rng.standard_normal(x.shape), x) for x in _elementwise_inputs(rng)]


@sigmoid_backward_cases.reference
def sigmoid_backward_reference(grad_output, x):
    return _backward(nn.Sigmoid(), grad_output, x)


@part("ch04.tanh_backward", "tanh_backward")
def tanh_backward_cases(rng):
    """grad_output ⊙ (1 − tanh²(x))."""
    return [(rng.standard_normal(x.shape), x) for x in _elementwise_inputs(rng)]


@tanh_backward_cases.reference
def tanh_backward_reference(grad_output, x):
    return _backward(nn.Tanh(), grad_output, x)


_SLOPES = [0.01, 0.0, 0.2, 0.01, 0.5]  # 0.0 is the plain ReLU


@part("ch04.leaky_relu", "leaky_relu")
def leaky_relu_cases(rng):
    """x where x > 0, negative_slope · x elsewhere; negative_slope = 0 is ReLU."""
    return [(x, slope) for x, slope in zip(_elementwise_inputs(rng), _SLOPES)]


@leaky_relu_cases.reference
def leaky_relu_reference(x, negative_slope):
    return _forward(nn.LeakyReLU(negative_slope), x)


@part("ch04.leaky_relu_backward", "leaky_relu_backward")
def leaky_relu_backward_cases(rng):
    """grad_output where x > 0, negative_slope · grad_output elsewhere (x = 0 included, as torch)."""
    return [(rng.standard_normal(x.shape), x, slope) for x, slope in zip(_elementwise_inputs(rng), _SLOPES)]


@leaky_relu_backward_cases.reference
def leaky_relu_backward_reference(grad_output, x, negative_slope):
    return _backward(nn.LeakyReLU(negative_slope), grad_output, x)


def _softmax_inputs(rng):
    """Rows of logits along the last axis: several shapes, one class, equal and ±1000 logits."""
    large = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    return [rng.standard_normal((4, 5)) * 2, rng.standard_normal(6), large,
            rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1)), np.zeros((2, 4))]


@part("ch04.softmax", "softmax")
def softmax_cases(rng):
    """softmax along the last axis, finite for logits of ±1000."""
    return [(x,) for x in _softmax_inputs(rng)]


@softmax_cases.reference
def softmax_reference(x):
    return _forward(nn.Softmax(dim=-1), x)


@part("ch04.softmax_backward", "softmax_backward")
def softmax_backward_cases(rng):
    """The Jacobian-vector product y ⊙ (g − Σ_j g_j y_j) along the last axis, y = softmax(x)."""
    return [(rng.standard_normal(x.shape), x) for x in _softmax_inputs(rng)]


@softmax_backward_cases.reference
def softmax_backward_reference(grad_output, x):
    return _backward(nn.Softmax(dim=-1), grad_output, x)


@part("ch04.gelu", "gelu")
def gelu_cases(rng):
    """Exact GELU, x Φ(x) = ½ x (1 + erf(x / √2))."""
    return [(x,) for x in _elementwise_inputs(rng)] + [(np.linspace(-6, 6, 49),)]


@gelu_cases.reference
def gelu_reference(x):
    return _forward(nn.GELU(), x)
