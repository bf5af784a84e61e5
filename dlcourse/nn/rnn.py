r"""Recurrent layers: `RNN`, `LSTM`, `GRU` and their one-step cells `RNNCell`, `LSTMCell`,
`GRUCell`.

Each cell's step is written once, as a forward function and its backward
(`lstm_step` / `lstm_step_backward`, …), and both the cells and the sequence layers call
them. A sequence layer projects the whole input sequence with one matmul per layer
(x W_ihᵀ + b_ih for all time steps), loops over time only for the recurrence, and in
backward (backpropagation through time) stacks the per-step gate gradients so that each
weight gradient is again one matmul per layer.

The LSTM's recurrence is written once for a whole sequence (`lstm_sequence` /
`lstm_sequence_backward`, arranged for speed as their docstrings say); `lstm_step` is its
one-step case, which the cell and the projecting LSTM call.

Every step function takes

    gates_x: (N, G·H)  the input projection x W_ihᵀ + b_ih of this step
    state:   a tuple of (N, H) arrays, (h,) or, for the LSTM, (h, c)
    weight_hh: (G·H, H), bias_hh: (G·H,) or None (RNN and LSTM layers fold b_hh into gates_x)

and returns the new state and a cache. Its backward takes the gradient of the new state
and returns (grad_gates_x, grad_gates_h, grad_state): the gradients of x W_ihᵀ + b_ih and
of h W_hhᵀ + b_hh (the same array except for the GRU) and of the previous state.
"""
import functools
import math
import numbers
import warnings

import numpy as np

from dlcourse._random import default_dtype, get_rng
from dlcourse.nn import init
from dlcourse.nn._elementwise import aligned_empty
from dlcourse.nn.module import Module, check_float_input

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]


def _sigmoid(x):
    # The tanh form never overflows, unlike 1 / (1 + exp(−x)) for large negative x.
    return 0.5 * np.tanh(0.5 * x) + 0.5


# ---------------------------------------------------------------------- one step of each cell
def rnn_tanh_step(gates_x, state, weight_hh, bias_hh):
    """h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)."""
    (h,) = state
    pre = h @ weight_hh.T
    pre += gates_x
    if bias_hh is not None:
        pre += bias_hh
    h_new = np.tanh(pre, out=pre)
    return (h_new,), h_new


def rnn_tanh_step_backward(grad_state, cache, weight_hh):
    h_new = cache
    grad_pre = grad_state[0] * (1 - h_new * h_new)
    return grad_pre, grad_pre, (grad_pre @ weight_hh,)


def rnn_relu_step(gates_x, state, weight_hh, bias_hh):
    """h' = max(0, x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)."""
    (h,) = state
    pre = h @ weight_hh.T
    pre += gates_x
    if bias_hh is not None:
        pre += bias_hh
    h_new = np.maximum(pre, 0, out=pre)
    return (h_new,), h_new


def rnn_relu_step_backward(grad_state, cache, weight_hh):
    h_new = cache
    grad_pre = grad_state[0] * (h_new > 0)
    return grad_pre, grad_pre, (grad_pre @ weight_hh,)


# Inside `lstm_sequence` the gate rows run o, i, f, g (torch's i, f, g, o is blocks 1, 2, 3, 0
# of it): the sigmoid rows o, i, f are then one contiguous block, and so are the rows i, f, g
# that ∂L/∂c multiplies in backward; one call each instead of two.
_LSTM_ROWS = (3, 0, 1, 2)  # torch's block of each internal block


def _lstm_rows(array, hidden):
    """(4H, …) in torch's gate order i, f, g, o → o, i, f, g."""
    return array.reshape((4, hidden) + array.shape[1:])[list(_LSTM_ROWS)].reshape(array.shape)


def _lstm_gate_scale(hidden, dtype):
    """(4H, 1) in the order o, i, f, g: ½ on the rows of o, i and f, 1 on those of g.

    σ(z) = (1 + tanh(z/2)) / 2, so with the pre-activations of o, i and f halved (exact in
    floating point) one tanh pass over all 4H rows serves the four gates.
    """
    scale = np.full((4 * hidden, 1), 0.5, dtype)
    scale[3 * hidden:] = 1
    return scale


