"""Chapter 5 (loss functions): value and input gradient of MSE, cross-entropy from logits,
binary cross-entropy with logits and the multi-class hinge loss, plus a stable log-softmax.

Every loss is averaged over the batch (torch's reduction='mean'). The references (in
`dlcourse.answers`) come from `dlcourse.nn.MSELoss`, `LogSoftmax`, `CrossEntropyLoss`,
`BCEWithLogitsLoss` and `MultiMarginLoss`, which the test suite holds to PyTorch.
"""
import numpy as np

from dlcourse.checks import implementations
from dlcourse.checks import part


def _value_and_grad(loss_fn, x, target):
    """(loss, d loss / d x) of a dlcourse loss with the default reduction='mean'."""
    return loss_fn(x, target), loss_fn.backward()


def _logits(rng, n, classes, scale=1.0):
    return scale * rng.standard_normal((n, classes))


def _saturated_logits(rng, n, classes):
    """Logits of ±1000 and thereabouts: exp() of any of them overflows float64."""
    return rng.choice([-1000.0, 1000.0], size=(n, classes)) + rng.standard_normal((n, classes))


@part("ch05.mse_loss", "mse_loss", asks='the mean squared error and its gradient',
      forbids=("dlcourse.nn.MSELoss",))
def mse_loss_cases(rng):
    """Mean squared error over all elements, and its gradient, for inputs of several shapes."""
    cases = []
    for shape in [(4, 3), (7,), (2, 3, 5), (1,)]:
        cases.append((rng.standard_normal(shape) * 2, rng.standard_normal(shape)))
    return cases


@part("ch05.log_softmax", "log_softmax", asks='a stable log-softmax',
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS)
def log_softmax_cases(rng):
    """log-softmax of every row of (N, C) logits, including rows of ±1000 and a large common offset."""
    return [(_logits(rng, 4, 5),), (_logits(rng, 1, 3),), (_saturated_logits(rng, 3, 4),),
            (1e4 + _logits(rng, 2, 6),), (_logits(rng, 6, 2, scale=30.0),)]


def _class_cases(rng):
    cases = []
    for n, classes, logits in [(5, 4, None), (1, 3, None), (8, 10, None), (6, 2, "scaled"),
                               (4, 5, "saturated")]:
        if logits == "saturated":
            x = _saturated_logits(rng, n, classes)
        else:
            x = _logits(rng, n, classes, scale=4.0 if logits == "scaled" else 1.5)
        cases.append((x, rng.integers(0, classes, size=n)))
    return cases


@part("ch05.cross_entropy", "cross_entropy", asks='cross-entropy and its gradient',
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS, derived=True)
def cross_entropy_cases(rng):
    """Cross-entropy from (N, C) logits and (N,) class indices, averaged over the batch; ±1000 logits included."""
    return _class_cases(rng)


@part("ch05.bce_with_logits", "bce_with_logits", asks='binary cross-entropy on logits',
      forbids=("dlcourse.nn.BCEWithLogitsLoss", "scipy.special.log_expit"))
def bce_with_logits_cases(rng):
    """Binary cross-entropy from logits, averaged over all elements; 0/1 and soft targets, ±1000 logits."""
    cases = []
    for shape, kind in [((6,), "labels"), ((4, 3), "labels"), ((5, 2), "soft"), ((8,), "saturated"), ((1,), "labels")]:
        x = rng.choice([-1000.0, 1000.0], size=shape) if kind == "saturated" else 3 * rng.standard_normal(shape)
        target = rng.random(shape) if kind == "soft" else rng.integers(0, 2, size=shape).astype(np.float64)
        cases.append((x, target))
    return cases


@part("ch05.multi_margin_loss", "multi_margin_loss", asks='the multi-class hinge loss',
      forbids=("dlcourse.nn.MultiMarginLoss",))
def multi_margin_loss_cases(rng):
    """Multi-class hinge loss (margin 1, p = 1) of (N, C) scores, averaged over the batch; some rows
    have no violated margin at all."""
    cases = _class_cases(rng)[:4]
    x, target = _logits(rng, 5, 4, scale=0.5), rng.integers(0, 4, size=5)
    x[np.arange(3), target[:3]] += 3.0  # rows 0–2 clear every margin: zero loss, zero gradient
    return cases + [(x, target)]


