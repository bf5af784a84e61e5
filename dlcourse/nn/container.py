"""Containers: `Sequential` and `ModuleList`."""
from collections import OrderedDict

from dlcourse.nn.module import Module

__all__ = ["Sequential", "ModuleList"]


class Sequential(Module):
    """Applies modules in order; `backward` runs them in reverse.

    `state_dict` keys are the positions as torch gives them (`'0.weight'`, `'2.bias'`),
    or the names when built from an `OrderedDict`.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_output):
        for module in reversed(self._modules.values()):
            grad_output = module.backward(grad_output)
        return grad_output

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """Holds sub-modules in a list so their parameters are registered (`'0.weight'`, …)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __repr__(self):
        # torch folds runs of identical sub-modules into one line: "(0-1): 2 x Linear(...)".
        blocks = []  # [first index, last index, repr]
        for index, module in enumerate(self):
            text = repr(module)
            if blocks and blocks[-1][2] == text:
                blocks[-1][1] = index
            else:
                blocks.append([index, index, text])
        if not blocks:
            return "ModuleList()"
        lines = [f"({first}): {text}" if first == last else f"({first}-{last}): {last - first + 1} x {text}"
                 for first, last, text in blocks]
        return "ModuleList(\n  " + "\n  ".join(line.replace("\n", "\n  ") for line in lines) + "\n)"
