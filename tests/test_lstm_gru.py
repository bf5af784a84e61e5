"""LSTM, GRU, LSTMCell and GRUCell against torch.nn (chapter 11: LSTM and GRU)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES
from test_rnn import check_cell, check_sequence_layer
from test_rnn import _exact_float32_on_cuda, _one_torch_thread  # noqa: F401 (autouse fixtures)

pytestmark = pytest.mark.ch11

CASES = {
    "one_layer": (dict(input_size=3, hidden_size=5), (6, 4, 3), False),
    "one_layer_with_initial_state": (dict(input_size=3, hidden_size=5), (6, 4, 3), True),
    "multi_layer_batch_first":
        (dict(input_size=4, hidden_size=5, num_layers=2, batch_first=True), (3, 7, 4), False),
    "multi_layer_batch_first_with_initial_state":
        (dict(input_size=4, hidden_size=5, num_layers=2, batch_first=True), (3, 7, 4), True),
    "three_layers_no_bias": (dict(input_size=2, hidden_size=4, num_layers=3, bias=False), (5, 3, 2), True),
    "unbatched_two_layers": (dict(input_size=3, hidden_size=5, num_layers=2), (6, 3), True),
    "unbatched_no_state": (dict(input_size=3, hidden_size=5), (4, 3), False),
    "single_time_step": (dict(input_size=3, hidden_size=5, num_layers=2), (1, 4, 3), True),
    "bidirectional_two_layers_batch_first":
        (dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 3), True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_lstm_forward_and_backward_match_torch(case, dtype, device):
    kwargs, x_shape, with_state = CASES[case]
    check_sequence_layer("LSTM", kwargs, x_shape, with_state, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_gru_forward_and_backward_match_torch(case, dtype, device):
    kwargs, x_shape, with_state = CASES[case]
    check_sequence_layer("GRU", kwargs, x_shape, with_state, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_lstm_and_gru_with_dropout_match_torch_in_eval_mode(kind, dtype, device):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=2, dropout=0.3)
    check_sequence_layer(kind, kwargs, (5, 2, 3), True, dtype, device, training=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("kwargs,x_shape,with_state", [
    (dict(input_size=3, hidden_size=5), (4, 3), True),
    (dict(input_size=3, hidden_size=5), (4, 3), False),
    (dict(input_size=2, hidden_size=4, bias=False), (6, 2), True),
    (dict(input_size=3, hidden_size=2), (3,), True),
])
def test_lstm_and_gru_cells_match_torch(kind, kwargs, x_shape, with_state, dtype, device):
    check_cell(kind, kwargs, x_shape, with_state, dtype, device)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["LSTM", "GRU"]), time=st.integers(1, 6), batch=st.integers(1, 4),
       input_size=st.integers(1, 5), hidden_size=st.integers(1, 5), num_layers=st.integers(1, 3),
       batch_first=st.booleans(), bias=st.booleans(), with_state=st.booleans())
def test_lstm_and_gru_match_torch_on_generated_shapes(kind, time, batch, input_size, hidden_size, num_layers,
                                                     batch_first, bias, with_state):
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  batch_first=batch_first, bias=bias)
    x_shape = (batch, time, input_size) if batch_first else (time, batch, input_size)
    check_sequence_layer(kind, kwargs, x_shape, with_state, np.float64, "cpu")


def test_lstm_matches_torch_on_a_long_sequence_in_float32():
    kwargs = dict(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    check_sequence_layer("LSTM", kwargs, (4, 30, 8), True, np.float32, "cpu")


class WithState(nn.Module):
    """Feeds (x, h0, c0) as three arrays to an LSTM / LSTMCell, so that check_module can
    perturb the initial state too (it only perturbs top-level array inputs)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, h0, c0):
        return self.inner(x, (h0, c0))

    def backward(self, *upstream):
        grad_input, (grad_h0, grad_c0) = self.inner.backward(*upstream)
        return grad_input, grad_h0, grad_c0


def test_gradcheck_of_lstm_including_initial_state(rng):
    for kwargs in (dict(num_layers=2), dict(num_layers=2, batch_first=True, bias=False),
                   dict(bidirectional=True)):
        lstm = nn.LSTM(2, 3, **kwargs)
        layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
        x = rng.standard_normal((4, 2, 2))  # batch_first: batch 4, else batch 2
        h0, c0 = rng.standard_normal((2, layers, 4 if lstm.batch_first else 2, 3))
        report = check_module(WithState(lstm), x, h0, c0)
        assert {"input 0", "input 1", "input 2", "inner.weight_hh_l0"} <= set(report.errors)
        assert report.worst < 1e-7, str(report)


