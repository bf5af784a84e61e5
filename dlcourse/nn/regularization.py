"""Weight penalties: L2 (weight decay) and L1 (sparsity).

Each function returns the penalty's value, to add to the data loss, and ADDS the penalty's
gradient into the module's `grads`, so call it after `model.backward(...)` and before
`optimizer.step()`:

    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    loss += l2_penalty(model, weight_decay=1e-4)
    optimizer.step()

By default only weights are penalised (every parameter whose name contains "weight":
`weight`, `weight_ih_l0`, `in_proj_weight`); biases shift a unit's output without making the
function steeper, so penalising them buys little. `include_bias=True` penalises every
parameter.
"""
import numpy as np

from dlcourse.nn.module import Module

__all__ = ["l2_penalty", "l1_penalty"]


def _penalised(module: Module, include_bias: bool):
    """Yield (parameter, gradient) pairs that the penalty covers."""
    if not isinstance(module, Module):
        raise TypeError(f"expected a dlcourse Module, got {type(module).__name__}")
    for name, parameter, grad in module.named_parameters_and_grads():
        if include_bias or "weight" in name.rsplit(".", 1)[-1]:
            yield parameter, grad


def _check_strength(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def l2_penalty(module: Module, weight_decay: float, include_bias: bool = False) -> float:
    r"""(λ/2)·Σ‖W‖² over the penalised parameters; adds ∂/∂W = λ·W into `grads`.

    With plain SGD this is exactly torch's `weight_decay=λ` (which adds λ·W to the gradient).
    Returns the penalty as a Python float.
    """
    weight_decay = _check_strength("weight_decay", weight_decay)
    penalty = 0.0
    for parameter, grad in _penalised(module, include_bias):
        penalty += 0.5 * weight_decay * float(np.sum(parameter * parameter))
        grad += weight_decay * parameter
    return penalty


def l1_penalty(module: Module, l1_lambda: float, include_bias: bool = False) -> float:
    r"""λ·Σ|W| over the penalised parameters; adds the subgradient λ·sign(W) into `grads`
    (0 at W = 0, as torch's autograd of |W|).

    Returns the penalty as a Python float.
    """
    l1_lambda = _check_strength("l1_lambda", l1_lambda)
    penalty = 0.0
    for parameter, grad in _penalised(module, include_bias):
        penalty += l1_lambda * float(np.sum(np.abs(parameter)))
        grad += l1_lambda * np.sign(parameter)
    return penalty
