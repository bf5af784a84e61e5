"""Identity, Sequential and ModuleList against torch.nn (chapter 2)."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

from dlcourse import nn
from parity import DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch02


def test_identity_returns_its_input_and_passes_the_gradient_through_like_torch(rng):
    x = rng.standard_normal((3, 4))
    # torch's Identity takes and ignores constructor arguments; so does ours.
    ours, theirs = nn.Identity(54, unused="x"), torch.nn.Identity(54, unused="x")
    xt = to_torch(x, "cpu", requires_grad=True)
    yt = theirs(xt)
    assert_close(ours(x), yt, np.float64, "Identity forward")
    grad_output = rng.standard_normal((3, 4))
    yt.backward(to_torch(grad_output, "cpu"))
    assert_close(ours.backward(grad_output), xt.grad, np.float64, "Identity dinput")
    assert repr(ours) == repr(theirs)


def mlp(library, dtype=None):
    layers = [library.Linear(5, 7), library.Tanh(), library.Identity(), library.Linear(7, 3)]
    if dtype is None:
        return library.Sequential(*layers)
    return library.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_forward_backward_and_accumulated_gradients_match_torch(dtype, rng):
    theirs = mlp(torch.nn, TORCH_DTYPE[np.dtype(dtype)])
    ours = mlp(nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    for backward_pass in range(2):  # gradients add up over two backward passes, as .grad does
        x = rng.standard_normal((4, 5)).astype(dtype)
        xt = to_torch(x, "cpu", requires_grad=True)
        yt = theirs(xt)
        assert_close(ours(x), yt, dtype, "Sequential forward")
        grad_output = rng.standard_normal((4, 3)).astype(dtype)
        yt.backward(to_torch(grad_output, "cpu"))
        assert_close(ours.backward(grad_output), xt.grad, dtype, "Sequential dinput")
        assert_param_grads_close(ours, theirs, dtype, "Sequential")


def test_sequential_from_an_ordered_dict_keeps_the_names_and_indexes_like_torch():
    layers = lambda library: OrderedDict([("hidden", library.Linear(2, 3)), ("act", library.ReLU())])
    ours, theirs = nn.Sequential(layers(nn)), torch.nn.Sequential(layers(torch.nn))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    assert len(ours) == len(theirs) == 2
    assert type(ours[1]).__name__ == type(theirs[1]).__name__ == "ReLU"
    assert [type(m).__name__ for m in ours[:1]] == [type(m).__name__ for m in theirs[:1]]


def test_module_list_registers_its_modules_like_torch(rng):
    ours = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)]).append(nn.LayerNorm(3))
    theirs = torch.nn.ModuleList([torch.nn.Linear(3, 3, dtype=torch.float64) for _ in range(2)]).append(
        torch.nn.LayerNorm(3, dtype=torch.float64))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    load_from_torch(ours, theirs)
    x = rng.standard_normal((2, 3))
    y, yt = x, to_torch(x, "cpu")
    for layer, torch_layer in zip(ours, theirs):
        y, yt = layer(y), torch_layer(yt)
    assert_close(y, yt, np.float64, "ModuleList layers in turn")
    assert len(ours) == 3 and ours[-1] is list(ours)[2]
