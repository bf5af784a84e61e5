"""Chapter 4 (activation functions): sigmoid, tanh, (leaky) ReLU, softmax and GELU,
forward and backward.

Every reference (in the answer key, `dlcourse.answers`) is the `dlcourse.nn` layer
(`Sigmoid`, `Tanh`, `LeakyReLU`, `Softmax`, `GELU`), which the test suite holds to PyTorch.
Each backward part takes the forward's input `x` and the upstream gradient, as a layer that
cached its input would.
"""
import numpy as np

from dlcourse.checks import implementations
from dlcourse.checks import part

# Library implementations of the mechanics this chapter's parts ask for (Part.forbids).
_SIGMOID_IMPLEMENTATIONS = (
    "dlcourse.nn.Sigmoid",
    "dlcourse.nn.activation._sigmoid",
    "dlcourse.nn.rnn._sigmoid",
    "scipy.special.expit",
)


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


@part("ch04.sigmoid", "sigmoid", asks='the sigmoid',
      forbids=_SIGMOID_IMPLEMENTATIONS)
def sigmoid_cases(rng):
    """σ(x) = 1 / (1 + e^{−x}) elementwise, finite for |x| = 1000."""
    return [(x,) for x in _elementwise_inputs(rng)]


@part("ch04.sigmoid_backward", "sigmoid_backward", asks="the sigmoid's backward pass",
      forbids=_SIGMOID_IMPLEMENTATIONS)
def sigmoid_backward_cases(rng):
    """grad_output ⊙ σ(x)(1 − σ(x)), finite for |x| = 1000."""
    return [(rng.standard_normal(x.shape), x) for x in _elementwise_inputs(rng)]


@part("ch04.tanh_backward", "tanh_backward", asks="tanh's backward pass",
      forbids=("dlcourse.nn.Tanh",))
def tanh_backward_cases(rng):
    """grad_output ⊙ (1 − tanh²(x))."""
    return [(rng.standard_normal(x.shape), x) for x in _elementwise_inputs(rng)]


_SLOPES = [0.01, 0.0, 0.2, 0.01, 0.5]  # 0.0 is the plain ReLU


@part("ch04.leaky_relu", "leaky_relu", asks='leaky ReLU',
      forbids=("dlcourse.nn.LeakyReLU",))
def leaky_relu_cases(rng):
    """x where x > 0, negative_slope · x elsewhere; negative_slope = 0 is ReLU."""
    return [(x, slope) for x, slope in zip(_elementwise_inputs(rng), _SLOPES)]


@part("ch04.leaky_relu_backward", "leaky_relu_backward", asks="leaky ReLU's backward pass",
      forbids=("dlcourse.nn.LeakyReLU",))
def leaky_relu_backward_cases(rng):
    """grad_output where x > 0, negative_slope · grad_output elsewhere (x = 0 included, as torch)."""
    return [(rng.standard_normal(x.shape), x, slope) for x, slope in zip(_elementwise_inputs(rng), _SLOPES)]


def _softmax_inputs(rng):
    """Rows of logits along the last axis: several shapes, one class, equal and ±1000 logits."""
    large = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    return [rng.standard_normal((4, 5)) * 2, rng.standard_normal(6), large,
            rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1)), np.zeros((2, 4))]


@part("ch04.softmax", "softmax", asks='the softmax',
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS)
def softmax_cases(rng):
    """softmax along the last axis, finite for logits of ±1000."""
    return [(x,) for x in _softmax_inputs(rng)]


@part("ch04.softmax_backward", "softmax_backward", asks="the softmax's backward pass",
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS, derived=True)
def softmax_backward_cases(rng):
    """The Jacobian-vector product y ⊙ (g − Σ_j g_j y_j) along the last axis, y = softmax(x)."""
    return [(rng.standard_normal(x.shape), x) for x in _softmax_inputs(rng)]


@part("ch04.gelu", "gelu", asks='GELU',
      forbids=("dlcourse.nn.GELU",))
def gelu_cases(rng):
    """Exact GELU, x Φ(x) = ½ x (1 + erf(x / √2))."""
    return [(x,) for x in _elementwise_inputs(rng)] + [(np.linspace(-6, 6, 49),)]


