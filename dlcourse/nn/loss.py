"""Loss functions (chapter 5): MSELoss, CrossEntropyLoss, BCEWithLogitsLoss, MultiMarginLoss.

Every loss follows torch: `forward(input, target)` returns a Python float for
reduction='mean' or 'sum' and the per-element losses (an array) for 'none';
`backward(grad_output=None)` returns d loss / d input with the input's shape.
"""
import math
import warnings

import numpy as np

from dlcourse.nn._loss_base import _Loss
from dlcourse.nn.activation import _sigmoid
from dlcourse.nn.module import check_float_input, check_ndim

__all__ = ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MultiMarginLoss"]


class _TorchLoss(_Loss):
    """A loss whose constructor takes torch's deprecated `size_average`/`reduce` too (they sit
    before `reduction` in torch's argument order)."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy_reduction(size_average, reduce, reduction))


class MSELoss(_TorchLoss):
    r"""Mean squared error: ℓ_i = (x_i − y_i)²;  ∂ℓ_i/∂x_i = 2 (x_i − y_i).

    'mean' averages over all elements, 'sum' adds them, 'none' returns ℓ.

    Shape:
        input: (*) — any shape; target: (*), the same shape (torch would broadcast a
        different shape with only a warning; that silently pairs the wrong elements, so
        it is an error here)
        output: a float, or (*) for reduction='none'
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)

    def forward(self, input, target):
        x = check_float_input(self, input)
        target = check_float_input(self, target, "target")
        if target.shape != x.shape:
            raise ValueError(f"MSELoss expects target of the input's shape {x.shape}, got "
                             f"{target.shape}; broadcasting would compare the wrong pairs")
        difference = x - target.astype(x.dtype, copy=False)
        self._cache = difference
        return self._reduce(difference * difference)

    def backward(self, grad_output=None):
        difference = self._saved(self._cache)
        return 2 * difference * self._reduction_grad(difference.shape, difference.dtype, grad_output)


