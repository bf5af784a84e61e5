"""Chapter 14 (practice and outlook), the course's final project: a validation split that
leaves the test set alone, a random search that samples log-uniformly, choosing the best
configuration by its validation score, the gradient of an ensemble's loss (derived), fine-tuning
a pre-trained digit classifier for a new task from twenty labels, and reporting the test accuracy
once with its standard error.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.data.DataLoader` (its
seeded shuffle), `scipy.stats.loguniform`, `dlcourse.nn.Softmax` and `dlcourse.train` (its
accuracy, and its training loop for the from-scratch baseline); the test suite holds them to
PyTorch, NumPy and known values.

Three parts are not compared with `allclose` alone:
- `split_for_validation` says what went wrong: test rows in the split, a split that is not a
  partition of the training rows, or another permutation than the seeded one;
- `select_best` is compared exactly (a configuration is chosen, not computed);
- `fine_tune` returns a state_dict; its compare loads it into the target network and measures
  the accuracy on the validation images, which must beat the from-scratch baseline (the
  reference) by FINE_TUNE_MARGIN.
"""
from functools import lru_cache

import numpy as np

from dlcourse import nn, optim
from dlcourse._random import using_generator
from dlcourse.checks import CheckFailure, part
from dlcourse.checks.implementations import SOFTMAX_IMPLEMENTATIONS
from dlcourse.data import DataLoader, load_digits
from dlcourse.models import MLP

# The chapter's split of the 1,347 training images: 1,000 to fit, 347 to validate.
VALIDATION_SIZE = 347
SPLIT_SEED = 1
# Fine-tuning: the pre-trained ten-digit classifier gets a new head for "is the digit odd?";
# the target task has LABELS_PER_DIGIT labelled images per digit, and the fine-tuned network
# must beat training from scratch on the same images by this much validation accuracy (over
# 30 draws the model solution's margin ranged from 6.6 to 16.7 points, a reset body's from
# -18 to +4.6).
FINE_TUNE_MARGIN = 0.05
LABELS_PER_DIGIT = 2
BODY_SIZES = (128, 64)
TARGET_SIZES = (128, 64, 10)    # the whole pre-trained network, its ten class scores as features
SCRATCH_STEPS = 100


def _ordinal_rows(rng, n, features):
    """(x, y): n distinct rows (so that a row identifies where it came from) and labels 0..9."""
    x = rng.standard_normal((n, features))
    return x, rng.integers(0, 10, size=n)


def _compare_split(got, expected, args):
    (x_train, y_train), test, val_size, seed = args
    if not isinstance(got, tuple) or len(got) != 3 or not all(isinstance(s, tuple) and len(s) == 2 for s in got):
        raise CheckFailure("return three (x, y) pairs: ((x_fit, y_fit), (x_val, y_val), (x_test, y_test))")
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = (tuple(np.asarray(a) for a in s) for s in got)
    if not (np.array_equal(x_test, test[0]) and np.array_equal(y_test, test[1])):
        raise CheckFailure("the test set must come back exactly as it was given: it is set aside, not split")
    training_rows = {row.tobytes() for row in np.asarray(x_train, dtype=np.float64)}
    for name, x in (("fit", x_fit), ("validation", x_val)):
        if x.ndim != 2 or x.shape[1:] != np.shape(x_train)[1:]:
            raise CheckFailure(f"x_{name} has shape {x.shape}; expected rows of x_train, (n, {np.shape(x_train)[1]})")
        strangers = sum(row.tobytes() not in training_rows for row in x.astype(np.float64))
        if strangers:
            raise CheckFailure(f"{strangers} {name} row(s) are not training rows: the test set must never be "
                               "split into fit or validation data")
    if len(x_val) != val_size or len(x_fit) + len(x_val) != len(x_train):
        raise CheckFailure(f"{len(x_fit)} fit and {len(x_val)} validation rows; expected "
                           f"{len(x_train) - val_size} and {val_size}, every training row exactly once")
    for label, (g, e) in zip(("x_fit", "y_fit", "x_val", "y_val"), [(x_fit, expected[0][0]), (y_fit, expected[0][1]),
                                                                   (x_val, expected[1][0]), (y_val, expected[1][1])]):
        if not np.array_equal(g, e):
            raise CheckFailure(f"{label} differs from the seeded split: with perm = np.random.default_rng({seed})"
                               f".permutation({len(x_train)}), fit is perm[:n - val_size] and validation "
                               "perm[n - val_size:], rows and labels taken together")


@part("ch14.split_for_validation", "split_for_validation", asks="a validation split of the training data",
      forbids=("dlcourse.data.DataLoader", "sklearn.model_selection"), compare=_compare_split)
