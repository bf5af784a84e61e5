"""Chapter 8 (training an MLP end to end): one-hot targets, accuracy, shuffled mini-batches,
the gradient of the loss with respect to the first layer (derived by the student), one training
step, and a whole training run that must reach a target accuracy on a validation split.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.nn.Embedding` (a
lookup in the identity matrix is one-hot encoding), `dlcourse.train` (its accuracy and its
training loop, run for one step), `dlcourse.data.DataLoader` and `dlcourse.models.MLP` (its
backward pass); the test suite holds them to PyTorch.

Two parts are not compared with `allclose`:
- `batch_indices` is compared as a set of batches (which indices share a batch), so the
  order of the batches and of the indices inside one does not matter;
- `train_digits_mlp` returns a state_dict, and its compare loads it into a
  `dlcourse.models.MLP` and measures the accuracy on a validation split held out of the
  digits training images (the one chapter 8 of the book holds out). The student's function is
  given the rest of the training images only; the test split decides nothing here, and the
  part forbids loading any data set, so that no choice inside the run can be made on it.
"""
import copy
import weakref

import numpy as np

import contextlib

from dlcourse import nn, optim
from dlcourse._random import using_generator
from dlcourse.checks import CheckFailure, compare_values, implementations, part
from dlcourse.data import load_digits
from dlcourse.models import MLP
from dlcourse.train import _accuracy

# Held out of the 1,347 digits training images, as in chapter 8 of the book: the first 270 of
# np.random.default_rng(0).permutation(1347). A trained MLP reaches about 96–98% on it; each
# image is 0.37 points, so the target leaves room for the noise of a split this small.
VALIDATION_SIZE = 270
VALIDATION_SEED = 0
TARGET_VALIDATION_ACCURACY = 0.95


@part("ch08.one_hot", "one_hot", asks='one-hot encoding',
      forbids=("dlcourse.nn.Embedding",))
def one_hot_cases(rng):
    """One-hot rows for integer labels: several sizes, one class only, the last class present."""
    cases = []
    for n, classes in [(6, 4), (1, 10), (8, 2), (12, 5)]:
        labels = rng.integers(0, classes, size=n)
        labels[-1] = classes - 1
        cases.append((labels, classes))
    cases.append((np.full(5, 2), 3))
    return cases


@part("ch08.accuracy", "accuracy", asks='accuracy',
      forbids=("dlcourse.train._accuracy", "dlcourse.train.evaluate"))
def accuracy_cases(rng):
    """Fraction of rows whose largest logit is the label: random, all right, none right, one row."""
    cases = []
    for n, classes in [(20, 10), (7, 3), (1, 4), (50, 2)]:
        cases.append((rng.standard_normal((n, classes)), rng.integers(0, classes, size=n)))
    logits = rng.standard_normal((6, 5))
    cases.append((logits, np.argmax(logits, axis=1)))
    cases.append((logits, (np.argmax(logits, axis=1) + 1) % 5))
    return cases


def _compare_batches(got, expected, args):
    n, batch_size, seed = args
    if isinstance(got, np.ndarray) and got.ndim < 2:
        raise CheckFailure(f"returned one array of shape {got.shape}, expected a list of index arrays, one per batch")
    try:
        batches = [np.asarray(batch).reshape(-1) for batch in got]
    except TypeError:
        raise CheckFailure(f"returned {type(got).__name__}, expected a list of index arrays, one per batch") from None
    if len(batches) != len(expected):
        raise CheckFailure(f"returned {len(batches)} batches, expected {len(expected)} for n={n}, "
                           f"batch_size={batch_size} (the last batch holds what is left over)")
    everything = np.sort(np.concatenate(batches)) if batches else np.array([])
    if everything.shape != (n,) or not np.array_equal(everything, np.arange(n)):
        raise CheckFailure(f"the batches must hold every index 0..{n - 1} exactly once")
    if sorted(map(len, batches)) != sorted(map(len, expected)):
        raise CheckFailure(f"batch sizes {[len(b) for b in batches]}, expected {[len(e) for e in expected]}")
    if {frozenset(b.tolist()) for b in batches} != {frozenset(e.tolist()) for e in expected}:
        raise CheckFailure(f"the batches group the indices differently from the seeded shuffle: cut "
                           f"np.random.default_rng(seed).permutation(n) into consecutive batches (seed={seed})")