class CrossEntropyLoss(_TorchLoss):
    r"""Cross-entropy of softmax(x) along the class dimension (dim 1; dim 0 for a (C,) input).

    With log p = log_softmax(x) every case is ℓ_n = −Σ_c a_{n,c} log p_{n,c} for some
    coefficients a, and then ∂ℓ_n/∂x_{n,c} = p_{n,c} Σ_k a_{n,k} − a_{n,c}:

    - class indices y_n (integer target): a_{n,c} = w_{y_n} [(1 − ε) 1[c = y_n] + ε/C · w_c / w_{y_n}]
      i.e. ℓ_n = (1 − ε) w_{y_n} (−log p_{n,y_n}) + (ε/C) Σ_c w_c (−log p_{n,c}); ℓ_n = 0 where
      y_n = ignore_index; 'mean' divides Σ ℓ_n by Σ w_{y_n} over the targets not ignored.
    - class probabilities t (float target of the input's shape): a = w_c ((1 − ε) t + ε/C);
      'mean' divides by the number of rows N·d1·…, not by the weights (as torch does).

    w = `weight` (ones if None), ε = `label_smoothing`. log_softmax subtracts the maximum
    first, so logits of ±1000 give finite values.

    Shape:
        input: (N, C), (N, C, d1, …) or (C,)
        target: (N,), (N, d1, …) or () of integer indices in [0, C);
                or the input's shape, floating, for class probabilities
        output: a float, or the target's index shape for reduction='none'
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _class_weight(self, weight))
        self.ignore_index = ignore_index
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, "
                             f"got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        x = check_float_input(self, input)
        check_ndim(self, x, range(1, 64), "(C,), (N, C) or (N, C, d1, ...)")
        class_dim = 0 if x.ndim == 1 else 1
        classes = x.shape[class_dim]
        weight_shape = [1] * x.ndim
        weight_shape[class_dim] = classes
        weight = _weight_for(self, classes, x.dtype)
        weight = None if weight is None else weight.reshape(weight_shape)
        target = np.asarray(target)
        shifted, exp_shifted, log_sum = self._softmax_parts(x, class_dim)
        if target.shape != x.shape and self.label_smoothing == 0:
            # The common case, in fewer passes: a_{n,c} = w_{y_n} 1[c = y_n] is kept as the
            # flat positions of the targets and the weights w_{y_n} instead of a dense array,
            # and log p is taken at those positions only (chosen for speed).
            positions, coefficients, denominator = self._hard_coefficients(target, x, class_dim, weight)
            log_p_target = shifted.reshape(-1)[positions] - log_sum.reshape(-1)
            per_element = -coefficients * log_p_target.reshape(coefficients.shape)
        else:
            positions = None
            if target.shape == x.shape:
                coefficients, denominator = self._probability_coefficients(target, x, classes, weight)
            else:
                coefficients, denominator = self._index_coefficients(target, x, class_dim, weight)
            log_p = shifted - np.expand_dims(log_sum, class_dim)
            per_element = -(coefficients * log_p).sum(axis=class_dim)
        self._cache = (exp_shifted, np.exp(-log_sum), coefficients, positions, denominator, class_dim)
        if self.reduction == "mean":
            # torch divides by Σ w_{y_n} whatever its sign (weights may be negative); 0/0 is nan.
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(np.float64(per_element.sum()) / denominator)
        return self._reduce(per_element)

    @staticmethod
    def _softmax_parts(x, class_dim):
        """(x − max x, e^{x − max x}, log Σ_c e^{x − max x}) along the class axis; the last
        has the class axis removed. p = e^{x − max x} / Σ and log p = (x − max x) − log Σ.

        Shifting by the maximum keeps every exp() ≤ 1, so logits of ±1000 stay finite. The
        sum is a product with a vector of ones (BLAS), several times faster than NumPy's
        sum along a short axis (chosen for speed)."""
        shifted = x - x.max(axis=class_dim, keepdims=True)
        exp_shifted = np.exp(shifted)
        total = np.moveaxis(exp_shifted, class_dim, -1) @ np.ones(x.shape[class_dim], x.dtype)
        return shifted, exp_shifted, np.log(total)

    def _probability_coefficients(self, target, x, classes, weight):
        if not np.issubdtype(target.dtype, np.floating):
            raise TypeError(f"CrossEntropyLoss: a target of the input's shape {x.shape} holds class "
                            f"probabilities and must be floating-point, got dtype {target.dtype}")
        if self.ignore_index >= 0:
            raise ValueError("CrossEntropyLoss: ignore_index is not supported for class-probability "
                             f"targets, got ignore_index={self.ignore_index}")
        smoothing = self.label_smoothing
        coefficients = target.astype(x.dtype) * (1 - smoothing) + smoothing / classes
        if weight is not None:
            coefficients = coefficients * weight
        return coefficients, x.size // classes

    def _kept_targets(self, target, x, class_dim, weight):
        """Checked class indices: (y with ignored entries set to 0, w_{y_n} or 0 where ignored)."""
        classes = x.shape[class_dim]
        index_shape = x.shape[:class_dim] + x.shape[class_dim + 1:]
        if target.shape != index_shape:
            raise ValueError(f"CrossEntropyLoss expects target of shape {index_shape} (class indices) "
                             f"or {x.shape} (class probabilities) for input of shape {x.shape}, "
                             f"got {target.shape}")
        _check_class_indices(self, target, classes, self.ignore_index)
        kept = target != self.ignore_index
        safe_target = np.where(kept, target, 0)
        kept_weight = kept.astype(x.dtype)
        if weight is not None:
            kept_weight = kept_weight * weight.reshape(-1)[safe_target]
        return kept, safe_target, kept_weight

    def _hard_coefficients(self, target, x, class_dim, weight):
        """(flat positions of x[n, y_n, d1, …] in x, w_{y_n}, Σ w_{y_n}) for integer targets."""
        _, safe_target, kept_weight = self._kept_targets(target, x, class_dim, weight)
        classes = x.shape[class_dim]
        inner = math.prod(x.shape[class_dim + 1:])  # d1 · d2 · …, 1 for (N, C) and (C,)
        if inner == 1:
            positions = np.arange(safe_target.size) * classes + safe_target.reshape(-1)
        else:
            outer, within = np.divmod(np.arange(safe_target.size), inner)
            positions = (outer * classes + safe_target.reshape(-1)) * inner + within
        return positions, kept_weight, float(kept_weight.sum())

    def _index_coefficients(self, target, x, class_dim, weight):
        classes = x.shape[class_dim]
        kept, safe_target, kept_weight = self._kept_targets(target, x, class_dim, weight)
        one_hot = np.moveaxis(safe_target[..., None] == np.arange(classes), -1, class_dim).astype(x.dtype)
        smoothing = self.label_smoothing
        coefficients = (1 - smoothing) * one_hot * np.expand_dims(kept_weight, class_dim)
        if smoothing > 0:
            smooth = np.ones_like(x) if weight is None else np.broadcast_to(weight, x.shape)
            coefficients = coefficients + smoothing / classes * smooth * np.expand_dims(kept, class_dim)
        return coefficients, float(kept_weight.sum())

    def backward(self, grad_output=None):
        exp_shifted, inverse_sum, coefficients, positions, denominator, class_dim = self._saved(self._cache)
        per_element_shape = inverse_sum.shape
        if self.reduction == "mean":
            # Every target ignored: torch's value is 0/0 = nan, but its gradient is zero.
            scale = 1.0 if grad_output is None else float(np.asarray(grad_output))
            scale = scale / denominator if denominator != 0 else 0.0
            grad = scale
        else:
            grad = self._reduction_grad(per_element_shape, exp_shifted.dtype, grad_output)
        if positions is not None:
            # p ⊙ w_{y_n} (p = e^{x − max} / Σ, one pass), then − w_{y_n} at the target class only.
            weighted = (grad * coefficients).astype(exp_shifted.dtype, copy=False)
            result = exp_shifted * np.expand_dims(weighted * inverse_sum, class_dim)
            result.reshape(-1)[positions] -= weighted.reshape(-1)
            return result
        probabilities = exp_shifted * np.expand_dims(inverse_sum, class_dim)
        total = coefficients.sum(axis=class_dim, keepdims=True)
        grad = np.broadcast_to(np.asarray(grad, exp_shifted.dtype), per_element_shape)
        grad = np.expand_dims(grad, class_dim)
        return grad * (probabilities * total - coefficients)


class BCEWithLogitsLoss(_TorchLoss):
    r"""Binary cross-entropy on logits: with σ the sigmoid, w = `weight`, q = `pos_weight`,

        ℓ_i = −w_i [q y_i log σ(x_i) + (1 − y_i) log(1 − σ(x_i))]
            =  w_i [q y_i softplus(−x_i) + (1 − y_i) softplus(x_i)]
        ∂ℓ_i/∂x_i = w_i [(1 − y_i) σ(x_i) − q y_i σ(−x_i)]     (= w_i (σ(x_i) − y_i) for q = 1)

    softplus(z) = log(1 + e^z) is evaluated as logaddexp(0, z), so ±1000 logits stay finite.
    `weight` broadcasts against the input; `pos_weight` against its last (class) dimension.

    Shape:
        input: (*) — any shape; target: (*), the same shape, floating (0/1 labels or
        probabilities)
        output: a float, or (*) for reduction='none'
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", None if weight is None else np.asarray(weight))
        self.register_buffer("pos_weight", None if pos_weight is None else np.asarray(pos_weight))

    def forward(self, input, target):
        x = check_float_input(self, input)
        target = check_float_input(self, target, "target")
        if target.shape != x.shape:
            raise ValueError(f"BCEWithLogitsLoss expects target of the input's shape {x.shape}, "
                             f"got {target.shape}")
        target = target.astype(x.dtype, copy=False)
        weight = self._broadcastable("weight", x)
        pos_weight = self._broadcastable("pos_weight", x)
        positive = target if pos_weight is None else pos_weight * target
        per_element = positive * np.logaddexp(0, -x) + (1 - target) * np.logaddexp(0, x)
        if weight is not None:
            per_element = weight * per_element
        self._cache = (x, target, positive, weight)
        return self._reduce(per_element)

    def _broadcastable(self, name, x):
        value = getattr(self, name)
        if value is None:
            return None
        try:
            fits = np.broadcast_shapes(value.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"BCEWithLogitsLoss: {name} of shape {value.shape} does not broadcast "
                             f"to the input's shape {x.shape}")
        return value.astype(x.dtype, copy=False)

    def backward(self, grad_output=None):
        x, target, positive, weight = self._saved(self._cache)
        grad = (1 - target) * _sigmoid(x) - positive * _sigmoid(-x)
        if weight is not None:
            grad = weight * grad
        return grad * self._reduction_grad(x.shape, x.dtype, grad_output)


