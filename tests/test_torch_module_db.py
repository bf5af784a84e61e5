"""PyTorch's own test configurations, run against dlcourse.

The torch wheel ships the inputs its developers test `torch.nn` and `torch.optim` with:
`module_db` (torch/testing/_internal/common_modules.py), the module and criterion tests of
common_nn.py, and `optim_db` (common_optimizers.py). For every class that exists in both
libraries, each configuration builds torch's module and ours from the same constructor
input, loads torch's `state_dict` into ours and compares, in float64 (relative 1e-7) and
float32 (1e-4): outputs, input gradients, parameter gradients, buffers (running
statistics) and gradient accumulation over two forward/backward passes; in training and
evaluation mode where torch's ModuleInfo says the two differ. Optimizers take three steps
on the same parameters and gradients.

A configuration dlcourse cannot run fails. The only ones left out are those outside the
contract in a way the class's docstring states: `OUTSIDE_CONTRACT` below.
"""
import functools
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from parity import TOLERANCE, rel_error
from torch.testing._internal import common_nn
from torch.testing._internal.common_modules import module_db
from torch.testing._internal.common_optimizers import optim_db

from dlcourse import nn, optim

DTYPES = {"float64": torch.float64, "float32": torch.float32}

# Configurations outside dlcourse's contract, each as a docstring states it: Module's (real
# float32/float64 arrays on the CPU) and RNNBase's (no packed sequences). At present none of
# torch's configurations for the shared classes falls under them.
OUTSIDE_CONTRACT = {
    "complex dtypes": lambda case: any(torch.is_tensor(t) and t.is_complex() for t in case.all_tensors()),
    "packed sequences": lambda case: any(isinstance(a, torch.nn.utils.rnn.PackedSequence)
                                         for a in case.forward_args),
}


@dataclass
class Case:
    """One configuration: a class present in both libraries and how to build and call it."""
    class_name: str
    description: str
    dtype: str
    constructor_args: tuple = ()
    constructor_kwargs: dict = field(default_factory=dict)
    forward_args: tuple = ()
    forward_kwargs: dict = field(default_factory=dict)
    training: bool = True
    is_criterion: bool = False

    def all_tensors(self):
        def walk(value):
            if isinstance(value, (tuple, list)):
                for item in value:
                    yield from walk(item)
            elif isinstance(value, dict):
                for item in value.values():
                    yield from walk(item)
            elif torch.is_tensor(value):
                yield value
        return list(walk((self.constructor_args, self.constructor_kwargs, self.forward_args,
                          self.forward_kwargs)))

    @property
    def id(self):
        mode = "" if self.training else "-eval"
        return f"{self.class_name}-{self.description}-{self.dtype}{mode}"


# ---------------------------------------------------------------------- collecting cases
def _in_both(name):
    return hasattr(nn, name) and hasattr(torch.nn, name)


def _module_db_cases():
    for info in module_db:
        name = info.module_cls.__name__
        if not _in_both(name):
            continue
        for dtype_name, dtype in DTYPES.items():
            modes = (True, False) if info.train_and_eval_differ else (True,)
            for training in modes:
                torch.manual_seed(0)  # the samples are random tensors: the same ones every run
                samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                                  training=training)
                for index, sample in enumerate(samples):
                    if sample.forward_input is None:
                        continue
                    yield Case(name, f"module_db{index}", dtype_name,
                               tuple(sample.constructor_input.args), dict(sample.constructor_input.kwargs),
                               tuple(sample.forward_input.args), dict(sample.forward_input.kwargs),
                               training, is_criterion=name.endswith("Loss"))


