"""Chapter 3 (backpropagation and gradient checking): the output-layer δ of softmax +
cross-entropy, a two-layer network's backward pass (derived by the student), central
differences and the relative error of a gradient check, and a scalar reverse-mode autograd
(`Value`) with the tiny MLP trained on it.

The references (the answer key, `dlcourse.answers`) come from
`dlcourse.nn.CrossEntropyLoss`, `dlcourse.nn.BCEWithLogitsLoss`, `dlcourse.nn.MSELoss`,
`dlcourse.nn.Linear`, `dlcourse.nn.Tanh` (whose backward passes the test suite holds to
PyTorch), `dlcourse.gradcheck`, `dlcourse.optim.SGD` and the derivatives of the given
expressions written out by hand.

`Value` is a class: its objects cannot travel to the grader as `.npy`. Its part has an
adapter (`Part.adapter`), `value_expression_adapter`, which the probe fetches before any
student code runs: it builds the case's expression (one of `EXPRESSIONS`) from the student's
`Value`s, calls `backward()` and returns the output's value and the leaves' gradients as
plain floats; the grader compares them with the reference in its own process.
"""
import math

import numpy as np

from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.checks import implementations
from dlcourse.checks import CheckFailure, part

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
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS)
def softmax_cross_entropy_delta_cases(rng):
    """δ = ∂J/∂Z of the mean cross-entropy of softmax(Z): (softmax(Z) − one_hot(y)) / N."""
    cases = []
    for n, classes, scale in [(4, 3, 1.0), (1, 2, 1.0), (8, 10, 3.0), (5, 4, 1000.0)]:
        cases.append((scale * rng.standard_normal((n, classes)), _targets(rng, n, classes)))
    return cases


_NETWORK_IMPLEMENTATIONS = (
    "dlcourse.nn.Linear", "dlcourse.nn.ReLU", "dlcourse.nn.Sigmoid", "dlcourse.nn.Tanh",
    "dlcourse.nn.Sequential", "dlcourse.models.MLP")


@part("ch03.two_layer_backward", "two_layer_backward", asks="a two-layer network's backward pass", derived=True,
      forbids=_NETWORK_IMPLEMENTATIONS + ("dlcourse.nn.BCEWithLogitsLoss", "scipy.special.expit",
                                          "scipy.special.log_expit"))
def two_layer_backward_cases(rng):
    """All four gradients of J = mean BCE-with-logits(tanh(X W1ᵀ + b1) W2ᵀ + b2, T), the mean
    over all N·K entries, for 0/1 targets T: (N, K) (K independent labels per example)."""
    cases = []
    for n, n_in, hidden, labels in [(5, 3, 4, 3), (1, 2, 3, 1), (8, 4, 6, 5), (6, 5, 5, 2)]:
        cases.append((rng.standard_normal((n, n_in)), (rng.random((n, labels)) < 0.5).astype(np.float64),
                      rng.standard_normal((hidden, n_in)), rng.standard_normal(hidden),
                      rng.standard_normal((labels, hidden)), rng.standard_normal(labels)))
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




# --- scalar autograd ---------------------------------------------------------------------
# The expressions the `Value` part is graded on, written with operators only, so that the same
# code builds a graph of the student's Values, of torch tensors (tests/test_checks_ch03.py) or
# of the book's nodes. Each input is a leaf; the case gives the leaves' numbers.

def _shared_product(a, b):
    d = a * b                      # d feeds the output twice: its gradient is a sum
    return d * d + d.tanh()


def _leaf_twice(a, b):
    return a * a + 3 * a - b       # a is both operands of one product


def _neuron(x1, x2, w1, w2, bias):
    return (x1 * w1 + x2 * w2 + bias).tanh()


def _two_way_softmax(a, b):
    e = a.exp()
    return e / (e + b.exp())


def _powers(a, b):
    return (a - b) ** 2 / 2 - b ** 3 + (1 - a) / 4


def _diamond(a):
    t = a.tanh()                   # t reaches the output along three paths
    return (t * a + t) * t + 2 / (1 + t * t)


EXPRESSIONS = {
    "shared_product": _shared_product,
    "leaf_twice": _leaf_twice,
    "neuron": _neuron,
    "two_way_softmax": _two_way_softmax,
    "powers": _powers,
    "diamond": _diamond,
}


def value_expression_adapter(value_class, expression, inputs):
    """Grader code, run in the probe with the student's class: the case's expression built
    from `value_class(x)` leaves, `backward()` on its output. Returns (output value: float,
    gradients of the leaves: (len(inputs),)), plain numbers whatever the class holds."""
    leaves = [value_class(float(x)) for x in inputs]
    output = EXPRESSIONS[str(expression)](*leaves)
    output.backward()
    return float(output.data), np.array([float(leaf.grad) for leaf in leaves], dtype=np.float64)


