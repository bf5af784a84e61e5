"""The graded parts of the exercises: their cases, tolerances and forbidden shortcuts.

A graded part of an exercise is a function the student writes (`dropout_forward`, …). Its
`Part` says how to make seeded inputs, how close an answer must be, and which library
implementations of the part's own mechanic the student's function may not call (`forbids`).
The reference answers are NOT here: they are the answer key, `dlcourse.answers`, which
lives only on the grader's side (left out of the student kit, absent from the grading
sandbox). The same part serves four callers:

- the notebook's hidden test cell: `check("ch07.dropout_forward", dropout_forward)`
  compares with the answer key where it is installed (the instructor's course, plain
  `nbgrader autograde`); without it, `check` runs the function on the cases and leaves the
  verdict to the grader;
- `dlcourse grade`, which calls the student's function on inputs drawn with a seed the
  student never sees, in a probe process where the part's forbidden mechanics are absent
  (`dlcourse.grading.guard`), saves only the returned arrays (plain `.npy`), and decides the
  verdict in its own process with `verdict()`, where student code cannot reach;
- `dlcourse check`, which tells a student when a function uses what its part forbids;
- the tests of this repository, which hold each reference to PyTorch.

Part ids are `chNN.name`; the parts of a chapter live in `dlcourse/checks/chNN.py`, their
reference answers in `dlcourse/answers/chNN.py`.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Part", "part", "get_part", "parts_of", "check", "verdict", "CheckFailure", "AnswerKeyMissing",
           "answer_key_available", "ALWAYS_FORBIDDEN"]

_REGISTRY: dict[str, "Part"] = {}


# What no graded function may use, whatever its part: the exercises are NumPy, and torch
# (its layers and its autograd) would answer any of them.
ALWAYS_FORBIDDEN = ("torch", "dlcourse.answers")


class CheckFailure(AssertionError):
    """A student's answer differs from the reference; the message says where and by how much."""


class AnswerKeyMissing(LookupError):
    """The reference answers (`dlcourse.answers`) are not installed here: a student kit or the
    grading sandbox. Verdicts are decided where they are, by the grader."""


def answer_key_available() -> bool:
    """Whether `dlcourse.answers` is installed here (the grading sandbox mounts an empty
    directory over it: importable as an empty namespace package, which does not count)."""
    try:
        spec = importlib.util.find_spec("dlcourse.answers")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


@dataclass
class Part:
    """One graded function.

    make_cases(rng) -> list of argument tuples (arrays and numbers only).
    reference(*args) -> the expected return value (an array, a number, or a tuple of them);
    loaded from the answer key on first use (AnswerKeyMissing where it is not installed).
    compare(got, expected, args) -> None or raise CheckFailure; defaults to `allclose`
    with `rtol`/`atol` and an exact shape match.
    forbids: dotted names of the library implementations of what the part asks the student
    to write (`"dlcourse.nn.LSTMCell"`, a module such as `"scipy.signal"`); `torch` is
    always forbidden (ALWAYS_FORBIDDEN). `asks` says in a few words what the part asks for.
    derived: the notebook gives the forward computation and the shapes but not this part's
    formula (a backward pass the student derives); its visible test is a numerical gradient
    check (`dlcourse.gradcheck`), its hidden check compares with the reference as usual.
    adapter: for a graded object that is not a function of plain data (a class, whose
    instances cannot travel as `.npy`): `adapter(student_object, *args)` is grader code that
    drives the student's object on one case and returns plain numbers and arrays, which are
    compared with `reference(*args)` as a function's return value would be. The probe fetches
    it before any student code runs; whatever it returns is still judged by the grader.
    """

    id: str
    function: str
    make_cases: Callable[[np.random.Generator], list]
    rtol: float = 1e-6
    atol: float = 1e-8
    compare: Callable | None = None
    description: str = ""
    forbids: tuple[str, ...] = ()
    asks: str = ""
    derived: bool = False
    adapter: Callable | None = None
    extra: dict = field(default_factory=dict)
    _reference: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]

    @property
    def reference(self) -> Callable[..., Any]:
        if self._reference is None:
            try:
                importlib.import_module(f"dlcourse.answers.{self.chapter}")
            except ModuleNotFoundError as error:
                if error.name and not error.name.startswith("dlcourse.answers"):
                    raise
                raise AnswerKeyMissing(f"the answer key of {self.id} (dlcourse.answers.{self.chapter}) is not "
                                       "installed here; hidden checks are decided by the grader") from None
        if self._reference is None:
            raise AnswerKeyMissing(f"dlcourse.answers.{self.chapter} has no reference for {self.id}")
        return self._reference

    def call(self, student_object, args):
        """What the student's object answers for one case: `student_object(*args)`, or the
        adapter's plain data for an object that is not a function (see `adapter`)."""
        if self.adapter is not None:
            return self.adapter(student_object, *args)
        return student_object(*args)

    @property
    def all_forbidden(self) -> tuple[str, ...]:
        return ALWAYS_FORBIDDEN + tuple(name for name in self.forbids if name not in ALWAYS_FORBIDDEN)


