"""Chapter 10 (recurrent networks): one tanh RNN step, the forward pass over a sequence,
backpropagation through time (derived by the student: the notebook gives the forward pass only)
and the decay of ‖∂h_T/∂h_t‖ (vanishing gradients).

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.RNNCell` and
`dlcourse.nn.RNN`, which the test suite holds to PyTorch. Everything is float64 (rtol 1e-6).
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import implementations
from dlcourse.checks import part


def _cell(w_ih, w_hh, b_ih, b_hh):
    hidden, inputs = w_ih.shape
    cell = nn.RNNCell(inputs, hidden, dtype=np.float64)
    for name, value in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)):
        getattr(cell, name)[...] = value
    return cell


def _rnn(w_ih, w_hh, b_ih, b_hh):
    hidden, inputs = w_ih.shape
    layer = nn.RNN(inputs, hidden, dtype=np.float64)
    for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
        getattr(layer, name)[...] = value
    return layer


def _weights(rng, inputs, hidden, scale):
    """W_ih (H, in), W_hh (H, H), b_ih, b_hh (H,), with entries of size ~ scale / √H."""
    s = scale / np.sqrt(hidden)
    return (rng.standard_normal((hidden, inputs)) * s, rng.standard_normal((hidden, hidden)) * s,
            rng.standard_normal(hidden) * s, rng.standard_normal(hidden) * s)


# ---------------------------------------------------------------------- one step
@part("ch10.rnn_step", "rnn_step", asks='one RNN step',
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def rnn_step_cases(rng):
    """h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) for a batch: x (N, in), h (N, H)."""
    cases = []
    # (N, in, H, scale): small and large pre-activations (tanh saturates), one input feature,
    # one hidden unit, one example.
    for n, inputs, hidden, scale in [(4, 3, 5, 1.0), (2, 6, 3, 3.0), (5, 1, 4, 1.0), (3, 2, 1, 1.0), (1, 4, 6, 0.5)]:
        cases.append((rng.standard_normal((n, inputs)), rng.standard_normal((n, hidden)),
                      *_weights(rng, inputs, hidden, scale)))
    return cases


# ---------------------------------------------------------------------- a sequence
_SEQUENCES = [  # (T, N, in, H, scale)
    (5, 3, 4, 6, 1.0),
    (1, 2, 3, 4, 1.0),
    (8, 1, 2, 3, 2.0),
    (6, 4, 1, 5, 0.5),
    (3, 2, 5, 1, 1.0),
]


def _sequence_inputs(rng):
    cases = []
    for t, n, inputs, hidden, scale in _SEQUENCES:
        cases.append((rng.standard_normal((t, n, inputs)), rng.standard_normal((n, hidden)) * 0.5,
                      *_weights(rng, inputs, hidden, scale)))
    return cases


@part("ch10.rnn_forward", "rnn_forward", asks='the RNN over a sequence',
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def rnn_forward_cases(rng):
    """The tanh RNN over a sequence x (T, N, in) from h0 (N, H): (output (T, N, H), h_n (N, H))."""
    return _sequence_inputs(rng)


@part("ch10.rnn_backward", "rnn_backward", asks='backpropagation through time',
      forbids=implementations.RECURRENT_IMPLEMENTATIONS, derived=True)
def rnn_backward_cases(rng):
    """Backpropagation through time: (dx, dh0, dW_ih, dW_hh, db_ih, db_hh) for d output (T, N, H)."""
    cases = []
    for x, h0, *weights in _sequence_inputs(rng):
        grad_output = rng.standard_normal((x.shape[0], x.shape[1], h0.shape[1]))
        cases.append((grad_output, x, h0, *weights))
    return cases


# ---------------------------------------------------------------------- vanishing gradients
@part("ch10.hidden_gradient_norms", "hidden_gradient_norms", asks='the gradient norms through time',
      forbids=implementations.RECURRENT_IMPLEMENTATIONS)
def hidden_gradient_norms_cases(rng):
    """‖∂h_T/∂h_t‖_F for t = 0 … T−1 of one sequence x (T, in) from h0 (H,)."""
    cases = []
    # (T, in, H, scale): W_hh small (the norms vanish), near 1 and large (tanh saturates, the
    # norms vanish too), a single step.
    for t, inputs, hidden, scale in [(10, 3, 4, 0.5), (12, 2, 6, 1.0), (8, 3, 5, 3.0), (1, 2, 3, 1.0), (6, 1, 1, 1.5)]:
        cases.append((rng.standard_normal((t, inputs)), rng.standard_normal(hidden) * 0.5,
                      *_weights(rng, inputs, hidden, scale)))
    return cases