@part("ch08.batch_indices", "batch_indices", asks='shuffled mini-batches',
      forbids=("dlcourse.data.DataLoader",), compare=_compare_batches)
def batch_indices_cases(rng):
    """Shuffled mini-batches of the indices 0…n−1 (seeded): a remainder batch, an exact split,
    one batch only, batches of one."""
    seeds = rng.integers(0, 2**31, size=5)
    return [(10, 4, int(seeds[0])), (12, 3, int(seeds[1])), (5, 8, int(seeds[2])), (7, 1, int(seeds[3])),
            (100, 32, int(seeds[4]))]


# ------------------------------------------------------------------------- the first layer's gradient
@part("ch08.first_layer_gradients", "first_layer_gradients", asks="the gradient of the loss for the first layer",
      forbids=implementations.SOFTMAX_IMPLEMENTATIONS + (
          "dlcourse.nn.Linear", "dlcourse.nn.ReLU", "dlcourse.nn.Sequential",
          "dlcourse.models.MLP", "dlcourse.train.fit"), derived=True)
def first_layer_gradients_cases(rng):
    """(∂L/∂W1, ∂L/∂b1) of L = mean CE(relu(x W1ᵀ + b1) W2ᵀ + b2, labels): several sizes, one example,
    two classes, and a layer whose first units are dead (negative for every example)."""
    cases = []
    for n, inputs, hidden, classes, dead in [(6, 4, 5, 3, 0), (1, 3, 4, 2, 0), (16, 64, 32, 10, 0),
                                             (5, 6, 8, 4, 3), (9, 2, 3, 5, 0)]:
        x = rng.standard_normal((n, inputs))
        w1, b1 = rng.standard_normal((hidden, inputs)) / np.sqrt(inputs), rng.standard_normal(hidden) * 0.5
        b1[:dead] = -100.0   # these units output 0 for every example: no gradient reaches them
        w2, b2 = rng.standard_normal((classes, hidden)) / np.sqrt(hidden), rng.standard_normal(classes) * 0.5
        labels = rng.integers(0, classes, size=n)
        cases.append((x, labels, w1, b1, w2, b2))
    return cases


# ------------------------------------------------------------------------- one training step
# A case hands the student live dlcourse objects, which their train_step changes. A copy of each
# case as it was built is kept here, so that the reference steps from the same starting point.
_PRISTINE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _train_step_case(rng, sizes, make_optimizer, loss_fn, targets, mid_training=False):
    in_features, hidden_sizes, classes, n = sizes
    with using_generator(np.random.default_rng(rng.integers(2**32))):
        model = MLP(in_features, hidden_sizes=hidden_sizes, num_classes=classes).double()
    optimizer = make_optimizer(model)
    # Gradients left over from an earlier batch (which a step must clear before its backward),
    # and, for stateful optimizers, a step already taken with them.
    for _, grad in model.named_gradients():
        grad[...] = rng.standard_normal(grad.shape)
    if mid_training:
        optimizer.step()
    x = rng.standard_normal((n, in_features))
    labels = rng.integers(0, classes, size=n)
    y = labels if targets == "labels" else np.eye(classes)[labels]
    _PRISTINE[model] = copy.deepcopy((model, loss_fn, optimizer))
    return model, loss_fn, optimizer, x, y


