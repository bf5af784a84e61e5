"""The answer key: the reference answer of every graded part, one module per chapter.

Grader-side only. `dlcourse kit` leaves this subpackage out of the student kit's wheel, and
the grading sandbox hides it from student code (an empty directory is mounted over it), so
a reference answer can be neither imported nor read while a submission runs. Verdicts are
decided outside the sandbox by `dlcourse.checks.verdict`, which loads it.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["reference"]


def reference(part_id: str) -> Callable:
    """`@reference("ch07.dropout_forward")` on a function: the reference answer of that part."""
    def attach(function: Callable) -> Callable:
        from dlcourse.checks import _REGISTRY, get_part

        get_part(part_id)   # imports the chapter's parts; KeyError for an unknown id
        _REGISTRY[part_id]._reference = function
        return function
    return attach
