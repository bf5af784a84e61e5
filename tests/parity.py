"""Shared helpers for comparing dlcourse with PyTorch.

Tolerances are those the course promises: relative error ≤ 1e-7 in float64 and ≤ 1e-4
in float32, where relative error = max|ours − torch| / max(max|torch|, tiny).
"""
import numpy as np
import pytest
import torch

TOLERANCE = {np.dtype(np.float64): 1e-7, np.dtype(np.float32): 1e-4}
TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}
DTYPES = [np.float64, np.float32]
CUDA_SKIP_REASON = "no CUDA device"  # conftest counts these skips in one summary line

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)),
]


def rel_error(ours, theirs) -> float:
    """max|ours − theirs| / max|theirs| (both as float64)."""
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().cpu().double().numpy()
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"shape {ours.shape} != torch's {theirs.shape}"
    scale = max(float(np.max(np.abs(theirs), initial=0.0)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(ours - theirs), initial=0.0)) / scale


def assert_close(ours, theirs, dtype, what=""):
    """Fail with the measured error when `ours` differs from torch's `theirs` beyond the tolerance."""
    tolerance = TOLERANCE[np.dtype(dtype)]
    error = rel_error(ours, theirs)
    assert error <= tolerance, f"{what}: relative error {error:.3e} > {tolerance:.0e}"
    record_error(what, dtype, error)


def to_torch(array, device, requires_grad=False):
    tensor = torch.tensor(np.asarray(array), device=device)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


def load_from_torch(module, torch_module):
    """Copy torch's parameters and buffers into the dlcourse module (the contract's path)."""
    module.load_state_dict({k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()})


def assert_param_grads_close(module, torch_module, dtype, what=""):
    """Every parameter gradient of `module` against torch's `.grad`, key by key."""
    ours = dict(module.named_gradients())
    theirs = dict(torch_module.named_parameters())
    assert set(ours) == set(theirs), f"parameter names differ: {sorted(ours)} vs {sorted(theirs)}"
    for name, grad in ours.items():
        assert theirs[name].grad is not None, f"torch computed no gradient for {name}"
        assert_close(grad, theirs[name].grad, dtype, f"{what} d{name}")


# The GPU parity report (`make gpu-check`) collects the worst error per check here.
MEASURED_ERRORS: dict = {}


def record_error(what, dtype, error):
    # `what` starts with the layer's class name ("LSTM forward", "Linear dweight").
    key = ((what.split() or ["unnamed"])[0], np.dtype(dtype).name)
    MEASURED_ERRORS[key] = max(MEASURED_ERRORS.get(key, 0.0), error)
