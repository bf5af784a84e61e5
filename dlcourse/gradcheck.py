"""Numerical gradient checking by central differences.

For a module f and a fixed random projection R of its output, the scalar
L(x, θ) = Σ f(x; θ) ⊙ R has ∂L/∂x = backward(R). Each input and parameter entry is nudged
by ±eps and (L(+) − L(−)) / 2eps is compared with the analytic gradient. The error reported
is `max|a − n| / max(|a| + |n|)` over the whole array (CS231n's relative error, taken
globally so that entries near zero do not dominate).

    >>> report = check_module(nn.Linear(3, 2), np.random.randn(4, 3))
    >>> report.worst < 1e-7
    True
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from dlcourse._random import manual_seed

__all__ = ["relative_error", "numerical_gradient", "check_module", "check_loss", "GradcheckReport"]


def relative_error(analytic, numeric) -> float:
    """max|a − b| / max(|a| + |b|); 0.0 when both are exactly zero."""
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare gradients of shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    scale = np.max(np.abs(a) + np.abs(b))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar function `f()` with respect to the array
    `x`, which `f` reads and which is perturbed in place (and restored).

    x: any shape, floating; returns an array of x's shape.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array it can perturb in place")
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + eps
        plus = float(f())
        flat[index] = original - eps
        minus = float(f())
        flat[index] = original
        grad.reshape(-1)[index] = (plus - minus) / (2 * eps)
    return grad


@dataclass
class GradcheckReport:
    """Relative error per checked array (`'input 0'`, `'weight'`, …)."""

    errors: dict = field(default_factory=dict)
    module: str = ""

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def worst_name(self) -> str:
        return max(self.errors, key=self.errors.get) if self.errors else ""

    def passed(self, tolerance: float = 1e-6) -> bool:
        return self.worst <= tolerance

    def __str__(self) -> str:
        width = max((len(name) for name in self.errors), default=4)
        lines = [f"gradient check of {self.module}", f"{'array':<{width}}  relative error"]
        for name, error in self.errors.items():
            lines.append(f"{name:<{width}}  {error:.3e}")
        lines.append(f"worst: {self.worst_name} {self.worst:.3e}")
        return "\n".join(lines)


def _leaves(output):
    """Flatten nested tuples of arrays (e.g. LSTM's (output, (h_n, c_n)))."""
    if isinstance(output, (tuple, list)):
        return [leaf for item in output for leaf in _leaves(item)]
    return [np.asarray(output)]


def check_module(module, *inputs, eps: float = 1e-6, seed: int = 0, outputs=None,
                 check_params: bool = True, **forward_kwargs) -> GradcheckReport:
    """Compare `module.backward` with numerical gradients for every floating input and
    every parameter.

    The module is deep-copied and cast to float64 first, so the caller's module is left
    alone. Randomness (dropout masks) is reseeded with `seed` before each forward, so every
    evaluation sees the same mask. `outputs` picks which output leaves enter the projected
    loss (default: all; backward receives one gradient per picked leaf). Integer inputs
    (indices, masks) are passed through unchanged.
    """
    module = copy.deepcopy(module).double()
    inputs = [np.array(x, dtype=np.float64) if _is_float(x) else x for x in inputs]
    rng = np.random.default_rng(seed + 1)

    def run():
        manual_seed(seed)
        leaves = _leaves(module(*inputs, **forward_kwargs))
        return leaves if outputs is None else [leaves[i] for i in outputs]

    projections = [rng.standard_normal(leaf.shape) for leaf in run()]

    def loss():
        return sum(float(np.sum(leaf * r)) for leaf, r in zip(run(), projections))

    module.zero_grad()
    run()
    grad_inputs = module.backward(*projections)
    if not isinstance(grad_inputs, tuple):
        grad_inputs = (grad_inputs,)
    report = GradcheckReport(module=repr(module).split("\n")[0])
    for index, x in enumerate(inputs):
        if not _is_float(x) or index >= len(grad_inputs) or grad_inputs[index] is None:
            continue
        report.errors[f"input {index}"] = relative_error(grad_inputs[index], numerical_gradient(loss, x, eps))
    if check_params:
        analytic = {name: np.array(grad, copy=True) for name, grad in module.named_gradients()}
        for name, parameter in module.named_parameters():
            report.errors[name] = relative_error(analytic[name], numerical_gradient(loss, parameter, eps))
    return report


def check_loss(loss_fn, input, target, eps: float = 1e-6) -> GradcheckReport:
    """Compare `loss_fn.backward()` with the numerical gradient of `loss_fn(input, target)`.

    input: float array of the loss's input shape; target as the loss expects it. With
    reduction='none' the output is projected on a fixed random array first.
    """
    x = np.array(input, dtype=np.float64)
    target = np.array(target, dtype=np.float64) if _is_float(target) else np.asarray(target)
    value = loss_fn(x, target)
    projection = None if np.ndim(value) == 0 else np.random.default_rng(1).standard_normal(np.shape(value))

    def scalar():
        out = loss_fn(x, target)
        return float(out) if projection is None else float(np.sum(out * projection))

    scalar()
    analytic = loss_fn.backward() if projection is None else loss_fn.backward(projection)
    report = GradcheckReport(module=repr(loss_fn))
    report.errors["input"] = relative_error(analytic, numerical_gradient(scalar, x, eps))
    return report


def _is_float(x) -> bool:
    return isinstance(x, (np.ndarray, float, list)) and np.issubdtype(np.asarray(x).dtype, np.floating)
