"""Chapter 6 (optimizers): one update of SGD with momentum, Nesterov momentum, Adam and RMSprop,
gradient clipping by global norm, as pure functions of arrays, and the derived gradient of
Rosenbrock's valley, the surface the notebook's optimizers then race on.

Each reference (in `dlcourse.answers`) puts the parameter into a one-parameter Module, sets
its gradient and the optimizer's state, and steps the `dlcourse.optim` optimizer (or calls
`dlcourse.nn.utils.clip_grad_norm_`); the test suite holds those to `torch.optim`. Rosenbrock's
gradient is `scipy.optimize.rosen_der`, which the test suite holds to torch autograd.
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import CheckFailure, compare_values, part


class _Parameters(nn.Module):
    """A module that only holds parameters `p0, p1, …` and their gradients."""

    def __init__(self, params, grads):
        super().__init__()
        for index, (param, grad) in enumerate(zip(params, grads)):
            self.register_parameter(f"p{index}", np.array(param, dtype=np.float64, copy=True))
            self.grads[f"p{index}"][...] = grad


def _one_step(optimizer_class, param, grad, state: dict, **hyper_parameters):
    """Step `optimizer_class` once on `param` with gradient `grad`, starting from `state`;
    returns (the new parameter, the new state)."""
    module = _Parameters([param], [grad])
    optimizer = optimizer_class(module, **hyper_parameters)
    optimizer.state["p0"] = {key: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
                             for key, value in state.items()}
    optimizer.step()
    return module.p0, optimizer.state["p0"]


SHAPES = [(3, 4), (5,), (2, 3, 2), (1,)]


def _momentum_cases(rng):
    cases = []
    for shape, lr, momentum, first in zip(SHAPES, [0.1, 0.5, 0.05, 1.0], [0.9, 0.5, 0.99, 0.8],
                                          [False, True, False, False]):
        velocity = np.zeros(shape) if first else rng.standard_normal(shape)
        cases.append((rng.standard_normal(shape), rng.standard_normal(shape), velocity, lr, momentum))
    return cases


@part("ch06.sgd_momentum_step", "sgd_momentum_step", asks='the momentum step',
      forbids=("dlcourse.optim.SGD",))
def sgd_momentum_step_cases(rng):
    """One SGD step with momentum in torch's form (v = μv + g; w −= lr·v); one case is a first step (v = 0)."""
    return _momentum_cases(rng)


@part("ch06.nesterov_step", "nesterov_step", asks='the Nesterov step',
      forbids=("dlcourse.optim.SGD",))
def nesterov_step_cases(rng):
    """One SGD step with Nesterov momentum in torch's form (v = μv + g; w −= lr·(g + μv))."""
    return _momentum_cases(rng)


@part("ch06.adam_step", "adam_step", asks='the Adam step',
      forbids=("dlcourse.optim.Adam", "dlcourse.optim.AdamW"))
def adam_step_cases(rng):
    """One Adam step with bias correction at step t (t = 1 from zero moments, later steps from given moments,
    and a large ε that tells where ε belongs)."""
    cases = []
    for shape, t, lr, betas, eps in [((3, 4), 1, 0.1, (0.9, 0.999), 1e-8),
                                     ((5,), 3, 0.05, (0.9, 0.999), 1e-8),
                                     ((2, 3, 2), 50, 0.2, (0.8, 0.99), 1e-6),
                                     ((4,), 10_000, 0.1, (0.9, 0.999), 1e-8),
                                     ((6,), 2, 0.5, (0.9, 0.999), 1e-2)]:
        grad = rng.standard_normal(shape) * (0.05 if eps > 1e-3 else 1.0)
        if t == 1:
            m, v = np.zeros(shape), np.zeros(shape)
        else:
            m = 0.3 * rng.standard_normal(shape)
            v = (0.5 * rng.standard_normal(shape)) ** 2 * (0.01 if eps > 1e-3 else 1.0)
        cases.append((rng.standard_normal(shape), grad, m, v, t, lr, betas[0], betas[1], eps))
    return cases


@part("ch06.rmsprop_step", "rmsprop_step", asks='the RMSprop step',
      forbids=("dlcourse.optim.RMSprop",))
def rmsprop_step_cases(rng):
    """One RMSprop step (s = αs + (1 − α)g²; w −= lr·g / (√s + ε)), from a zero and from a given average."""
    cases = []
    for shape, lr, alpha, eps, first in [((3, 4), 0.01, 0.99, 1e-8, True), ((5,), 0.1, 0.9, 1e-8, False),
                                         ((2, 3, 2), 0.05, 0.5, 1e-6, False), ((4,), 0.1, 0.99, 1e-2, False)]:
        square_avg = np.zeros(shape) if first else rng.standard_normal(shape) ** 2
        grad = rng.standard_normal(shape) * (0.05 if eps > 1e-3 else 1.0)
        if eps > 1e-3:
            square_avg *= 1e-3
        cases.append((rng.standard_normal(shape), grad, square_avg, lr, alpha, eps))
    return cases


def _compare_clipped(got, expected, args):
    """(clipped, total_norm), where `clipped` may be a list or a tuple of arrays."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailure(f"returned {type(got).__name__}, expected the pair (clipped, total_norm)")
    clipped, total_norm = got
    if not isinstance(clipped, (list, tuple)):
        raise CheckFailure(f"clipped is {type(clipped).__name__}, expected a list with one array per gradient")
    compare_values(tuple(clipped), expected[0], 1e-6, 1e-8, "clipped")
    compare_values(total_norm, expected[1], 1e-6, 1e-8, "total_norm")


@part("ch06.clip_grad_norm", "clip_grad_norm", asks='gradient clipping by norm',
      forbids=("dlcourse.nn.utils.clip_grad_norm_",), compare=_compare_clipped)
def clip_grad_norm_cases(rng):
    """Clip a list of gradient arrays by their global 2-norm: several arrays above the limit, one
    below it (unchanged), and a single array."""
    cases = []
    for shapes, max_norm in [([(3, 4), (4,), (2, 2, 2)], 1.0), ([(5, 2), (2,)], 0.5),
                             ([(3, 4), (4,)], 100.0), ([(6,)], 2.0)]:
        cases.append(([3 * rng.standard_normal(shape) for shape in shapes], max_norm))
    return cases




@part("ch06.rosenbrock_grad", "rosenbrock_grad", asks="the gradient of Rosenbrock's function",
      forbids=("scipy.optimize.rosen_der",), derived=True)
def rosenbrock_grad_cases(rng):
    """∇f of f(w) = Σᵢ 100 (w_{i+1} − w_i²)² + (1 − w_i)², w of shape (n,): n = 2 (the classic start
    (−1.2, 1) and a random point), longer vectors, and the minimum (1, …, 1), where ∇f = 0."""
    return [(np.array([-1.2, 1.0]),), (1.5 * rng.standard_normal(2),), (rng.standard_normal(3),),
            (1.5 * rng.standard_normal(7),), (np.ones(5),), (rng.uniform(-2, 2, 12),)]
