"""RNN, RNNCell and Embedding against torch.nn (chapter 10: recurrent networks).

The helpers `check_sequence_layer` and `check_cell` are shared with test_lstm_gru.py.
"""
import numpy as np
import pytest
import torch

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch10


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These layers are tiny: torch's thread pool only adds contention on a shared CPU."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _exact_float32_on_cuda():
    """cuDNN may run float32 recurrences in TF32; parity is promised against float32 math.

    Uses the flags() context managers: torch's own test utilities (imported by the
    module_db tests in the same worker) freeze the global cuDNN flags against assignment.
    """
    saved_matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield
    torch.backends.cuda.matmul.allow_tf32 = saved_matmul


def make_pair(kind, dtype, device, seed=0, **kwargs):
    """A torch module and ours (`kind` names both) holding the same parameters."""
    torch.manual_seed(seed)
    torch_module = getattr(torch.nn, kind)(**kwargs, dtype=TORCH_DTYPE[np.dtype(dtype)], device=device)
    module = getattr(nn, kind)(**kwargs)
    load_from_torch(module, torch_module)
    return module, torch_module


def check_sequence_layer(kind, kwargs, x_shape, with_state, dtype, device, seed=0, training=True):
    """Forward and backward of an RNN/LSTM/GRU and torch's, with upstream gradients on the
    output and on every final state at once; compare outputs, final states, dinput, dh0
    (dc0) and every parameter gradient."""
    rng = np.random.default_rng(seed)
    module, torch_module = make_pair(kind, dtype, device, seed, **kwargs)
    module.train(training)
    torch_module.train(training)
    names = ("h", "c") if kind == "LSTM" else ("h",)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    batch = x_shape[0] if kwargs.get("batch_first") else x_shape[1]
    # With proj_size an LSTM's h has proj_size entries; c keeps hidden_size.
    sizes = {"h": kwargs.get("proj_size") or kwargs["hidden_size"], "c": kwargs["hidden_size"]}
    state_shapes = [(layers, batch, sizes[n]) if len(x_shape) == 3 else (layers, sizes[n]) for n in names]

    x = rng.standard_normal(x_shape).astype(dtype)
    states = [rng.standard_normal(shape).astype(dtype) for shape in state_shapes] if with_state else []
    x_t = to_torch(x, device, requires_grad=True)
    states_t = [to_torch(s, device, requires_grad=True) for s in states]
    pack = (lambda s: tuple(s) if kind == "LSTM" else s[0]) if with_state else (lambda s: None)

    output, final = module(x, pack(states))
    output_t, final_t = torch_module(x_t, pack(states_t))
    finals, finals_t = (list(final), list(final_t)) if kind == "LSTM" else ([final], [final_t])
    assert_close(output, output_t, dtype, f"{kind} forward")
    for name, ours, theirs in zip(names, finals, finals_t):
        assert_close(ours, theirs, dtype, f"{kind} {name}_n")

    upstream = [rng.standard_normal(a.shape).astype(dtype) for a in [output] + finals]
    result = module.backward(*upstream)
    torch.autograd.backward([output_t] + finals_t, [to_torch(g, device) for g in upstream])
    if with_state:
        grad_input, grad_state = result
        grad_states = list(grad_state) if kind == "LSTM" else [grad_state]
    else:
        assert isinstance(result, np.ndarray), "without an initial state backward returns grad_input alone"
        grad_input, grad_states = result, []
    assert grad_input.dtype == np.dtype(dtype)
    assert_close(grad_input, x_t.grad, dtype, f"{kind} dinput")
    for name, ours, theirs in zip(names, grad_states, states_t):
        assert_close(ours, theirs.grad, dtype, f"{kind} d{name}0")
    assert_param_grads_close(module, torch_module, dtype, kind)


