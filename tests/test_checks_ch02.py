"""Chapter 2's graded parts: each reference answer agrees with PyTorch, computed here
independently, and `check` accepts the model solution and rejects typical mistakes."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch02

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch02-neurons-and-layers" / "ch02-neurons-and-layers.ipynb"
SEEDS = [0, 1, 2]


solution = partial(exercise_support.solution, NOTEBOOK)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def test_chapter_has_the_six_parts_one_of_them_derived():
    assert {p.function for p in parts_of("ch02")} == {
        "neuron_forward", "dense_forward", "dense_backward", "mlp_forward", "count_parameters", "init_bounds"}
    assert [p.function for p in parts_of("ch02") if p.derived] == ["dense_backward"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_neuron_forward_reference_matches_torch(seed, device):
    for x, w, b in cases("ch02.neuron_forward", seed):
        z, a = reference("ch02.neuron_forward", (x, w, b))
        zt = torch.dot(to_torch(w, device), to_torch(x, device)) + b
        assert_close(z, zt, np.float64, "neuron z")
        assert_close(a, torch.sigmoid(zt), np.float64, "neuron sigmoid(z)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_dense_forward_reference_matches_torch_linear(seed, device):
    for X, W, b in cases("ch02.dense_forward", seed):
        expected = torch.nn.functional.linear(to_torch(X, device), to_torch(W, device), to_torch(b, device))
        assert_close(reference("ch02.dense_forward", (X, W, b)), expected, np.float64, "dense Z")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_dense_backward_reference_matches_torch_autograd(seed, device):
    for G, X, W in cases("ch02.dense_backward", seed):
        X_t, W_t = to_torch(X, device).requires_grad_(), to_torch(W, device).requires_grad_()
        b_t = torch.zeros(W.shape[0], dtype=torch.float64, device=device, requires_grad=True)
        torch.nn.functional.linear(X_t, W_t, b_t).backward(to_torch(G, device))
        dX, dW, db = reference("ch02.dense_backward", (G, X, W))
        assert_close(dX, X_t.grad, np.float64, "dense dX")
        assert_close(dW, W_t.grad, np.float64, "dense dW")
        assert_close(db, b_t.grad, np.float64, "dense db")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_forward_reference_matches_torch_sequential(seed, device):
    for X, W1, b1, W2, b2 in cases("ch02.mlp_forward", seed):
        model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]), torch.nn.Sigmoid(),
                                    torch.nn.Linear(W2.shape[1], W2.shape[0]), torch.nn.Sigmoid())
        model = model.double().to(device)
        model.load_state_dict({"0.weight": torch.tensor(W1), "0.bias": torch.tensor(b1),
                               "2.weight": torch.tensor(W2), "2.bias": torch.tensor(b2)})
        with torch.no_grad():
            expected = model(to_torch(X, device))
        assert_close(reference("ch02.mlp_forward", (X, W1, b1, W2, b2)), expected, np.float64, "mlp A")


@pytest.mark.parametrize("seed", SEEDS)
def test_count_parameters_reference_matches_torch(seed):
    for (sizes,) in cases("ch02.count_parameters", seed):
        model = torch.nn.Sequential(*[torch.nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])])
        assert reference("ch02.count_parameters", (sizes,)) == sum(p.numel() for p in model.parameters())


def torch_bound(init_function, fan_in, fan_out, **kwargs):
    """torch.nn.init fills U(−a, a) as a·(2u − 1); with the same generator state,
    uniform_(−1, 1) gives 2u − 1, so the ratio of the two is a (to rounding)."""
    weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
    init_function(weight, generator=torch.Generator().manual_seed(7), **kwargs)
    unit = torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(-1, 1, generator=torch.Generator().manual_seed(7))
    ratio = (weight / unit)[unit.abs() > 1e-3]
    assert float(ratio.max() - ratio.min()) < 1e-12 * float(ratio.max())
    return float(ratio.mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_init_bounds_reference_matches_torch_init(seed):
    for fan_in, fan_out in cases("ch02.init_bounds", seed):
        xavier, he = reference("ch02.init_bounds", (fan_in, fan_out))
        assert math.isclose(xavier, torch_bound(torch.nn.init.xavier_uniform_, fan_in, fan_out), rel_tol=1e-12)
        assert math.isclose(he, torch_bound(torch.nn.init.kaiming_uniform_, fan_in, fan_out, nonlinearity="relu"),
                            rel_tol=1e-12)


@pytest.mark.parametrize("function", ["neuron_forward", "dense_forward", "dense_backward", "mlp_forward",
                                      "count_parameters", "init_bounds"])
def test_check_accepts_the_model_solution(function):
    for seed in SEEDS:
        check(f"ch02.{function}", solution(function), seed=seed)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


WRONG = {
    "neuron_forward": lambda x, w, b: (np.dot(w, x), sigmoid(np.dot(w, x))),              # forgets the bias
    "dense_forward": lambda X, W, b: X @ W.T,                                              # forgets the bias
    "dense_backward": lambda G, X, W: (G @ W, G.T @ X, G.mean(axis=0)),                  # db averaged, not summed
    "mlp_forward": lambda X, W1, b1, W2, b2: sigmoid(X @ W1.T + b1) @ W2.T + b2,           # no output sigmoid
    "count_parameters": lambda sizes: sum(a * b for a, b in zip(sizes[:-1], sizes[1:])),   # no biases
    "init_bounds": lambda fan_in, fan_out: (np.sqrt(6 / (fan_in + fan_out)), np.sqrt(2 / fan_in)),  # std, not bound
}


@pytest.mark.parametrize("function", sorted(WRONG))
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with pytest.raises(CheckFailure, match=function):
        check(f"ch02.{function}", WRONG[function])


def test_check_rejects_a_wrong_shape_with_a_clear_message():
    with pytest.raises(CheckFailure, match=r"dense_forward.*shape"):
        check("ch02.dense_forward", lambda X, W, b: (X @ W.T + b).T)
    with pytest.raises(CheckFailure, match=r"neuron_forward.*shape \(1,\)"):
        check("ch02.neuron_forward", lambda x, w, b: (np.atleast_1d(w @ x + b), np.atleast_1d(sigmoid(w @ x + b))))
