"""Loss functions against torch.nn (chapter 5): values and input gradients for every reduction."""
import numpy as np
import pytest
import torch

from dlcourse import nn
from dlcourse.gradcheck import check_loss
from parity import DEVICES, DTYPES, assert_close, to_torch

pytestmark = pytest.mark.ch05

REDUCTIONS = ["mean", "sum", "none"]


def torch_kwargs(kwargs, dtype, device):
    """Constructor kwargs for torch: array arguments (weights) become tensors on `device`."""
    return {key: to_torch(np.asarray(value, dtype=dtype), device) if isinstance(value, np.ndarray) else value
            for key, value in kwargs.items()}


def run_both(name, kwargs, x, target, dtype, device):
    """Value and d loss / d input of ours and torch's, with the same upstream gradient for 'none'."""
    loss_fn = getattr(nn, name)(**kwargs)
    torch_loss_fn = getattr(torch.nn, name)(**torch_kwargs(kwargs, dtype, device))
    x = np.asarray(x, dtype=dtype)
    if np.issubdtype(np.asarray(target).dtype, np.floating):
        target = np.asarray(target, dtype=dtype)
    value = loss_fn(x, target)
    xt = to_torch(x, device, requires_grad=True)
    value_t = torch_loss_fn(xt, to_torch(target, device))
    if loss_fn.reduction == "none":
        assert isinstance(value, np.ndarray) and value.dtype == x.dtype
        grad_output = np.random.default_rng(3).standard_normal(value.shape).astype(dtype)
        grad_input = loss_fn.backward(grad_output)
        value_t.backward(to_torch(grad_output, device))
    else:
        assert isinstance(value, float)
        grad_input = loss_fn.backward()
        value_t.backward()
    assert_close(value, value_t, dtype, f"{name} forward")
    assert grad_input.dtype == x.dtype and grad_input.shape == x.shape
    assert_close(grad_input, xt.grad, dtype, f"{name} dinput")
    return value


def class_indices(rng, shape, classes):
    return rng.integers(0, classes, size=shape)


def probabilities(rng, shape, class_dim):
    logits = rng.standard_normal(shape)
    e = np.exp(logits - logits.max(axis=class_dim, keepdims=True))
    return e / e.sum(axis=class_dim, keepdims=True)


# ---------------------------------------------------------------------------- MSELoss
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)], ids=str)
def test_mse_loss_matches_torch_for_every_reduction(shape, reduction, dtype, device, rng):
    run_both("MSELoss", {"reduction": reduction}, rng.standard_normal(shape),
             rng.standard_normal(shape), dtype, device)


# ---------------------------------------------------------------------------- CrossEntropyLoss
def ce_case(kind, rng):
    """(input, target, kwargs) for a named CrossEntropyLoss scenario; C = 5 classes."""
    weight = rng.uniform(0.2, 2.0, 5)
    if kind == "indices":
        return rng.standard_normal((6, 5)), class_indices(rng, (6,), 5), {}
    if kind == "single_sample":
        return rng.standard_normal(5), np.array(3), {}
    if kind == "k_dimensional":
        return rng.standard_normal((2, 5, 3, 4)), class_indices(rng, (2, 3, 4), 5), {}
    if kind == "weight":
        return rng.standard_normal((6, 5)), class_indices(rng, (6,), 5), {"weight": weight}
    if kind == "ignore_index":
        target = class_indices(rng, (8,), 5)
        target[[1, 4]] = -100
        return rng.standard_normal((8, 5)), target, {"weight": weight}
    if kind == "custom_ignore_index":
        return rng.standard_normal((2, 5, 6)), class_indices(rng, (2, 6), 5), {"ignore_index": 2}
    if kind == "label_smoothing":
        return rng.standard_normal((6, 5)), class_indices(rng, (6,), 5), {"label_smoothing": 0.15}
    if kind == "label_smoothing_weight_ignore_index_k_dimensional":
        target = class_indices(rng, (3, 4), 5)
        target[0, :2] = -100
        return (rng.standard_normal((3, 5, 4)), target,
                {"label_smoothing": 0.3, "weight": weight})
    if kind == "probabilities":
        return rng.standard_normal((6, 5)), probabilities(rng, (6, 5), 1), {}
    if kind == "probabilities_k_dimensional_weight_smoothing":
        return (rng.standard_normal((2, 5, 3)), probabilities(rng, (2, 5, 3), 1),
                {"weight": weight, "label_smoothing": 0.2})
    if kind == "probabilities_single_sample":
        return rng.standard_normal(5), probabilities(rng, (5,), 0), {"label_smoothing": 0.1}
    raise KeyError(kind)


