"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""
import numpy as np

from dlcourse.optim.optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop as torch implements it (parameter θ, gradient g):

        g ← −g                                  if maximize
        g ← g + λ θ                             if weight_decay λ ≠ 0
        v ← α v + (1 − α) g²
        if centered:  ḡ ← α ḡ + (1 − α) g,   d = √(v − ḡ²) + ε
        else:         d = √v + ε
        if momentum μ > 0:  b ← μ b + g / d,   θ ← θ − γ b
        else:               θ ← θ − γ g / d

    Centering subtracts the squared running mean, so d estimates the standard deviation
    of the gradient rather than its root-mean-square.

    Shape: states `square_avg`, `grad_avg` (centered), `momentum_buffer` (momentum > 0)
    have the parameter's shape; `step` counts updates.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, dict(lr=float(lr), alpha=float(alpha), eps=float(eps),
                                      weight_decay=float(weight_decay), momentum=float(momentum),
                                      centered=bool(centered), maximize=bool(maximize)))

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        alpha = group["alpha"]
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = np.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(param)
        state["step"] += 1
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * param
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * (g * g)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (g - grad_avg)  # torch's lerp form of α ḡ + (1 − α) g
            denom = np.sqrt(square_avg - grad_avg * grad_avg) + group["eps"]
        else:
            denom = np.sqrt(square_avg) + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g / denom
            param -= group["lr"] * buf
        else:
            param -= group["lr"] * (g / denom)