def check_cell(kind, kwargs, x_shape, with_state, dtype, device, seed=0):
    """One step of RNNCell/LSTMCell/GRUCell against torch; backward returns (dinput, dhx)."""
    rng = np.random.default_rng(seed)
    module, torch_module = make_pair(kind, dtype, device, seed, **kwargs)
    names = ("h", "c") if kind == "LSTMCell" else ("h",)
    state_shape = x_shape[:-1] + (kwargs["hidden_size"],)
    x = rng.standard_normal(x_shape).astype(dtype)
    states = [rng.standard_normal(state_shape).astype(dtype) for _ in names]
    x_t = to_torch(x, device, requires_grad=True)
    states_t = [to_torch(s, device, requires_grad=True) for s in states]
    pack = (lambda s: tuple(s) if kind == "LSTMCell" else s[0]) if with_state else (lambda s: None)

    new, new_t = module(x, pack(states)), torch_module(x_t, pack(states_t))
    news, news_t = (list(new), list(new_t)) if kind == "LSTMCell" else ([new], [new_t])
    for name, ours, theirs in zip(names, news, news_t):
        assert_close(ours, theirs, dtype, f"{kind} forward {name}'")
    upstream = [rng.standard_normal(a.shape).astype(dtype) for a in news]
    grad_input, grad_state = module.backward(*upstream)
    torch.autograd.backward(news_t, [to_torch(g, device) for g in upstream])
    assert_close(grad_input, x_t.grad, dtype, f"{kind} dinput")
    if with_state:
        grad_states = list(grad_state) if kind == "LSTMCell" else [grad_state]
        for name, ours, theirs in zip(names, grad_states, states_t):
            assert_close(ours, theirs.grad, dtype, f"{kind} d{name}")
    assert_param_grads_close(module, torch_module, dtype, kind)


# ---------------------------------------------------------------------- RNN vs torch
RNN_CASES = {
    "one_layer": (dict(input_size=3, hidden_size=5), (6, 4, 3), False),
    "one_layer_with_h0": (dict(input_size=3, hidden_size=5), (6, 4, 3), True),
    "two_layers_batch_first_with_h0":
        (dict(input_size=4, hidden_size=5, num_layers=2, batch_first=True), (3, 7, 4), True),
    "three_layers_relu": (dict(input_size=2, hidden_size=6, num_layers=3, nonlinearity="relu"), (5, 3, 2), True),
    "no_bias_relu_batch_first":
        (dict(input_size=3, hidden_size=4, bias=False, nonlinearity="relu", batch_first=True), (2, 5, 3), False),
    "unbatched_two_layers": (dict(input_size=3, hidden_size=5, num_layers=2), (6, 3), True),
    "single_time_step": (dict(input_size=3, hidden_size=5, num_layers=2), (1, 4, 3), True),
    "bidirectional_two_layers":
        (dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 3), True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(RNN_CASES))
def test_rnn_forward_and_backward_match_torch(case, dtype, device):
    kwargs, x_shape, with_state = RNN_CASES[case]
    check_sequence_layer("RNN", kwargs, x_shape, with_state, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_with_dropout_matches_torch_in_eval_mode(dtype, device):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=3, dropout=0.5)
    check_sequence_layer("RNN", kwargs, (5, 2, 3), True, dtype, device, training=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs,x_shape,with_state", [
    (dict(input_size=3, hidden_size=5), (4, 3), True),
    (dict(input_size=3, hidden_size=5), (4, 3), False),
    (dict(input_size=2, hidden_size=4, nonlinearity="relu", bias=False), (6, 2), True),
    (dict(input_size=3, hidden_size=2), (3,), True),
])
def test_rnncell_step_matches_torch(kwargs, x_shape, with_state, dtype, device):
    check_cell("RNNCell", kwargs, x_shape, with_state, dtype, device)


def test_rnn_state_dict_has_torch_keys_in_torch_order():
    for kwargs in (dict(num_layers=2), dict(num_layers=2, bias=False), dict(num_layers=2, bidirectional=True)):
        ours, theirs = nn.RNN(3, 4, **kwargs).state_dict(), torch.nn.RNN(3, 4, **kwargs).state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == tuple(v.shape) for k, v in theirs.items())
    assert list(nn.RNNCell(3, 4).state_dict()) == list(torch.nn.RNNCell(3, 4).state_dict())


