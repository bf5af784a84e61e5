"""Chapter 14's graded parts (the final project): each reference answer agrees with PyTorch,
SciPy or values known by construction, computed here independently, and `check` accepts the
model solution and rejects typical mistakes."""
from collections import OrderedDict
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from dlcourse.checks.ch14 import (VALIDATION_SIZE, digits_splits, odd_digit_task,
                                  pretrained_classifier, target_validation_accuracy)
from dlcourse.data import load_digits
from dlcourse.models import MLP
from dlcourse._random import using_generator
from parity import DEVICES, assert_close, to_torch
import exercise_support

pytestmark = pytest.mark.ch14

NOTEBOOK = (Path(__file__).resolve().parents[1] / "solutions" / "ch14-practice-and-outlook"
            / "ch14-practice-and-outlook.ipynb")
SEEDS = [0, 1, 2]

solution = partial(exercise_support.solution, NOTEBOOK)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def test_chapter_has_the_six_parts_and_one_derived():
    parts = {p.function: p for p in parts_of("ch14")}
    assert set(parts) == {"split_for_validation", "sample_configurations", "select_best",
                          "ensemble_cross_entropy_backward", "fine_tune", "report_test_accuracy"}
    assert [name for name, p in parts.items() if p.derived] == ["ensemble_cross_entropy_backward"]
    assert all(p.forbids for p in parts.values())


# ---------------------------------------------------------------------- the validation split
@pytest.mark.parametrize("seed", SEEDS)
def test_split_reference_is_the_seeded_permutation_of_the_training_rows_only(seed):
    for train, test, val_size, split_seed in cases("ch14.split_for_validation", seed):
        (x_fit, y_fit), (x_val, y_val), returned_test = reference("ch14.split_for_validation",
                                                                  (train, test, val_size, split_seed))
        perm = np.random.default_rng(split_seed).permutation(len(train[0]))
        np.testing.assert_array_equal(x_val, train[0][perm[-val_size:]])
        np.testing.assert_array_equal(y_fit, train[1][perm[:-val_size]])
        assert returned_test[0] is test[0] and returned_test[1] is test[1]
        rows = {row.tobytes() for row in np.concatenate([x_fit, x_val])}
        assert rows == {row.tobytes() for row in train[0]} and len(x_fit) + len(x_val) == len(train[0])


def test_split_of_the_digits_is_the_chapters():
    (x_train, y_train), test = load_digits(dtype=np.float64)
    fit, val, _ = reference("ch14.split_for_validation", ((x_train, y_train), test, VALIDATION_SIZE, 1))
    split = np.random.default_rng(1).permutation(len(x_train))       # the book's cell
    np.testing.assert_array_equal(val[1], y_train[split[1000:]])
    (x_fit, y_fit), (x_val, y_val) = digits_splits()
    np.testing.assert_array_equal(x_fit, fit[0])
    np.testing.assert_array_equal(y_val, val[1])
    assert x_fit.shape == (1000, 64) and x_val.shape == (347, 64)


# ---------------------------------------------------------------------- log-uniform sampling
@pytest.mark.parametrize("seed", SEEDS)
def test_sample_configurations_reference_is_uniform_on_the_log_scale(seed):
    for u, lr_low, lr_high, width_low, width_high in cases("ch14.sample_configurations", seed):
        learning_rates, widths = reference("ch14.sample_configurations", (u, lr_low, lr_high, width_low, width_high))
        np.testing.assert_allclose(np.log(learning_rates),
                                   np.log(lr_low) + u[:, 0] * np.log(lr_high / lr_low), rtol=1e-12, atol=1e-12)
        expected = torch.exp(torch.lerp(torch.tensor(np.log(float(width_low))), torch.tensor(np.log(float(width_high))),
                                        torch.tensor(u[:, 1]))).round()
        np.testing.assert_array_equal(widths, expected.numpy())
        assert widths.dtype.kind == "i"


