"""BatchNorm1d, BatchNorm2d and LayerNorm against torch.nn (chapter 7)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch07


def make_inputs(shape, steps, seed=0):
    """Batches whose channels have different means and scales, so running stats move."""
    rng = np.random.default_rng(seed)
    channels = shape[1] if len(shape) > 1 else 1
    scale = rng.uniform(0.5, 3.0, channels).reshape((1, -1) + (1,) * (len(shape) - 2))
    offset = rng.uniform(-2.0, 2.0, channels).reshape(scale.shape)
    return [rng.standard_normal(shape) * scale + offset for _ in range(steps)]


def run_both(module, torch_module, inputs, dtype, device, load=True):
    """Forward and backward on each batch in turn (gradients accumulate on both sides);
    compare outputs, input gradients, parameter gradients and buffers after every step."""
    if load:
        load_from_torch(module, torch_module)
    name = type(module).__name__
    rng = np.random.default_rng(7)
    for x in inputs:
        x = x.astype(dtype)
        y = module(x)
        assert y.dtype == np.dtype(dtype), f"{name} returned {y.dtype} for {np.dtype(dtype)} input"
        xt = to_torch(x, device, requires_grad=True)
        yt = torch_module(xt)
        assert_close(y, yt, dtype, f"{name} forward")
        grad_output = rng.standard_normal(y.shape).astype(dtype)
        grad_input = module.backward(grad_output)
        yt.backward(to_torch(grad_output, device))
        assert_close(grad_input, xt.grad, dtype, f"{name} dinput")
        if any(True for _ in torch_module.parameters()):
            assert_param_grads_close(module, torch_module, dtype, name)
        assert_buffers_close(module, torch_module, dtype)


def assert_buffers_close(module, torch_module, dtype):
    name = type(module).__name__
    for key, value in torch_module.named_buffers():
        ours = getattr(module, key)
        if key == "num_batches_tracked":
            assert ours.dtype == np.int64 and ours.shape == ()
            assert int(ours) == int(value), f"{name} num_batches_tracked {int(ours)} != {int(value)}"
        else:
            assert_close(ours, value, dtype, f"{name} {key}")


def torch_module_like(cls_name, *args, dtype, device, **kwargs):
    return getattr(torch.nn, cls_name)(*args, **kwargs, dtype=TORCH_DTYPE[np.dtype(dtype)], device=device)


# --------------------------------------------------------------------------- BatchNorm

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 4), (3, 4), (5, 4, 7), (3, 4, 1)])
def test_batchnorm1d_training_matches_torch_over_three_steps(shape, dtype, device):
    torch_bn = torch_module_like("BatchNorm1d", 4, dtype=dtype, device=device)
    torch.nn.init.uniform_(torch_bn.weight, 0.5, 1.5)
    torch.nn.init.uniform_(torch_bn.bias, -1, 1)
    run_both(nn.BatchNorm1d(4), torch_bn, make_inputs(shape, 3), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 3, 4, 6), (1, 3, 2, 2)])
def test_batchnorm2d_training_matches_torch_over_three_steps(shape, dtype, device):
    torch_bn = torch_module_like("BatchNorm2d", 3, momentum=0.3, eps=1e-3, dtype=dtype, device=device)
    torch.nn.init.uniform_(torch_bn.weight, 0.5, 1.5)
    torch.nn.init.uniform_(torch_bn.bias, -1, 1)
    run_both(nn.BatchNorm2d(3, momentum=0.3, eps=1e-3), torch_bn, make_inputs(shape, 3), dtype, device)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(3, 6), channels=st.integers(1, 5), length=st.sampled_from([None, 1, 4]),
       momentum=st.sampled_from([None, 0.1, 0.5]))
def test_batchnorm1d_matches_torch_on_generated_shapes(batch, channels, length, momentum):
    shape = (batch, channels) if length is None else (batch, channels, length)
    torch_bn = torch.nn.BatchNorm1d(channels, momentum=momentum, dtype=torch.float64)
    run_both(nn.BatchNorm1d(channels, momentum=momentum), torch_bn, make_inputs(shape, 3, seed=batch),
             np.float64, "cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                            ("BatchNorm2d", (4, 3, 3, 5))])
def test_batchnorm_eval_after_training_uses_running_stats_like_torch(cls_name, shape, dtype, device):
    torch_bn = torch_module_like(cls_name, 3, dtype=dtype, device=device)
    ours = getattr(nn, cls_name)(3)
    run_both(ours, torch_bn, make_inputs(shape, 4), dtype, device)
    ours.eval()
    torch_bn.eval()
    # In eval mode the running stats are constants: forward and backward are affine in x.
    run_both(ours, torch_bn, make_inputs(shape, 2, seed=5), dtype, device, load=False)
    assert int(ours.num_batches_tracked) == 4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_loaded_from_trained_torch_computes_the_same_eval_function(dtype, device):
    torch_bn = torch_module_like("BatchNorm2d", 3, dtype=dtype, device=device)
    for x in make_inputs((4, 3, 3, 3), 5):
        torch_bn(to_torch(x.astype(dtype), device))
    torch_bn.eval()
    ours = nn.BatchNorm2d(3).eval()
    run_both(ours, torch_bn, make_inputs((2, 3, 3, 3), 1, seed=3), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (5, 2)), ("BatchNorm2d", (3, 2, 4, 4))])
def test_batchnorm_momentum_none_keeps_cumulative_average_like_torch(cls_name, shape, dtype, device):
    torch_bn = torch_module_like(cls_name, 2, momentum=None, dtype=dtype, device=device)
    ours = getattr(nn, cls_name)(2, momentum=None)
    run_both(ours, torch_bn, make_inputs(shape, 4), dtype, device)
    ours.eval()
    torch_bn.eval()
    run_both(ours, torch_bn, make_inputs(shape, 1, seed=9), dtype, device, load=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (5, 3, 2)), ("BatchNorm2d", (2, 3, 3, 4))])
def test_batchnorm_without_running_stats_uses_batch_stats_in_train_and_eval(cls_name, shape, dtype, device):
    torch_bn = torch_module_like(cls_name, 3, track_running_stats=False, dtype=dtype, device=device)
    ours = getattr(nn, cls_name)(3, track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    run_both(ours, torch_bn, make_inputs(shape, 2), dtype, device)
    ours.eval()
    torch_bn.eval()
    run_both(ours, torch_bn, make_inputs(shape, 2, seed=4), dtype, device, load=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine,bias", [(False, True), (True, False)])
@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (6, 3)), ("BatchNorm2d", (2, 3, 4, 4))])
def test_batchnorm_affine_false_and_bias_false_match_torch(cls_name, shape, affine, bias, dtype, device):
    torch_bn = torch_module_like(cls_name, 3, affine=affine, bias=bias, dtype=dtype, device=device)
    if affine:
        torch.nn.init.uniform_(torch_bn.weight, 0.5, 1.5)
    ours = getattr(nn, cls_name)(3, affine=affine, bias=bias)
    run_both(ours, torch_bn, make_inputs(shape, 3), dtype, device)
    ours.eval()
    torch_bn.eval()
    run_both(ours, torch_bn, make_inputs(shape, 1, seed=2), dtype, device, load=False)


@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (5, 3)), ("BatchNorm1d", (3, 3, 4)),
                                            ("BatchNorm2d", (2, 3, 3, 3))])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False}])
def test_gradcheck_of_batchnorm_in_training_mode(cls_name, shape, kwargs):
    module = getattr(nn, cls_name)(3, **kwargs)
    if module.weight is not None:
        module.weight[...] = [0.5, 1.5, -1.0]
    x = make_inputs(shape, 1)[0]
    report = check_module(module, x)
    assert report.worst < 1e-7, str(report)


@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (4, 3)), ("BatchNorm2d", (2, 3, 2, 3))])
def test_gradcheck_of_batchnorm_in_eval_mode(cls_name, shape):
    module = getattr(nn, cls_name)(3)
    for x in make_inputs(shape, 3):
        module(x)
    module.eval()
    report = check_module(module, make_inputs(shape, 1, seed=1)[0])
    assert report.worst < 1e-7, str(report)


@pytest.mark.parametrize("cls_name", ["BatchNorm1d", "BatchNorm2d"])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"bias": False}, {"track_running_stats": False},
                                    {"affine": False, "track_running_stats": False}])
def test_batchnorm_state_dict_has_torch_keys_shapes_and_dtypes(cls_name, kwargs):
    ours = getattr(nn, cls_name)(5, **kwargs).state_dict()
    theirs = getattr(torch.nn, cls_name)(5, **kwargs).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == tuple(value.shape), key
        assert str(ours[key].dtype) == str(value.dtype).replace("torch.", ""), key


def test_batchnorm_initial_values_and_dtype_follow_torch():
    bn = nn.BatchNorm1d(4)
    assert bn.weight.dtype == np.float32 and np.all(bn.weight == 1) and np.all(bn.bias == 0)
    assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1) and int(bn.num_batches_tracked) == 0
    bn64 = nn.BatchNorm2d(2, dtype=np.float64)
    assert bn64.weight.dtype == np.float64 and bn64.running_var.dtype == np.float64


@pytest.mark.parametrize("make", [
    lambda m: m.BatchNorm1d(4),
    lambda m: m.BatchNorm1d(4, momentum=None, affine=False),
    lambda m: m.BatchNorm2d(3, eps=1e-3, track_running_stats=False, bias=False),
    lambda m: m.LayerNorm(5),
    lambda m: m.LayerNorm([3, 4], eps=1e-6, elementwise_affine=False),
    lambda m: m.LayerNorm(5, bias=False),
])
def test_normalization_repr_equals_torch(make):
    assert repr(make(nn)) == repr(make(torch.nn))


def test_batchnorm_gradients_accumulate_until_zero_grad():
    bn = nn.BatchNorm1d(3)
    x = make_inputs((4, 3), 1)[0].astype(np.float32)
    g = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    bn(x)
    bn.backward(g)
    once = bn.grads["weight"].copy()
    bn(x)
    bn.backward(g)
    np.testing.assert_allclose(bn.grads["weight"], 2 * once, rtol=1e-6)
    bn.zero_grad()
    assert not bn.grads["weight"].any() and not bn.grads["bias"].any()


@pytest.mark.parametrize("module,bad,error,message", [
    (nn.BatchNorm2d(3), np.ones((2, 4, 5, 5)), ValueError,
     r"BatchNorm2d expects input of shape \(N, 3, H, W\), got shape \(2, 4, 5, 5\)"),
    (nn.BatchNorm2d(3), np.ones((2, 3, 5)), ValueError,
     r"BatchNorm2d expects input of shape \(N, 3, H, W\), got shape \(2, 3, 5\)"),
    (nn.BatchNorm1d(4), np.ones((2, 3)), ValueError,
     r"BatchNorm1d expects input of shape \(N, 4\) or \(N, 4, L\), got shape \(2, 3\)"),
    (nn.BatchNorm1d(4), np.ones((2, 4, 3, 3)), ValueError,
     r"BatchNorm1d expects input of shape \(N, 4\) or \(N, 4, L\), got shape \(2, 4, 3, 3\)"),
    (nn.BatchNorm1d(4), np.ones(4), ValueError, r"got shape \(4,\)"),
    (nn.BatchNorm1d(4), np.ones((2, 4), dtype=np.int64), TypeError, "floating-point input.*int64"),
    (nn.LayerNorm(5), np.ones((2, 4)), ValueError, r"LayerNorm expects input of shape \(\*, 5\), got shape \(2, 4\)"),
    (nn.LayerNorm((3, 4)), np.ones((2, 4, 3)), ValueError,
     r"LayerNorm expects input of shape \(\*, 3, 4\), got shape \(2, 4, 3\)"),
    (nn.LayerNorm((3, 4)), np.ones(4), ValueError, r"got shape \(4,\)"),
    (nn.LayerNorm(3), np.ones((2, 3), dtype=np.int32), TypeError, "floating-point input.*int32"),
])
def test_normalization_rejects_bad_input_with_a_clear_message(module, bad, error, message):
    with pytest.raises(error, match=message):
        module(bad)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.BatchNorm1d(3), (1, 3)),
    (lambda: nn.BatchNorm1d(3), (1, 3, 1)),
    (lambda: nn.BatchNorm2d(3), (1, 3, 1, 1)),
    (lambda: nn.BatchNorm1d(3, track_running_stats=False).eval(), (1, 3)),
])
def test_batchnorm_rejects_one_value_per_channel_when_using_batch_stats(make, shape):
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        make()(np.ones(shape))


def test_batchnorm_in_eval_mode_accepts_a_single_sample():
    bn = nn.BatchNorm1d(3).eval()
    np.testing.assert_allclose(bn(np.ones((1, 3))), np.ones((1, 3)) / np.sqrt(1 + 1e-5))


@pytest.mark.parametrize("module,shape", [(nn.BatchNorm1d(3), (2, 3)), (nn.BatchNorm2d(3), (2, 3, 2, 2)),
                                          (nn.LayerNorm(3), (2, 3))])
def test_normalization_backward_checks_order_and_grad_shape(module, shape):
    name = type(module).__name__
    with pytest.raises(RuntimeError, match=rf"{name}.backward\(\) was called before forward\(\)"):
        module.backward(np.ones(shape))
    module(np.random.default_rng(0).standard_normal(shape))
    with pytest.raises(ValueError, match=rf"{name}.backward expects grad_output of shape"):
        module.backward(np.ones((5,) + shape))


# --------------------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape,shape,kwargs", [
    (5, (4, 5), {}),
    (5, (2, 3, 5), {}),
    (5, (5,), {}),
    ((3, 4), (2, 3, 4), {}),
    ((3, 4), (2, 2, 3, 4), {"eps": 1e-3}),
    (6, (3, 6), {"elementwise_affine": False}),
    ((2, 3), (4, 2, 3), {"elementwise_affine": False}),
    (6, (2, 4, 6), {"bias": False}),
])
def test_layernorm_matches_torch(normalized_shape, shape, kwargs, dtype, device):
    torch_ln = torch_module_like("LayerNorm", normalized_shape, **kwargs, dtype=dtype, device=device)
    for parameter in torch_ln.parameters():
        torch.nn.init.uniform_(parameter, -1.5, 1.5)
    ours = nn.LayerNorm(normalized_shape, **kwargs)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal(shape) * 2 + 1 for _ in range(2)]
    run_both(ours, torch_ln, inputs, dtype, device)
    # No running statistics: eval mode computes the same function.
    ours.eval()
    torch_ln.eval()
    run_both(ours, torch_ln, inputs[:1], dtype, device, load=False)


@pytest.mark.parametrize("normalized_shape,shape,kwargs", [
    (4, (3, 4), {}),
    ((2, 3), (2, 2, 3), {}),
    (4, (2, 3, 4), {"elementwise_affine": False}),
    (4, (3, 4), {"bias": False}),
])
def test_gradcheck_of_layernorm(normalized_shape, shape, kwargs):
    module = nn.LayerNorm(normalized_shape, **kwargs)
    rng = np.random.default_rng(5)
    for parameter in module.parameters():
        parameter[...] = rng.uniform(-1.5, 1.5, parameter.shape)
    report = check_module(module, rng.standard_normal(shape))
    assert report.worst < 1e-7, str(report)


@pytest.mark.parametrize("normalized_shape,kwargs", [
    (5, {}), ((3, 4), {}), (5, {"elementwise_affine": False}), (5, {"bias": False}),
])
def test_layernorm_state_dict_has_torch_keys_and_shapes(normalized_shape, kwargs):
    ours = nn.LayerNorm(normalized_shape, **kwargs).state_dict()
    theirs = torch.nn.LayerNorm(normalized_shape, **kwargs).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == tuple(value.shape), key


def test_layernorm_keeps_float32_and_initialises_like_torch():
    ln = nn.LayerNorm((2, 3))
    assert ln.normalized_shape == (2, 3)
    assert ln.weight.dtype == np.float32 and np.all(ln.weight == 1) and np.all(ln.bias == 0)
    y = ln(np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32))
    assert y.dtype == np.float32
    assert nn.LayerNorm(3, dtype=np.float64).weight.dtype == np.float64