class _Recorder:
    """Replaces `torch.nn.<Class>` while a common_nn constructor lambda runs, to learn its arguments."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return getattr(torch.nn.modules, self.name)(*args, **kwargs)


def _constructor_input(test):
    """(class name, args, kwargs) of a common_nn test dict, or None for a class not in dlcourse."""
    if "module_name" in test:
        return test["module_name"], tuple(test.get("constructor_args", ())), {}
    constructor = test["constructor"]
    if isinstance(constructor, functools.partial):
        return constructor.func.__name__, constructor.args, dict(constructor.keywords)
    if isinstance(constructor, type) and constructor.__name__ == "FunctionalModule":
        closure = dict(zip(constructor.forward.__code__.co_freevars,
                           (cell.cell_contents for cell in constructor.forward.__closure__)))
        if closure["fn"] is torch.nn.functional.interpolate:
            return "Upsample", (), dict(closure["kwargs"])
        return None
    if isinstance(constructor, type):
        return constructor.__name__, (), {}
    name = type(constructor()).__name__
    if not _in_both(name):
        return None
    recorder = _Recorder(name)
    original = getattr(torch.nn, name)
    setattr(torch.nn, name, recorder)
    try:
        constructor()
    finally:
        setattr(torch.nn, name, original)
    if len(recorder.calls) != 1:
        return None
    args, kwargs = recorder.calls[0]
    return name, args, kwargs


def _tensor_from(test, key, dtype):
    if f"{key}_fn" in test:
        value = test[f"{key}_fn"]()
    elif f"{key}_size" in test:
        value = torch.randn(test[f"{key}_size"])
    else:
        return None
    if torch.is_tensor(value) and value.is_floating_point():
        value = value.to(dtype)
    return value


def _common_nn_cases():
    tests = [(t, False) for t in common_nn.module_tests + common_nn.get_new_module_tests()]
    tests += [(t, True) for t in common_nn.criterion_tests]
    for test, is_criterion in tests:
        found = _constructor_input(test)
        if found is None or not _in_both(found[0]):
            continue
        name, args, kwargs = found
        description = test.get("fullname") or "_".join(filter(None, [name, test.get("desc")]))
        for dtype_name, dtype in DTYPES.items():
            torch.manual_seed(0)
            forward = [_tensor_from(test, "input", dtype)]
            if is_criterion:
                forward.append(_tensor_from(test, "target", dtype))
            yield Case(name, f"common_nn.{description}", dtype_name, args, kwargs,
                       tuple(forward), {}, True, is_criterion)


def _all_cases():
    cases, excluded = [], {}
    for case in [*_module_db_cases(), *_common_nn_cases()]:
        reason = next((why for why, applies in OUTSIDE_CONTRACT.items() if applies(case)), None)
        if reason:
            excluded[case.id] = reason
        else:
            cases.append(case)
    return cases, excluded


MODULE_CASES, EXCLUDED = _all_cases()


# ---------------------------------------------------------------------- converting
def _ours_from_torch_module(module):
    """The dlcourse twin of a torch module passed as a constructor argument (TransformerEncoder's layer)."""
    if isinstance(module, torch.nn.TransformerEncoderLayer):
        activation = module.activation
        activation = activation if isinstance(activation, str) else getattr(activation, "__name__", "relu")
        return nn.TransformerEncoderLayer(
            module.self_attn.embed_dim, module.self_attn.num_heads, module.linear1.out_features,
            module.dropout.p, activation, module.norm1.eps, module.self_attn.batch_first,
            module.norm_first, module.linear1.bias is not None)
    if isinstance(module, torch.nn.LayerNorm):
        return nn.LayerNorm(module.normalized_shape, module.eps, module.elementwise_affine)
    raise TypeError(f"no dlcourse twin for a torch {type(module).__name__} argument")


def to_numpy(value):
    """Tensors (also inside tuples, lists and dicts) as NumPy arrays; torch modules as dlcourse's."""
    if torch.is_tensor(value):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, torch.nn.Module):
        return _ours_from_torch_module(value)
    if isinstance(value, torch.dtype):
        return torch.empty(0, dtype=value).numpy().dtype
    if value is torch.nn.functional.relu or value is torch.nn.functional.gelu:
        return value.__name__  # TransformerEncoderLayer(activation=F.gelu) is activation='gelu'
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    return value


def flatten(value):
    """An output structure ((out, (h, c)), a float, None, …) as a flat list of leaves."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def fresh_leaves(value, clones):
    """Forward arguments with every float tensor replaced by a new leaf (one per original object)."""
    if torch.is_tensor(value):
        if not value.is_floating_point():
            return value
        if id(value) not in clones:
            clones[id(value)] = value.detach().clone().requires_grad_(value.requires_grad)
        return clones[id(value)]
    if isinstance(value, (tuple, list)):
        return type(value)(fresh_leaves(v, clones) for v in value)
    if isinstance(value, dict):
        return {k: fresh_leaves(v, clones) for k, v in value.items()}
    return value


def assert_matches(ours, theirs, dtype, what):
    """Same shape, NaN where torch has NaN, and relative error within the dtype's tolerance."""
    if theirs is None:
        assert ours is None, f"{what}: torch returns None, dlcourse {type(ours).__name__}"
        return
    if torch.is_tensor(theirs) and theirs.is_sparse:
        theirs = theirs.to_dense()  # Embedding(sparse=True): ours is the same gradient, dense
    theirs = theirs.detach().cpu().double().numpy() if torch.is_tensor(theirs) else np.asarray(theirs, float)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    nan = np.isnan(theirs)
    assert np.array_equal(np.isnan(ours), nan), f"{what}: NaN at other places than torch's"
    error = rel_error(np.where(nan, 0, ours), np.where(nan, 0, theirs))
    tolerance = TOLERANCE[np.dtype(dtype)]
    assert error <= tolerance, f"{what}: relative error {error:.3e} > {tolerance:.0e}"


# ---------------------------------------------------------------------- the comparison
def build_pair(case):
    """torch's module and ours from the same constructor input, ours loaded with torch's state."""
    dtype = DTYPES[case.dtype]
    theirs = getattr(torch.nn, case.class_name)(*case.constructor_args, **case.constructor_kwargs)
    theirs = theirs.to(dtype).train(case.training)
    kwargs = {k: v for k, v in to_numpy(case.constructor_kwargs).items() if k != "device"}
    ours = getattr(nn, case.class_name)(*to_numpy(case.constructor_args), **kwargs)
    ours.to(np.dtype(case.dtype))
    state = theirs.state_dict()
    if state:
        ours.load_state_dict({k: v.detach().numpy() for k, v in state.items()})
    return theirs, ours.train(case.training)


