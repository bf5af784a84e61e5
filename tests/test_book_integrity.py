"""The book teaches the mathematics of every graded mechanic but prints none of its answers.

A chapter states the equations of what an exercise grades and checks them against torch; it
must not print the implementation that answers the exercise. Two kinds of code answer one:

- the solution cells of ``solutions/*/*.ipynb`` (the lines between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``);
- the package code that a graded part forbids the student to use, because it implements the
  part's mechanic: the ``dlcourse`` names in ``Part.forbids`` of every part of
  ``dlcourse.checks.parts_of(chapter)`` (``dlcourse.nn.Conv2d`` for ``conv2d_backward``,
  ``dlcourse.optim.Adam`` for ``adam_step``, …) and in ``ALWAYS_FORBIDDEN`` (the answer key).
  A class counts with its ``dlcourse`` base classes other than ``Module``, the base of every
  layer, which no part forbids; a module or package counts with all its code.

Both are compared with the text of every page of the built book (the ``built_site`` fixture of
``test_book.py``, so the book is built once per session): code lines are normalised (comments,
docstrings and spacing dropped), trivial lines (fewer than three names or numbers, such as
``return y``) are skipped, and any run of three consecutive remaining lines of an answer that
appears in a page, in the same order, fails the test.
"""
import ast
import html
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest

from dlcourse import checks
from dlcourse.nn import Module
from test_book import built_site  # noqa: F401  (the session's one strict build of the book)

ROOT = Path(__file__).resolve().parents[1]
RUN = 3                                          # consecutive non-trivial lines that count as a copy
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHAPTERS = sorted(path.name[:4] for path in (ROOT / "solutions").glob("ch*"))


def forbidden_names():
    """Every dlcourse name a graded part forbids, with the parts that forbid it."""
    names = {name: ["every part"] for name in checks.ALWAYS_FORBIDDEN if name.startswith("dlcourse")}
    for chapter in CHAPTERS:
        for part in checks.parts_of(chapter):
            for name in part.forbids:
                if name.startswith("dlcourse"):
                    names.setdefault(name, []).append(part.id)
    return names


def resolve(dotted):
    """The object a dotted name stands for: a module, or an attribute of the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def code_of(obj):
    """The source texts that implement obj (see the module docstring)."""
    if inspect.ismodule(obj):
        texts = [inspect.getsource(obj)]
        if hasattr(obj, "__path__"):
            for info in pkgutil.walk_packages(obj.__path__, obj.__name__ + "."):
                texts.append(inspect.getsource(importlib.import_module(info.name)))
        return texts
    if inspect.isclass(obj):
        return [inspect.getsource(cls) for cls in obj.__mro__
                if cls.__module__.startswith("dlcourse") and cls is not Module]
    return [inspect.getsource(obj)]


def without_docstrings(source):
    """The source with its docstrings blanked out (they explain; they are not the implementation)."""
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError:                              # an indented method: parse it dedented
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            for number in range(body[0].lineno - 1, body[0].end_lineno):
                lines[number] = ""
    return "\n".join(lines)


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


def answers():
    found = [(label, runs(normalized_lines(code))) for label, code in solution_bodies()]
    for name, parts in sorted(forbidden_names().items()):
        windows = set()
        for source in code_of(resolve(name)):
            windows |= runs(normalized_lines(without_docstrings(textwrap.dedent(source))))
        found.append((f"{name} (forbidden in {', '.join(parts[:3])})", windows))
    return [(label, windows) for label, windows in found if windows]


def page_text(page):
    text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8", errors="replace"))
    return html.unescape(text)


def test_the_answers_are_found():
    labelled = answers()
    solutions = [label for label, _ in labelled if " cell " in label]
    assert len(solutions) >= 40, f"only {len(solutions)} solution cells with three or more code lines"
    assert len(labelled) - len(solutions) >= 50, "the forbidden mechanics' sources were not read"


def test_a_copied_answer_is_detected():
    label, windows = next((label, w) for label, w in answers() if label.startswith("dlcourse.nn.Conv2d "))
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
