"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""
import numpy as np

from dlcourse.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""SGD as torch implements it (one update per parameter θ with gradient g):

        g ← −g                                   if maximize
        g ← g + λ θ                              if weight_decay λ ≠ 0
        b ← g (first step),  b ← μ b + (1 − τ) g  if momentum μ ≠ 0 (dampening τ)
        g ← g + μ b  if nesterov,  else  g ← b
        θ ← θ − γ g                              (lr γ)

    The first momentum step stores g itself, without dampening, as torch does. Nesterov
    momentum needs μ > 0 and τ = 0.

    Shape: every parameter keeps its shape; state `momentum_buffer` has the parameter's shape.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                                      weight_decay=float(weight_decay), nesterov=bool(nesterov),
                                      maximize=bool(maximize)))

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        momentum = group["momentum"]
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * param
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        param -= group["lr"] * g
