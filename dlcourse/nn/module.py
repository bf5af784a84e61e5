"""The `Module` base class: parameters, gradients, buffers, sub-modules and `state_dict`.

It mirrors `torch.nn.Module` where a student would notice (attribute access to parameters
and sub-modules, `state_dict` keys, `train()`/`eval()`, `repr`) and replaces autograd with
an explicit `backward(grad_output)` that each layer writes next to its `forward`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from dlcourse._random import default_dtype


class Module:
    """Base class of every layer and model.

    A subclass registers its arrays with `register_parameter` (trainable; a zero gradient of
    the same shape is kept in `grads`) and `register_buffer` (state such as running
    statistics), and assigns sub-modules as attributes. It implements `forward(*inputs)`
    and `backward(grad_output)`; `backward` returns the gradient with respect to the input
    and *adds* parameter gradients into `grads`, so gradients accumulate until `zero_grad()`.

    Inputs and parameters are real NumPy arrays (float32 or float64) on the CPU: complex
    dtypes and other devices are outside the contract.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_gradients", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def register_parameter(self, name: str, value: np.ndarray | None) -> None:
        """Register a trainable array (or `None`, which torch leaves out of `state_dict`)."""
        if value is None:
            self._parameters[name] = None
            self._gradients.pop(name, None)
            return
        value = _as_float_array(value, f"{type(self).__name__}.{name}")
        self._parameters[name] = value
        self._gradients[name] = np.zeros_like(value)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Register non-trainable state that belongs in `state_dict` (e.g. `running_mean`)."""
        self._buffers[name] = None if value is None else np.asarray(value)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a dlcourse Module, got {type(module).__name__}")
        self._modules[name] = module

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self.add_module(name, value)
        elif name in self._parameters:
            self.register_parameter(name, value)
        elif name in self._buffers:
            self.register_buffer(name, value)
        elif name in self._modules and value is None:
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: expose parameters, buffers and
        # sub-modules as attributes, as torch does (`linear.weight`, `model.fc1`).
        for store in ("_parameters", "_buffers", "_modules"):
            table = self.__dict__.get(store)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._gradients, self._buffers, self._modules):
            store.pop(name, None)
        if name in self.__dict__:
            object.__delattr__(self, name)

    # ------------------------------------------------------------------ traversal
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self.named_children():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield `(dotted_name, array)` for every parameter, in torch's order."""
        for module_prefix, module in self.named_modules(prefix):
            for name, value in module._parameters.items():
                if value is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def parameters(self) -> Iterator[np.ndarray]:
        for _, value in self.named_parameters():
            yield value

    def named_gradients(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield `(dotted_name, grad)` in the same order as `named_parameters`."""
        for module_prefix, module in self.named_modules(prefix):
            for name, value in module._parameters.items():
                if value is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), module._gradients[name]

    def named_parameters_and_grads(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Yield `(name, parameter, gradient)`: what an optimizer walks over."""
        for module_prefix, module in self.named_modules():
            for name, value in module._parameters.items():
                if value is not None:
                    full = f"{module_prefix}.{name}" if module_prefix else name
                    yield full, value, module._gradients[name]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Parameters by name; a leaf module returns its own (mutable) table.

        For a container the keys are dotted (`'0.weight'`) and the values are the same
        array objects the sub-modules hold, so in-place changes reach them.
        """
        if not any(True for _ in self.named_children()):
            return self._parameters_view()
        return dict(self.named_parameters())

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Accumulated gradients, with exactly the keys and shapes of `params`."""
        if not any(True for _ in self.named_children()):
            return self._gradients
        return dict(self.named_gradients())

    def _parameters_view(self) -> dict[str, np.ndarray]:
        if all(v is not None for v in self._parameters.values()):
            return self._parameters
        return {k: v for k, v in self._parameters.items() if v is not None}

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers with torch's dotted keys; arrays are copies."""
        state = OrderedDict()
        for module_prefix, module in self.named_modules():
            for table in (module._parameters, module._buffers):
                for name, value in table.items():
                    if value is not None:
                        key = f"{module_prefix}.{name}" if module_prefix else name
                        state[key] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into this module; keys and shapes must match `state_dict()`.

        Values may be NumPy arrays or anything `np.asarray` accepts (e.g. CPU tensors via
        `.numpy()`). The dtype of the loaded values is adopted, so loading a float64 torch
        state makes the module compute in float64. torch's `num_batches_tracked` is accepted
        and used where a layer keeps that count.
        """
        own = {}
        for module_prefix, module in self.named_modules():
            for kind, table in (("parameter", module._parameters), ("buffer", module._buffers)):
                for name, value in table.items():
                    if value is not None:
                        key = f"{module_prefix}.{name}" if module_prefix else name
                        own[key] = (module, kind, name, value)
        given = {k: np.asarray(v) for k, v in state_dict.items()}
        optional = {k for k in given if k.endswith("num_batches_tracked")}
        # torch's batch-norm counter may be absent from a state (the contract allows it).
        missing = sorted(k for k in set(own) - set(given) if not k.endswith("num_batches_tracked"))
        unexpected = sorted(set(given) - set(own) - optional)
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}; expected exactly {sorted(own)}"
            )
        for key, value in given.items():
            if key not in own:
                continue
            module, kind, name, current = own[key]
            if value.shape != current.shape:
                raise ValueError(
                    f"load_state_dict: {key!r} has shape {value.shape}, "
                    f"but {type(module).__name__} expects {current.shape}"
                )
            if kind == "parameter":
                module.register_parameter(name, np.array(value, copy=True))
            else:
                module.register_buffer(name, np.array(value, copy=True))

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for module in self.modules():
            for grad in module._gradients.values():
                grad.fill(0)

    def to(self, dtype) -> "Module":
        """Cast every parameter, gradient and floating buffer to `dtype` (like `.to(dtype)`)."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for name, value in list(module._parameters.items()):
                if value is not None:
                    module._parameters[name] = value.astype(dtype)
                    module._gradients[name] = module._gradients[name].astype(dtype)
            for name, value in list(module._buffers.items()):
                if value is not None and np.issubdtype(value.dtype, np.floating):
                    module._buffers[name] = value.astype(dtype)
        return self

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    def apply(self, fn) -> "Module":
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ calling
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def _saved(self, cache):
        """Return what forward cached, or explain that backward came first."""
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() was called before forward(); "
                "call the module on an input first"
            )
        return cache

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _as_float_array(value, what: str) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(default_dtype())
    return array


def check_float_input(module: Module, x, name: str = "input") -> np.ndarray:
    """Return `x` as a floating array, or raise a TypeError naming the module."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "detach") and hasattr(x, "numpy"):
            raise TypeError(
                f"{type(module).__name__} got a torch tensor as {name}; dlcourse works on "
                "NumPy arrays: pass tensor.detach().cpu().numpy()"
            )
        x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{type(module).__name__} expects a floating-point {name} (float32 or float64), "
            f"got dtype {x.dtype}; convert with x.astype(np.float32)"
        )
    return x


def check_ndim(module: Module, x: np.ndarray, allowed, shape_text: str, name: str = "input") -> None:
    """Raise a ValueError naming the expected layout when `x.ndim` is not in `allowed`."""
    if x.ndim not in allowed:
        raise ValueError(
            f"{type(module).__name__} expects {name} of shape {shape_text}, "
            f"got shape {tuple(x.shape)}"
        )