def test_rnn_init_is_uniform_within_one_over_sqrt_hidden_size():
    rnn = nn.RNN(10, 400, num_layers=2)
    bound = 1 / np.sqrt(400)
    for name, value in rnn.named_parameters():
        assert value.dtype == np.float32
        assert np.abs(value).max() <= bound, name
    # U(−b, b) has standard deviation b/√3: spread over the interval, not just bounded.
    assert abs(rnn.weight_hh_l1.std() - bound / np.sqrt(3)) < 0.02 * bound
    assert nn.RNN(3, 4, dtype=np.float64).weight_ih_l0.dtype == np.float64


def test_rnn_computes_in_float32_without_promotion(rng):
    rnn = nn.RNN(3, 4, num_layers=2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    output, h_n = rnn(x, np.zeros((2, 2, 4), np.float32))
    assert output.dtype == h_n.dtype == np.float32
    grad_input, grad_h0 = rnn.backward(np.ones_like(output), np.ones_like(h_n))
    assert grad_input.dtype == grad_h0.dtype == np.float32


def test_rnn_gradients_accumulate_across_backward_calls(rng):
    rnn = nn.RNN(3, 4)
    x = rng.standard_normal((5, 2, 3))
    rnn(x)
    rnn.backward(np.ones((5, 2, 4)))
    once = rnn.grads["weight_hh_l0"].copy()
    rnn(x)
    rnn.backward(np.ones((5, 2, 4)))
    np.testing.assert_allclose(rnn.grads["weight_hh_l0"], 2 * once, rtol=1e-6)


def test_rnn_dropout_between_layers_only_in_training_mode(rng):
    rnn = nn.RNN(3, 8, num_layers=2, dropout=0.5)
    x = rng.standard_normal((4, 3, 3))
    train_a, train_b = rnn(x)[0], rnn(x)[0]
    assert not np.allclose(train_a, train_b), "each training forward draws a new mask"
    rnn.eval()
    np.testing.assert_array_equal(rnn(x)[0], rnn(x)[0])


def test_gradcheck_of_rnn_with_initial_state(rng):
    for kwargs in (dict(num_layers=2), dict(num_layers=2, nonlinearity="relu", batch_first=True),
                   dict(bidirectional=True, bias=False)):
        rnn = nn.RNN(2, 3, **kwargs)
        layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
        x = rng.standard_normal((4, 2, 2))  # batch_first: batch 4, else batch 2
        h0 = rng.standard_normal((layers, 4 if rnn.batch_first else 2, 3))
        report = check_module(rnn, x, h0)
        assert {"input 0", "input 1", "weight_hh_l0"} <= set(report.errors)
        assert report.worst < 1e-7, str(report)


def test_gradcheck_of_rnn_with_dropout_in_training_mode(rng):
    # check_module reseeds before every forward, so every evaluation sees the same mask.
    report = check_module(nn.RNN(2, 3, num_layers=2, dropout=0.4), rng.standard_normal((3, 2, 2)))
    assert report.worst < 1e-7, str(report)


def test_gradcheck_of_rnncell(rng):
    for cell in (nn.RNNCell(3, 4), nn.RNNCell(3, 4, nonlinearity="relu", bias=False)):
        report = check_module(cell, rng.standard_normal((2, 3)), rng.standard_normal((2, 4)))
        assert report.worst < 1e-7, str(report)


def test_rnn_repr_reads_like_torch():
    for args, kwargs in [((10, 20), {}), ((10, 20), dict(num_layers=2, batch_first=True)),
                         ((3, 4), dict(nonlinearity="relu", bias=False, dropout=0.5, num_layers=2)),
                         ((3, 4), dict(bidirectional=True))]:
        assert repr(nn.RNN(*args, **kwargs)) == repr(torch.nn.RNN(*args, **kwargs))
    for kwargs in ({}, dict(nonlinearity="relu", bias=False)):
        assert repr(nn.RNNCell(3, 4, **kwargs)) == repr(torch.nn.RNNCell(3, 4, **kwargs))


# ---------------------------------------------------------------------- RNN errors
@pytest.mark.parametrize("make,call,error,message", [
    (lambda: nn.RNN(10, 20), lambda m: m(np.zeros((5, 3, 7))), ValueError,
     r"RNN expects input of shape \(T, N, 10\) or \(T, 10\) with T >= 1, got shape \(5, 3, 7\)"),
    (lambda: nn.RNN(10, 20, batch_first=True), lambda m: m(np.zeros((3, 10))[None, None]), ValueError,
     r"RNN expects input of shape \(N, T, 10\) or \(T, 10\)"),
    (lambda: nn.RNN(3, 4), lambda m: m(np.zeros((0, 2, 3))), ValueError, "with T >= 1"),
    (lambda: nn.RNN(3, 4, num_layers=2), lambda m: m(np.zeros((5, 2, 3)), np.zeros((1, 2, 4))), ValueError,
     r"RNN expects h0 of shape \(2, 2, 4\) \(batch size 2\), got shape \(1, 2, 4\)"),
    (lambda: nn.RNN(3, 4), lambda m: m(np.zeros((5, 3)), np.zeros((1, 1, 4))), ValueError,
     r"RNN expects h0 of shape \(1, 4\) \(unbatched input\), got shape \(1, 1, 4\)"),
    (lambda: nn.RNN(3, 4), lambda m: m(np.zeros((5, 2, 3), np.int64)), TypeError, "floating-point input"),
    (lambda: nn.RNN(3, 4), lambda m: m(torch.zeros(5, 2, 3)), TypeError, "NumPy arrays"),
    (lambda: nn.RNN(3, 4), lambda m: m.backward(np.zeros((5, 2, 4))), RuntimeError,
     r"RNN.backward\(\) was called before forward\(\)"),
    (lambda: nn.RNNCell(3, 4), lambda m: m.backward(np.zeros((2, 4))), RuntimeError,
     r"RNNCell.backward\(\) was called before forward\(\)"),
    (lambda: nn.RNNCell(3, 4), lambda m: m(np.zeros((2, 5))), ValueError,
     r"RNNCell expects input of shape \(N, 3\) or \(3,\), got shape \(2, 5\)"),
    (lambda: nn.RNNCell(3, 4), lambda m: m(np.zeros((2, 3)), np.zeros((3, 4))), ValueError,
     r"RNNCell expects hx of shape \(2, 4\), got shape \(3, 4\)"),
])
def test_rnn_rejects_bad_input_with_a_clear_message(make, call, error, message):
    with pytest.raises(error, match=message):
        call(make())


def test_rnn_backward_rejects_gradients_of_the_wrong_shape():
    rnn = nn.RNN(3, 4, num_layers=2, batch_first=True)
    rnn(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"RNN.backward expects grad_output of shape \(2, 5, 4\), got shape \(5, 2, 4\)"):
        rnn.backward(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match=r"RNN.backward expects grad_h_n of shape \(2, 2, 4\), got shape \(1, 2, 4\)"):
        rnn.backward(np.zeros((2, 5, 4)), np.zeros((1, 2, 4)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(nonlinearity="sigmoid"), "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'"),
    (dict(dropout=1.5), r"dropout should be a number in range \[0, 1\]"),
    (dict(hidden_size=0), "hidden_size must be an integer >= 1, got 0"),
    (dict(num_layers=0), "num_layers must be an integer >= 1, got 0"),
])
def test_rnn_rejects_bad_arguments(kwargs, message):
    args = dict(input_size=3, hidden_size=4) | kwargs
    with pytest.raises(ValueError, match=message):
        nn.RNN(**args)