def test_gradcheck_of_gru_with_initial_state(rng):
    for kwargs in (dict(num_layers=2), dict(batch_first=True, bias=False), dict(bidirectional=True)):
        gru = nn.GRU(2, 3, **kwargs)
        layers = gru.num_layers * (2 if gru.bidirectional else 1)
        x = rng.standard_normal((4, 2, 2))
        report = check_module(gru, x, rng.standard_normal((layers, 4 if gru.batch_first else 2, 3)))
        assert {"input 0", "input 1", "weight_hh_l0"} <= set(report.errors)
        assert report.worst < 1e-7, str(report)


def test_gradcheck_of_lstm_and_gru_with_dropout_in_training_mode(rng):
    for layer in (nn.LSTM(2, 3, num_layers=2, dropout=0.4), nn.GRU(2, 3, num_layers=3, dropout=0.4)):
        report = check_module(layer, rng.standard_normal((3, 2, 2)))
        assert report.worst < 1e-7, str(report)


def test_gradcheck_of_lstm_and_gru_cells(rng):
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    for report in (check_module(WithState(nn.LSTMCell(3, 4)), x, h, c),
                   check_module(WithState(nn.LSTMCell(3, 4, bias=False)), x, h, c),
                   check_module(nn.GRUCell(3, 4), x, h),
                   check_module(nn.GRUCell(3, 4, bias=False), x, h)):
        assert report.worst < 1e-7, str(report)


def test_lstm_gates_saturate_without_overflow_warnings(rng):
    import warnings
    lstm = nn.LSTM(2, 3, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output, (h_n, c_n) = lstm(1e4 * rng.standard_normal((3, 2, 2)))
        lstm.backward(np.ones_like(output))
    assert np.isfinite(output).all() and np.isfinite(c_n).all()


def test_lstm_and_gru_state_dicts_have_torch_keys_in_torch_order():
    for kwargs in (dict(num_layers=3), dict(num_layers=2, bias=False), dict(num_layers=2, bidirectional=True)):
        for kind in ("LSTM", "GRU"):
            ours = getattr(nn, kind)(3, 4, **kwargs).state_dict()
            theirs = getattr(torch.nn, kind)(3, 4, **kwargs).state_dict()
            assert list(ours) == list(theirs)
            assert all(ours[k].shape == tuple(v.shape) for k, v in theirs.items())
    for kind in ("LSTMCell", "GRUCell"):
        ours, theirs = getattr(nn, kind)(3, 4).state_dict(), getattr(torch.nn, kind)(3, 4).state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == tuple(v.shape) for k, v in theirs.items())


def test_lstm_and_gru_init_is_uniform_within_one_over_sqrt_hidden_size():
    for layer in (nn.LSTM(10, 300), nn.GRU(10, 300), nn.LSTMCell(10, 300)):
        bound = 1 / np.sqrt(300)
        for name, value in layer.named_parameters():
            assert np.abs(value).max() <= bound, name
        assert abs(layer.params[next(iter(layer.params))].std() - bound / np.sqrt(3)) < 0.02 * bound


def test_lstm_and_gru_repr_read_like_torch():
    for args, kwargs in [((10, 20), {}), ((10, 20), dict(num_layers=2, batch_first=True)),
                         ((3, 4), dict(bias=False, dropout=0.5, num_layers=2, bidirectional=True))]:
        for kind in ("LSTM", "GRU"):
            assert repr(getattr(nn, kind)(*args, **kwargs)) == repr(getattr(torch.nn, kind)(*args, **kwargs))
    assert repr(nn.LSTM(10, 20, num_layers=2, batch_first=True)) == "LSTM(10, 20, num_layers=2, batch_first=True)"
    for kind in ("LSTMCell", "GRUCell"):
        assert repr(getattr(nn, kind)(3, 4, bias=False)) == repr(getattr(torch.nn, kind)(3, 4, bias=False))


def test_lstm_and_gru_compute_in_float32_without_promotion(rng):
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    output, (h_n, c_n) = nn.LSTM(3, 4, num_layers=2)(x)
    assert output.dtype == h_n.dtype == c_n.dtype == np.float32
    gru = nn.GRU(3, 4)
    output, h_n = gru(x)
    assert output.dtype == h_n.dtype == gru.backward(np.ones_like(output)).dtype == np.float32