def split_for_validation_cases(rng):
    """A seeded, unstratified split of the training rows into fit and validation; the test set
    comes back untouched."""
    cases = []
    for n_train, n_test, features, val_size in [(20, 8, 3, 5), (7, 3, 2, 1), (50, 20, 4, 17), (12, 12, 1, 11)]:
        train, test = _ordinal_rows(rng, n_train, features), _ordinal_rows(rng, n_test, features)
        cases.append((train, test, val_size, int(rng.integers(0, 2**31))))
    return cases


@part("ch14.sample_configurations", "sample_configurations", asks="log-uniform random search",
      forbids=("scipy.stats.loguniform", "scipy.stats.reciprocal", "sklearn.model_selection"))
def sample_configurations_cases(rng):
    """Learning rates and widths log-uniform in their ranges, from given uniform draws in [0, 1)."""
    cases = []
    for k, lr_range, width_range in [(9, (10**-3.5, 10**-0.5), (8, 256)), (4, (1e-4, 1.0), (16, 1024)),
                                     (1, (1e-3, 1e-2), (32, 64)), (6, (0.5, 2.0), (2, 3))]:
        u = rng.random((k, 2))
        cases.append((u, *lr_range, *width_range))
    cases.append((np.array([[0.0, 0.0], [0.5, 0.5]]), 1e-4, 1e-2, 4, 64))
    return cases


def _logits_with_accuracy(rng, labels, classes, right):
    """(N, C) logits whose arg-max is the label in exactly `right` rows (chosen at random)."""
    n = len(labels)
    predicted = (labels + rng.integers(1, classes, size=n)) % classes      # wrong everywhere,
    hits = rng.permutation(n)[:right]
    predicted[hits] = labels[hits]                                          # then right in `right` rows
    logits = rng.standard_normal((n, classes))
    logits[np.arange(n), predicted] = logits.max(axis=1) + rng.uniform(0.5, 2.0, size=n)
    return logits


def _search_case(rng, configurations, val_right, fit_right, n_fit, n_val, classes):
    y_fit, y_val = rng.integers(0, classes, size=n_fit), rng.integers(0, classes, size=n_val)
    fit_logits = np.stack([_logits_with_accuracy(rng, y_fit, classes, r) for r in fit_right])
    val_logits = np.stack([_logits_with_accuracy(rng, y_val, classes, r) for r in val_right])
    return configurations, fit_logits, y_fit, val_logits, y_val


@part("ch14.select_best", "select_best", asks="choosing a configuration by its validation accuracy",
      forbids=("dlcourse.train._accuracy", "dlcourse.train.evaluate", "sklearn.metrics", "sklearn.model_selection"),
      rtol=0, atol=0)
def select_best_cases(rng):
    """(lr, width) of the configuration whose validation logits are most accurate; ties go to the
    configuration listed first. The fit accuracy, which must not decide, favours another one."""
    cases = []
    for k, n_fit, n_val, classes in [(9, 30, 20, 10), (5, 12, 9, 3), (2, 6, 5, 2), (12, 40, 25, 10)]:
        configurations = [(float(10 ** rng.uniform(-4, 0)), int(rng.integers(8, 257))) for _ in range(k)]
        val_right = rng.permutation(np.arange(n_val + 1))[:k]               # distinct validation accuracies
        fit_right = np.minimum(val_right + rng.integers(0, 3, size=k), n_fit - 1)
        fit_right[np.argmin(val_right)] = n_fit    # the most over-fitted run looks best on its fit data
        cases.append(_search_case(rng, configurations, val_right, fit_right, n_fit, n_val, classes))
    ties = [(1e-3, 16), (1e-2, 64), (1e-1, 256), (3e-2, 32)]
    cases.append(_search_case(rng, ties, [6, 9, 9, 9], [9, 8, 10, 9], 10, 10, 4))
    return cases


@part("ch14.ensemble_cross_entropy_backward", "ensemble_cross_entropy_backward",
      asks="the gradient of an ensemble's cross-entropy", derived=True,
      forbids=SOFTMAX_IMPLEMENTATIONS)
def ensemble_cross_entropy_backward_cases(rng):
    """d L / d logits for L = −mean_i log( mean_m softmax(z_m)_{i, y_i} ): shapes (M, N, C)."""
    cases = []
    for members, n, classes, scale in [(3, 4, 5, 1.0), (1, 2, 3, 1.0), (5, 6, 10, 3.0), (2, 1, 2, 0.5)]:
        cases.append((rng.standard_normal((members, n, classes)) * scale, rng.integers(0, classes, size=n)))
    return cases


# ---------------------------------------------------------------------------- fine-tuning
@lru_cache(maxsize=1)
def digits_splits():
    """((x_fit, y_fit), (x_val, y_val)): the chapter's split of the digits' training images, float64."""
    (x_train, y_train), _ = load_digits(dtype=np.float64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x_train))
    fit, val = perm[:len(x_train) - VALIDATION_SIZE], perm[len(x_train) - VALIDATION_SIZE:]
    arrays = (x_train[fit], y_train[fit], x_train[val], y_train[val])
    for array in arrays:
        array.setflags(write=False)
    return arrays[:2], arrays[2:]


