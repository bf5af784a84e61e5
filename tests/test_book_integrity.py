"""The book teaches the mathematics of every graded mechanic but prints none of its answers.

A chapter states the equations of what an exercise grades and checks them against torch; it
must not print the implementation that answers the exercise. Two kinds of code answer one:

- the solution cells of ``solutions/*/*.ipynb`` (the lines between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``);
- the package's own implementation of a graded mechanic (``Conv2d.backward`` answers
  ``conv2d_backward``, ``Adam._update`` answers ``adam_step``, …), listed in ``GRADED_MECHANICS``.

Both are compared with the text of every page of the built book (the ``built_site`` fixture of
``test_book.py``, so the book is built once per session): code lines are normalised (comments
and spacing dropped), trivial lines (fewer than three names or numbers, such as ``return y``) are
skipped, and any run of three consecutive remaining lines of an answer that appears in a page,
in the same order, fails the test.
"""
import html
import importlib
import inspect
import json
import re
import textwrap
from pathlib import Path

import pytest

from test_book import built_site  # noqa: F401  (the session's one strict build of the book)

ROOT = Path(__file__).resolve().parents[1]
RUN = 3                                          # consecutive non-trivial lines that count as a copy
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# The package code that implements what an exercise grades, "module:qualified name" -> the part it answers.
GRADED_MECHANICS = {
    "dlcourse.nn:Linear.forward": "ch02.dense_forward",
    "dlcourse.nn:Linear.backward": "ch03.two_layer_backward",
    "dlcourse.nn:Sigmoid.backward": "ch04.sigmoid_backward",
    "dlcourse.nn:Tanh.backward": "ch04.tanh_backward",
    "dlcourse.nn:LeakyReLU.forward": "ch04.leaky_relu",
    "dlcourse.nn:LeakyReLU.backward": "ch04.leaky_relu_backward",
    "dlcourse.nn:Softmax.forward": "ch04.softmax",
    "dlcourse.nn:Softmax.backward": "ch04.softmax_backward",
    "dlcourse.nn:GELU.forward": "ch04.gelu",
    "dlcourse.nn:MSELoss.forward": "ch05.mse_loss",
    "dlcourse.nn:LogSoftmax.forward": "ch05.log_softmax",
    "dlcourse.nn:CrossEntropyLoss.forward": "ch05.cross_entropy",
    "dlcourse.nn:BCEWithLogitsLoss.forward": "ch05.bce_with_logits",
    "dlcourse.nn:MultiMarginLoss.forward": "ch05.multi_margin_loss",
    "dlcourse.nn:MultiMarginLoss.backward": "ch05.multi_margin_loss",
    "dlcourse.optim:SGD._update": "ch06.sgd_momentum_step / ch06.nesterov_step",
    "dlcourse.optim:Adam._update": "ch06.adam_step",
    "dlcourse.optim:RMSprop._update": "ch06.rmsprop_step",
    "dlcourse.nn.utils:clip_grad_norm_": "ch06.clip_grad_norm",
    "dlcourse.nn:Dropout.forward": "ch07.dropout_forward",
    "dlcourse.nn:Dropout.backward": "ch07.dropout_backward",
    "dlcourse.nn:BatchNorm1d.forward": "ch07.batchnorm_forward",
    "dlcourse.nn:BatchNorm1d.backward": "ch07.batchnorm_backward",
    "dlcourse.nn.normalization:_normalized_input_backward": "ch07.batchnorm_backward / ch12.layer_norm",
    "dlcourse.nn:Conv2d.forward": "ch09.conv2d_forward",
    "dlcourse.nn:Conv2d.backward": "ch09.conv2d_backward",
    "dlcourse.nn:MaxPool2d.forward": "ch09.maxpool_forward",
    "dlcourse.nn:MaxPool2d.backward": "ch09.maxpool_backward",
    "dlcourse.nn.rnn:rnn_tanh_step": "ch10.rnn_step",
    "dlcourse.nn.rnn:rnn_tanh_step_backward": "ch10.rnn_backward",
    "dlcourse.nn.rnn:RNNBase._forward_direction": "ch10.rnn_forward / ch11.lstm_forward",
    "dlcourse.nn.rnn:RNNBase._backward_direction": "ch10.rnn_backward",
    "dlcourse.nn.rnn:lstm_step": "ch11.lstm_cell_forward",
    "dlcourse.nn.rnn:lstm_step_backward": "ch11.lstm_cell_backward",
    "dlcourse.nn.rnn:gru_step": "ch11.gru_cell_forward",
    "dlcourse.nn:ScaledDotProductAttention.forward": "ch12.attention",
    "dlcourse.nn:ScaledDotProductAttention.backward": "ch12.attention_backward",
    "dlcourse.nn:LayerNorm.forward": "ch12.layer_norm",
    "dlcourse.nn:PositionalEncoding.__init__": "ch12.positional_encoding",
}


