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
    "ch02.dense_backward": ("from dlcourse import nn as layers\n\n"
                            "def dense_backward(grad_output, X, W):\n"
                            "    layer = layers.Linear(W.shape[1], W.shape[0], dtype=np.float64)\n"
                            "    layer.load_state_dict({'weight': W, 'bias': np.zeros(W.shape[0])})\n"
                            "    layer(X)\n"
                            "    return layer.backward(grad_output), layer.grads['weight'], layer.grads['bias']"),
    "ch03.two_layer_backward": ("import torch\n\n"
                                "def two_layer_backward(X, T, W1, b1, W2, b2):\n"
                                "    w = [torch.tensor(a, requires_grad=True) for a in (W1, b1, W2, b2)]\n"
                                "    logits = torch.tanh(torch.tensor(X) @ w[0].T + w[1]) @ w[2].T + w[3]\n"
                                "    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(T)).backward()\n"
                                "    return tuple(a.grad.numpy() for a in w)"),
    "ch03.value_expressions": ("import torch\n\n"
                               "class Value:   # torch's autograd behind the interface\n"
                               "    def __init__(self, data, tensor=None):\n"
                               "        self.t = torch.tensor(float(data), dtype=torch.float64, requires_grad=True) "
                               "if tensor is None else tensor\n"
                               "    data = property(lambda self: self.t.item())\n"
                               "    grad = property(lambda self: self.t.grad.item())\n"
                               "    def _apply(self, function, *others):\n"
                               "        return Value(0.0, function(self.t, *[o.t if isinstance(o, Value) else o "
                               "for o in others]))\n"
                               "    __add__ = __radd__ = lambda self, o: self._apply(torch.add, o)\n"
                               "    __mul__ = __rmul__ = lambda self, o: self._apply(torch.mul, o)\n"
                               "    __sub__ = lambda self, o: self._apply(torch.sub, o)\n"
                               "    __rsub__ = lambda self, o: self._apply(lambda a, b: b - a, o)\n"
                               "    __truediv__ = lambda self, o: self._apply(torch.div, o)\n"
                               "    __rtruediv__ = lambda self, o: self._apply(lambda a, b: b / a, o)\n"
                               "    __pow__ = lambda self, k: self._apply(torch.pow, k)\n"
                               "    __neg__ = lambda self: self._apply(torch.neg)\n"
                               "    tanh = lambda self: self._apply(torch.tanh)\n"
                               "    exp = lambda self: self._apply(torch.exp)\n"
                               "    backward = lambda self: self.t.backward()"),
    "ch03.value_mlp_gradients": ("from dlcourse import nn as layers\n\n"
                                 "def value_mlp_gradients(X, y, W1, b1, W2, b2):\n"
                                 "    hidden = W1.shape[0]\n"
                                 "    model = layers.Sequential(layers.Linear(2, hidden, dtype=np.float64), layers.Tanh(), "
                                 "layers.Linear(hidden, 1, dtype=np.float64))\n"
                                 "    model.load_state_dict({'0.weight': W1, '0.bias': b1, '2.weight': W2, '2.bias': b2})\n"
                                 "    loss = layers.MSELoss()\n"
                                 "    loss(model(X), y.reshape(-1, 1))\n"
                                 "    model.backward(loss.backward())\n"
                                 "    return tuple(model.grads[k] for k in ('0.weight', '0.bias', '2.weight', '2.bias'))"),
    "ch04.softmax": "from scipy.special import softmax as library_softmax\n\n"
                    "def softmax(x):\n    return library_softmax(x, axis=-1)",
    "ch06.adam_step": ("from dlcourse import optim\nfrom dlcourse.checks.ch06 import _one_step\n\n"
                       "def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):\n"
                       "    param, state = _one_step(optim.Adam, param, grad, {'step': t - 1, 'exp_avg': m, "
                       "'exp_avg_sq': v}, lr=lr, betas=(beta1, beta2), eps=eps)\n"
                       "    return param, state['exp_avg'], state['exp_avg_sq']"),
    "ch06.rosenbrock_grad": ("from scipy import optimize\n\n"
                             "def rosenbrock_grad(w):\n    return optimize.rosen_der(w)"),
    "ch07.batchnorm_forward": ("import dlcourse.nn\n\n"
                               "def batchnorm_forward(x, gamma, beta, eps):\n"
                               "    layer = getattr(dlcourse.nn, 'Batch' + 'Norm1d')(x.shape[1], eps=eps, "
                               "dtype=np.float64)\n"
                               "    layer.weight[...] = gamma\n    layer.bias[...] = beta\n"
                               "    return layer(x)"),
    "ch07.batchnorm_backward": ("from dlcourse.nn import BatchNorm1d\n\n"
                                "def batchnorm_backward(grad_output, x, gamma, eps):\n"
                                "    layer = BatchNorm1d(x.shape[1], eps=eps, dtype=np.float64)\n"
                                "    layer.weight[...] = gamma\n    layer(x)\n"
                                "    dx = layer.backward(grad_output)\n"
                                "    return dx, layer.grads['weight'], layer.grads['bias']"),
    "ch08.first_layer_gradients": ("from dlcourse import nn as layers\nfrom dlcourse.models import MLP\n\n"
                                   "def first_layer_gradients(x, labels, W1, b1, W2, b2):\n"
                                   "    model = MLP(W1.shape[1], hidden_sizes=(W1.shape[0],), num_classes=W2.shape[0]).double()\n"
                                   "    model.load_state_dict({'fc1.weight': W1, 'fc1.bias': b1, 'fc2.weight': W2, "
                                   "'fc2.bias': b2})\n"
                                   "    loss_fn = layers.CrossEntropyLoss()\n"
                                   "    loss_fn(model(x), labels)\n"
                                   "    model.backward(loss_fn.backward())\n"
                                   "    return model.fc1.grads['weight'].copy(), model.fc1.grads['bias'].copy()"),
    # Not a library layer but the same shortcut in spirit: the run loads the test split to pick
    # the epoch it returns, which reaches the validation target and must earn nothing.
    "ch08.train_digits_mlp": ("import dlcourse\nfrom dlcourse import nn, optim\nfrom dlcourse.data import DataLoader, "
                              "load_digits\nfrom dlcourse.models import MLP\n\n"
                              "def train_digits_mlp(x_train, y_train, seed):\n"
                              "    dlcourse.manual_seed(seed)\n"
                              "    _, (x_test, y_test) = load_digits()\n"
                              "    model, loss_fn = MLP(64, hidden_sizes=(128,), num_classes=10), nn.CrossEntropyLoss()\n"
                              "    optimizer = optim.Adam(model, lr=2e-3)\n"
                              "    best = (-1.0, None)\n"
                              "    for epoch in range(30):\n"
                              "        for x, y in DataLoader((x_train, y_train), batch_size=32, shuffle=True, seed=seed + epoch):\n"
                              "            loss_fn(model(x), y)\n            optimizer.zero_grad()\n"
                              "            model.backward(loss_fn.backward())\n            optimizer.step()\n"
                              "        accuracy = np.mean(np.argmax(model.eval()(x_test), axis=1) == y_test)\n"
                              "        model.train()\n"
                              "        if accuracy >= best[0]:\n"
                              "            best = (accuracy, {k: v.copy() for k, v in model.state_dict().items()})\n"
                              "    return best[1]"),
    "ch09.conv2d_forward": ("from dlcourse import nn as layers\n\n"
                            "def conv2d_forward(x, w, b, stride, padding):\n"
                            "    conv = layers.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, "
                            "padding=padding, dtype=np.float64)\n"
                            "    conv.weight[...] = w\n    conv.bias[...] = b\n    return conv(x)"),
    "ch09.conv2d_backward": ("from dlcourse import nn as layers\n\n"
                             "def conv2d_backward(grad_output, x, w, stride, padding):\n"
                             "    conv = layers.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, "
                             "padding=padding, dtype=np.float64)\n"
                             "    conv.weight[...] = w\n    conv(x)\n    dx = conv.backward(grad_output)\n"
                             "    return dx, conv.grads['weight'], conv.grads['bias']"),
    "ch10.rnn_backward": ("from dlcourse.nn import RNN\n\n"
                          "def rnn_backward(grad_output, x, h0, W_ih, W_hh, b_ih, b_hh):\n"
                          "    layer = RNN(x.shape[2], h0.shape[1], dtype=np.float64)\n"
                          "    layer.load_state_dict({'weight_ih_l0': W_ih, 'weight_hh_l0': W_hh, 'bias_ih_l0': b_ih, "
                          "'bias_hh_l0': b_hh})\n"
                          "    layer(x, h0[None])\n"
                          "    dx, dh0 = layer.backward(grad_output)\n"
                          "    g = layer.grads\n"
                          "    return dx, dh0[0], g['weight_ih_l0'], g['weight_hh_l0'], g['bias_ih_l0'], g['bias_hh_l0']"),
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
    "ch12.attention_backward": ("import importlib\n_attention = importlib.import_module('dlcourse.nn.' + 'attention')\n\n"
                                "def attention_backward(grad_output, query, key, value, mask):\n"
                                "    layer = _attention.ScaledDotProductAttention()\n"
                                "    layer(query, key, value, attn_mask=~mask)\n"
                                "    return layer.backward(grad_output)"),
    # a derived part answered by central differences instead of a derivation
    "ch13.autoencoder_backward": ("from dlcourse.gradcheck import numerical_gradient\n\n"
                                  "def autoencoder_backward(x, W1, b1, W2, b2, W3, b3, W4, b4):\n"
                                  "    arrays = [np.array(a, dtype=np.float64) for a in (W1, b1, W2, b2, W3, b3, W4, b4)]\n"
                                  "    def loss():\n"
                                  "        w1, c1, w2, c2, w3, c3, w4, c4 = arrays\n"
                                  "        out = 1 / (1 + np.exp(-(np.maximum(0, (np.maximum(0, x @ w1.T + c1) @ w2.T + c2) "
                                  "@ w3.T + c3) @ w4.T + c4)))\n"
                                  "        return np.mean((out - x) ** 2)\n"
                                  "    return tuple(numerical_gradient(loss, a) for a in arrays)"),
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