CE_KINDS = ["indices", "single_sample", "k_dimensional", "weight", "ignore_index", "custom_ignore_index",
            "label_smoothing", "label_smoothing_weight_ignore_index_k_dimensional", "probabilities",
            "probabilities_k_dimensional_weight_smoothing", "probabilities_single_sample"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", CE_KINDS)
def test_cross_entropy_matches_torch(kind, reduction, dtype, device, rng):
    x, target, kwargs = ce_case(kind, rng)
    run_both("CrossEntropyLoss", {**kwargs, "reduction": reduction}, 3 * x, target, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
def test_cross_entropy_is_finite_and_matches_torch_for_logits_of_1000(target_kind, reduction, dtype, device):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0], [1000.0, 1000.0, -1000.0]])
    target = np.array([1, 2, 0]) if target_kind == "indices" else np.array(
        [[0.0, 1.0, 0.0], [0.2, 0.0, 0.8], [0.5, 0.5, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = run_both("CrossEntropyLoss", {"reduction": reduction, "label_smoothing": 0.1},
                         x, target, dtype, device)
    assert np.all(np.isfinite(value))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_every_target_ignored_is_torchs_nan_with_zero_gradient(reduction):
    x = np.random.default_rng(0).standard_normal((3, 4))
    target = np.full(3, -100)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    value = loss_fn(x, target)
    xt = torch.tensor(x, requires_grad=True)
    value_t = torch.nn.CrossEntropyLoss(reduction=reduction)(xt, torch.tensor(target))
    np.testing.assert_array_equal(np.asarray(value), value_t.detach().numpy())  # nan for 'mean'
    value_t.sum().backward()
    grad = loss_fn.backward(None if reduction != "none" else np.ones(3))
    np.testing.assert_array_equal(grad, xt.grad.numpy())


# ---------------------------------------------------------------------------- BCEWithLogitsLoss
BCE_OPTIONS = {
    "plain": {},
    "weight": {"weight": np.array([0.5, 1.0, 2.0, 0.1])},
    "pos_weight": {"pos_weight": np.array([3.0, 0.5, 1.0, 2.0])},
    "weight_and_pos_weight": {"weight": np.array([[0.5], [2.0], [1.0]]), "pos_weight": np.array([3.0, 0.5, 1.0, 2.0])},
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(BCE_OPTIONS))
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)], ids=str)
def test_bce_with_logits_matches_torch(shape, option, reduction, dtype, device, rng):
    target = rng.uniform(0, 1, shape)  # soft labels; 0/1 labels are a special case
    target[0] = np.round(target[0])
    run_both("BCEWithLogitsLoss", {**BCE_OPTIONS[option], "reduction": reduction},
             4 * rng.standard_normal(shape), target, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "pos_weight"])