def _compare_train_step(got, expected, args):
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"returned {type(got).__name__}, expected the pair (loss, model.state_dict())")
    loss, state = got
    expected_loss, expected_state = expected
    compare_values(loss, expected_loss, 1e-6, 1e-8, "loss (before the step)")
    if not isinstance(state, dict):
        raise CheckFailure(f"the second value is {type(state).__name__}, expected model.state_dict()")
    if set(state) != set(expected_state):
        raise CheckFailure(f"the state_dict has keys {sorted(state)}, expected {sorted(expected_state)}")
    initial = _PRISTINE[args[0]][0].state_dict() if args[0] in _PRISTINE else None
    if initial is not None and all(np.array_equal(np.asarray(state[k]), initial[k]) for k in initial):
        raise CheckFailure("the parameters did not change: call optimizer.step() after model.backward(...)")
    for key, value in expected_state.items():
        compare_values(state[key], value, 1e-6, 1e-8, f"state_dict[{key!r}] after the step")


@part("ch08.train_step", "train_step", asks='one training step',
      forbids=("dlcourse.train.fit",), compare=_compare_train_step)
def train_step_cases(rng):
    """One step (forward, loss, zero_grad, backward, step) on float64 MLPs with stale gradients:
    plain SGD, SGD with momentum in mid-training, Adam; cross-entropy (with and without label
    smoothing) and MSE on one-hot targets."""
    return [
        _train_step_case(rng, (4, (5,), 3, 6), lambda m: optim.SGD(m, lr=0.1), nn.CrossEntropyLoss(), "labels"),
        _train_step_case(rng, (6, (8, 7), 4, 5), lambda m: optim.SGD(m, lr=0.05, momentum=0.9),
                         nn.CrossEntropyLoss(label_smoothing=0.1), "labels", mid_training=True),
        _train_step_case(rng, (3, (4,), 2, 1), lambda m: optim.Adam(m, lr=0.01), nn.CrossEntropyLoss(), "labels",
                         mid_training=True),
        _train_step_case(rng, (5, (6,), 3, 4), lambda m: optim.SGD(m, lr=0.2), nn.MSELoss(), "one-hot"),
    ]


# ------------------------------------------------------------------------- a whole training run
def _digits():
    return load_digits()


# What a returned state dict may declare, checked before any model is built from it: the
# grader builds the model in its own process, so the shapes must not choose its size.
MAX_MLP_LAYERS = 16
MAX_MLP_WIDTH = 4096
MAX_MLP_PARAMETERS = 4_000_000


def _bounded_state(state: dict, layers: int) -> dict:
    """`state` with its declared sizes checked against the caps above, and every array cast to
    a BLAS dtype (float32 or float64: NumPy multiplies float16 or integers without BLAS, which
    turns milliseconds into minutes); raises CheckFailure when a cap is exceeded."""
    if layers > MAX_MLP_LAYERS:
        raise CheckFailure(f"the state_dict has {layers} linear layers; at most {MAX_MLP_LAYERS} are accepted")
    widths = [64]
    for i in range(1, layers + 1):
        shape = np.shape(state[f"fc{i}.weight"])
        if len(shape) != 2 or not all(0 < n <= MAX_MLP_WIDTH for n in shape):
            raise CheckFailure(f"fc{i}.weight has shape {shape}; expected (out_features, in_features), "
                               f"each between 1 and {MAX_MLP_WIDTH}")
        widths.append(int(shape[0]))
    declared = sum(n_in * n_out + n_out for n_in, n_out in zip(widths, widths[1:]))
    if declared > MAX_MLP_PARAMETERS:
        raise CheckFailure(f"the state_dict declares {declared:,} parameters; at most {MAX_MLP_PARAMETERS:,} "
                           "are accepted for the digits MLP")
    bounded = {}
    for key, value in state.items():
        array = np.asarray(value)
        if array.size > MAX_MLP_PARAMETERS or array.dtype.kind not in "biuf":
            raise CheckFailure(f"{key} is not a plausible parameter ({array.dtype}, shape {array.shape})")
        bounded[key] = array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
    return bounded