def lstm_sequence(inputs, state, weight_in, weight_hh, bias=None):
    r"""All T steps of the LSTM recurrence, gates in torch's order i, f, g, o:

        [i, f, g, o] = [σ, σ, tanh, σ](u_t W_inᵀ + b + h_{t−1} W_hhᵀ)
        c_t = f ⊙ c_{t−1} + i ⊙ g,    h_t = o ⊙ tanh(c_t)

    inputs: (T, N, K) what each step reads besides h_{t−1}, with weight_in: (4H, K) and
        bias: (4H,) or None. A layer passes u_t = x_t, W_ih and b_ih + b_hh; a cell, whose
        x W_ihᵀ + b_ih is already formed, passes that, the identity and b_hh.
    state: (h0, c0), (N, R) and (N, H); weight_hh: (4H, R)
    Returns output (T, N, H) (h_t of every step), (h_T, c_T) and the cache for backward.

    Arranged for speed, with the same arithmetic: the loop works feature-major, on
    (features, N) arrays, so that each gate is a contiguous block (NumPy runs a column
    block of an (N, 4H) array row by row, ~3× slower); each gate's pre-activations are one
    product, its rows of [W_hh | W_in | b] against [h_{t−1}; u_t; 1], written straight into
    the buffer of the gates (OpenBLAS runs four (H, R + K + 1) products ~25% faster than
    one (4H, R + K + 1) here); inside, the gate rows run o, i, f, g (`_LSTM_ROWS`) and
    those of o, i, f are halved so that one tanh serves all gates (`_lstm_gate_scale`).
    """
    steps, batch, size_in = inputs.shape
    width, size_h = weight_hh.shape
    hidden, dtype = width // 4, inputs.dtype
    weights = [weight_hh, weight_in] + ([] if bias is None else [bias[:, None]])
    weight = _lstm_rows(np.concatenate(weights, axis=1), hidden) * _lstm_gate_scale(hidden, dtype)
    # stacked[t] = [h_{t−1}; u_t; 1]; each step writes h_t into the next one's first rows.
    stacked = aligned_empty((steps, weight.shape[1], batch), dtype)
    stacked[0, :size_h] = state[0].T
    stacked[:, size_h:size_h + size_in] = inputs.transpose(0, 2, 1)
    stacked[:, size_h + size_in:] = 1
    # h_0 may have R ≠ H entries: a projecting LSTM calls this one step at a time.
    h_all = list(stacked[1:, :hidden]) + [aligned_empty((hidden, batch), dtype)]  # h_1 … h_T
    gates = aligned_empty((steps, width, batch), dtype, offset=1024)  # the gates' values, for backward
    c, c_next = aligned_empty((hidden, batch), dtype), aligned_empty((hidden, batch), dtype)  # c_{t−1} and c_t, swapped each step
    c[...] = state[1].T
    products = aligned_empty((steps, 2, hidden, batch), dtype, offset=2048)  # i ⊙ g and f ⊙ c_{t−1}, for backward
    tanh_c = aligned_empty((steps, hidden, batch), dtype, offset=3072)
    o_all, i_all, f_all, g_all = gate_all = [gates[:, k * hidden:(k + 1) * hidden] for k in range(4)]
    gate_weights = [weight[k * hidden:(k + 1) * hidden] for k in range(4)]
    sigmoid_all = gates[:, :3 * hidden]  # o, i, f
    input_terms, forget_terms = products[:, 0], products[:, 1]
    half = np.array(0.5, dtype)  # a 0-d array: NumPy converts a Python float on every call
    for t in range(steps):
        for gate_weight, gate in zip(gate_weights, gate_all):
            np.matmul(gate_weight, stacked[t], gate[t])
        np.tanh(gates[t], out=gates[t])
        sigmoid = sigmoid_all[t]  # σ = (1 + tanh) / 2
        sigmoid *= half
        sigmoid += half
        input_term = np.multiply(i_all[t], g_all[t], out=input_terms[t])
        forget_term = np.multiply(f_all[t], c, out=forget_terms[t])
        c, c_next = np.add(input_term, forget_term, out=c_next), c
        np.multiply(o_all[t], np.tanh(c, out=tanh_c[t]), out=h_all[t])
    output = np.empty((steps, batch, hidden), dtype)
    output[:-1] = stacked[1:, :hidden].transpose(0, 2, 1)
    output[-1] = h_all[-1].T
    return output, (output[-1], c.T.copy()), (gates, h_all, products, tanh_c, stacked)


