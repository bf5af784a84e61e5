"""Chapter 2 (neurons, layers, forward propagation): a neuron, a dense layer and its derived
backward pass, a two-layer MLP, parameter counts and initialisation bounds.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.Linear`,
`dlcourse.nn.Sigmoid`, `dlcourse.nn.Sequential` and `dlcourse.nn.init`, which the test suite
holds to PyTorch.
"""
import numpy as np

from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.checks import part


def _quietly_built(build):
    """Build layers without drawing from the global generator the student's code may use
    (their random initial weights are overwritten or never used)."""
    with using_generator(np.random.default_rng(0)):
        return build()


def _linear(weight, bias):
    """A float64 `nn.Linear` holding exactly `weight` (out, in) and `bias` (out,)."""
    weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
    layer = _quietly_built(lambda: nn.Linear(weight.shape[1], weight.shape[0], dtype=np.float64))
    layer.load_state_dict({"weight": weight, "bias": bias})
    return layer


@part("ch02.neuron_forward", "neuron_forward", asks="a neuron's forward pass",
      forbids=("dlcourse.nn.Linear", "dlcourse.nn.Sigmoid"))
def neuron_forward_cases(rng):
    """One sigmoid neuron: z = w·x + b, a = σ(z); returns (z, a)."""
    cases = []
    for n in (3, 1, 10, 50):
        x = rng.standard_normal(n)
        w = rng.standard_normal(n) / np.sqrt(n)
        cases.append((x, w, float(rng.uniform(-2, 2))))
    return cases


@part("ch02.dense_forward", "dense_forward", asks="a dense layer's forward pass",
      forbids=("dlcourse.nn.Linear",))
def dense_forward_cases(rng):
    """A dense layer on a batch: Z = X Wᵀ + b with torch's (out, in) weight layout."""
    cases = []
    for n, n_in, n_out in [(5, 3, 4), (1, 6, 2), (7, 1, 1), (4, 8, 8), (16, 5, 3)]:
        cases.append((rng.standard_normal((n, n_in)), rng.standard_normal((n_out, n_in)),
                      rng.standard_normal(n_out)))
    return cases


@part("ch02.dense_backward", "dense_backward", asks="a dense layer's backward pass",
      forbids=("dlcourse.nn.Linear",), derived=True)
def dense_backward_cases(rng):
    """The gradients (dX, dW, db) of a dense layer Z = X Wᵀ + b, given dL/dZ, X and W."""
    cases = []
    for n, n_in, n_out in [(5, 3, 4), (1, 6, 2), (7, 1, 1), (4, 8, 8), (16, 5, 3)]:
        cases.append((rng.standard_normal((n, n_out)), rng.standard_normal((n, n_in)),
                      rng.standard_normal((n_out, n_in))))
    return cases


@part("ch02.mlp_forward", "mlp_forward", asks="an MLP's forward pass",
      forbids=("dlcourse.nn.Linear", "dlcourse.nn.Sequential", "dlcourse.models.MLP"))
def mlp_forward_cases(rng):
    """Two sigmoid layers on a batch: A = σ(σ(X W1ᵀ + b1) W2ᵀ + b2)."""
    cases = []
    for n, n_in, n_hidden, n_out in [(4, 3, 5, 2), (1, 2, 3, 1), (10, 6, 6, 6), (8, 4, 16, 3)]:
        cases.append((rng.standard_normal((n, n_in)),
                      rng.standard_normal((n_hidden, n_in)), rng.standard_normal(n_hidden),
                      rng.standard_normal((n_out, n_hidden)), rng.standard_normal(n_out)))
    return cases


@part("ch02.count_parameters", "count_parameters", asks="counting an MLP's parameters",
      forbids=("dlcourse.nn.Linear", "dlcourse.models.MLP"))
def count_parameters_cases(rng):
    """Weights and biases of an MLP of fully connected layers with the given widths."""
    return [((784, 128, 10),), ((2, 1),), ((64, 128, 128, 10),), ((3, 5, 5, 5, 1),),
            (tuple(int(k) for k in rng.integers(1, 40, size=4)),)]


class _BoundRecorder:
    """Stands in for the random generator: remembers the interval an init function asks
    U(low, high) for, so the bound comes from `dlcourse.nn.init` itself."""

    def uniform(self, low, high, size=None):
        self.low, self.high = low, high
        return np.zeros(size)


def _uniform_bound(init_function, fan_in, fan_out, **kwargs):
    recorder = _BoundRecorder()
    init_function(np.empty((fan_out, fan_in)), generator=recorder, **kwargs)
    assert recorder.low == -recorder.high
    return float(recorder.high)


@part("ch02.init_bounds", "init_bounds", asks='the initialisation bounds',
      forbids=("dlcourse.nn.init",))
def init_bounds_cases(rng):
    """Xavier (Glorot) uniform bound and Kaiming (He) uniform bound for ReLU, fan-in mode."""
    return [(784, 128), (1, 1), (3, 1000), (256, 256), (int(rng.integers(1, 500)), int(rng.integers(1, 500)))]