def test_rnn_warns_like_torch_about_dropout_with_one_layer():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.RNN(3, 4, dropout=0.5)


# ---------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx,index_shape", [(None, (4, 7)), (0, (3, 5)), (-1, (2, 3, 4)), (2, (6,)), (None, ())])
def test_embedding_matches_torch_with_repeated_and_padding_indices(padding_idx, index_shape, dtype, device, rng):
    torch_embedding = torch.nn.Embedding(6, 3, padding_idx=padding_idx,
                                         dtype=TORCH_DTYPE[np.dtype(dtype)], device=device)
    embedding = nn.Embedding(6, 3, padding_idx=padding_idx)
    load_from_torch(embedding, torch_embedding)
    indices = rng.integers(0, 6, size=index_shape)  # few rows, so indices repeat
    output = embedding(indices)
    output_t = torch_embedding(to_torch(indices, device))
    assert_close(output, output_t, dtype, "Embedding forward")
    grad_output = rng.standard_normal(output.shape).astype(dtype)
    assert embedding.backward(grad_output) is None
    output_t.backward(to_torch(grad_output, device))
    assert_param_grads_close(embedding, torch_embedding, dtype, "Embedding")


def test_embedding_padding_row_starts_at_zero_and_gets_no_gradient():
    embedding = nn.Embedding(5, 4, padding_idx=-2)
    assert embedding.padding_idx == 3 == torch.nn.Embedding(5, 4, padding_idx=-2).padding_idx
    assert not embedding.weight[3].any() and embedding.weight[2].any()
    embedding(np.array([[3, 1], [3, 3]]))
    embedding.backward(np.ones((2, 2, 4)))
    assert not embedding.grads["weight"][3].any()
    np.testing.assert_array_equal(embedding.grads["weight"][1], np.ones(4))