def test_sample_configurations_reference_has_known_quantiles():
    learning_rates, widths = reference("ch14.sample_configurations",
                                       (np.array([[0.0, 0.0], [0.5, 0.5], [0.75, 1.0]]), 1e-4, 1.0, 4, 64))
    np.testing.assert_allclose(learning_rates, [1e-4, 1e-2, 1e-1], rtol=1e-12)   # the median is the geometric mean
    assert widths.tolist() == [4, 16, 64]


def test_sample_configurations_reproduces_the_chapters_random_search():
    draw = np.random.default_rng(2)
    exponents = np.array([(draw.uniform(-3.5, -0.5), draw.uniform(3, 8)) for _ in range(9)])
    u = np.column_stack([(exponents[:, 0] + 3.5) / 3, (exponents[:, 1] - 3) / 5])
    learning_rates, widths = reference("ch14.sample_configurations", (u, 10**-3.5, 10**-0.5, 8, 256))
    np.testing.assert_allclose(learning_rates, 10 ** exponents[:, 0], rtol=1e-12)
    assert widths.tolist() == [int(round(2 ** e)) for e in exponents[:, 1]]


# ---------------------------------------------------------------------- choosing a configuration
@pytest.mark.parametrize("seed", SEEDS)
def test_select_best_reference_is_the_first_argmax_of_the_validation_accuracy(seed):
    for configurations, fit_logits, y_fit, val_logits, y_val in cases("ch14.select_best", seed):
        val_accuracy = (torch.tensor(val_logits).argmax(-1) == torch.tensor(y_val)).double().mean(1).numpy()
        best = configurations[int(np.argmax(val_accuracy))]      # numpy's argmax: the first of equal maxima
        assert reference("ch14.select_best", (configurations, fit_logits, y_fit, val_logits, y_val)) == best
        fit_accuracy = (fit_logits.argmax(-1) == y_fit).mean(1)
        assert configurations[int(np.argmax(fit_accuracy))] != best, "every case must tell fit from validation"


def test_select_best_cases_include_a_tie_on_validation():
    configurations, _, _, val_logits, y_val = cases("ch14.select_best", 0)[-1]
    val_accuracy = (val_logits.argmax(-1) == y_val).mean(1)
    assert np.sum(val_accuracy == val_accuracy.max()) == 3
    assert reference("ch14.select_best", cases("ch14.select_best", 0)[-1]) == configurations[1]


# ---------------------------------------------------------------------- the derived gradient
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_ensemble_cross_entropy_backward_reference_matches_torch_autograd(seed, device):
    for logits, labels in cases("ch14.ensemble_cross_entropy_backward", seed):
        z = to_torch(logits, device, requires_grad=True)
        averaged = F.softmax(z, dim=-1).mean(dim=0)
        loss = -torch.log(averaged[torch.arange(len(labels)), to_torch(labels, device)]).mean()
        loss.backward()
        assert_close(reference("ch14.ensemble_cross_entropy_backward", (logits, labels)), z.grad, np.float64,
                     "ensemble cross-entropy gradient")