def lstm_sequence_backward(grad_output, grad_state, cache, weight_hh):
    r"""Backpropagation through `lstm_sequence`'s T steps.

    grad_output: (T, N, H) the gradient of every h_t from above; grad_state: the gradients
    of (h_T, c_T), each (N, H).
    Returns grad_gates (T·N, 4H), the gradient of the pre-activations u_t W_inᵀ + b +
    h_{t−1} W_hhᵀ with rows in (t, n) order (so of each term alike), and the gradients of
    (h0, c0).
    """
    gates, h_all, products, tanh_c, _ = cache
    steps, width, batch = gates.shape
    hidden = width // 4
    grad_h_above = np.ascontiguousarray(grad_output.transpose(0, 2, 1))
    grad_gates = aligned_empty((steps, width, batch), gates.dtype, offset=512)
    # Copies, as the loop updates them in place.
    grad_h, grad_c = aligned_empty(grad_state[0].T.shape, gates.dtype), aligned_empty((hidden, batch), gates.dtype)
    grad_h[...], grad_c[...] = grad_state[0].T, grad_state[1].T
    grad_h_times_o, grad_h_times_h = aligned_empty((2, hidden, batch), gates.dtype, offset=1536)
    # Rows in `lstm_sequence`'s order o, i, f, g; contiguous, which BLAS reads ~5% faster.
    weight_hh_t = np.ascontiguousarray(_lstm_rows(weight_hh, hidden).T)
    # ∂L/∂h_{t−1}, (R, N): h_0 may have R ≠ H entries (see lstm_sequence).
    grad_h_before = aligned_empty((weight_hh_t.shape[0], batch), gates.dtype, offset=2560)
    # ∂L/∂h_{t−1} in four products of R/4 rows each: OpenBLAS runs those ~8% faster than
    # one (R, 4H) product here, as it does lstm_sequence's four per-gate products.
    part = -(-weight_hh_t.shape[0] // 4)
    row_blocks = [slice(k, k + part) for k in range(0, weight_hh_t.shape[0], part)]
    weight_blocks = [weight_hh_t[rows] for rows in row_blocks]
    # Per-gate views over all steps, made once: each step indexes them instead of slicing.
    o_all, i_all, f_all, g_all = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
    sigmoid_all, input_terms = gates[:, :3 * hidden], products[:, 0]
    products_i_f = products.reshape(steps, 2 * hidden, batch)
    grad_o_all, grad_i_f_all = grad_gates[:, :hidden], grad_gates[:, hidden:3 * hidden]
    grad_g_all, grad_sigmoid_all = grad_gates[:, 3 * hidden:], grad_gates[:, :3 * hidden]
    grad_i_f_g_all = grad_gates[:, hidden:].reshape(steps, 3, hidden, batch)
    one = np.array(1, gates.dtype)  # a 0-d array: NumPy converts a Python int on every call
    for t in reversed(range(steps)):
        grad_h += grad_h_above[t]  # h_t feeds both the output at t and the next step
        np.subtract(one, sigmoid_all[t], out=grad_sigmoid_all[t])  # 1 − σ for o, i, f
        # h = o ⊙ tanh c:  ∂L/∂o_pre = ∂L/∂h ⊙ tanh c ⊙ o(1 − o) = (∂L/∂h ⊙ h)(1 − o)
        np.multiply(grad_h, h_all[t], out=grad_h_times_h)
        grad_o = grad_o_all[t]
        grad_o *= grad_h_times_h
        # ∂L/∂c += ∂L/∂h ⊙ o ⊙ (1 − tanh² c) = ∂L/∂h ⊙ o − (∂L/∂h ⊙ h) ⊙ tanh c
        np.multiply(grad_h, o_all[t], out=grad_h_times_o)
        grad_h_times_h *= tanh_c[t]
        grad_h_times_o -= grad_h_times_h
        grad_c += grad_h_times_o
        # c = f ⊙ c_{t−1} + i ⊙ g:  ∂c/∂i_pre = g ⊙ i(1 − i) = (i ⊙ g)(1 − i), likewise for f,
        # and ∂c/∂g_pre = i(1 − g²) = i − (i ⊙ g) ⊙ g; the products are forward's.
        grad_i_f = grad_i_f_all[t]
        grad_i_f *= products_i_f[t]
        grad_g = np.multiply(input_terms[t], g_all[t], out=grad_g_all[t])
        np.subtract(i_all[t], grad_g, out=grad_g)
        grad_i_f_g = grad_i_f_g_all[t]
        grad_i_f_g *= grad_c
        for rows, weight_block in zip(row_blocks, weight_blocks):
            np.matmul(weight_block, grad_gates[t], grad_h_before[rows])
        grad_h = grad_h_before
        grad_c *= f_all[t]
    # (T, 4H, N) → (4H, T·N) in torch's row order: the weight gradients' products then read
    # both operands in order.
    grad_rows = np.empty((4, hidden, steps, batch), gates.dtype)
    for block, torch_block in enumerate(_LSTM_ROWS):
        grad_rows[torch_block] = grad_gates[:, block * hidden:(block + 1) * hidden].transpose(1, 0, 2)
    grad_rows = grad_rows.reshape(width, steps * batch).T
    return grad_rows, (np.ascontiguousarray(grad_h.T), np.ascontiguousarray(grad_c.T))


def lstm_sequence_weight_grads(grad_gates, cache):
    """[∂L/∂W_hh | ∂L/∂W_in | ∂L/∂b] (4H, R + K (+ 1)), from `lstm_sequence_backward`'s
    grad_gates (T·N, 4H): one product against forward's [h_{t−1}; u_t; 1] of every step
    (the row of ones sums the bias gradient), not two products and a sum."""
    stacked = cache[-1]  # (T, R + K + 1, N)
    operand = np.ascontiguousarray(stacked.transpose(1, 0, 2)).reshape(stacked.shape[1], -1)
    return grad_gates.T @ operand.T


def lstm_step(gates_x, state, weight_hh, bias_hh):
    r"""One LSTM step (`lstm_sequence` with T = 1):

        [i, f, g, o] = [σ, σ, tanh, σ](x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
        c' = f ⊙ c + i ⊙ g,    h' = o ⊙ tanh(c')
    """
    identity = np.eye(gates_x.shape[1], dtype=gates_x.dtype)
    _, new_state, cache = lstm_sequence(gates_x[None], state, identity, weight_hh, bias_hh)
    return new_state, cache


def lstm_step_backward(grad_state, cache, weight_hh):
    grad_h, grad_c = grad_state
    grad_gates, grad_state = lstm_sequence_backward(grad_h[None], (np.zeros_like(grad_h), grad_c), cache, weight_hh)
    return grad_gates, grad_gates, grad_state


def lstm_projected_step(gates_x, state, weight_hh, bias_hh, weight_hr):
    r"""LSTM with a projection (proj_size P > 0): the cell as `lstm_step`, then

        h' = (o ⊙ tanh(c')) W_hrᵀ,    W_hr: (P, H)

    so the hidden state and the output have P entries while c keeps H.
    """
    (h_full, c_new), cache = lstm_step(gates_x, state, weight_hh, bias_hh)
    return (h_full @ weight_hr.T, c_new), (cache, h_full)


def lstm_projected_step_backward(grad_state, cache, weight_hh, weight_hr):
    grad_h, grad_c = grad_state
    lstm_cache, _ = cache
    return lstm_step_backward((grad_h @ weight_hr, grad_c), lstm_cache, weight_hh)


def gru_step(gates_x, state, weight_hh, bias_hh):
    r"""Gates in torch's order r, z, n (W_i· x + b_i· from gates_x, W_h· h + b_h· from h):

        r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h
    """
    (h,) = state
    hidden = h.shape[-1]
    gates_h = h @ weight_hh.T
    if bias_hh is not None:
        gates_h += bias_hh
    rz = _sigmoid(gates_x[:, :2 * hidden] + gates_h[:, :2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    hn = gates_h[:, 2 * hidden:]
    n = np.tanh(gates_x[:, 2 * hidden:] + r * hn)
    h_new = n + z * (h - n)
    return (h_new,), (h, rz, n, hn)


def gru_step_backward(grad_state, cache, weight_hh):
    (grad_h,) = grad_state
    h, rz, n, hn = cache
    hidden = h.shape[-1]
    r, z = rz[:, :hidden], rz[:, hidden:]
    grad_n_pre = grad_h * (1 - z) * (1 - n * n)
    grad_rz = np.concatenate([grad_n_pre * hn, grad_h * (h - n)], axis=1) * (rz * (1 - rz))
    grad_gates_x = np.concatenate([grad_rz, grad_n_pre], axis=1)
    # W_hn h + b_hn enters n only through r ⊙ (·).
    grad_gates_h = np.concatenate([grad_rz, grad_n_pre * r], axis=1)
    return grad_gates_x, grad_gates_h, (grad_h * z + grad_gates_h @ weight_hh,)


_STEPS = {
    "RNN_TANH": (rnn_tanh_step, rnn_tanh_step_backward, 1),
    "RNN_RELU": (rnn_relu_step, rnn_relu_step_backward, 1),
    "LSTM": (lstm_step, lstm_step_backward, 4),
    "GRU": (gru_step, gru_step_backward, 3),
}


def _add_weight_grads(grads, suffix, inputs, hidden, grad_gates_x, grad_gates_h):
    """Add one cell's parameter gradients, summed over rows.

    inputs: (M, in), hidden: (M, H) the previous hidden state, grad_gates_x and
    grad_gates_h: (M, G·H); M = N for a cell, T·N for a whole layer.
    """
    grads["weight_ih" + suffix] += grad_gates_x.T @ inputs
    grads["weight_hh" + suffix] += grad_gates_h.T @ hidden
    if "bias_ih" + suffix in grads:
        grad_bias_ih = grad_gates_x.sum(axis=0)
        grads["bias_ih" + suffix] += grad_bias_ih
        # RNN and LSTM pass the same array twice (b_ih and b_hh add to the same gates).
        grads["bias_hh" + suffix] += grad_bias_ih if grad_gates_h is grad_gates_x else grad_gates_h.sum(axis=0)


def _rows(array):
    """(T, N, F) → (T·N, F): time steps and batch rows enter a weight product alike."""
    return array.reshape(-1, array.shape[-1])


def _check_size(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_grad(module, grad, expected, name):
    grad = np.asarray(grad)
    if grad.shape != expected:
        raise ValueError(f"{type(module).__name__}.backward expects {name} of shape {expected}, "
                         f"got shape {grad.shape}")
    return grad


# ---------------------------------------------------------------------- sequence layers
class RNNBase(Module):
    """What `RNN`, `LSTM` and `GRU` share: parameters, input checks, the loops over layers,
    directions and time steps, and backpropagation through time.

    Parameters per layer k (and `_reverse` copies when bidirectional), G = 1, 4, 3, and
    R = proj_size if an LSTM projects, else H (the size of h and of the output):
        weight_ih_l{k}: (G·H, input_size for k = 0 else D·R), weight_hh_l{k}: (G·H, R),
        bias_ih_l{k}, bias_hh_l{k}: (G·H,), and weight_hr_l{k}: (R, H) when projecting
    all initialised U(−1/√H, 1/√H) as torch does.

    Inputs are padded arrays: torch's PackedSequence inputs are not supported.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        if mode not in _STEPS:
            raise ValueError(f"Unrecognized RNN mode: {mode!r}")
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             f"probability of an element being zeroed, got {dropout!r}")
        if proj_size != 0 and mode != "LSTM":
            raise ValueError(f"{type(self).__name__}: proj_size is only supported by LSTM, got proj_size={proj_size}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}")
        self.mode = mode
        self.input_size = _check_size("input_size", input_size, 1)
        self.hidden_size = _check_size("hidden_size", hidden_size, 1)
        if not isinstance(proj_size, numbers.Integral) or not 0 <= proj_size < self.hidden_size:
            raise ValueError(f"LSTM: proj_size must be a non-negative integer smaller than "
                             f"hidden_size={hidden_size}, got proj_size={proj_size!r}")
        self.num_layers = _check_size("num_layers", num_layers, 1)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        self._output_size = self.proj_size or self.hidden_size  # R: the size of h and of the output
        self._step, self._step_backward, gates = _STEPS[mode]
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        directions = 2 if self.bidirectional else 1
        self._suffixes = []  # [[suffix of each direction] for each layer]
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else directions * self._output_size
            suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:directions]
            for suffix in suffixes:
                self.register_parameter("weight_ih" + suffix,
                                        np.empty((gates * self.hidden_size, layer_input), dtype))
                self.register_parameter("weight_hh" + suffix,
                                        np.empty((gates * self.hidden_size, self._output_size), dtype))
                if self.bias:
                    self.register_parameter("bias_ih" + suffix, np.empty(gates * self.hidden_size, dtype))
                    self.register_parameter("bias_hh" + suffix, np.empty(gates * self.hidden_size, dtype))
                if self.proj_size:
                    self.register_parameter("weight_hr" + suffix,
                                            np.empty((self.proj_size, self.hidden_size), dtype))
            self._suffixes.append(suffixes)
        self.reset_parameters()
        self._cache = None

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    # ------------------------------------------------------------------ shapes
    def _input_text(self):
        batched = "(N, T, {0})" if self.batch_first else "(T, N, {0})"
        return f"{batched.format(self.input_size)} or (T, {self.input_size})"

    def _check_input(self, x):
        time_axis = 1 if x.ndim == 3 and self.batch_first else 0
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size or x.shape[time_axis] == 0:
            raise ValueError(f"{type(self).__name__} expects input of shape {self._input_text()} "
                             f"with T >= 1, got shape {tuple(x.shape)}")

    def _initial_state(self, hx, names, batch, batched, dtype):
        """hx → a tuple of (L·D, N, H) arrays (zeros where hx is None)."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            return tuple(np.zeros((layers, batch, self._state_size(name)), dtype) for name in names)
        if len(names) > 1 and not (isinstance(hx, (tuple, list)) and len(hx) == len(names)):
            raise TypeError(f"{type(self).__name__} expects the initial state as a tuple "
                            f"({', '.join(names)}), got {type(hx).__name__}")
        states = hx if len(names) > 1 else (hx,)
        checked = []
        for name, state in zip(names, states):
            state = check_float_input(self, state, name)
            size = self._state_size(name)
            shape = (layers, batch, size) if batched else (layers, size)
            if state.shape != shape:
                for_input = f"batch size {batch}" if batched else "unbatched input"
                raise ValueError(f"{type(self).__name__} expects {name} of shape {shape} "
                                 f"({for_input}), got shape {tuple(state.shape)}")
            checked.append((state if batched else state[:, None]).astype(dtype, copy=False))
        return tuple(checked)

    def _state_size(self, name):
        """h has R = proj_size (or H) entries; an LSTM's cell state c keeps H."""
        return self.hidden_size if name[0] == "c" else self._output_size

    def _time_major(self, array, batched):
        """The input's layout → (T, N, F), as a view."""
        if not batched:
            return array[:, None]
        return array.swapaxes(0, 1) if self.batch_first else array

    def _input_layout(self, array, batched):
        """(T, N, F) → the input's layout, as a view."""
        if not batched:
            return array[:, 0]
        return array.swapaxes(0, 1) if self.batch_first else array

    def _weights(self, suffix, dtype):
        """This direction's weights in the input's dtype (biases None without bias)."""
        return tuple(None if self._parameters.get(name + suffix) is None
                     else self._parameters[name + suffix].astype(dtype, copy=False)
                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    # ------------------------------------------------------------------ forward
    def _run(self, input, hx, names):
        """Shared forward: returns output in the input's layout and the final states,
        each (L·D, N, H) (or (L·D, H) for unbatched input)."""
        x = check_float_input(self, input)
        self._check_input(x)
        batched = x.ndim == 3
        x = self._time_major(x, batched)
        states = self._initial_state(hx, names, x.shape[1], batched, x.dtype)
        layer_input, finals, caches, masks = x, [], [], []
        for layer, suffixes in enumerate(self._suffixes):
            outputs = []
            for direction, suffix in enumerate(suffixes):
                index = layer * len(suffixes) + direction
                state = tuple(s[index] for s in states)
                # The reverse direction is the forward recurrence on the time-reversed sequence.
                steps = layer_input[::-1] if direction else layer_input
                output, final, cache = self._forward_direction(steps, state, suffix)
                outputs.append(output[::-1] if direction else output)
                finals.append(final)
                caches.append(cache)
            layer_input = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=-1)
            mask = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = get_rng().random(layer_input.shape) >= self.dropout
                scale = 0.0 if self.dropout == 1 else 1 / (1 - self.dropout)
                mask = keep.astype(x.dtype) * x.dtype.type(scale)
                layer_input = layer_input * mask
            masks.append(mask)
        self._cache = (caches, masks, batched, hx is not None, x.shape[:2], x.dtype)
        finals = [np.stack([final[k] for final in finals]) for k in range(len(names))]
        if not batched:
            finals = [f[:, 0] for f in finals]
        return self._input_layout(layer_input, batched), finals

    def _forward_direction(self, x, state, suffix):
        """x: (T, N, in) in processing order; state: tuple of (N, H).
        Returns output (T, N, H), the final state and what backward needs."""
        weight_ih, weight_hh, bias_ih, bias_hh = self._weights(suffix, x.dtype)
        h0 = state[0]
        if bias_ih is not None and self.mode != "GRU":
            # b_hh only adds to the gates here, so it joins the one-off projection (the GRU
            # needs it inside r ⊙ (h W_hnᵀ + b_hn)); summed first, one pass over gates_x.
            bias_ih, bias_hh = bias_ih + bias_hh, None
        if self.mode == "LSTM" and not self.proj_size:
            output, state, lstm_cache = lstm_sequence(x, state, weight_ih, weight_hh, bias_ih)
            return output, state, (x, h0, output, lstm_cache)
        gates_x = (_rows(x) @ weight_ih.T).reshape(x.shape[:2] + (-1,))  # one 2-D matmul, not T
        if bias_ih is not None:
            gates_x += bias_ih
        output = np.empty(x.shape[:2] + (self._output_size,), x.dtype)
        step_caches = []
        step = self._step
        # Column-major, so that the steps' h W_hhᵀ reads a contiguous W_hhᵀ: BLAS runs that
        # small product ~1.5× faster than with a transposed operand (same values, same shape).
        weight_hh = np.asfortranarray(weight_hh)
        if self.proj_size:
            step = functools.partial(lstm_projected_step, weight_hr=self._parameters["weight_hr" + suffix].astype(x.dtype, copy=False))
        for t in range(x.shape[0]):
            state, cache = step(gates_x[t], state, weight_hh, bias_hh)
            output[t] = state[0]
            step_caches.append(cache)
        return output, state, (x, h0, output, step_caches)

    # ------------------------------------------------------------------ backward
    def _run_backward(self, grad_output, grad_finals, names):
        """Backpropagation through time, from the top layer down."""
        caches, masks, batched, had_state, (time, batch), dtype = self._saved(self._cache)
        layers, size = len(caches), self._output_size
        width = len(self._suffixes[0]) * size
        if not batched:
            output_shape = (time, width)
        else:
            output_shape = (batch, time, width) if self.batch_first else (time, batch, width)
        grad_layer = self._time_major(_check_grad(self, grad_output, output_shape, "grad_output"), batched)
        grad_layer = grad_layer.astype(dtype, copy=False)
        state_shapes = [(layers, batch, self._state_size(name)) for name in names]
        grad_finals = [np.zeros(shape, dtype) if g is None
                       else _check_grad(self, g, shape if batched else (shape[0], shape[2]),
                                        f"grad_{name[0]}_n").reshape(shape).astype(dtype, copy=False)
                       for g, name, shape in zip(grad_finals, names, state_shapes)]
        grad_states = [np.empty(shape, dtype) for shape in state_shapes]
        for layer in reversed(range(self.num_layers)):
            suffixes = self._suffixes[layer]
            if masks[layer] is not None:
                grad_layer = grad_layer * masks[layer]
            grad_input = 0
            for direction, suffix in enumerate(suffixes):
                index = layer * len(suffixes) + direction
                grad_out = grad_layer[..., direction * size:(direction + 1) * size]
                grad_final = tuple(g[index] for g in grad_finals)
                grad_x, grad_state = self._backward_direction(
                    grad_out[::-1] if direction else grad_out, grad_final, caches[index], suffix)
                grad_input = grad_input + (grad_x[::-1] if direction else grad_x)
                for k, g in enumerate(grad_state):
                    grad_states[k][index] = g
            grad_layer = grad_input
        if not batched:
            grad_states = [g[:, 0] for g in grad_states]
        return self._input_layout(grad_layer, batched), grad_states, had_state

    def _backward_direction(self, grad_output, grad_state, cache, suffix):
        """grad_output: (T, N, H) in processing order; grad_state: gradient of the final state.
        Adds the parameter gradients and returns (grad_x (T, N, in), grad of the initial state)."""
        x, h0, output, step_caches = cache
        weight_ih, weight_hh, _, _ = self._weights(suffix, x.dtype)
        if self.mode == "LSTM" and not self.proj_size:
            grad_gates, grad_state = lstm_sequence_backward(grad_output, grad_state, step_caches, weight_hh)
            grad_weights = lstm_sequence_weight_grads(grad_gates, step_caches)
            size_h, size_in = weight_hh.shape[1], weight_ih.shape[1]
            self._gradients["weight_hh" + suffix] += grad_weights[:, :size_h]
            self._gradients["weight_ih" + suffix] += grad_weights[:, size_h:size_h + size_in]
            if self.bias:
                self._gradients["bias_ih" + suffix] += grad_weights[:, -1]
                self._gradients["bias_hh" + suffix] += grad_weights[:, -1]
            return (grad_gates @ weight_ih).reshape(x.shape), grad_state
        hidden = np.concatenate([h0[None], output[:-1]])  # h_{t−1} for every step
        step_backward, grads_output = self._step_backward, []
        if self.proj_size:
            weight_hr = self._parameters["weight_hr" + suffix].astype(x.dtype, copy=False)
            step_backward = functools.partial(lstm_projected_step_backward, weight_hr=weight_hr)
        grads_x, grads_h = [], []
        for t in reversed(range(x.shape[0])):
            # h_t feeds both the output at t and the next step.
            grad_state = (grad_output[t] + grad_state[0],) + grad_state[1:]
            grads_output.append(grad_state[0])
            grad_gates_x, grad_gates_h, grad_state = step_backward(grad_state, step_caches[t], weight_hh)
            grads_x.append(grad_gates_x)
            grads_h.append(grad_gates_h)
        if self.proj_size:
            # h_t = (o ⊙ tanh c_t) W_hrᵀ: dW_hr = Σ_t dh_tᵀ (o ⊙ tanh c_t).
            unprojected = np.concatenate([cache[1] for cache in step_caches])
            self._gradients["weight_hr" + suffix] += np.concatenate(grads_output[::-1]).T @ unprojected
        grad_gates_x = np.stack(grads_x[::-1])
        grad_gates_h = grad_gates_x if grads_h[0] is grads_x[0] else np.stack(grads_h[::-1])
        _add_weight_grads(self._gradients, suffix, _rows(x), _rows(hidden), _rows(grad_gates_x), _rows(grad_gates_h))
        return (_rows(grad_gates_x) @ weight_ih).reshape(x.shape), grad_state

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(RNNBase):
    r"""Elman RNN, per layer: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)
    (ReLU instead of tanh with nonlinearity='relu'). Layer k > 0 reads layer k−1's output,
    with dropout in between in training mode.

    Shape (D = 2 if bidirectional else 1):
        input: (T, N, input_size), or (N, T, input_size) with batch_first, or (T, input_size)
        hx: (num_layers·D, N, H), or (num_layers·D, H) for unbatched input; default zeros
        output: (T, N, D·H) (or (N, T, D·H), or (T, D·H)); h_n: like hx

    `forward(input, hx=None)` returns (output, h_n). `backward(grad_output, grad_h_n=None)`
    returns grad_input, or (grad_input, grad_hx) when forward was given hx.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        output, (h_n,) = self._run(input, hx, ("h0",))
        return output, h_n

    def backward(self, grad_output, grad_h_n=None):
        grad_input, (grad_h0,), had_state = self._run_backward(grad_output, (grad_h_n,), ("h0",))
        return (grad_input, grad_h0) if had_state else grad_input


class GRU(RNNBase):
    r"""Gated recurrent unit, per layer and time step (gate order r, z, n as torch):

        r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),   z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
        n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h

    Shape: as `RNN`. `forward(input, hx=None)` returns (output, h_n);
    `backward(grad_output, grad_h_n=None)` returns grad_input, or (grad_input, grad_hx)
    when forward was given hx.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype)

    forward = RNN.forward
    backward = RNN.backward


class LSTM(RNNBase):
    r"""Long short-term memory, per layer and time step (gate order i, f, g, o as torch):

        [i, f, g, o] = [σ, σ, tanh, σ](x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
        c' = f ⊙ c + i ⊙ g,    h' = o ⊙ tanh(c')

    Shape: as `RNN`, with c0 / c_n shaped like h0 / h_n. `forward(input, hx=None)` with
    hx = (h0, c0) returns (output, (h_n, c_n)). `backward(grad_output, grad_h_n=None,
    grad_c_n=None)` returns grad_input, or (grad_input, (grad_h0, grad_c0)) when forward
    was given (h0, c0).

    proj_size = P > 0 projects each step's hidden state, h' = (o ⊙ tanh c') W_hrᵀ with
    weight_hr_l{k}: (P, H): h0, h_n and each direction's output have P entries instead of H
    (c keeps H), and weight_hh is (4H, P).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)

    def forward(self, input, hx=None):
        output, (h_n, c_n) = self._run(input, hx, ("h0", "c0"))
        return output, (h_n, c_n)

    def backward(self, grad_output, grad_h_n=None, grad_c_n=None):
        grad_input, (grad_h0, grad_c0), had_state = self._run_backward(
            grad_output, (grad_h_n, grad_c_n), ("h0", "c0"))
        return (grad_input, (grad_h0, grad_c0)) if had_state else grad_input


# ---------------------------------------------------------------------- cells
class RNNCellBase(Module):
    """What the cells share: parameters weight_ih (G·H, input_size), weight_hh (G·H, H),
    bias_ih, bias_hh (G·H,), initialised U(−1/√H, 1/√H); the input projection; one step."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        self.input_size = _check_size("input_size", input_size, 1)
        self.hidden_size = _check_size("hidden_size", hidden_size, 1)
        self.bias = bool(bias)
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        self.register_parameter("weight_ih", np.empty((num_chunks * self.hidden_size, self.input_size), dtype))
        self.register_parameter("weight_hh", np.empty((num_chunks * self.hidden_size, self.hidden_size), dtype))
        self.register_parameter("bias_ih", np.empty(num_chunks * self.hidden_size, dtype) if bias else None)
        self.register_parameter("bias_hh", np.empty(num_chunks * self.hidden_size, dtype) if bias else None)
        self.reset_parameters()
        self._cache = None

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def _cell(self, input, hx, names):
        """Shared forward: returns the new state as a tuple of (N, H) (or (H,)) arrays."""
        x = check_float_input(self, input)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects input of shape (N, {self.input_size}) "
                             f"or ({self.input_size},), got shape {tuple(x.shape)}")
        batched = x.ndim == 2
        x = x if batched else x[None]
        shape = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        if hx is None:
            state = tuple(np.zeros((x.shape[0], self.hidden_size), x.dtype) for _ in names)
        else:
            if len(names) > 1 and not (isinstance(hx, (tuple, list)) and len(hx) == len(names)):
                raise TypeError(f"{type(self).__name__} expects hx as a tuple ({', '.join(names)}), "
                                f"got {type(hx).__name__}")
            state = []
            for name, value in zip(names, hx if len(names) > 1 else (hx,)):
                value = check_float_input(self, value, name)
                if value.shape != shape:
                    raise ValueError(f"{type(self).__name__} expects {name} of shape {shape}, "
                                     f"got shape {tuple(value.shape)}")
                state.append(value.reshape(x.shape[0], self.hidden_size).astype(x.dtype, copy=False))
            state = tuple(state)
        weight_ih, weight_hh, bias_ih, bias_hh = (
            None if p is None else p.astype(x.dtype, copy=False)
            for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh))
        gates_x = x @ weight_ih.T
        if bias_ih is not None:
            gates_x += bias_ih
        new_state, cache = self._step(gates_x, state, weight_hh, bias_hh)
        self._cache = (x, state[0], cache, batched)
        return tuple(s if batched else s[0] for s in new_state)

    def _cell_backward(self, grad_state, names):
        x, h, cache, batched = self._saved(self._cache)
        shape = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        grad_state = tuple(
            np.zeros((x.shape[0], self.hidden_size), x.dtype) if g is None
            else _check_grad(self, g, shape, f"grad of {name[0]}'").reshape(x.shape[0], self.hidden_size)
            for g, name in zip(grad_state, names))
        weight_hh = self.weight_hh.astype(x.dtype, copy=False)
        grad_gates_x, grad_gates_h, grad_state = self._step_backward(grad_state, cache, weight_hh)
        _add_weight_grads(self._gradients, "", x, h, grad_gates_x, grad_gates_h)
        grad_input = grad_gates_x @ self.weight_ih.astype(x.dtype, copy=False)
        if not batched:
            return grad_input[0], tuple(g[0] for g in grad_state)
        return grad_input, grad_state

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RNNCellBase):
    r"""One Elman step: h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) (or ReLU).

    Shape:
        input: (N, input_size) or (input_size,); hx: (N, H) or (H,), default zeros
        output h': like hx

    `backward(grad_h)` returns (grad_input, grad_hx), also when hx was not given (then
    grad_hx is the gradient with respect to the zero state).
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity
        self._step, self._step_backward, _ = _STEPS["RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"]

    def forward(self, input, hx=None):
        return self._cell(input, hx, ("hx",))[0]

    def backward(self, grad_h):
        grad_input, (grad_hx,) = self._cell_backward((grad_h,), ("h",))
        return grad_input, grad_hx


class GRUCell(RNNCellBase):
    r"""One GRU step (gate order r, z, n, as `GRU`):

        r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),   z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
        n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h

    Shape: as `RNNCell`. `backward(grad_h)` returns (grad_input, grad_hx).
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)
        self._step, self._step_backward, _ = _STEPS["GRU"]

    forward = RNNCell.forward
    backward = RNNCell.backward


class LSTMCell(RNNCellBase):
    r"""One LSTM step (gate order i, f, g, o, as `LSTM`):

        [i, f, g, o] = [σ, σ, tanh, σ](x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
        c' = f ⊙ c + i ⊙ g,    h' = o ⊙ tanh(c')

    Shape:
        input: (N, input_size) or (input_size,); hx = (h, c), each (N, H) or (H,), default zeros
        output (h', c'): like h and c

    `backward(grad_h, grad_c=None)` returns (grad_input, (grad_h, grad_c)): the gradients
    with respect to input, h and c (also when hx was not given).
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)
        self._step, self._step_backward, _ = _STEPS["LSTM"]

    def forward(self, input, hx=None):
        return self._cell(input, hx, ("h", "c"))

    def backward(self, grad_h, grad_c=None):
        grad_input, grad_state = self._cell_backward((grad_h, grad_c), ("h", "c"))
        return grad_input, grad_state
