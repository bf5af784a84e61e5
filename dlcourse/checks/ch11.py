"""Chapter 11 (LSTM and GRU): the LSTM cell forward and backward (torch's gate order
i, f, g, o; the backward derived by the student from the forward pass), the LSTM over a
sequence and the GRU cell forward (torch's r, z, n).

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.LSTMCell`,
`dlcourse.nn.LSTM` and `dlcourse.nn.GRUCell`, which the test suite holds to PyTorch.
Everything is float64 (rtol 1e-6).
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import implementations
from dlcourse.checks import part


_CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _load(module, names, values):
    for name, value in zip(names, values):
        getattr(module, name)[...] = value
    return module


def _lstm_cell(w_ih, w_hh, b_ih, b_hh):
    hidden, inputs = w_hh.shape[1], w_ih.shape[1]
    return _load(nn.LSTMCell(inputs, hidden, dtype=np.float64), _CELL_NAMES, (w_ih, w_hh, b_ih, b_hh))


def _weights(rng, gates, inputs, hidden, scale):
    """W_ih (G·H, in), W_hh (G·H, H), b_ih, b_hh (G·H,), entries of size ~ scale / √H."""
    s = scale / np.sqrt(hidden)
    return (rng.standard_normal((gates * hidden, inputs)) * s, rng.standard_normal((gates * hidden, hidden)) * s,
            rng.standard_normal(gates * hidden) * s, rng.standard_normal(gates * hidden) * s)


# (N, in, H, scale): ordinary, saturating gates, one input feature, one hidden unit, one example.
_CELLS = [(4, 3, 5, 1.0), (2, 6, 3, 3.0), (5, 1, 4, 1.0), (3, 2, 1, 1.0), (1, 4, 6, 0.5)]


def _cell_inputs(rng, gates):
    cases = []
    for n, inputs, hidden, scale in _CELLS:
        x, h = rng.standard_normal((n, inputs)), rng.standard_normal((n, hidden)) * 0.5
        state = (h, rng.standard_normal((n, hidden))) if gates == 4 else (h,)
        cases.append((x, *state, *_weights(rng, gates, inputs, hidden, scale)))
    return cases


# ---------------------------------------------------------------------- LSTM cell
@part("ch11.lstm_cell_forward", "lstm_cell_forward", asks="the LSTM cell's forward pass",
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def lstm_cell_forward_cases(rng):
    """One LSTM step, gates i, f, g, o: (h', c') from x (N, in), h (N, H), c (N, H)."""
    return _cell_inputs(rng, 4)


@part("ch11.lstm_cell_backward", "lstm_cell_backward", asks="the LSTM cell's backward pass",
      forbids=implementations.RECURRENT_IMPLEMENTATIONS, derived=True)
def lstm_cell_backward_cases(rng):
    """One LSTM step backward: (dx, dh, dc, dW_ih, dW_hh, db) from the gradients of h' and c'."""
    cases = []
    for x, h, c, *weights in _cell_inputs(rng, 4):
        cases.append((rng.standard_normal(h.shape), rng.standard_normal(c.shape), x, h, c, *weights))
    return cases


# ---------------------------------------------------------------------- LSTM over a sequence
@part("ch11.lstm_forward", "lstm_forward", asks='the LSTM over a sequence',
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def lstm_forward_cases(rng):
    """The LSTM over x (T, N, in) from (h0, c0), each (N, H): (output (T, N, H), h_n, c_n)."""
    cases = []
    for t, n, inputs, hidden, scale in [(5, 3, 4, 6, 1.0), (1, 2, 3, 4, 1.0), (8, 1, 2, 3, 2.0),
                                        (6, 4, 1, 5, 0.5), (3, 2, 5, 1, 1.0)]:
        cases.append((rng.standard_normal((t, n, inputs)), rng.standard_normal((n, hidden)) * 0.5,
                      rng.standard_normal((n, hidden)), *_weights(rng, 4, inputs, hidden, scale)))
    return cases


# ---------------------------------------------------------------------- GRU cell
@part("ch11.gru_cell_forward", "gru_cell_forward", asks="the GRU cell's forward pass",
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def gru_cell_forward_cases(rng):
    """One GRU step, gates r, z, n (torch's form, r inside n's hidden term): h' from x (N, in), h (N, H)."""
    return _cell_inputs(rng, 3)


