"""Gradient clipping, as `torch.nn.utils.clip_grad_norm_` / `clip_grad_value_`, on a Module's grads."""
import numpy as np

from dlcourse.nn.module import Module

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _gradients(module, caller: str) -> list[np.ndarray]:
    if not isinstance(module, Module):
        raise TypeError(f"{caller} expects a dlcourse Module (its grads are clipped in place), "
                        f"got {type(module).__name__}")
    return [grad for _, grad in module.named_gradients()]


def clip_grad_norm_(module: Module, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Rescale all gradients of `module` together so that their joint norm is at most `max_norm`.

        ‖g‖ = ‖(‖g₁‖_p, ‖g₂‖_p, …)‖_p          (p = norm_type; 'inf' gives max |gᵢ|)
        gᵢ ← gᵢ · min(1, max_norm / (‖g‖ + 10⁻⁶))

    The gradients are viewed as one long vector; its direction is kept, only its length is
    capped (the 10⁻⁶ keeps the division finite, as in torch). Returns ‖g‖ before clipping.
    Raises RuntimeError if ‖g‖ is nan or inf and `error_if_nonfinite` is set.
    """
    grads = _gradients(module, "clip_grad_norm_")
    norm_type = float(norm_type)
    if not grads:
        return 0.0
    norms = [np.linalg.norm(grad.reshape(-1), ord=norm_type) for grad in grads]
    total_norm = np.linalg.norm(np.stack(norms), ord=norm_type)
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
            "anyway, set `error_if_nonfinite=False`"
        )
    # torch multiplies even when the factor is 1 (so a nan norm spreads, as there).
    clip_coef = min(float(max_norm) / (total_norm + 1e-6), 1.0)
    for grad in grads:
        grad *= clip_coef
    return float(total_norm)


def clip_grad_value_(module: Module, clip_value: float) -> None:
    r"""Clamp every gradient entry of `module` into [−clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for grad in _gradients(module, "clip_grad_value_"):
        np.clip(grad, -clip_value, clip_value, out=grad)
