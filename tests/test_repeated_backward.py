"""A second backward after one forward gives torch's gradient again, and leaves the first alone.

The hot layers reuse buffers (GELU hands out f'(x)'s buffer as the gradient; the normalizations
write into work arrays), so this checks that no cached array is consumed or overwritten.
"""
import numpy as np
import pytest
import torch

from dlcourse import nn
from parity import DTYPES, TORCH_DTYPE, assert_close, load_from_torch

CASES = [
    ("GELU", (), (64, 300)),
    ("GELU", ("tanh",), (64, 300)),
    ("Softmax", (1,), (64, 300)),
    ("LogSoftmax", (1,), (64, 300)),
    ("Sigmoid", (), (64, 300)),
    ("Tanh", (), (64, 300)),
    ("LayerNorm", (300,), (64, 300)),
    ("BatchNorm1d", (300,), (64, 300)),
    ("BatchNorm1d", (8,), (16, 8, 40)),
    ("BatchNorm2d", (4,), (8, 4, 10, 12)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, args, shape", CASES)
def test_second_backward_matches_torch_and_keeps_the_first(name, args, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    first_grad, second_grad = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    torch_module = getattr(torch.nn, name)(*args).to(TORCH_DTYPE[np.dtype(dtype)])
    module = getattr(nn, name)(*args)
    if list(torch_module.state_dict()):
        load_from_torch(module, torch_module)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch_module(x_torch)
    module(x)
    first = module.backward(first_grad)
    kept = first.copy()
    second = module.backward(second_grad)
    assert second is not first
    np.testing.assert_array_equal(first, kept)
    for grad, what in ((first_grad, "first"), (second_grad, "second")):
        (expected,) = torch.autograd.grad(y_torch, x_torch, torch.tensor(grad), retain_graph=True)
        ours = kept if what == "first" else second
        assert_close(ours, expected, dtype, f"{name}{args} {what} backward")


def test_lstm_second_backward_matches_the_first():
    rng = np.random.default_rng(0)
    lstm = nn.LSTM(6, 8)
    x = rng.standard_normal((5, 3, 6)).astype(np.float32)
    grad = rng.standard_normal((5, 3, 8)).astype(np.float32)
    lstm(x)
    first = lstm.backward(grad)
    second = lstm.backward(grad)
    np.testing.assert_array_equal(first, second)