def part(id: str, function: str, rtol: float = 1e-6, atol: float = 1e-8, compare=None, description: str = "",
         forbids: tuple[str, ...] = (), asks: str = "", derived: bool = False, adapter=None):
    """Decorator for a chapter module: `@part("ch07.dropout_forward", "dropout_forward",
    forbids=("dlcourse.nn.Dropout",), asks="dropout's forward pass")` on a function
    `cases(rng)`; the answer key attaches the reference with `dlcourse.answers.reference`."""
    def register(make_cases):
        _REGISTRY[id] = Part(id=id, function=function, make_cases=make_cases, rtol=rtol, atol=atol, compare=compare,
                             description=description or make_cases.__doc__ or "", forbids=tuple(forbids),
                             asks=asks or function.replace("_", " "), derived=derived, adapter=adapter)
        return make_cases
    return register


def get_part(part_id: str) -> Part:
    chapter = part_id.split(".")[0]
    try:
        importlib.import_module(f"dlcourse.checks.{chapter}")
    except ModuleNotFoundError:
        raise KeyError(f"unknown exercise part {part_id!r}: no dlcourse.checks.{chapter} module") from None
    if part_id not in _REGISTRY:
        known = ", ".join(sorted(k for k in _REGISTRY if k.startswith(chapter + ".")))
        raise KeyError(f"unknown exercise part {part_id!r}; {chapter} has: {known}")
    return _REGISTRY[part_id]


def parts_of(chapter: str) -> list[Part]:
    importlib.import_module(f"dlcourse.checks.{chapter}")
    return [p for k, p in _REGISTRY.items() if k.startswith(chapter + ".")]


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    return type(value).__name__


def compare_values(got, expected, rtol: float, atol: float, where: str) -> None:
    """Exact structure and shape, then allclose; raises CheckFailure naming the first mismatch."""
    got_items, expected_items = _as_tuple(got), _as_tuple(expected)
    if len(got_items) != len(expected_items):
        raise CheckFailure(f"{where}: returned {len(got_items)} value(s), expected {len(expected_items)}")
    for index, (g, e) in enumerate(zip(got_items, expected_items)):
        label = where if len(expected_items) == 1 else f"{where}, return value {index}"
        if isinstance(e, tuple):
            compare_values(g, e, rtol, atol, label)
            continue
        try:
            g_array = np.asarray(g, dtype=np.float64)
        except (TypeError, ValueError):
            raise CheckFailure(f"{label}: returned {_describe(g)}, expected numbers") from None
        e_array = np.asarray(e, dtype=np.float64)
        if g_array.shape != e_array.shape:
            raise CheckFailure(f"{label}: returned shape {g_array.shape}, expected {e_array.shape}")
        if not np.all(np.isfinite(g_array)) and np.all(np.isfinite(e_array)):
            raise CheckFailure(f"{label}: returned NaN or infinity")
        if not np.allclose(g_array, e_array, rtol=rtol, atol=atol):
            error = float(np.max(np.abs(g_array - e_array)))
            raise CheckFailure(f"{label}: max |difference| {error:.3g} from the reference "
                               f"(allowed rtol={rtol:g}, atol={atol:g})")


def verdict(part_id: str, args, got) -> None:
    """Decide one case: raise CheckFailure unless `got` answers `args` as the reference does."""
    spec = get_part(part_id)
    expected = spec.reference(*args)
    if spec.compare is not None:
        spec.compare(got, expected, args)
    else:
        compare_values(got, expected, spec.rtol, spec.atol, f"{spec.function}")


def cases(part_id: str, seed: int = 0) -> list:
    """The argument tuples of a part for one seed (copies, so the student cannot alter ours)."""
    return get_part(part_id).make_cases(np.random.default_rng(seed))


def check(part_id: str, student_function, seed: int = 0) -> None:
    """Run the student's function on a part's seeded cases and compare with the reference.

    Returns None (nbgrader would read a returned number as partial credit) or raises
    CheckFailure with a message that names the case and the difference. Where the answer
    key is not installed (a student kit, the grading sandbox) it only runs the function on
    the cases, so that an error still fails the cell; the grader decides the verdict. The arguments are
    deep-copied before the student sees them, so an in-place change to an input cannot
    alter the reference's answer.
    """
    spec = get_part(part_id)
    if not callable(student_function):
        kind = "a class" if spec.adapter is not None else "a function"
        raise CheckFailure(f"{spec.function} is not {kind}; define it in the cell above")
    all_cases = spec.make_cases(np.random.default_rng(seed))
    with_key = answer_key_available()
    for number, args in enumerate(all_cases, start=1):
        # A deep copy: a student's in-place change (to an array, a list of arrays or a
        # model) cannot alter what the reference is given.
        student_args = copy.deepcopy(args)
        got = spec.call(student_function, student_args)
        if not with_key:
            continue  # a student kit or the grading sandbox: the grader decides, outside
        expected = spec.reference(*args)
        where = f"{spec.function}, case {number} of {len(all_cases)} ({', '.join(_describe(a) for a in args)})"
        if spec.compare is not None:
            try:
                spec.compare(got, expected, args)
            except CheckFailure as failure:
                raise CheckFailure(f"{where}: {failure}") from None
        else:
            compare_values(got, expected, spec.rtol, spec.atol, where)