def test_ensemble_of_one_is_the_cross_entropy_gradient():
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((1, 6, 4)), rng.integers(0, 4, size=6)
    z = torch.tensor(logits[0], requires_grad=True)
    F.cross_entropy(z, torch.tensor(labels)).backward()
    np.testing.assert_allclose(reference("ch14.ensemble_cross_entropy_backward", (logits, labels))[0],
                               z.grad.numpy(), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------- fine-tuning
def torch_mlp(state, sizes):
    """torch Linear/ReLU stack with fc1, fc2, … holding `state` (float64)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
        layers += [(f"fc{i}", torch.nn.Linear(n_in, n_out, dtype=torch.float64)), (f"relu{i}", torch.nn.ReLU())]
    model = torch.nn.Sequential(OrderedDict(layers[:-1]))
    model.load_state_dict({k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in state.items()})
    return model


def test_pretrained_classifier_reaches_the_stated_validation_accuracy_in_torch():
    body = pretrained_classifier()
    keys = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    model = torch_mlp(dict(zip(keys, body)), (64, 128, 64, 10))
    _, (x_val, y_val) = digits_splits()
    with torch.no_grad():
        accuracy = float((model(torch.tensor(x_val)).argmax(1).numpy() == y_val).mean())
    assert 0.93 <= accuracy <= 0.97, "the notebook says about 95%"
    assert all(not array.flags.writeable for array in body)


@pytest.mark.parametrize("seed", [0, 4])
def test_fine_tune_baseline_is_training_from_scratch_as_torch_does_it(seed):
    for body, x_few, y_few, train_seed in cases("ch14.fine_tune", seed):
        with using_generator(np.random.default_rng(train_seed)):
            initial = MLP(64, hidden_sizes=(128, 64), num_classes=2).double().state_dict()
        model = torch_mlp(initial, (64, 128, 64, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(100):
            optimizer.zero_grad()
            F.cross_entropy(model(torch.tensor(x_few)), torch.tensor(y_few)).backward()
            optimizer.step()
        _, (x_val, y_val) = digits_splits()
        with torch.no_grad():
            expected = float((model(torch.tensor(x_val)).argmax(1).numpy() == odd_digit_task(y_val)).mean())
        assert reference("ch14.fine_tune", (body, x_few, y_few, train_seed)) == pytest.approx(expected, abs=1e-12)


def test_fine_tune_cases_hold_two_labelled_images_per_digit_from_the_fit_images():
    (x_fit, y_fit), _ = digits_splits()
    fit_rows = {row.tobytes(): label for row, label in zip(x_fit, y_fit)}
    for body, x_few, y_few, _ in cases("ch14.fine_tune", 3):
        digits = [fit_rows[row.tobytes()] for row in x_few]
        assert sorted(digits) == sorted(list(range(10)) * 2)
        np.testing.assert_array_equal(y_few, np.array(digits) % 2)
        assert body is pretrained_classifier()


@pytest.mark.parametrize("device", DEVICES)
def test_target_validation_accuracy_matches_the_torch_model(device):
    with using_generator(np.random.default_rng(0)):
        state = MLP(64, hidden_sizes=(128, 64, 10), num_classes=2).double().state_dict()
    model = torch_mlp(state, (64, 128, 64, 10, 2)).to(device)
    _, (x_val, y_val) = digits_splits()
    with torch.no_grad():
        predicted = model(to_torch(x_val, device)).argmax(1).cpu().numpy()
    assert target_validation_accuracy(dict(state)) == pytest.approx(float(np.mean(predicted == y_val % 2)))


# ---------------------------------------------------------------------- the test, once
@pytest.mark.parametrize("seed", SEEDS)
def test_report_test_accuracy_reference_matches_torch(seed):
    for predicted, labels in cases("ch14.report_test_accuracy", seed):
        right = torch.tensor(predicted == labels, dtype=torch.float64)
        accuracy, standard_error = reference("ch14.report_test_accuracy", (predicted, labels))
        assert accuracy == pytest.approx(float(right.mean()), abs=1e-15)
        # the binomial standard error is the population standard deviation of the 0/1 hits over sqrt(N)
        expected = float(right.std(unbiased=False) / np.sqrt(len(labels)))
        assert standard_error == pytest.approx(expected, rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------- check() itself
@pytest.mark.parametrize("function", ["split_for_validation", "sample_configurations", "select_best",
                                      "ensemble_cross_entropy_backward", "report_test_accuracy"])
@pytest.mark.parametrize("seed", [0, 7])
def test_check_accepts_the_model_solution(function, seed):
    check(f"ch14.{function}", solution(function), seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_the_model_fine_tuning_beats_scratch_by_the_margin_on_many_draws(seed):
    check("ch14.fine_tune", solution("fine_tune"), seed=seed)


def _leaky_split(train, test, val_size, seed):
    x = np.concatenate([train[0], test[0]])
    y = np.concatenate([train[1], test[1]])
    order = np.random.default_rng(seed).permutation(len(x))   # the test rows are shuffled in too
    return (x[order[val_size:]], y[order[val_size:]]), (x[order[:val_size]], y[order[:val_size]]), test


def _uniform_sampling(u, lr_low, lr_high, width_low, width_high):
    return lr_low + u[:, 0] * (lr_high - lr_low), np.rint(width_low + u[:, 1] * (width_high - width_low)).astype(int)


def _average_of_member_losses(logits, labels):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    probabilities[:, np.arange(len(labels)), labels] -= 1
    return probabilities / (logits.shape[0] * len(labels))


WRONG = {
    "select_best": (lambda configurations, fit_logits, y_fit, val_logits, y_val:
                    configurations[int(np.argmax((fit_logits.argmax(-1) == y_fit).mean(1)))], "max \\|difference\\|"),
    "sample_configurations": (_uniform_sampling, "max \\|difference\\|"),
    "ensemble_cross_entropy_backward": (_average_of_member_losses, "max \\|difference\\|"),
    "report_test_accuracy": (lambda p, y: (np.mean(p == y), np.sqrt(np.mean(p == y) * (1 - np.mean(p == y)))),
                             "return value 1"),
}


@pytest.mark.parametrize("function", sorted(WRONG))
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    wrong, message = WRONG[function]
    with pytest.raises(CheckFailure, match=rf"^{function}, case \d+ of \d+.*{message}"):
        check(f"ch14.{function}", wrong)


def test_check_rejects_ties_broken_towards_the_last_row():
    def last_of_equals(configurations, fit_logits, y_fit, val_logits, y_val):
        val_accuracy = (val_logits.argmax(-1) == y_val).mean(1)
        return configurations[len(val_accuracy) - 1 - int(np.argmax(val_accuracy[::-1]))]
    with pytest.raises(CheckFailure, match=r"^select_best, case 5 of 5"):
        check("ch14.select_best", last_of_equals)


@pytest.mark.parametrize("wrong,message", [
    (_leaky_split, "not training rows: the test set must never be split"),
    (lambda train, test, v, s: (train, (train[0][:v], train[1][:v]), test), "every training row exactly once"),
    (lambda train, test, v, s: ((train[0][v:], train[1][v:]), (train[0][:v], train[1][:v]), test),
     "differs from the seeded split"),
    (lambda train, test, v, s: ((train[0][v:], train[1][v:]), (train[0][:v], train[1][:v]), (test[0][1:], test[1])),
     "test set must come back exactly"),
    (lambda train, test, v, s: (train, test), "return three"),
])
def test_check_says_what_is_wrong_with_a_split(wrong, message):
    with pytest.raises(CheckFailure, match=rf"^split_for_validation, case 1 of 4 .*{message}"):
        check("ch14.split_for_validation", wrong)


def test_check_rejects_fine_tuning_that_resets_the_body():
    def reset_body(body, x_few, y_few, seed):
        fresh = MLP(64, hidden_sizes=(128, 64), num_classes=10).double().state_dict()
        return solution("fine_tune")(tuple(fresh.values()), x_few, y_few, seed)
    with pytest.raises(CheckFailure, match=r"^fine_tune, case 1 of 2 .*does not beat training from scratch"):
        check("ch14.fine_tune", reset_body)


@pytest.mark.parametrize("returned,message", [
    (lambda: MLP(64, hidden_sizes=(128, 64, 10), num_classes=2), "returned MLP, expected model.state_dict"),
    (lambda: MLP(64, hidden_sizes=(128, 64), num_classes=2).state_dict(), "the state_dict has keys"),
    (lambda: {k: np.full_like(v, np.nan) for k, v in MLP(64, hidden_sizes=(128, 64, 10), num_classes=2)
              .state_dict().items()}, "must be finite numbers"),
])
def test_check_rejects_what_is_not_the_state_of_the_target_network(returned, message):
    with pytest.raises(CheckFailure, match=rf"^fine_tune, case 1 of 2 .*{message}"):
        check("ch14.fine_tune", lambda body, x_few, y_few, seed: returned())