class MultiMarginLoss(_TorchLoss):
    r"""Multi-class hinge loss: for a row x with target class y and C classes,

        ℓ(x, y) = w_y Σ_{i ≠ y} max(0, margin − x_y + x_i)^p / C,   p ∈ {1, 2}
        ∂ℓ/∂x_i = w_y p max(0, z_i)^{p−1} 1[z_i > 0] / C  (i ≠ y),   ∂ℓ/∂x_y = −Σ_{i≠y} ∂ℓ/∂x_i

    with z_i = margin − x_y + x_i and w = `weight` (ones if None). torch applies w_y after
    the power (its documentation puts it inside); this follows torch's computation.

    Shape:
        input: (N, C) or (C,)
        target: (N,) integer class indices in [0, C); () or (1,) for a (C,) input
        output: a float, or the target's shape for reduction='none'
    """

    def __init__(self, p: int = 1, margin: float = 1.0, weight=None, size_average=None,
                 reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: only p == 1 and p == 2 supported, got p={p}")
        self.p = p
        self.margin = margin
        self.register_buffer("weight", _class_weight(self, weight))

    def forward(self, input, target):
        x = check_float_input(self, input)
        check_ndim(self, x, (1, 2), "(N, C) or (C,)")
        classes = x.shape[-1]
        target = np.asarray(target)
        allowed = [(), (1,)] if x.ndim == 1 else [x.shape[:1]]
        if target.shape not in allowed:
            raise ValueError(f"MultiMarginLoss expects target of shape {' or '.join(map(str, allowed))} "
                             f"for input of shape {x.shape}, got {target.shape}")
        _check_class_indices(self, target, classes, ignore_index=None)
        rows = x.reshape(-1, classes)
        labels = target.reshape(-1, 1)
        margins = float(self.margin) - np.take_along_axis(rows, labels, axis=1) + rows
        active = (margins > 0) & (np.arange(classes) != labels)
        hinge = np.where(active, margins, 0)
        weight = _weight_for(self, classes, x.dtype)
        row_weight = np.ones(len(rows), x.dtype) if weight is None else weight[labels[:, 0]]
        per_element = row_weight * (hinge ** self.p).sum(axis=1) / classes
        self._cache = (hinge, active, labels, row_weight, x.shape, target.shape)
        return self._reduce(per_element.reshape(target.shape))

    def backward(self, grad_output=None):
        hinge, active, labels, row_weight, input_shape, target_shape = self._saved(self._cache)
        classes = hinge.shape[1]
        grad = self._reduction_grad(target_shape, hinge.dtype, grad_output).reshape(-1)
        slope = active.astype(hinge.dtype) if self.p == 1 else 2 * hinge
        grad_others = (row_weight * grad / classes)[:, None] * slope
        # x_y enters every other class's margin with a minus sign.
        grad_rows = grad_others - (np.arange(classes) == labels) * grad_others.sum(axis=1, keepdims=True)
        return grad_rows.reshape(input_shape)


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """torch's mapping of the deprecated flags: both default to True; reduce=False → 'none'."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use "
                  f"reduction='{reduction}' instead.", stacklevel=4)
    return reduction


def _class_weight(loss, weight):
    """Validate a per-class `weight` (a 1-D array of C entries) at construction."""
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.ndim != 1:
        raise ValueError(f"{type(loss).__name__}: weight must be a 1-D array of one entry per class, "
                         f"got shape {weight.shape}")
    return weight


def _weight_for(loss, classes: int, dtype):
    """The per-class weight in the input's dtype, checked against the number of classes."""
    if loss.weight is None:
        return None
    if loss.weight.shape != (classes,):
        raise ValueError(f"{type(loss).__name__}: weight has shape {loss.weight.shape}, but the "
                         f"input has C={classes} classes (expected weight of shape ({classes},))")
    return loss.weight.astype(dtype, copy=False)


def _check_class_indices(loss, target, classes: int, ignore_index) -> None:
    name = type(loss).__name__
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name} expects integer class indices as target (e.g. int64), got dtype "
                        f"{target.dtype}; convert with target.astype(np.int64)")
    # One min/max first: the search for the offending entry runs only when one may exist.
    if target.size == 0 or (target.min() >= 0 and target.max() < classes):
        return
    counted = target if ignore_index is None else target[target != ignore_index]
    bad = counted[(counted < 0) | (counted >= classes)]
    if bad.size:
        ignored = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise IndexError(f"{name}: target {bad.flat[0]} is out of bounds; class indices must lie in "
                         f"[0, {classes}){ignored}")
