"""The chapter 10 exercise checks (dlcourse/checks/ch10.py): every reference answer agrees with
PyTorch (torch.nn.RNNCell / torch.nn.RNN and autograd, computed here independently), and
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

pytestmark = pytest.mark.ch10

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "ch10-recurrent-networks" / "ch10-recurrent-networks.ipynb"
SEEDS = [0, 1, 2]
PARTS = ["rnn_step", "rnn_forward", "rnn_backward", "hidden_gradient_norms"]


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


def torch_cell(w_ih, w_hh, b_ih, b_hh):
    cell = torch.nn.RNNCell(w_ih.shape[1], w_ih.shape[0]).double()
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), (w_ih, w_hh, b_ih, b_hh)):
            getattr(cell, name).copy_(t(value))
    return cell


def torch_rnn(w_ih, w_hh, b_ih, b_hh):
    rnn = torch.nn.RNN(w_ih.shape[1], w_ih.shape[0]).double()
    with torch.no_grad():
        for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), (w_ih, w_hh, b_ih, b_hh)):
            getattr(rnn, name).copy_(t(value))
    return rnn


# ---------------------------------------------------------------------- references vs torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_rnn_step_reference_matches_torch_rnncell(seed, device):
    part = get_part("ch10.rnn_step")
    for x, h, *weights in cases("ch10.rnn_step", seed):
        theirs = torch_cell(*weights).to(device)(t(x, device=device), t(h, device=device))
        close(part.reference(x, h, *weights), theirs, f"RNN step, x {x.shape}, h {h.shape}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_rnn_forward_reference_matches_torch_rnn(seed, device):
    part = get_part("ch10.rnn_forward")
    for x, h0, *weights in cases("ch10.rnn_forward", seed):
        output, h_n = torch_rnn(*weights).to(device)(t(x, device=device), t(h0[None], device=device))
        ours = part.reference(x, h0, *weights)
        close(ours[0], output, f"RNN output, x {x.shape}")
        close(ours[1], h_n[0], f"RNN h_n, x {x.shape}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_rnn_backward_reference_matches_torch_autograd(seed, device):
    part = get_part("ch10.rnn_backward")
    for grad_output, x, h0, *weights in cases("ch10.rnn_backward", seed):
        rnn = torch_rnn(*weights).to(device)
        xt, h0t = t(x, True, device=device), t(h0[None], True, device=device)
        output, _ = rnn(xt, h0t)
        output.backward(t(grad_output, device=device))
        theirs = [xt.grad, h0t.grad[0], rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad, rnn.bias_ih_l0.grad,
                  rnn.bias_hh_l0.grad]
        ours = part.reference(grad_output, x, h0, *weights)
        assert len(ours) == 6
        for name, a, b in zip(["dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh"], ours, theirs):
            close(a, b, f"BPTT {name}, x {x.shape}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_hidden_gradient_norms_reference_matches_torch_jacobians(seed, device):
    part = get_part("ch10.hidden_gradient_norms")
    for x, h0, *weights in cases("ch10.hidden_gradient_norms", seed):
        cell = torch_cell(*weights).to(device)
        steps = len(x)
        states = [t(h0, device=device)]
        with torch.no_grad():
            for x_t in x:
                states.append(cell(t(x_t, device=device), states[-1]))

        def last_state_from(start):
            def run(h):
                for x_t in x[start:]:
                    h = cell(t(x_t, device=device), h)
                return h
            return run

        expected = [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(last_state_from(s), states[s])).item()
                    for s in range(steps)]
        close(part.reference(x, h0, *weights), np.array(expected), f"norms of dh_T/dh_t, x {x.shape}")


def test_hidden_gradient_norms_cases_show_the_decay():
    part = get_part("ch10.hidden_gradient_norms")
    x, h0, *weights = cases("ch10.hidden_gradient_norms")[0]  # small W_hh, T = 10
    norms = part.reference(x, h0, *weights)
    assert norms[0] < 1e-3 * norms[-1], norms


# ---------------------------------------------------------------------- check() on answers
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", PARTS)
def test_check_accepts_the_model_solution(solutions, name, seed):
    check(f"ch10.{name}", solutions[name], seed=seed)


def wrong_answers(s):
    """One typical mistake per part."""
    def forward_h_n_first(x, h0, *weights):
        output, _ = s["rnn_forward"](x, h0, *weights)
        return output, output[0]

    def truncated_bptt(grad_output, x, h0, w_ih, w_hh, b_ih, b_hh):
        # Each step's output gradient only, as if the states did not feed each other.
        states = s["rnn_forward"](x, h0, w_ih, w_hh, b_ih, b_hh)[0]
        previous = np.concatenate([h0[None], states[:-1]])
        da = grad_output * (1 - states ** 2)
        db = da.sum(axis=(0, 1))
        return (da @ w_ih, da[0] @ w_hh, np.einsum("tnh,tni->hi", da, x),
                np.einsum("tnh,tnk->hk", da, previous), db, db)

    def no_tanh_derivative(x, h0, w_ih, w_hh, b_ih, b_hh):
        return np.array([np.linalg.norm(np.linalg.matrix_power(w_hh, len(x) - k)) for k in range(len(x))])

    return {
        "rnn_step": lambda x, h, w_ih, w_hh, b_ih, b_hh: np.tanh(x @ w_ih.T + b_ih + h @ w_hh + b_hh),
        "rnn_forward": forward_h_n_first,
        "rnn_backward": truncated_bptt,
        "hidden_gradient_norms": no_tanh_derivative,
    }


@pytest.mark.parametrize("name", PARTS)
def test_check_rejects_a_wrong_answer_naming_the_function(solutions, name):
    with pytest.raises(CheckFailure, match=rf"^{name}, case \d+ of \d+"):
        check(f"ch10.{name}", wrong_answers(solutions)[name])


def test_check_explains_a_missing_return_value(solutions):
    with pytest.raises(CheckFailure, match=r"rnn_forward.*returned 1 value\(s\), expected 2"):
        check("ch10.rnn_forward", lambda *args: solutions["rnn_forward"](*args)[0])