@pytest.mark.parametrize("make,call,error,message", [
    (lambda: nn.LSTM(10, 20), lambda m: m(np.zeros((5, 3, 7))), ValueError,
     r"LSTM expects input of shape \(T, N, 10\) or \(T, 10\) with T >= 1, got shape \(5, 3, 7\)"),
    (lambda: nn.LSTM(10, 20, batch_first=True), lambda m: m(np.zeros((3, 5))), ValueError,
     r"LSTM expects input of shape \(N, T, 10\) or \(T, 10\) with T >= 1, got shape \(3, 5\)"),
    (lambda: nn.GRU(10, 20), lambda m: m(np.zeros((5, 3, 7))), ValueError,
     r"GRU expects input of shape \(T, N, 10\) or \(T, 10\)"),
    (lambda: nn.LSTM(3, 4, num_layers=2), lambda m: m(np.zeros((5, 2, 3)), (np.zeros((2, 2, 4)), np.zeros((2, 3, 4)))),
     ValueError, r"LSTM expects c0 of shape \(2, 2, 4\) \(batch size 2\), got shape \(2, 3, 4\)"),
    (lambda: nn.LSTM(3, 4), lambda m: m(np.zeros((5, 2, 3)), np.zeros((1, 2, 4))), TypeError,
     r"LSTM expects the initial state as a tuple \(h0, c0\), got ndarray"),
    (lambda: nn.GRU(3, 4), lambda m: m(np.zeros((5, 2, 3)), np.zeros((1, 4, 4))), ValueError,
     r"GRU expects h0 of shape \(1, 2, 4\) \(batch size 2\), got shape \(1, 4, 4\)"),
    (lambda: nn.LSTM(3, 4), lambda m: m(np.zeros((5, 2, 3), np.int32)), TypeError, "floating-point input"),
    (lambda: nn.LSTM(3, 4), lambda m: m.backward(np.zeros((5, 2, 4))), RuntimeError,
     r"LSTM.backward\(\) was called before forward\(\)"),
    (lambda: nn.GRU(3, 4), lambda m: m.backward(np.zeros((5, 2, 4))), RuntimeError,
     r"GRU.backward\(\) was called before forward\(\)"),
    (lambda: nn.LSTMCell(3, 4), lambda m: m.backward(np.zeros((2, 4))), RuntimeError,
     r"LSTMCell.backward\(\) was called before forward\(\)"),
    (lambda: nn.LSTMCell(3, 4), lambda m: m(np.zeros((2, 3)), np.zeros((2, 4))), TypeError,
     r"LSTMCell expects hx as a tuple \(h, c\), got ndarray"),
    (lambda: nn.GRUCell(3, 4), lambda m: m(np.zeros((2, 4))), ValueError,
     r"GRUCell expects input of shape \(N, 3\) or \(3,\), got shape \(2, 4\)"),
])
def test_lstm_and_gru_reject_bad_input_with_a_clear_message(make, call, error, message):
    with pytest.raises(error, match=message):
        call(make())


def test_lstm_backward_rejects_a_cell_state_gradient_of_the_wrong_shape():
    lstm = nn.LSTM(3, 4)
    output, _ = lstm(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"LSTM.backward expects grad_c_n of shape \(1, 2, 4\), got shape \(2, 4\)"):
        lstm.backward(output, None, np.zeros((2, 4)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs,x_shape,with_state", [
    (dict(input_size=3, hidden_size=5, proj_size=2), (4, 2, 3), True),
    (dict(input_size=3, hidden_size=4, proj_size=3, num_layers=2, bidirectional=True, batch_first=True),
     (3, 5, 3), True),
    (dict(input_size=2, hidden_size=4, proj_size=1, bias=False, num_layers=2), (6, 2), False),
])
def test_lstm_with_projection_matches_torch(kwargs, x_shape, with_state, dtype):
    check_sequence_layer("LSTM", kwargs, x_shape, with_state, dtype, "cpu")


@pytest.mark.parametrize("kwargs,message", [
    (dict(proj_size=4), "proj_size must be a non-negative integer smaller than hidden_size=4"),
    (dict(proj_size=-1), "proj_size must be a non-negative integer"),
])
def test_lstm_rejects_a_projection_not_smaller_than_the_hidden_size(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.LSTM(3, 4, **kwargs)
    with pytest.raises(ValueError, match="proj_size is only supported by LSTM"):
        nn.RNNBase("GRU", 3, 4, proj_size=2)
