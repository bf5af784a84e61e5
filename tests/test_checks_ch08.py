"""The graded parts of exercise 8 (training an MLP): every reference agrees with PyTorch on every
seeded case (one-hot, accuracy, torch's batching of a permutation, torch autograd's gradient for
the first layer, one torch.optim training step, and the validation accuracy of a trained MLP),
check() accepts the model solution and rejects typical mistakes with a message naming the
function, and the training run is marked on a validation split that the test split never enters
and that the student's run cannot load."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcourse.checks import CheckFailure, cases, check, get_part
import dlcourse.data
from dlcourse.checks.ch08 import (_PRISTINE, TARGET_VALIDATION_ACCURACY, data_sets_out_of_reach,
                                  digits_validation_accuracy, digits_validation_split)
from dlcourse.data import load_digits
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch08

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch08-training-an-mlp" / "ch08-training-an-mlp.ipynb"
SEEDS = [0, 1, 7]


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


class TorchMLP(torch.nn.Module):
    """The documents' MLP written in torch, with dlcourse.models.MLP's parameter names."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = len(sizes) - 1
        for index in range(self.layers):
            setattr(self, f"fc{index + 1}", torch.nn.Linear(sizes[index], sizes[index + 1], dtype=torch.float64))

    def forward(self, x):
        x = x.flatten(1)
        for index in range(1, self.layers + 1):
            x = getattr(self, f"fc{index}")(x)
            if index < self.layers:
                x = torch.relu(x)
        return x


def torch_twin(state, device):
    sizes = [state["fc1.weight"].shape[1]] + [state[f"fc{i}.weight"].shape[0] for i in range(1, len(state) // 2 + 1)]
    model = TorchMLP(sizes).to(device)
    model.load_state_dict({key: to_torch(np.asarray(value, dtype=np.float64), device) for key, value in state.items()})
    return model


# ---------------------------------------------------------------------------- references against torch
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_one_hot_matches_torch(seed):
    for number, (labels, classes) in enumerate(cases("ch08.one_hot", seed), start=1):
        ours = get_part("ch08.one_hot").reference(labels, classes)
        theirs = torch.nn.functional.one_hot(torch.from_numpy(labels), classes)
        assert ours.shape == (len(labels), classes)
        np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=f"one_hot case {number}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_accuracy_matches_torch(seed, device):
    values = []
    for number, (logits, labels) in enumerate(cases("ch08.accuracy", seed), start=1):
        ours = get_part("ch08.accuracy").reference(logits, labels)
        theirs = (to_torch(logits, device).argmax(dim=1) == to_torch(labels, device)).double().mean()
        assert isinstance(ours, float)
        assert_close(ours, theirs, np.float64, f"accuracy case {number}")
        values.append(ours)
    assert 1.0 in values and 0.0 in values, "the cases include an all-right and an all-wrong batch"


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_batches_are_torch_batch_sampler_over_the_seeded_permutation(seed):
    for n, batch_size, batch_seed in cases("ch08.batch_indices", seed):
        ours = get_part("ch08.batch_indices").reference(n, batch_size, batch_seed)
        permutation = np.random.default_rng(batch_seed).permutation(n).tolist()
        theirs = list(torch.utils.data.BatchSampler(permutation, batch_size, drop_last=False))
        assert [b.tolist() for b in ours] == theirs


def torch_optimizer(optimizer, model, device):
    """torch.optim twin of a dlcourse optimizer, its state copied parameter by parameter."""
    group = optimizer.param_groups[0]
    params = dict(model.named_parameters())
    if type(optimizer).__name__ == "SGD":
        twin = torch.optim.SGD(params.values(), lr=group["lr"], momentum=group["momentum"], foreach=False)
    else:
        twin = torch.optim.Adam(params.values(), lr=group["lr"], betas=group["betas"], eps=group["eps"], foreach=False)
    for name, state in optimizer.state.items():
        twin.state[params[name]] = {key: torch.tensor(float(value)) if key == "step" else to_torch(value, device)
                                    for key, value in state.items()}
    return twin


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_first_layer_gradients_match_torch_autograd(seed, device):
    for number, (x, labels, w1, b1, w2, b2) in enumerate(cases("ch08.first_layer_gradients", seed), start=1):
        d_w1, d_b1 = get_part("ch08.first_layer_gradients").reference(x, labels, w1, b1, w2, b2)
        weight, bias = to_torch(w1, device).requires_grad_(), to_torch(b1, device).requires_grad_()
        hidden = torch.relu(to_torch(x, device) @ weight.T + bias)
        logits = hidden @ to_torch(w2, device).T + to_torch(b2, device)
        torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels, device=device)).backward()
        assert_close(d_w1, weight.grad, np.float64, f"dL/dW1, case {number}")
        assert_close(d_b1, bias.grad, np.float64, f"dL/db1, case {number}")