# Answers that build on earlier answers of their notebook (the tiny MLP runs on the student's
# Value): the probe runs every earlier cell, so an answer probed on its own carries them.
BUILDS_ON = {"ch03.value_mlp_gradients": ("Value",),
             "ch03.train_value_mlp": ("Value", "value_mlp_gradients")}


def answer_key_attack(kind: str, part_id: str, function: str) -> str:
    chapter = part_id.split(".")[0]
    if kind == "pasted answer key":
        return pasted_answer_key(chapter, function)
    return ANSWER_KEY_ATTACKS[kind].format(ch=chapter, f=function, part=part_id)


def solution_notebook(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def standalone_answer(notebook, part_id: str, function: str) -> str:
    """The answer cell defining `function`, after the answer cells it builds on (BUILDS_ON)."""
    needed = [answer_cell_defining(notebook, name).source for name in BUILDS_ON.get(part_id, ())]
    return "\n\n".join(needed + [answer_cell_defining(notebook, function).source])


def answer_cell_defining(notebook, function: str):
    pattern = re.compile(rf"^(def|class) {re.escape(function)}\b", re.M)
    return next(cell for cell in notebook.cells if cell.get("metadata", {}).get("nbgrader", {}).get("solution")
                and cell.cell_type == "code" and pattern.search(cell.source))
