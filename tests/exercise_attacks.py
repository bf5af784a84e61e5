"""Ways a student hands in the answer key or a library implementation instead of their own code.

Shared by tests/test_grading_integrity.py (the probe process, no sandbox) and
tests/test_grading_assignments.py (`dlcourse grade`, in the sandbox). Every attack is the
text of an answer cell that defines the part's function.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

# The answer key, reached in the ways a student would try (formatted with ch, f, part).
ANSWER_KEY_ATTACKS = {
    "import": "from dlcourse.answers.{ch} import {f}_reference as {f}",
    "obfuscated import": ("import importlib\n"
                          "_key = importlib.import_module(''.join(['dlc', 'ourse.', 'ans', 'wers.', '{ch}']))\n"
                          "{f} = getattr(_key, '{f}_' + 'reference')"),
    "get_part": "from dlcourse.checks import get_part\n{f} = get_part('{part}').reference",
    "sys.modules": ("import sys\nimport dlcourse.checks\n\n"
                    "def {f}(*args):\n"
                    "    return sys.modules['dlcourse.' + 'checks'].get_part('{part}').reference(*args)"),
    "source file": ("import os\nimport dlcourse\n_namespace = {{'reference': lambda part_id: (lambda f: f)}}\n"
                    "_text = open(os.path.join(os.path.dirname(dlcourse.__file__), 'answers', '{ch}.py')).read()\n"
                    "exec(_text.replace('from dlcourse.answers import reference', ''), _namespace)\n"
                    "{f} = _namespace['{f}_reference']"),
}


def pasted_answer_key(chapter: str, function: str) -> str:
    """The answer key's module pasted into the answer cell: every reference of the chapter,
    with the helpers it imports from dlcourse.checks, and the part's function bound to its
    reference. The references wrap the library implementations their parts forbid."""
    text = (ROOT / "dlcourse" / "answers" / f"{chapter}.py").read_text()
    text = text.replace("from dlcourse.answers import reference\n", "")
    text = re.sub(r"^@reference\(.*\)\n", "", text, flags=re.M)
    return f"{text}\n{function} = {function}_reference\n"


# Library implementations wrapped by hand: (part, answer cell). Each computes the right answer
# (tests/test_grading_integrity.py proves it without the guard) and must earn nothing.
LIBRARY_WRAPPERS = {
    "ch02.dense_forward": ("from dlcourse import nn as layers\n\n"
                           "def dense_forward(X, W, b):\n"
                           "    layer = layers.Linear(W.shape[1], W.shape[0], dtype=np.float64)\n"
                           "    layer.load_state_dict({'weight': W, 'bias': b})\n"
                           "    return layer(X)"),
    "ch04.softmax": "from scipy.special import softmax as library_softmax\n\n"
                    "def softmax(x):\n    return library_softmax(x, axis=-1)",
    "ch06.adam_step": ("from dlcourse import optim\nfrom dlcourse.checks.ch06 import _one_step\n\n"
                       "def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):\n"
                       "    param, state = _one_step(optim.Adam, param, grad, {'step': t - 1, 'exp_avg': m, "
                       "'exp_avg_sq': v}, lr=lr, betas=(beta1, beta2), eps=eps)\n"
                       "    return param, state['exp_avg'], state['exp_avg_sq']"),
    "ch07.batchnorm_forward": ("import dlcourse.nn\n\n"
                               "def batchnorm_forward(x, gamma, beta, eps):\n"
                               "    layer = getattr(dlcourse.nn, 'Batch' + 'Norm1d')(x.shape[1], eps=eps, "
                               "dtype=np.float64)\n"
                               "    layer.weight[...] = gamma\n    layer.bias[...] = beta\n"
                               "    return layer(x)"),
    "ch09.conv2d_forward": ("from dlcourse import nn as layers\n\n"
                            "def conv2d_forward(x, w, b, stride, padding):\n"
                            "    conv = layers.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, "
                            "padding=padding, dtype=np.float64)\n"
                            "    conv.weight[...] = w\n    conv.bias[...] = b\n    return conv(x)"),
    "ch11.lstm_cell_forward": ("from dlcourse.nn import LSTMCell as Cell   # captured before any probe\n\n"
                               "def lstm_cell_forward(x, h, c, W_ih, W_hh, b_ih, b_hh):\n"
                               "    cell = Cell(x.shape[1], h.shape[1], dtype=np.float64)\n"
                               "    cell.load_state_dict({'weight_ih': W_ih, 'weight_hh': W_hh, 'bias_ih': b_ih, "
                               "'bias_hh': b_hh})\n"
                               "    return cell(x, (h, c))"),
    "ch11.gru_cell_forward": ("import importlib\n_layers = importlib.import_module('dlcourse.' + 'nn')\n\n"
                              "def gru_cell_forward(x, h, W_ih, W_hh, b_ih, b_hh):\n"
                              "    cell = getattr(_layers, 'GRU' + 'Cell')(x.shape[1], h.shape[1], dtype=np.float64)\n"
                              "    cell.load_state_dict({'weight_ih': W_ih, 'weight_hh': W_hh, 'bias_ih': b_ih, "
                              "'bias_hh': b_hh})\n"
                              "    return cell(x, h)"),
    "ch11.lstm_cell_backward": ("import torch\n\n"
                                "def lstm_cell_backward(grad_h, grad_c, x, h, c, W_ih, W_hh, b_ih, b_hh):\n"
                                "    t = [torch.tensor(a, requires_grad=True) for a in (x, h, c, W_ih, W_hh, b_ih, b_hh)]\n"
                                "    gates = t[0] @ t[3].T + t[5] + t[1] @ t[4].T + t[6]\n"
                                "    i, f, g, o = gates.chunk(4, 1)\n"
                                "    c_new = torch.sigmoid(f) * t[2] + torch.sigmoid(i) * torch.tanh(g)\n"
                                "    h_new = torch.sigmoid(o) * torch.tanh(c_new)\n"
                                "    ((h_new * torch.tensor(grad_h)).sum() + (c_new * torch.tensor(grad_c)).sum()).backward()\n"
                                "    return tuple(a.grad.numpy() for a in t[:5]) + (t[5].grad.numpy(),)"),
    "ch14.sample_configurations": ("from scipy.stats import loguniform\n\n"
                                   "def sample_configurations(u, lr_low, lr_high, width_low, width_high):\n"
                                   "    widths = np.rint(loguniform.ppf(u[:, 1], width_low, width_high)).astype(np.int64)\n"
                                   "    return loguniform.ppf(u[:, 0], lr_low, lr_high), widths"),
    "ch14.ensemble_cross_entropy_backward": ("from scipy.special import softmax as library_softmax\n\n"
                                            "def ensemble_cross_entropy_backward(logits, labels):\n"
                                            "    members, n, classes = logits.shape\n"
                                            "    p = library_softmax(logits, axis=-1)\n"
                                            "    p_label = p[:, np.arange(n), labels]\n"
                                            "    scale = -p_label / (members * n * p_label.mean(axis=0))\n"
                                            "    return scale[..., None] * (np.eye(classes)[labels] - p)"),
    "ch14.fine_tune": ("import dlcourse\nfrom dlcourse import nn, optim\nfrom dlcourse.models import MLP\n"
                       "from dlcourse.train import fit as library_fit\n\n"
                       "def fine_tune(body, x_few, y_few, seed):\n"
                       "    dlcourse.manual_seed(seed)\n"
                       "    model = MLP(64, hidden_sizes=(128, 64, 10), num_classes=2).double()\n"
                       "    for layer, weight, bias in zip((model.fc1, model.fc2, model.fc3), body[0::2], body[1::2]):\n"
                       "        layer.load_state_dict({'weight': np.array(weight), 'bias': np.array(bias)})\n"
                       "    library_fit(model, nn.CrossEntropyLoss(), optim.Adam(model.fc4, lr=1e-2), [(x_few, y_few)], "
                       "epochs=100, progress=False)\n"
                       "    return model.state_dict()"),
    "ch14.report_test_accuracy": ("from sklearn.metrics import accuracy_score\n\n"
                                  "def report_test_accuracy(predicted, labels):\n"
                                  "    accuracy = accuracy_score(labels, predicted)\n"
                                  "    return accuracy, np.sqrt(accuracy * (1 - accuracy) / len(labels))"),
}

# Reaching a forbidden class after the guard removed it: the objects' graph and the disk.
GRAPH_AND_DISK_ATTACKS = {
    "subclasses walk": ("import dlcourse.nn\n\n"
                        "def _find(base, name):\n"
                        "    for sub in base.__subclasses__():\n"
                        "        if sub.__name__ == name:\n            return sub\n"
                        "        found = _find(sub, name)\n"
                        "        if found is not None:\n            return found\n\n"
                        "def lstm_cell_forward(x, h, c, W_ih, W_hh, b_ih, b_hh):\n"
                        "    cell = _find(dlcourse.nn.Module, 'LSTMCell')(x.shape[1], h.shape[1], dtype=np.float64)\n"
                        "    cell.load_state_dict({'weight_ih': W_ih, 'weight_hh': W_hh, 'bias_ih': b_ih, "
                        "'bias_hh': b_hh})\n"
                        "    return cell(x, (h, c))"),
    "gc walk": ("import gc\n\n"
                "def lstm_cell_forward(x, h, c, W_ih, W_hh, b_ih, b_hh):\n"
                "    Cell = next(o for o in gc.get_objects() if isinstance(o, type) and o.__name__ == 'LSTMCell')\n"
                "    cell = Cell(x.shape[1], h.shape[1], dtype=np.float64)\n"
                "    cell.load_state_dict({'weight_ih': W_ih, 'weight_hh': W_hh, 'bias_ih': b_ih, "
                "'bias_hh': b_hh})\n"
                "    return cell(x, (h, c))"),
    "package source from disk": ("import os\nimport dlcourse\n\n"
                                 "def lstm_cell_forward(x, h, c, W_ih, W_hh, b_ih, b_hh):\n"
                                 "    path = os.path.join(os.path.dirname(dlcourse.__file__), 'nn', 'rnn.py')\n"
                                 "    namespace = {'__name__': 'dlcourse.nn.copied'}\n"
                                 "    exec(open(path).read(), namespace)\n"
                                 "    cell = namespace['LSTMCell'](x.shape[1], h.shape[1], dtype=np.float64)\n"
                                 "    cell.load_state_dict({'weight_ih': W_ih, 'weight_hh': W_hh, 'bias_ih': b_ih, "
                                 "'bias_hh': b_hh})\n"
                                 "    return cell(x, (h, c))"),
}

REFUSALS = ("ForbiddenMechanicError", "AnswerKeyMissing")


def answer_key_attack(kind: str, part_id: str, function: str) -> str:
    chapter = part_id.split(".")[0]
    if kind == "pasted answer key":
        return pasted_answer_key(chapter, function)
    return ANSWER_KEY_ATTACKS[kind].format(ch=chapter, f=function, part=part_id)


def solution_notebook(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def answer_cell_defining(notebook, function: str):
    pattern = re.compile(rf"^def {re.escape(function)}\s*\(", re.M)
    return next(cell for cell in notebook.cells if cell.get("metadata", {}).get("nbgrader", {}).get("solution")
                and cell.cell_type == "code" and pattern.search(cell.source))
