"""The chapter 11 exercise checks (dlcourse/checks/ch11.py): every reference answer agrees with
PyTorch (torch.nn.LSTMCell / LSTM / GRUCell and autograd, computed here independently), and
`check()` accepts the model solution of the notebook and rejects typical wrong answers by name."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcourse.checks import CheckFailure, cases, check, get_part
from parity import DEVICES
import exercise_support
from exercise_support import close, t
from functools import partial

pytestmark = pytest.mark.ch11

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "ch11-lstm-and-gru" / "ch11-lstm-and-gru.ipynb"
SEEDS = [0, 1, 2]
PARTS = ["lstm_cell_forward", "lstm_cell_backward", "lstm_forward", "gru_cell_forward"]
CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


def loaded(module, names, weights):
    module = module.double()
    with torch.no_grad():
        for name, value in zip(names, weights):
            getattr(module, name).copy_(t(value))
    return module


def torch_lstm_cell(w_ih, w_hh, b_ih, b_hh):
    return loaded(torch.nn.LSTMCell(w_ih.shape[1], w_hh.shape[1]), CELL_NAMES, (w_ih, w_hh, b_ih, b_hh))


# ---------------------------------------------------------------------- references vs torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_lstm_cell_forward_reference_matches_torch(seed, device):
    part = get_part("ch11.lstm_cell_forward")
    for x, h, c, *weights in cases("ch11.lstm_cell_forward", seed):
        cell = torch_lstm_cell(*weights).to(device)
        h_new, c_new = cell(t(x, device=device), (t(h, device=device), t(c, device=device)))
        ours = part.reference(x, h, c, *weights)
        close(ours[0], h_new, f"LSTM cell h', x {x.shape}, h {h.shape}")
        close(ours[1], c_new, f"LSTM cell c', x {x.shape}, h {h.shape}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_lstm_cell_backward_reference_matches_torch_autograd(seed, device):
    part = get_part("ch11.lstm_cell_backward")
    for grad_h, grad_c, x, h, c, *weights in cases("ch11.lstm_cell_backward", seed):
        cell = torch_lstm_cell(*weights).to(device)
        xt, ht, ct = t(x, True, device=device), t(h, True, device=device), t(c, True, device=device)
        h_new, c_new = cell(xt, (ht, ct))
        ((h_new * t(grad_h, device=device)).sum() + (c_new * t(grad_c, device=device)).sum()).backward()
        ours = part.reference(grad_h, grad_c, x, h, c, *weights)
        theirs = [xt.grad, ht.grad, ct.grad, cell.weight_ih.grad, cell.weight_hh.grad, cell.bias_ih.grad]
        assert len(ours) == 6
        for name, a, b in zip(["dx", "dh", "dc", "dW_ih", "dW_hh", "db"], ours, theirs):
            close(a, b, f"LSTM cell {name}, x {x.shape}, h {h.shape}")
        close(ours[5], cell.bias_hh.grad, "db is also the gradient of b_hh")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_lstm_forward_reference_matches_torch_lstm(seed, device):
    part = get_part("ch11.lstm_forward")
    for x, h0, c0, *weights in cases("ch11.lstm_forward", seed):
        lstm = loaded(torch.nn.LSTM(x.shape[2], h0.shape[1]), [n + "_l0" for n in CELL_NAMES], weights).to(device)
        output, (h_n, c_n) = lstm(t(x, device=device), (t(h0[None], device=device), t(c0[None], device=device)))
        ours = part.reference(x, h0, c0, *weights)
        assert len(ours) == 3
        close(ours[0], output, f"LSTM output, x {x.shape}")
        close(ours[1], h_n[0], f"LSTM h_n, x {x.shape}")
        close(ours[2], c_n[0], f"LSTM c_n, x {x.shape}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gru_cell_forward_reference_matches_torch(seed, device):
    part = get_part("ch11.gru_cell_forward")
    for x, h, *weights in cases("ch11.gru_cell_forward", seed):
        cell = loaded(torch.nn.GRUCell(x.shape[1], h.shape[1]), CELL_NAMES, weights).to(device)
        theirs = cell(t(x, device=device), t(h, device=device))
        close(part.reference(x, h, *weights), theirs, f"GRU cell h', x {x.shape}, h {h.shape}")


# ---------------------------------------------------------------------- check() on answers
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", PARTS)
def test_check_accepts_the_model_solution(solutions, name, seed):
    check(f"ch11.{name}", solutions[name], seed=seed)


def swap_g_and_o(w):
    """Rows in the order i, f, o, g: what a solution with the gate order i, f, o, g reads as g and o."""
    i, f, g, o = np.split(w, 4)
    return np.concatenate([i, f, o, g])


def negate_z(w):
    r, z, n = np.split(w, 3)
    return np.concatenate([r, -z, n])


def wrong_answers(s):
    """One typical mistake per part, built on the model solution."""
    return {
        "lstm_cell_forward": lambda x, h, c, *w: s["lstm_cell_forward"](x, h, c, *[swap_g_and_o(a) for a in w]),
        "lstm_cell_backward": lambda gh, gc, *rest: s["lstm_cell_backward"](gh, np.zeros_like(gc), *rest),
        "lstm_forward": lambda x, h0, c0, *w: s["lstm_forward"](x, np.zeros_like(h0), c0, *w),
        # σ(−a) = 1 − σ(a): negating z's pre-activation swaps z and 1 − z.
        "gru_cell_forward": lambda x, h, *w: s["gru_cell_forward"](x, h, *[negate_z(a) for a in w]),
    }


@pytest.mark.parametrize("name", PARTS)
def test_check_rejects_a_wrong_answer_naming_the_function(solutions, name):
    with pytest.raises(CheckFailure, match=rf"^{name}, case \d+ of \d+"):
        check(f"ch11.{name}", wrong_answers(solutions)[name])


def test_check_explains_a_wrong_count_of_return_values(solutions):
    with pytest.raises(CheckFailure, match=r"lstm_cell_forward.*returned 1 value\(s\), expected 2"):
        check("ch11.lstm_cell_forward", lambda *args: solutions["lstm_cell_forward"](*args)[0])
    with pytest.raises(CheckFailure, match=r"lstm_cell_backward.*returned 7 value\(s\), expected 6"):
        check("ch11.lstm_cell_backward", lambda *args: (*solutions["lstm_cell_backward"](*args), args[-1]))
