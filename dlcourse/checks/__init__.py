"""Reference checks behind the graded exercises.

A graded part of an exercise is a function the student writes (`dropout_forward`, …). Its
`Part` says how to make seeded inputs, how the `dlcourse` reference answers them and how
close the student's answer must be. The same part serves three callers:

- the notebook's hidden test cell: `check("ch07.dropout_forward", dropout_forward)`
  asserts in the kernel, so plain `nbgrader autograde` marks it;
- `dlcourse grade`, which calls the student's function on inputs drawn with a seed the
  student never sees, saves only the returned arrays (plain `.npy`), and decides the
  verdict in its own process with `verdict()`, where student code cannot reach;
- the tests of this repository, which hold each reference to PyTorch.

Part ids are `chNN.name`; the parts of a chapter live in `dlcourse/checks/chNN.py`.
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Part", "part", "get_part", "parts_of", "check", "verdict", "CheckFailure"]

_REGISTRY: dict[str, "Part"] = {}


class CheckFailure(AssertionError):
    """A student's answer differs from the reference; the message says where and by how much."""


@dataclass
class Part:
    """One graded function.

    make_cases(rng) -> list of argument tuples (arrays and numbers only).
    reference(*args) -> the expected return value (an array, a number, or a tuple of them).
    compare(got, expected, args) -> None or raise CheckFailure; defaults to `allclose`
    with `rtol`/`atol` and an exact shape match.
    """

    id: str
    function: str
    make_cases: Callable[[np.random.Generator], list]
    reference: Callable[..., Any]
    rtol: float = 1e-6
    atol: float = 1e-8
    compare: Callable | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)


def part(id: str, function: str, rtol: float = 1e-6, atol: float = 1e-8, compare=None, description: str = ""):
    """Decorator for a chapter module: `@part("ch07.dropout_forward", "dropout_forward")`
    on a function `cases(rng)`; the reference is attached with `.reference`."""
    def register(make_cases):
        registered = Part(id=id, function=function, make_cases=make_cases, reference=None,
                          rtol=rtol, atol=atol, compare=compare, description=description or make_cases.__doc__ or "")
        _REGISTRY[id] = registered

        def set_reference(reference):
            registered.reference = reference
            return reference
        make_cases.reference = set_reference
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
    CheckFailure with a message that names the case and the difference. The arguments are
    deep-copied before the student sees them, so an in-place change to an input cannot
    alter the reference's answer.
    """
    spec = get_part(part_id)
    if not callable(student_function):
        raise CheckFailure(f"{spec.function} is not a function; define it in the cell above")
    all_cases = spec.make_cases(np.random.default_rng(seed))
    for number, args in enumerate(all_cases, start=1):
        # A deep copy: a student's in-place change (to an array, a list of arrays or a
        # model) cannot alter what the reference is given.
        student_args = copy.deepcopy(args)
        got = student_function(*student_args)
        expected = spec.reference(*args)
        where = f"{spec.function}, case {number} of {len(all_cases)} ({', '.join(_describe(a) for a in args)})"
        if spec.compare is not None:
            try:
                spec.compare(got, expected, args)
            except CheckFailure as failure:
                raise CheckFailure(f"{where}: {failure}") from None
        else:
            compare_values(got, expected, spec.rtol, spec.atol, where)
