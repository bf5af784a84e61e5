"""Dropout (chapter 7).

Our masks come from dlcourse's generator, torch's from its own, so masks cannot be compared
directly. Instead: the mask is recovered from the output on an all-ones input, the keep rate
and the mean are checked statistically, and torch is run with our mask.
"""
import warnings

import numpy as np
import pytest
import torch

import dlcourse
from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, assert_close, to_torch

pytestmark = pytest.mark.ch07


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 4), (7,)])
def test_dropout_in_eval_mode_is_the_identity_forward_and_backward(shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    dropout = nn.Dropout(0.7).eval()
    np.testing.assert_array_equal(dropout(x), x)
    g = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(dropout.backward(g), g)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_backward_applies_the_forward_mask_scaled_by_one_over_keep(p):
    dropout = nn.Dropout(p)
    scaled_mask = dropout(np.ones((64, 32)))
    # Each output is 0 (dropped) or 1/(1−p) (kept), nothing else.
    assert set(np.unique(scaled_mask)) <= {0.0, 1 / (1 - p)}
    g = np.random.default_rng(2).standard_normal((64, 32))
    np.testing.assert_array_equal(dropout.backward(g), g * scaled_mask)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_keep_rate_is_one_minus_p_within_four_standard_deviations(p):
    n = 10 ** 6
    kept = np.count_nonzero(nn.Dropout(p)(np.ones(n, np.float32)))
    # kept ~ Binomial(n, 1 − p)
    std = np.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 4 * std, f"kept {kept} of {n} with p={p}"


@pytest.mark.parametrize("p", [0.3, 0.75])
def test_dropout_preserves_the_mean_in_expectation(p):
    n = 10 ** 6
    x = np.random.default_rng(3).uniform(1.0, 3.0, n)
    y = nn.Dropout(p)(x)
    # E[y_i] = x_i; Var[y_i] = x_i² p / (1 − p), so the mean of y − x has this standard deviation:
    std = np.sqrt(np.sum(x ** 2) * p / (1 - p)) / n
    assert abs(y.mean() - x.mean()) < 4 * std


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p,shape", [(0.5, (6, 7)), (0.2, (2, 3, 4, 5)), (0.9, (50,))])
def test_dropout_matches_torch_given_the_same_mask(p, shape, dtype, device):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    dropout = nn.Dropout(p)
    y = dropout(x)
    mask = y != 0
    xt = to_torch(x, device, requires_grad=True)
    yt = xt * to_torch(mask, device) / (1 - p)
    assert_close(y, yt, dtype, "Dropout forward")
    g = rng.standard_normal(shape).astype(dtype)
    yt.backward(to_torch(g, device))
    assert_close(dropout.backward(g), xt.grad, dtype, "Dropout dinput")
    assert y.dtype == np.dtype(dtype)


def test_dropout_with_p_one_returns_zeros_without_dividing_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dropout = nn.Dropout(1.0)
        y = dropout(np.ones((3, 4)))
        g = dropout.backward(np.ones((3, 4)))
    assert not y.any() and not g.any() and np.isfinite(y).all()
    assert not torch.nn.Dropout(1.0)(torch.ones(3, 4)).any()


def test_dropout_with_p_zero_keeps_everything_in_training():
    x = np.random.default_rng(5).standard_normal((4, 4))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


def test_dropout_masks_are_reproducible_with_manual_seed_and_fresh_on_each_call():
    x = np.ones((20, 20))
    dropout = nn.Dropout()
    dlcourse.manual_seed(11)
    first, second = dropout(x), dropout(x)
    dlcourse.manual_seed(11)
    np.testing.assert_array_equal(dropout(x), first)
    assert (first != second).any()


def test_dropout_inplace_writes_into_the_input():
    x = np.ones((8, 8))
    y = nn.Dropout(0.5, inplace=True)(x)
    assert y is x and set(np.unique(x)) <= {0.0, 2.0} and (x == 0).any()


def test_dropout_train_and_eval_switch_through_a_container():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    x = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model(x), model[0](x))
    model.train()
    assert model[1].training
    x = np.random.default_rng(6).standard_normal((16, 4)).astype(np.float32)
    y, hidden = model(x), model[0](x)
    dropped = y == 0
    assert dropped.any() and not dropped.all()
    np.testing.assert_allclose(y[~dropped], 2 * hidden[~dropped], rtol=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.6])
def test_gradcheck_of_dropout(p):
    report = check_module(nn.Dropout(p), np.random.default_rng(7).standard_normal((4, 6)))
    assert report.worst < 1e-7, str(report)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_a_probability_outside_zero_one_like_torch(p):
    with pytest.raises(ValueError) as theirs:
        torch.nn.Dropout(p)
    with pytest.raises(ValueError, match=f"^{theirs.value}$"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        nn.Dropout(p)


def test_dropout_repr_equals_torch():
    assert repr(nn.Dropout()) == repr(torch.nn.Dropout())
    assert repr(nn.Dropout(0.25, inplace=True)) == repr(torch.nn.Dropout(0.25, inplace=True))


def test_dropout_rejects_bad_input_and_misordered_backward():
    with pytest.raises(TypeError, match="Dropout expects a floating-point input.*int64"):
        nn.Dropout()(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(RuntimeError, match=r"Dropout.backward\(\) was called before forward\(\)"):
        nn.Dropout().backward(np.ones(3))
    dropout = nn.Dropout()
    dropout(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Dropout.backward expects grad_output of shape \(2, 3\), got \(3, 2\)"):
        dropout.backward(np.ones((3, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p,training", [(0.5, False), (1.0, False), (0.0, True), (1.0, True)])
def test_dropout_matches_torch_where_no_randomness_is_left(p, training, dtype, rng):
    """In eval mode, and with p = 0 or p = 1 in training, the output is deterministic."""
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    ours, theirs = nn.Dropout(p).train(training), torch.nn.Dropout(p).train(training)
    xt = to_torch(x, "cpu", requires_grad=True)
    yt = theirs(xt)
    assert_close(ours(x), yt, dtype, "Dropout forward")
    grad_output = rng.standard_normal(x.shape).astype(dtype)
    yt.backward(to_torch(grad_output, "cpu"))
    assert_close(ours.backward(grad_output), xt.grad, dtype, "Dropout dinput")