def forward_backward(case, theirs, ours, rng, what):
    """One forward and backward pass of both; compares outputs and input gradients."""
    clones = {}
    args = fresh_leaves(case.forward_args, clones)
    kwargs = fresh_leaves(case.forward_kwargs, clones)
    torch_outputs = flatten(theirs(*args, **kwargs))
    our_outputs = flatten(ours(*to_numpy(args), **to_numpy(kwargs)))
    assert len(our_outputs) == len(torch_outputs), f"{what}: {len(our_outputs)} outputs, torch {len(torch_outputs)}"
    for index, (mine, reference) in enumerate(zip(our_outputs, torch_outputs)):
        assert_matches(mine, reference, case.dtype, f"{what} output {index}")
    # MultiheadAttention's backward takes the gradient of its output only (its docstring).
    differentiable = torch_outputs[:1] if case.class_name == "MultiheadAttention" else torch_outputs
    differentiable = [t for t in differentiable if t is not None and t.requires_grad]
    if not differentiable:
        return
    grads = [torch.from_numpy(rng.standard_normal(t.shape)).to(t.dtype) for t in differentiable]
    torch.autograd.backward(differentiable, grads)
    grad_inputs = flatten(ours.backward(*(g.numpy() for g in grads)))
    leaves = [t for t in flatten(list(args)) if torch.is_tensor(t) and t.requires_grad]
    if case.is_criterion:
        leaves = leaves[:1]  # a loss's backward returns d loss / d input, not d / d target
    assert len(grad_inputs) >= len(leaves), f"{what}: {len(grad_inputs)} input gradients for {len(leaves)} inputs"
    summed = {}
    for leaf, grad in zip(leaves, grad_inputs):  # self-attention passes one tensor as q, k and v
        summed[id(leaf)] = summed.get(id(leaf), 0) + np.asarray(grad)
    for index, leaf in enumerate(dict.fromkeys(leaves)):
        reference = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        assert_matches(summed[id(leaf)], reference, case.dtype, f"{what} input gradient {index}")


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda case: case.id)
def test_module_matches_torch(case):
    torch.manual_seed(0)
    theirs, ours = build_pair(case)
    rng = np.random.default_rng(0)
    # Two passes: parameter gradients must add up across backward calls, as torch's .grad does.
    for backward_pass in (1, 2):
        what = f"{case.id} pass {backward_pass}"
        forward_backward(case, theirs, ours, rng, what)
        our_grads = dict(ours.named_gradients())
        for name, parameter in theirs.named_parameters():
            assert name in our_grads, f"{what}: dlcourse has no parameter {name}"
            reference = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            assert_matches(our_grads[name], reference, case.dtype, f"{what} d{name}")
        our_state = ours.state_dict()
        for name, buffer in theirs.named_buffers():
            if name in our_state or not name.endswith("num_batches_tracked"):
                assert name in our_state, f"{what}: dlcourse has no buffer {name}"
                assert_matches(our_state[name], buffer, case.dtype, f"{what} buffer {name}")


# ---------------------------------------------------------------------- optimizers
def _optimizer_cases():
    for info in optim_db:
        name = info.optim_cls.__name__
        if not hasattr(optim, name):
            continue
        for dtype_name in DTYPES:
            for sample in info.optim_inputs_func("cpu", DTYPES[dtype_name]):
                kwargs = {k: float(v) if torch.is_tensor(v) else v for k, v in sample.kwargs.items()}
                yield pytest.param(name, kwargs, dtype_name, id=f"{name}-{sample.desc}-{dtype_name}")


OPTIMIZER_CASES = list(_optimizer_cases())


@pytest.mark.parametrize("name, kwargs, dtype_name", OPTIMIZER_CASES)
def test_optimizer_matches_torch(name, kwargs, dtype_name):
    torch.manual_seed(0)
    theirs = torch.nn.Linear(4, 3).to(DTYPES[dtype_name])
    ours = nn.Linear(4, 3)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    torch_optimizer = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    our_optimizer = getattr(optim, name)(ours, **kwargs)
    rng = np.random.default_rng(0)
    for step in range(3):
        for parameter_name, parameter in theirs.named_parameters():
            grad = rng.standard_normal(parameter.shape)
            parameter.grad = torch.from_numpy(grad).to(parameter.dtype)
            ours.grads[parameter_name][...] = grad
        torch_optimizer.step()
        our_optimizer.step()
        for parameter_name, parameter in theirs.named_parameters():
            assert_matches(ours.params[parameter_name], parameter, dtype_name,
                           f"{name} {kwargs} step {step + 1} {parameter_name}")


def test_outside_contract_list_stays_short():
    """The exclusions stay few: each names a limit a class docstring states."""
    assert len(OUTSIDE_CONTRACT) <= 2
    assert len(EXCLUDED) <= 0.1 * (len(MODULE_CASES) + len(EXCLUDED)), EXCLUDED