def test_first_layer_gradient_cases_include_dead_units_that_get_no_gradient():
    dead = [(x, labels, w1, b1, w2, b2) for x, labels, w1, b1, w2, b2 in cases("ch08.first_layer_gradients")
            if np.any(b1 < -50)]
    assert dead, "a case with units that are off for every example"
    for args in dead:
        d_w1, d_b1 = get_part("ch08.first_layer_gradients").reference(*args)
        off = args[3] < -50
        assert np.all(d_w1[off] == 0) and np.all(d_b1[off] == 0) and np.any(d_b1[~off] != 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_train_step_matches_a_torch_training_step(seed, device):
    for number, args in enumerate(cases("ch08.train_step", seed), start=1):
        loss, state = get_part("ch08.train_step").reference(*args)
        model, loss_fn, optimizer = copy.deepcopy(_PRISTINE[args[0]])
        x, y = args[3], args[4]
        twin = torch_twin(model.state_dict(), device)
        for name, grad in model.named_gradients():
            dict(twin.named_parameters())[name].grad = to_torch(grad, device)  # the stale gradients
        twin_optimizer = torch_optimizer(optimizer, twin, device)
        if type(loss_fn).__name__ == "MSELoss":
            twin_loss_fn = torch.nn.MSELoss()
        else:
            twin_loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=loss_fn.label_smoothing)
        twin_loss = twin_loss_fn(twin(to_torch(x, device)), to_torch(y, device))
        twin_optimizer.zero_grad()
        twin_loss.backward()
        twin_optimizer.step()
        assert_close(loss, twin_loss, np.float64, f"MLP train_step loss, case {number}")
        theirs = twin.state_dict()
        assert set(state) == set(theirs)
        for key, value in state.items():
            assert_close(value, theirs[key], np.float64, f"MLP train_step {key}, case {number}")
            assert not np.array_equal(value, model.state_dict()[key]), "every parameter moves"


def test_train_step_cases_start_with_stale_gradients_and_optimizer_state():
    args = cases("ch08.train_step")
    for model, *_ in args:
        assert all(np.any(grad != 0) for _, grad in model.named_gradients())
    assert any(optimizer.state for _, _, optimizer, _, _ in args), "some optimizer is in mid-training"


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_digits_validation_accuracy_matches_torch_on_a_trained_state(solutions, device):
    (x_fit, y_fit), (x_val, y_val) = digits_validation_split()
    state = solutions["train_digits_mlp"](x_fit, y_fit, 3)
    ours = digits_validation_accuracy(state)
    logits = torch_twin(state, device)(to_torch(x_val.astype(np.float64), device))
    theirs = (logits.argmax(dim=1).cpu().numpy() == y_val).mean()
    # float32 here, float64 in torch: at most one near-tie may flip
    assert ours == pytest.approx(theirs, abs=1.01 / len(y_val)) and ours >= TARGET_VALIDATION_ACCURACY
    assert get_part("ch08.train_digits_mlp").reference(x_fit, y_fit, 3) == TARGET_VALIDATION_ACCURACY


def test_the_validation_split_is_the_books_held_out_part_of_the_training_images_and_no_test_image():
    (x_train, y_train), (x_test, _) = load_digits()
    (x_fit, y_fit), (x_val, y_val) = digits_validation_split()
    held_out = np.random.default_rng(0).permutation(len(x_train))   # book/08-training-an-mlp.md
    np.testing.assert_array_equal(x_val, x_train[held_out[:270]])
    np.testing.assert_array_equal(y_fit, y_train[held_out[270:]])
    assert len(x_fit) + len(x_val) == len(x_train) == 1347
    for x_fit_case, _, _ in cases("ch08.train_digits_mlp"):
        np.testing.assert_array_equal(x_fit_case, x_fit)   # the run is never given a validation image