def load_digits_mlp(state) -> MLP:
    """A dlcourse.models.MLP(64, hidden_sizes=…, 10) holding `state`; the hidden sizes are read
    off the shapes of fc1.weight, fc2.weight, …; raises CheckFailure when it does not fit."""
    if not isinstance(state, dict):
        raise CheckFailure(f"returned {type(state).__name__}, expected model.state_dict() (a dict of arrays)")
    layers = 0
    while f"fc{layers + 1}.weight" in state:
        layers += 1
    if layers == 0:
        raise CheckFailure(f"the state_dict has keys {sorted(state)[:6]}, expected those of "
                           "dlcourse.models.MLP: fc1.weight, fc1.bias, fc2.weight, …")
    state = _bounded_state(state, layers)
    try:
        hidden_sizes = tuple(int(np.shape(state[f"fc{i}.weight"])[0]) for i in range(1, layers))
        model = MLP(64, hidden_sizes=hidden_sizes, num_classes=10)
        model.load_state_dict(state)
    except (KeyError, ValueError, IndexError) as error:
        raise CheckFailure(f"the state_dict does not fit dlcourse.models.MLP(64, hidden_sizes=..., "
                           f"num_classes=10): {error}") from None
    return model


def digits_validation_split():
    """((x_fit, y_fit), (x_val, y_val)): the digits training images less the validation split,
    and the validation split (VALIDATION_SIZE images held out with VALIDATION_SEED)."""
    (x_train, y_train), _ = _digits()
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(x_train))
    held_out, kept = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]
    return (x_train[kept], y_train[kept]), (x_train[held_out], y_train[held_out])


def digits_validation_accuracy(state) -> float:
    """Accuracy of the MLP in `state` on the validation split (eval mode)."""
    model = load_digits_mlp(state).eval()
    _, (x_val, y_val) = digits_validation_split()
    with np.errstate(all="ignore"):
        return _accuracy(model(x_val.astype(model.fc1.weight.dtype)), y_val)


def _compare_validation_accuracy(got, expected, args):
    accuracy = digits_validation_accuracy(got)
    if not accuracy >= expected:
        raise CheckFailure(f"validation accuracy {accuracy:.1%} is below the target {expected:.0%} "
                           f"(trained with seed={args[2]})")


# Every way of loading a data set from inside the run: a run given its training data that loads
# data anyway could only be after the test split (to choose its epochs, say, on it).
DATA_SET_LOADERS = ("dlcourse.data.load_digits", "dlcourse.data.load_mnist", "sklearn.datasets.load_digits")


@part("ch08.train_digits_mlp", "train_digits_mlp",
      asks="a training run on the data it is given, every choice made on a validation part of it, never the test split",
      forbids=("dlcourse.recipes",) + DATA_SET_LOADERS, compare=_compare_validation_accuracy)
def train_digits_mlp_cases(rng):
    """Train an MLP on the digits training images less the validation split, with two seeds the
    student never saw."""
    (x_fit, y_fit), _ = digits_validation_split()
    return [(x_fit, y_fit, int(seed)) for seed in rng.integers(1, 2**31, size=2)]


@contextlib.contextmanager
def data_sets_out_of_reach(namespace: dict):
    """While the block runs, every data-set loader (DATA_SET_LOADERS, and any name in the
    notebook's `namespace` bound to one) raises CheckFailure: the notebook's visible test of
    train_digits_mlp, which must train on what it is given and choose on a part of that."""
    import sklearn.datasets

    import dlcourse.data

    def refuse(*args, **kwargs):
        raise CheckFailure("train_digits_mlp loaded a data set: it is given its training data, and every choice "
                           "(epochs, learning rate, width) must be made on a validation part of it, never on the "
                           "test split")

    owners = {"dlcourse.data.load_digits": dlcourse.data, "dlcourse.data.load_mnist": dlcourse.data,
              "sklearn.datasets.load_digits": sklearn.datasets}
    originals = {name: getattr(owners[name], name.rpartition(".")[2]) for name in DATA_SET_LOADERS}
    rebound = {key: value for key, value in namespace.items()
               if any(value is original for original in originals.values())}
    try:
        for name in DATA_SET_LOADERS:
            setattr(owners[name], name.rpartition(".")[2], refuse)
        namespace.update(dict.fromkeys(rebound, refuse))
        yield
    finally:
        for name, original in originals.items():
            setattr(owners[name], name.rpartition(".")[2], original)
        namespace.update(rebound)