@part("ch03.value_expressions", "Value", asks="a scalar reverse-mode autograd", rtol=1e-9, atol=1e-12,
      adapter=value_expression_adapter, forbids=("sympy", "functorch"))
def value_expressions_cases(rng):
    """Each expression of EXPRESSIONS at random inputs: its value and the gradient of every leaf.

    The graded object is the student's class `Value`, so each case is (expression name, leaf
    values: (k,)), and `value_expression_adapter` (the part's adapter) turns the class into
    plain numbers: (value: float, leaf gradients: (k,)), compared with rtol 1e-9 (exact reverse
    mode agrees to rounding; central differences would not)."""
    cases = []
    for name, function in EXPRESSIONS.items():
        arity = function.__code__.co_argcount
        cases.append((name, rng.uniform(-1.5, 1.5, size=arity)))
    cases.append(("shared_product", np.array([0.0, 0.7])))   # d = 0: only the tanh path is left
    return cases


def xor_blobs(rng, n):
    """n points (n, 2) in four noisy blobs around (±1, ±1), labels (n,) +1 where the two
    coordinates' signs agree and −1 where they differ: no line separates the classes."""
    corners = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    which = np.arange(n) % 4
    return corners[which] + 0.3 * rng.standard_normal((n, 2)), np.array([1.0, 1.0, -1.0, -1.0])[which]


def tiny_mlp_weights(rng, hidden):
    """(W1: (hidden, 2), b1: (hidden,), W2: (1, hidden), b2: (1,)) for the tiny MLP."""
    return (rng.standard_normal((hidden, 2)), 0.1 * rng.standard_normal(hidden),
            rng.standard_normal((1, hidden)) / math.sqrt(hidden), np.zeros(1))


def tiny_mlp_scores(X, W1, b1, W2, b2):
    """The tiny MLP's scores (N,): tanh(X W1ᵀ + b1) W2ᵀ + b2, one number per point."""
    return (np.tanh(X @ W1.T + b1) @ W2.T + b2)[:, 0]


_MLP_IMPLEMENTATIONS = _NETWORK_IMPLEMENTATIONS + ("dlcourse.nn.MSELoss", "sympy", "functorch")


@part("ch03.value_mlp_gradients", "value_mlp_gradients", asks="the tiny MLP's gradients with your Value",
      forbids=_MLP_IMPLEMENTATIONS)
def value_mlp_gradients_cases(rng):
    """All four gradients of J = mean((tanh(X W1ᵀ + b1) W2ᵀ + b2 − y)²) for ±1 labels y."""
    cases = []
    for n, hidden in [(4, 3), (1, 2), (6, 4)]:
        X, y = xor_blobs(rng, n)
        cases.append((X, y, *tiny_mlp_weights(rng, hidden)))
    return cases


TRAIN_TARGET_LOSS = 0.2
TRAIN_TARGET_ACCURACY = 0.95


def _compare_trained_mlp(got, expected, args):
    """The returned weights, judged on the case's points: the mean squared error at most
    TRAIN_TARGET_LOSS and the accuracy of the scores' signs at least TRAIN_TARGET_ACCURACY
    (`expected`, the reference's own run, is not needed: any correct training reaches them)."""
    X, y, *initial = args[:6]
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        raise CheckFailure("train_value_mlp: return the trained weights as a tuple (W1, b1, W2, b2)")
    for name, weight, start in zip(["W1", "b1", "W2", "b2"], got, initial):
        if np.shape(weight) != start.shape:
            raise CheckFailure(f"train_value_mlp: {name} has shape {np.shape(weight)}, expected {start.shape}")
    scores = tiny_mlp_scores(X, *(np.asarray(g, dtype=np.float64) for g in got))
    loss, accuracy = float(np.mean((scores - y) ** 2)), float(np.mean(np.sign(scores) == y))
    if not np.isfinite(loss) or loss > TRAIN_TARGET_LOSS or accuracy < TRAIN_TARGET_ACCURACY:
        raise CheckFailure(f"train_value_mlp: the trained network has loss {loss:.3g} and accuracy {accuracy:.0%} "
                           f"on its points; a correct run reaches loss <= {TRAIN_TARGET_LOSS} and accuracy >= "
                           f"{TRAIN_TARGET_ACCURACY:.0%}")


@part("ch03.train_value_mlp", "train_value_mlp", asks="training the tiny MLP with your Value",
      compare=_compare_trained_mlp, forbids=_MLP_IMPLEMENTATIONS)
def train_value_mlp_cases(rng):
    """24 points of the XOR blobs, a 6-unit tanh MLP, 100 steps of full-batch gradient descent at lr 0.3."""
    X, y = xor_blobs(rng, 24)
    return [(X, y, *tiny_mlp_weights(rng, 6), 0.3, 100)]