def test_while_the_run_is_tested_no_data_set_can_be_loaded_and_afterwards_all_can():
    import sklearn.datasets

    namespace = {"load_digits": load_digits}
    with data_sets_out_of_reach(namespace):
        for loader in (namespace["load_digits"], dlcourse.data.load_digits, dlcourse.data.load_mnist,
                       sklearn.datasets.load_digits):
            with pytest.raises(CheckFailure, match="never on the test split"):
                loader()
    assert namespace["load_digits"] is load_digits and dlcourse.data.load_digits is load_digits
    assert len(sklearn.datasets.load_digits().target) == 1797


# ---------------------------------------------------------------------------- check() on answers
@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


@pytest.mark.parametrize("name", ["one_hot", "accuracy", "batch_indices", "first_layer_gradients", "train_step"])
def test_check_accepts_the_model_solution(solutions, name):
    for seed in SEEDS:
        assert check(f"ch08.{name}", solutions[name], seed=seed) is None


@pytest.mark.slow
def test_check_accepts_the_model_training_run(solutions):
    assert check("ch08.train_digits_mlp", solutions["train_digits_mlp"], seed=5) is None


def step_without_zero_grad(model, loss_fn, optimizer, x, y):
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    optimizer.step()
    return loss, model.state_dict()


def step_that_clears_before_stepping(model, loss_fn, optimizer, x, y):
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    optimizer.zero_grad()
    optimizer.step()
    return loss, model.state_dict()


def first_layer_without_relu(x, labels, w1, b1, w2, b2):
    """A typical mistake: the ReLU's derivative forgotten, the gradient passed back where units were off."""
    pre_activation = x @ w1.T + b1
    logits = np.maximum(pre_activation, 0) @ w2.T + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[np.arange(len(labels)), labels] -= 1
    d_pre_activation = probabilities / len(labels) @ w2
    return d_pre_activation.T @ x, d_pre_activation.sum(axis=0)


def untrained_mlp(x_train, y_train, seed):
    from dlcourse.models import MLP
    return MLP(64, hidden_sizes=(32,), num_classes=10).state_dict()


WRONG = [
    ("one_hot", lambda labels, classes: np.eye(classes)[labels - 1], "one_hot, case 1 of 5"),
    ("accuracy", lambda logits, labels: 100 * np.mean(np.argmax(logits, axis=1) == labels), "accuracy, case 1 of 6"),
    ("batch_indices", lambda n, b, seed: [np.arange(n)[s:s + b] for s in range(0, n, b)],
     "batch_indices, case 1 of 5 .*group the indices differently"),
    ("batch_indices", lambda n, b, seed: [np.random.default_rng(seed).permutation(n)[s:s + b] for s in range(0, n - b + 1, b)],
     r"batch_indices, case 1 of 5 .*returned 2 batches, expected 3"),
    ("train_step", step_without_zero_grad, r"train_step, case 1 of 4 .*state_dict\['fc1.weight'\] after the step"),
    ("train_step", step_that_clears_before_stepping, "train_step, case 1 of 4 .*parameters did not change"),
    ("train_step", lambda model, loss_fn, optimizer, x, y: loss_fn(model(x), y), "train_step, case 1 of 4 .*expected the pair"),
    ("first_layer_gradients", first_layer_without_relu,
     r"first_layer_gradients, case 1 of 5 .*return value 0: max \|difference\|"),
    ("train_digits_mlp", untrained_mlp, r"train_digits_mlp, case 1 of 2 .*validation accuracy \d+\.\d% is below the target 95%"),
    ("train_digits_mlp", lambda x, y, seed: {"weight": np.zeros((10, 64))}, "train_digits_mlp, case 1 of 2 .*fc1.weight"),
]


@pytest.mark.parametrize("name, wrong, message", WRONG, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(WRONG)])
def test_check_rejects_a_wrong_answer_with_a_message_naming_the_function(name, wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check(f"ch08.{name}", wrong)


def test_check_of_train_step_is_not_fooled_by_the_objects_it_hands_out(solutions):
    """The reference steps from a copy made when the case was built, so a student's step
    (which changes the model and optimizer it is given) cannot change the expected answer."""
    args = cases("ch08.train_step")
    expected_loss, expected_state = get_part("ch08.train_step").reference(*args[1])
    for _ in range(3):
        solutions["train_step"](*args[1])
    loss, state = get_part("ch08.train_step").reference(*args[1])
    assert loss == expected_loss
    assert all(np.array_equal(state[key], expected_state[key]) for key in state)
