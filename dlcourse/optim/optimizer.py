"""The `Optimizer` base class: one parameter group over a Module, per-parameter state by name.

torch's optimizers take an iterable of tensors whose `.grad` autograd fills; ours take the
Module itself and walk `module.named_parameters_and_grads()` at every step, so a
`load_state_dict` that replaces the parameter arrays between steps is picked up. Parameters
are updated in place (`param -= ...`), so the arrays that the layers hold stay the ones updated.

    opt = optim.SGD(model, lr=0.1, momentum=0.9)
    model.backward(loss_fn.backward())
    opt.step(); opt.zero_grad()
    opt.param_groups[0]["lr"] = 0.01        # what schedulers do
"""
from __future__ import annotations

import copy

import numpy as np

from dlcourse.nn.module import Module

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: holds `param_groups` (a single group), `defaults` and `state`.

    A subclass validates its hyper-parameters, calls `super().__init__(module, defaults)`
    and implements `_update(param, grad, state, group)`, the single-tensor update rule,
    which changes `param` in place and keeps whatever it needs in the dict `state`.

    Attributes:
        param_groups: `[{"lr": ..., <other hyper-parameters>}]`, read at every step, so a
            scheduler (or you) may change `param_groups[0]["lr"]` between steps.
        defaults: the hyper-parameters given to the constructor.
        state: `{parameter name: {"step": ..., "exp_avg": array, ...}}`.
    """

    def __init__(self, module: Module, defaults: dict):
        if not isinstance(module, Module):
            # torch takes `model.parameters()`; here the Module owns the gradients.
            raise TypeError(
                f"{type(self).__name__} expects a dlcourse Module (e.g. optim.{type(self).__name__}"
                f"(model, lr=...)), got {type(module).__name__}"
            )
        self.module = module
        self.defaults = dict(defaults)
        self.param_groups = [dict(defaults)]
        self.state: dict[str, dict] = {}

    def step(self, closure=None):
        """Update every parameter once from its accumulated gradient.

        closure: optional callable that recomputes the loss (as torch's `step(closure)`);
        its value is returned.
        """
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        for name, param, grad in self.module.named_parameters_and_grads():
            self._update(param, grad, self.state.setdefault(name, {}), group)
        return loss

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

    def zero_grad(self) -> None:
        """Set every gradient of the module to zero (dlcourse keeps arrays, never `None`)."""
        self.module.zero_grad()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """`{"state": {name: {key: value}}, "param_groups": [...]}`; arrays are copies."""
        return {"state": copy.deepcopy(self.state), "param_groups": copy.deepcopy(self.param_groups)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what `state_dict()` returned, or torch's optimizer `state_dict()`.

        torch keys its state by parameter index; indices are mapped to names in the order
        of `named_parameters()`, which is torch's order for a twin module.
        """
        names = [name for name, _ in self.module.named_parameters()]
        params = dict(self.module.named_parameters())
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"{type(self).__name__} has one parameter group, the state has {len(groups)}")
        state = {}
        for key, entries in state_dict["state"].items():
            name = names[key] if isinstance(key, int) else key
            if name not in params:
                raise KeyError(f"{type(self).__name__}.load_state_dict: no parameter named {name!r}; "
                               f"the module has {names}")
            state[name] = {k: _restore(k, v, params[name]) for k, v in entries.items()}
        self.state = state
        # Keep our own hyper-parameter names (torch's group also has "params", "foreach", …).
        known = set(self.defaults) | {"initial_lr"}
        self.param_groups = [{**self.param_groups[0],
                              **{k: v for k, v in groups[0].items() if k in known}}]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} (", "Parameter Group 0"]
        lines += [f"    {key}: {value}" for key, value in sorted(self.param_groups[0].items())]
        return "\n".join(lines) + "\n)"


def _restore(key: str, value, param: np.ndarray):
    """A state entry as we keep it: `step` an int, buffers arrays of the parameter's dtype."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if key == "step":
        return int(np.asarray(value).item())
    value = np.array(value, dtype=param.dtype, copy=True)
    if value.shape != param.shape:
        raise ValueError(f"optimizer state {key!r} has shape {value.shape}, "
                         f"the parameter has shape {param.shape}")
    return value
