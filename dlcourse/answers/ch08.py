"""The answer key of ch08: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch08`.
"""
import copy
import numpy as np
from dlcourse import nn
from dlcourse.data import ArrayDataset, DataLoader
from dlcourse.models import MLP
from dlcourse.train import _accuracy, fit

from dlcourse.answers import reference
from dlcourse.checks.ch08 import _PRISTINE, TARGET_VALIDATION_ACCURACY


@reference('ch08.one_hot')
def one_hot_reference(labels, num_classes):
    identity = nn.Embedding.from_pretrained(np.eye(num_classes))
    return identity(labels)


@reference('ch08.accuracy')
def accuracy_reference(logits, labels):
    return _accuracy(logits, labels)


@reference('ch08.batch_indices')
def batch_indices_reference(n, batch_size, seed):
    loader = DataLoader(ArrayDataset(np.arange(n)), batch_size=batch_size, shuffle=True, seed=seed)
    return [indices for (indices,) in loader]


@reference('ch08.first_layer_gradients')
def first_layer_gradients_reference(x, labels, w1, b1, w2, b2):
    (hidden, inputs), classes = w1.shape, w2.shape[0]
    model = MLP(inputs, hidden_sizes=(hidden,), num_classes=classes).double()
    model.load_state_dict({"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2})
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), labels)
    model.backward(loss_fn.backward())
    return model.grads["fc1.weight"].copy(), model.grads["fc1.bias"].copy()


@reference('ch08.train_step')
def train_step_reference(model, loss_fn, optimizer, x, y):
    model, loss_fn, optimizer = copy.deepcopy(_PRISTINE[model])
    history = fit(model, loss_fn, optimizer, [(x, y)], epochs=1, progress=False)
    return history.batch_loss[0], model.state_dict()


@reference('ch08.train_digits_mlp')
def train_digits_mlp_reference(x_train, y_train, seed):
    """What any answer must reach: the target accuracy on the validation split."""
    return TARGET_VALIDATION_ACCURACY