def test_embedding_init_is_standard_normal():
    weight = nn.Embedding(2000, 50).weight
    assert weight.dtype == np.float32 and weight.shape == (2000, 50)
    assert abs(weight.mean()) < 0.01 and abs(weight.std() - 1) < 0.01


def test_embedding_gradcheck(rng):
    # Without padding_idx: torch (and we) deliberately give the padding row no gradient,
    # although the output does depend on it.
    embedding = nn.Embedding(5, 3)
    report = check_module(embedding, rng.integers(0, 5, size=(4, 3)))
    assert set(report.errors) == {"weight"}
    assert report.worst < 1e-7, str(report)


def test_embedding_from_pretrained_copies_and_freezes(rng):
    table = rng.standard_normal((4, 2))
    frozen = nn.Embedding.from_pretrained(table)
    np.testing.assert_array_equal(frozen(np.array([2, 0])), table[[2, 0]])
    frozen.backward(np.ones((2, 2)))
    assert not frozen.grads["weight"].any()
    trainable = nn.Embedding.from_pretrained(table, freeze=False)
    trainable(np.array([2, 2]))
    trainable.backward(np.ones((2, 2)))
    np.testing.assert_array_equal(trainable.grads["weight"][2], [2.0, 2.0])


def test_embedding_repr_and_state_dict_read_like_torch():
    for kwargs in ({}, dict(padding_idx=0), dict(padding_idx=-1, norm_type=1.0)):
        assert repr(nn.Embedding(10, 3, **kwargs)) == repr(torch.nn.Embedding(10, 3, **kwargs))
    assert list(nn.Embedding(10, 3).state_dict()) == list(torch.nn.Embedding(10, 3).state_dict())


@pytest.mark.parametrize("indices,error,message", [
    (np.array([0.0, 1.0]), TypeError, "Embedding expects integer indices .* got dtype float64"),
    (np.array([True, False]), TypeError, "Embedding expects integer indices"),
    (np.array([[0, 5]]), ValueError, r"Embedding index out of range: expected 0 <= index < 5, got indices in \[0, 5\]"),
    (np.array([-1, 2]), ValueError, r"Embedding index out of range: .* got indices in \[-1, 2\]"),
    (torch.tensor([0, 1]), TypeError, "NumPy arrays"),
])
def test_embedding_rejects_bad_indices_with_a_clear_message(indices, error, message):
    with pytest.raises(error, match=message):
        nn.Embedding(5, 2)(indices)


def test_embedding_rejects_unsupported_options_and_bad_padding_idx():
    for kwargs in (dict(max_norm=1.0), dict(scale_grad_by_freq=True)):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))}=.* is not supported"):
            nn.Embedding(5, 2, **kwargs)
    with pytest.raises(ValueError, match="padding_idx must be within num_embeddings"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(RuntimeError, match=r"Embedding.backward\(\) was called before forward\(\)"):
        nn.Embedding(5, 2).backward(np.zeros((1, 2)))
    embedding = nn.Embedding(5, 2)
    embedding(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"Embedding.backward expects grad_output of shape \(2, 2\), got shape \(2, 3\)"):
        embedding.backward(np.zeros((2, 3)))
