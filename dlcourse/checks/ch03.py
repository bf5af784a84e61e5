"""Chapter 3 (backpropagation and gradient checking): the output-layer δ of softmax +
cross-entropy, backpropagation through a two-layer network, central differences and the
relative error of a gradient check.

The references (the answer key, `dlcourse.answers`) come from
`dlcourse.nn.CrossEntropyLoss`, `dlcourse.nn.Linear`, `dlcourse.nn.Sigmoid` (whose backward
passes the test suite holds to PyTorch) and `dlcourse.gradcheck`.
"""
import numpy as np

from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.checks import implementations
from dlcourse.checks import part

_GRADCHECK_IMPLEMENTATIONS = (
    "dlcourse.gradcheck",
    "scipy.optimize.approx_fprime",
    "scipy.optimize.check_grad",
    "scipy.differentiate",
)


def _linear(weight, bias):
    """A float64 `nn.Linear` holding exactly `weight` (out, in) and `bias` (out,); built
    without drawing from the global generator the student's code may use."""
    with using_generator(np.random.default_rng(0)):
        layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=np.float64)
    layer.load_state_dict({"weight": np.asarray(weight, np.float64), "bias": np.asarray(bias, np.float64)})
    return layer


def _targets(rng, n, classes):
    """Class indices that include the first and the last class whenever n allows."""
    y = rng.integers(0, classes, size=n)
    y[: min(n, 2)] = [0, classes - 1][: min(n, 2)]
    return rng.permutation(y)


@part("ch03.softmax_cross_entropy_delta", "softmax_cross_entropy_delta", asks='the softmax-cross-entropy gradient',
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS + ("dlcourse.nn.CrossEntropyLoss",))
def softmax_cross_entropy_delta_cases(rng):
    """δ = ∂J/∂Z of the mean cross-entropy of softmax(Z): (softmax(Z) − one_hot(y)) / N."""
    cases = []
    for n, classes, scale in [(4, 3, 1.0), (1, 2, 1.0), (8, 10, 3.0), (5, 4, 1000.0)]:
        cases.append((scale * rng.standard_normal((n, classes)), _targets(rng, n, classes)))
    return cases


@part("ch03.two_layer_backward", "two_layer_backward", asks="a two-layer network's backward pass",
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS + (
          "dlcourse.nn.Linear", "dlcourse.nn.ReLU", "dlcourse.nn.Sigmoid", "dlcourse.nn.Tanh",
          "dlcourse.nn.CrossEntropyLoss", "dlcourse.nn.Sequential", "dlcourse.models.MLP"))
def two_layer_backward_cases(rng):
    """All four gradients of J = mean CE(σ(X W1ᵀ + b1) W2ᵀ + b2, y)."""
    cases = []
    for n, n_in, hidden, classes in [(5, 3, 4, 3), (1, 2, 3, 2), (8, 4, 6, 5), (6, 5, 5, 5)]:
        cases.append((rng.standard_normal((n, n_in)), _targets(rng, n, classes),
                      rng.standard_normal((hidden, n_in)), rng.standard_normal(hidden),
                      rng.standard_normal((classes, hidden)), rng.standard_normal(classes)))
    return cases


class SmoothScalar:
    """A smooth scalar function of an array x of any shape, fixed by plain arrays:
    f(x) = Σ r ⊙ tanh(A vec(x) + c) + q Σ x³ (curved enough that one-sided differences
    are visibly worse than central ones). It never changes x."""

    def __init__(self, A, c, r, q):
        self.A, self.c, self.r, self.q = A, c, r, q

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        return float(np.sum(self.r * np.tanh(self.A @ x.reshape(-1) + self.c)) + self.q * np.sum(x ** 3))

    def __repr__(self):
        return f"SmoothScalar(of {self.A.shape[1]} numbers)"


@part("ch03.numerical_gradient", "numerical_gradient", asks='central-difference gradients',
      forbids=_GRADCHECK_IMPLEMENTATIONS)
def numerical_gradient_cases(rng):
    """Central differences (f(x + ε e_i) − f(x − ε e_i)) / 2ε for every entry of x; x any shape."""
    cases = []
    for shape, eps in [((5,), 1e-5), ((3, 4), 1e-4), ((2, 3, 2), 1e-3), ((1,), 1e-2)]:
        size = int(np.prod(shape))
        f = SmoothScalar(rng.standard_normal((6, size)), rng.standard_normal(6), rng.standard_normal(6),
                         float(rng.uniform(0.5, 1.5)))
        cases.append((f, rng.standard_normal(shape), eps))
    return cases


@part("ch03.gradient_relative_error", "gradient_relative_error", asks="the gradient check's relative error",
      forbids=_GRADCHECK_IMPLEMENTATIONS)
def gradient_relative_error_cases(rng):
    """max|a − n| / max(|a| + |n|) over the whole arrays; 0 when both are all zeros."""
    a = rng.standard_normal((4, 5))
    b = rng.standard_normal((2, 3, 4))
    c = rng.standard_normal(7)
    return [(a, a + 1e-7 * rng.standard_normal(a.shape)),       # a gradient that checks out
            (b, b * (1 + 0.1 * rng.standard_normal(b.shape))),  # a buggy one
            (c, -c),                                             # a sign error
            (c, c + np.abs(rng.standard_normal(7))),             # numeric above analytic everywhere
            (np.zeros(3), np.zeros(3)),                          # both zero: error 0, not 0/0
            (np.zeros((2, 2)), rng.standard_normal((2, 2)))]


