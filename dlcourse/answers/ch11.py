"""The answer key of ch11: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch11`.
"""
import numpy as np
from dlcourse import nn

from dlcourse.answers import reference
from dlcourse.checks.ch11 import _CELL_NAMES, _load, _lstm_cell


@reference('ch11.lstm_cell_forward')
def lstm_cell_forward_reference(x, h, c, w_ih, w_hh, b_ih, b_hh):
    h_new, c_new = _lstm_cell(w_ih, w_hh, b_ih, b_hh)(x, (h, c))
    return h_new, c_new


@reference('ch11.lstm_cell_backward')
def lstm_cell_backward_reference(grad_h, grad_c, x, h, c, w_ih, w_hh, b_ih, b_hh):
    cell = _lstm_cell(w_ih, w_hh, b_ih, b_hh)
    cell(x, (h, c))
    grad_x, (grad_h_prev, grad_c_prev) = cell.backward(grad_h, grad_c)
    # b_ih and b_hh are added to the same pre-activation, so their gradients are one array.
    return (grad_x, grad_h_prev, grad_c_prev, cell.grads["weight_ih"].copy(),
            cell.grads["weight_hh"].copy(), cell.grads["bias_ih"].copy())


@reference('ch11.lstm_forward')
def lstm_forward_reference(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    hidden, inputs = w_hh.shape[1], w_ih.shape[1]
    layer = _load(nn.LSTM(inputs, hidden, dtype=np.float64),
                  [name + "_l0" for name in _CELL_NAMES], (w_ih, w_hh, b_ih, b_hh))
    output, (h_n, c_n) = layer(x, (h0[None], c0[None]))
    return output, h_n[0], c_n[0]


@reference('ch11.gru_cell_forward')
def gru_cell_forward_reference(x, h, w_ih, w_hh, b_ih, b_hh):
    hidden, inputs = w_hh.shape[1], w_ih.shape[1]
    cell = _load(nn.GRUCell(inputs, hidden, dtype=np.float64), _CELL_NAMES, (w_ih, w_hh, b_ih, b_hh))
    return cell(x, h)