def normalized_lines(code):
    """Non-trivial code lines without comments and with single spaces, in order."""
    lines = []
    for line in code.splitlines():
        line = re.sub(r"\s+#.*$|^\s*#.*$", "", line)
        line = " ".join(line.split())
        if len(re.findall(r"[A-Za-z_][A-Za-z_0-9]*|\d+", line)) >= 3:
            lines.append(line)
    return lines


def runs(lines):
    """Every window of RUN consecutive lines, as one string."""
    return {"\n".join(lines[i:i + RUN]) for i in range(len(lines) - RUN + 1)}


def solution_bodies():
    """(label, code) of every solution cell's answer."""
    bodies = []
    for notebook in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            source = "".join(cell["source"])
            for answer in re.findall(re.escape(BEGIN) + r"(.*?)" + re.escape(END), source, re.S):
                bodies.append((f"{notebook.parent.name} cell {number}", answer))
    return bodies


def mechanic_body(target):
    """The source of a graded mechanic without its signature and docstring."""
    module_name, qualified = target.split(":")
    obj = importlib.import_module(module_name)
    for name in qualified.split("."):
        obj = getattr(obj, name)
    source = textwrap.dedent(inspect.getsource(obj))
    body = source.split(":\n", 1)[1] if source.lstrip().startswith("def ") else source
    return re.sub(r'^\s*[rRuU]?(""".*?"""|\'\'\'.*?\'\'\')', "", body, count=1, flags=re.S)


def answers():
    found = [(label, runs(normalized_lines(code))) for label, code in solution_bodies()]
    found += [(f"{target} (answers {part})", runs(normalized_lines(mechanic_body(target))))
              for target, part in GRADED_MECHANICS.items()]
    return [(label, windows) for label, windows in found if windows]


def page_text(page):
    text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8", errors="replace"))
    return html.unescape(text)


def test_the_answers_are_found():
    labelled = answers()
    solutions = [label for label, _ in labelled if " cell " in label]
    assert len(solutions) >= 40, f"only {len(solutions)} solution cells with three or more code lines"
    assert len(labelled) - len(solutions) >= 30, "the graded mechanics' sources were not read"


def test_a_copied_answer_is_detected():
    label, windows = next((label, w) for label, w in answers() if label.startswith("dlcourse.nn:Conv2d.backward"))
    window = sorted(windows)[0].split("\n")
    reformatted = "\n".join("        " + line.replace(" ", "  ") + "   # a comment" for line in window)
    assert runs(normalized_lines("print(1)\n" + reformatted + "\nx")) & windows
    assert not runs(normalized_lines("\n".join(window[:-1] + ["something = else_entirely(x)"]))) & windows


def test_no_graded_answer_is_printed_in_the_book(built_site):  # noqa: F811
    labelled = answers()
    leaks = []
    for page in sorted(built_site.rglob("*.html")):
        windows = runs(normalized_lines(page_text(page)))
        for label, answer_windows in labelled:
            shared = answer_windows & windows
            if shared:
                leaks.append(f"{page.relative_to(built_site)} prints {label}:\n    "
                             + sorted(shared)[0].replace("\n", "\n    "))
    assert not leaks, "graded answers printed in the book:\n" + "\n".join(leaks[:20])