@lru_cache(maxsize=1)
def pretrained_classifier() -> tuple:
    """The source network: MLP(64, (128, 64), 10) trained on the ten digits of the fit images
    (Adam at 2e-3, batches of 32, 10 epochs, seed 0). Returns its parameters
    (fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias), read-only."""
    (x_fit, y_fit), _ = digits_splits()
    with using_generator(np.random.default_rng(0)):
        model = MLP(64, hidden_sizes=BODY_SIZES, num_classes=10).double()
    loss_fn, optimizer = nn.CrossEntropyLoss(), optim.Adam(model, lr=2e-3)
    # The loop written out, not dlcourse.train.fit: the fine-tuning part forbids fit, and its
    # cases are built again inside the student's kernel, where the forbidden fit is a stand-in.
    loader = DataLoader((x_fit, y_fit), batch_size=32, shuffle=True, seed=0)   # a new order each epoch
    for _ in range(10):
        for x, y in loader:
            loss_fn(model(x), y)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
    body = tuple(np.array(value) for value in model.state_dict().values())
    for array in body:
        array.setflags(write=False)
    return body


def odd_digit_task(labels):
    """The target task's labels: 1 for an odd digit, 0 for an even one."""
    return (np.asarray(labels) % 2).astype(np.int64)


def target_validation_accuracy(state) -> float:
    """Accuracy on the validation images' odd/even labels of MLP(64, (128, 64, 10), 2) holding
    `state` (float64, evaluation mode); CheckFailure when `state` is not such a state_dict."""
    if not isinstance(state, dict):
        raise CheckFailure(f"returned {type(state).__name__}, expected model.state_dict() of "
                           f"MLP(64, hidden_sizes={TARGET_SIZES}, num_classes=2)")
    model = MLP(64, hidden_sizes=TARGET_SIZES, num_classes=2).double()
    expected = model.state_dict()
    if set(state) != set(expected):
        raise CheckFailure(f"the state_dict has keys {sorted(map(str, state))[:8]}, expected {sorted(expected)}")
    for key, value in expected.items():
        got = np.asarray(state[key])
        if got.shape != value.shape or got.dtype.kind not in "biuf" or not np.all(np.isfinite(got)):
            raise CheckFailure(f"{key} must be finite numbers of shape {value.shape}, got {got.dtype} {got.shape}")
    model.load_state_dict({key: np.asarray(value, dtype=np.float64) for key, value in state.items()})
    _, (x_val, y_val) = digits_splits()
    model.eval()
    return float(np.mean(model(x_val).argmax(axis=1) == odd_digit_task(y_val)))


def _compare_to_scratch(got, scratch_accuracy, args):
    accuracy = target_validation_accuracy(got)
    if not accuracy >= scratch_accuracy + FINE_TUNE_MARGIN:
        raise CheckFailure(f"validation accuracy {accuracy:.1%} does not beat training from scratch on the same "
                           f"labelled images ({scratch_accuracy:.1%}) by {FINE_TUNE_MARGIN:.0%} (seed={args[3]}): keep the "
                           "pre-trained layers and train the new head first")


@part("ch14.fine_tune", "fine_tune", asks="fine-tuning a pre-trained network",
      forbids=("dlcourse.train.fit", "dlcourse.recipes"), compare=_compare_to_scratch)
def fine_tune_cases(rng):
    """Fine-tune the pre-trained ten-digit classifier for odd/even from LABELS_PER_DIGIT labelled
    fit images per digit (drawn with the case's generator)."""
    (x_fit, y_fit), _ = digits_splits()
    cases = []
    for _ in range(2):
        index = np.concatenate([rng.choice(np.flatnonzero(y_fit == digit), LABELS_PER_DIGIT, replace=False)
                                for digit in range(10)])
        cases.append((pretrained_classifier(), x_fit[index].copy(), odd_digit_task(y_fit[index]),
                      int(rng.integers(0, 10_000))))
    return cases


# ---------------------------------------------------------------------------- the test, once
@part("ch14.report_test_accuracy", "report_test_accuracy", asks="the test accuracy and its standard error",
      forbids=("dlcourse.train._accuracy", "dlcourse.train.evaluate", "sklearn.metrics"))
def report_test_accuracy_cases(rng):
    """(accuracy, sqrt(accuracy (1 − accuracy) / N)) of predicted class labels."""
    cases = []
    for n, classes in [(450, 10), (7, 3), (1, 2), (40, 2)]:
        labels = rng.integers(0, classes, size=n)
        predicted = np.where(rng.random(n) < 0.8, labels, rng.integers(0, classes, size=n))
        cases.append((predicted, labels))
    labels = rng.integers(0, 10, size=12)
    cases.append((labels.copy(), labels))
    return cases
