"""Adam and AdamW: bias-corrected running averages of the gradient and its square."""
import numpy as np

from dlcourse.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam as torch implements it (parameter θ, gradient g, step t = 1, 2, …):

        g ← −g                                   if maximize
        θ ← θ (1 − γ λ)                          if weight_decay λ ≠ 0 and decoupled (AdamW)
        g ← g + λ θ                              if weight_decay λ ≠ 0 otherwise (L2 in the gradient)
        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        v̂ ← max(v̂, v)  if amsgrad,  else  v̂ = v
        θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

    The last line is m̂ / (√ṽ + ε) with the bias corrections m̂ = m/(1 − β₁ᵗ),
    ṽ = v̂/(1 − β₂ᵗ), arranged as torch arranges it (ε is added after dividing by √(1 − β₂ᵗ)).

    Shape: states `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` (amsgrad) have the parameter's
    shape; `step` counts updates.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                                      weight_decay=float(weight_decay), amsgrad=bool(amsgrad),
                                      maximize=bool(maximize),
                                      decoupled_weight_decay=bool(decoupled_weight_decay)))

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step = state["step"]
        g = -grad if group["maximize"] else grad
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * param
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (g - exp_avg)  # torch's lerp form of β₁ m + (1 − β₁) g
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * (g * g)
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        step_size = lr / (1 - beta1 ** step)
        denom = np.sqrt(exp_avg_sq) / (1 - beta2 ** step) ** 0.5 + group["eps"]
        param -= step_size * (exp_avg / denom)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ (1 − γ λ) before the
    Adam step, instead of adding λ θ to the gradient. Same as
    `Adam(..., decoupled_weight_decay=True)`; note the default weight_decay=1e-2.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.param_groups[0]["decoupled_weight_decay"] = True  # AdamW is always decoupled, as in torch
