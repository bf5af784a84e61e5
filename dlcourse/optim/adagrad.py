"""Adagrad: a per-coordinate learning rate that shrinks with the sum of squared gradients."""
import numpy as np

from dlcourse.optim.optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad as torch implements it (parameter θ, gradient g, step t = 1, 2, …):

        g ← −g                          if maximize
        g ← g + λ θ                     if weight_decay λ ≠ 0
        γ̃ = γ / (1 + (t − 1) η)         (lr γ, lr_decay η)
        s ← s + g²                      (s₀ = initial_accumulator_value)
        θ ← θ − γ̃ g / (√s + ε)

    Shape: state `sum` has the parameter's shape; `step` counts updates.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        super().__init__(params, dict(lr=float(lr), lr_decay=float(lr_decay), weight_decay=float(weight_decay),
                                      initial_accumulator_value=float(initial_accumulator_value),
                                      eps=float(eps), maximize=bool(maximize)))

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = np.full_like(param, group["initial_accumulator_value"])
        state["step"] += 1
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * param
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += g * g
        param -= clr * (g / (np.sqrt(state["sum"]) + group["eps"]))
