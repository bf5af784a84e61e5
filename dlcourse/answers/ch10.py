"""The answer key of ch10: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch10`.
"""
import numpy as np

from dlcourse.answers import reference
from dlcourse.checks.ch10 import _cell, _rnn


@reference('ch10.rnn_step')
def rnn_step_reference(x, h, w_ih, w_hh, b_ih, b_hh):
    return _cell(w_ih, w_hh, b_ih, b_hh)(x, h)


@reference('ch10.rnn_forward')
def rnn_forward_reference(x, h0, w_ih, w_hh, b_ih, b_hh):
    output, h_n = _rnn(w_ih, w_hh, b_ih, b_hh)(x, h0[None])
    return output, h_n[0]


@reference('ch10.rnn_backward')
def rnn_backward_reference(grad_output, x, h0, w_ih, w_hh, b_ih, b_hh):
    layer = _rnn(w_ih, w_hh, b_ih, b_hh)
    layer(x, h0[None])
    grad_x, grad_h0 = layer.backward(grad_output)
    grads = layer.grads
    return (grad_x, grad_h0[0], grads["weight_ih_l0"].copy(), grads["weight_hh_l0"].copy(),
            grads["bias_ih_l0"].copy(), grads["bias_hh_l0"].copy())


@reference('ch10.hidden_gradient_norms')
def hidden_gradient_norms_reference(x, h0, w_ih, w_hh, b_ih, b_hh):
    """Backpropagate the H unit vectors e_k (the rows of ∂h_T/∂h_T = I) through the cell, one
    step at a time: after stepping back over h_{t+1}, the H gradients are the rows of ∂h_T/∂h_t."""
    hidden = h0.shape[0]
    cell = _cell(w_ih, w_hh, b_ih, b_hh)
    states = [h0]
    for x_t in x:
        states.append(cell(x_t, states[-1]))
    rows = np.eye(hidden)  # row k: ∂h_T[k]/∂h_s, starting at s = T
    norms = np.empty(len(x))
    for t in reversed(range(len(x))):
        # A batch of H copies of step t + 1 (input x_t, state h_t), one per row.
        cell(np.repeat(x[t][None], hidden, axis=0), np.repeat(states[t][None], hidden, axis=0))
        cell.zero_grad()
        _, rows = cell.backward(rows)
        norms[t] = np.linalg.norm(rows)
    return norms
