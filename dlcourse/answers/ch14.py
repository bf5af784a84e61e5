"""The answer key of ch14: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch14`.
"""
import numpy as np
from scipy.stats import loguniform
from dlcourse import nn, optim
from dlcourse._random import using_generator
from dlcourse.data import ArrayDataset, DataLoader
from dlcourse.models import MLP
from dlcourse.train import _accuracy, fit

from dlcourse.answers import reference
from dlcourse.checks.ch14 import BODY_SIZES, SCRATCH_STEPS, digits_splits, odd_digit_task


@reference('ch14.split_for_validation')
def split_for_validation_reference(train, test, val_size, seed):
    x_train, y_train = train
    # the DataLoader's first shuffled epoch is np.random.default_rng(seed).permutation(n)
    loader = DataLoader(ArrayDataset(np.arange(len(x_train))), batch_size=len(x_train), shuffle=True, seed=seed)
    (perm,) = next(iter(loader))
    fit_rows, val_rows = perm[:len(x_train) - val_size], perm[len(x_train) - val_size:]
    return (x_train[fit_rows], y_train[fit_rows]), (x_train[val_rows], y_train[val_rows]), test


@reference('ch14.sample_configurations')
def sample_configurations_reference(u, lr_low, lr_high, width_low, width_high):
    widths = np.rint(loguniform.ppf(u[:, 1], width_low, width_high)).astype(np.int64)
    return loguniform.ppf(u[:, 0], lr_low, lr_high), widths


@reference('ch14.select_best')
def select_best_reference(configurations, fit_logits, y_fit, val_logits, y_val):
    scores = [_accuracy(logits, y_val) for logits in val_logits]
    return configurations[scores.index(max(scores))]      # index() finds the first of equal scores


@reference('ch14.ensemble_cross_entropy_backward')
def ensemble_cross_entropy_backward_reference(logits, labels):
    members, n, _ = logits.shape
    probabilities = nn.Softmax(dim=-1)(logits)                       # (M, N, C)
    rows = np.arange(n)
    p_label = probabilities[:, rows, labels]                         # (M, N)
    mean_label = p_label.mean(axis=0)                                # (N,)
    one_hot = np.eye(logits.shape[-1])[labels]                       # (N, C)
    # d p_{m,i,y} / d z_{m,i,c} = p_{m,i,y} (1[c = y] − p_{m,i,c}), through the ensemble mean and −log
    weight = -p_label / (members * n * mean_label)                   # (M, N)
    return weight[..., None] * (one_hot - probabilities)


@reference('ch14.fine_tune')
def fine_tune_reference(body, x_few, y_few, seed):
    """The from-scratch baseline an answer must beat: MLP(64, (128, 64), 2) trained on the same
    labelled images with full-batch Adam (3e-3, SCRATCH_STEPS steps); its validation accuracy."""
    with using_generator(np.random.default_rng(seed)):
        model = MLP(64, hidden_sizes=BODY_SIZES, num_classes=2).double()
    fit(model, nn.CrossEntropyLoss(), optim.Adam(model, lr=3e-3), [(x_few, y_few)], epochs=SCRATCH_STEPS,
        progress=False)
    _, (x_val, y_val) = digits_splits()
    return _accuracy(model.eval()(x_val), odd_digit_task(y_val))


@reference('ch14.report_test_accuracy')
def report_test_accuracy_reference(predicted, labels):
    accuracy = _accuracy(np.eye(max(predicted.max(), labels.max()) + 1)[predicted], labels)
    return accuracy, np.sqrt(accuracy * (1 - accuracy) / len(labels))