def test_bce_with_logits_is_finite_and_matches_torch_for_logits_of_1000(option, reduction, dtype, device):
    x = np.array([[1000.0, -1000.0, 1000.0, -1000.0], [30.0, -30.0, 0.0, 1000.0], [-1000.0, 1000.0, 5.0, -5.0]])
    target = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.5, 0.3], [0.0, 1.0, 1.0, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = run_both("BCEWithLogitsLoss", {**BCE_OPTIONS[option], "reduction": reduction},
                         x, target, dtype, device)
    assert np.all(np.isfinite(value))


# ---------------------------------------------------------------------------- MultiMarginLoss
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("options", [{}, {"margin": 0.5}, {"weight": np.array([0.3, 1.0, 2.0, 0.7, 1.5])}],
                         ids=["default", "margin", "weight"])
@pytest.mark.parametrize("input_shape,target_shape", [((7, 5), (7,)), ((5,), ()), ((5,), (1,))], ids=str)
def test_multi_margin_loss_matches_torch(input_shape, target_shape, options, p, reduction, dtype, device, rng):
    # Scores of order 1 make some margins active and some not.
    run_both("MultiMarginLoss", {**options, "p": p, "reduction": reduction},
             rng.standard_normal(input_shape), class_indices(rng, target_shape, 5), dtype, device)


# ---------------------------------------------------------------------------- gradient checks
GRADCHECK_CASES = [
    ("MSELoss", {}, lambda rng: (rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))),
    ("CrossEntropyLoss", {"weight": np.array([0.5, 1.0, 2.0, 1.5]), "label_smoothing": 0.2},
     lambda rng: (rng.standard_normal((3, 4, 2)), np.array([[0, 3], [-100, 1], [2, 2]]))),
    ("CrossEntropyLoss", {"weight": np.array([0.5, 1.0, 2.0, 1.5])},
     lambda rng: (rng.standard_normal((3, 4)), probabilities(rng, (3, 4), 1))),
    ("BCEWithLogitsLoss", {"pos_weight": np.array([2.0, 0.5, 1.0, 3.0])},
     lambda rng: (rng.standard_normal((3, 4)), rng.uniform(0, 1, (3, 4)))),
    ("MultiMarginLoss", {"p": 1, "weight": np.array([0.5, 1.0, 2.0, 1.5])},
     lambda rng: (rng.standard_normal((6, 4)), np.array([0, 1, 2, 3, 1, 0]))),
    ("MultiMarginLoss", {"p": 2, "margin": 0.7},
     lambda rng: (rng.standard_normal((6, 4)), np.array([0, 1, 2, 3, 1, 0]))),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,kwargs,make", GRADCHECK_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_gradcheck_of_losses(name, kwargs, make, reduction, rng):
    x, target = make(rng)
    report = check_loss(getattr(nn, name)(**kwargs, reduction=reduction), x, target)
    assert report.worst < 1e-7, str(report)


# ---------------------------------------------------------------------------- constructor, repr, state
@pytest.mark.parametrize("name,kwargs", [
    ("MSELoss", {}), ("MSELoss", {"reduction": "sum"}),
    ("CrossEntropyLoss", {}), ("CrossEntropyLoss", {"weight": np.ones(3), "label_smoothing": 0.1}),
    ("BCEWithLogitsLoss", {}), ("BCEWithLogitsLoss", {"weight": np.ones(3), "pos_weight": np.ones(3)}),
    ("MultiMarginLoss", {"p": 2}), ("MultiMarginLoss", {"weight": np.ones(3), "reduction": "none"}),
])
def test_loss_repr_and_state_dict_keys_are_torchs(name, kwargs):
    loss_fn = getattr(nn, name)(**kwargs)
    torch_loss_fn = getattr(torch.nn, name)(**torch_kwargs(kwargs, np.float64, "cpu"))
    assert repr(loss_fn) == repr(torch_loss_fn)
    assert list(loss_fn.state_dict()) == list(torch_loss_fn.state_dict())


@pytest.mark.parametrize("size_average,reduce", [(False, None), (None, False), (True, True), (False, True)])
def test_deprecated_size_average_and_reduce_map_to_torchs_reduction(size_average, reduce):
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        ours = nn.MSELoss(size_average, reduce)
    with pytest.warns(UserWarning):
        theirs = torch.nn.MSELoss(size_average, reduce)
    assert ours.reduction == theirs.reduction


def test_loss_constructors_take_torchs_positional_order():
    weight = np.array([1.0, 2.0, 3.0])
    assert nn.CrossEntropyLoss(weight, None, 1).ignore_index == 1
    assert nn.BCEWithLogitsLoss(weight, None, None, "sum").reduction == "sum"
    loss_fn = nn.MultiMarginLoss(2, 0.5, weight)
    assert (loss_fn.p, loss_fn.margin) == (2, 0.5) and loss_fn.weight is not None


def test_float32_loss_with_float64_target_and_weight_computes_in_float32(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    for loss_fn, target in [(nn.MSELoss(reduction="none"), rng.standard_normal((4, 3))),
                            (nn.CrossEntropyLoss(weight=np.ones(3), reduction="none"), np.array([0, 1, 2, 1])),
                            (nn.BCEWithLogitsLoss(pos_weight=np.ones(3), reduction="none"), np.ones((4, 3))),
                            (nn.MultiMarginLoss(weight=np.ones(3), reduction="none"), np.array([0, 1, 2, 1]))]:
        assert loss_fn(x, target).dtype == np.float32, loss_fn
        assert loss_fn.backward(np.ones(loss_fn(x, target).shape)).dtype == np.float32, loss_fn


def test_loss_gradient_scales_with_grad_output(rng):
    x, target = rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(x, target)
    np.testing.assert_allclose(loss_fn.backward(2.5), 2.5 * loss_fn.backward(), rtol=1e-12)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MultiMarginLoss"])
def test_unknown_reduction_is_rejected(name):
    with pytest.raises(ValueError, match=f"{name}: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        getattr(nn, name)(reduction="avg")


@pytest.mark.parametrize("name", ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MultiMarginLoss"])
def test_loss_backward_before_forward_is_a_clear_error(name):
    with pytest.raises(RuntimeError, match=rf"{name}.backward\(\) was called before forward\(\)"):
        getattr(nn, name)().backward()


@pytest.mark.parametrize("name", ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MultiMarginLoss"])
def test_loss_rejects_integer_input(name):
    with pytest.raises(TypeError, match=f"{name} expects a floating-point input"):
        getattr(nn, name)()(np.arange(6).reshape(2, 3), np.zeros(2, dtype=np.int64))


def test_mse_loss_refuses_to_broadcast_target():
    with pytest.raises(ValueError, match=r"MSELoss expects target of the input's shape \(4, 1\), got \(4,\)"):
        nn.MSELoss()(np.zeros((4, 1)), np.zeros(4))


def test_mse_and_bce_require_a_floating_target():
    with pytest.raises(TypeError, match="MSELoss expects a floating-point target"):
        nn.MSELoss()(np.zeros(3), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="BCEWithLogitsLoss expects a floating-point target"):
        nn.BCEWithLogitsLoss()(np.zeros(3), np.zeros(3, dtype=np.int64))


def test_bce_with_logits_names_shape_mismatches():
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss expects target of the input's shape \(2, 3\), got \(3,\)"):
        nn.BCEWithLogitsLoss()(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(4,\) does not broadcast to the input's shape \(2, 3\)"):
        nn.BCEWithLogitsLoss(pos_weight=np.ones(4))(np.zeros((2, 3)), np.zeros((2, 3)))


def test_cross_entropy_requires_integer_indices():
    with pytest.raises(TypeError, match=r"CrossEntropyLoss expects integer class indices as target.*got dtype float64"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"target of the input's shape \(2, 3\) holds class probabilities .* got dtype int64"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.int64))


def test_cross_entropy_names_a_mismatched_target_shape():
    with pytest.raises(ValueError, match=r"expects target of shape \(2, 4\) \(class indices\) or \(2, 3, 4\) "
                                         r"\(class probabilities\) for input of shape \(2, 3, 4\), got \(2, 3\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss expects input of shape \(C,\), \(N, C\).*got shape \(\)"):
        nn.CrossEntropyLoss()(np.zeros(()), np.zeros((), dtype=np.int64))


@pytest.mark.parametrize("bad", [3, -1])
def test_cross_entropy_rejects_class_indices_out_of_range(bad):
    with pytest.raises(IndexError, match=rf"CrossEntropyLoss: target {bad} is out of bounds; class indices must lie "
                                         r"in \[0, 3\) or equal ignore_index=-100"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, bad]))
    # The ignored value itself is fine wherever it lies.
    assert np.isfinite(nn.CrossEntropyLoss(ignore_index=bad)(np.zeros((2, 3)), np.array([0, bad])))


def test_cross_entropy_checks_weight_and_label_smoothing():
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), but the input has C=3 classes"):
        nn.CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"weight must be a 1-D array of one entry per class, got shape \(2, 2\)"):
        nn.CrossEntropyLoss(weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0, got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="ignore_index is not supported for class-probability targets"):
        nn.CrossEntropyLoss(ignore_index=0)(np.zeros((2, 3)), np.full((2, 3), 1 / 3))


def test_multi_margin_loss_names_bad_arguments_and_targets():
    with pytest.raises(ValueError, match="only p == 1 and p == 2 supported, got p=3"):
        nn.MultiMarginLoss(p=3)
    with pytest.raises(ValueError, match=r"MultiMarginLoss expects input of shape \(N, C\) or \(C,\), got shape \(2, 3, 4\)"):
        nn.MultiMarginLoss()(np.zeros((2, 3, 4)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"MultiMarginLoss expects target of shape \(2,\) for input of shape \(2, 3\), got \(3,\)"):
        nn.MultiMarginLoss()(np.zeros((2, 3)), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="MultiMarginLoss expects integer class indices as target"):
        nn.MultiMarginLoss()(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(IndexError, match=r"MultiMarginLoss: target 3 is out of bounds; class indices must lie in \[0, 3\)$"):
        nn.MultiMarginLoss()(np.zeros((2, 3)), np.array([3, 0]))


def test_reduction_none_backward_names_the_expected_grad_output_shape():
    loss_fn = nn.MSELoss(reduction="none")
    loss_fn(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expects grad_output of shape \(2, 3\), got \(3,\)"):
        loss_fn.backward(np.ones(3))
