"""The nbgrader course directory (`nbgrader_config.py` at its root) and the plain nbgrader
commands run on it: `solutions/` is nbgrader's source, `exercises/` its release."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["CourseError", "find_root", "assignments", "require_assignment", "shown_name", "submitted_students",
           "run_nbgrader", "release"]


class CourseError(Exception):
    """A problem with the course directory that the user can fix (printed as one line)."""


def find_root(start=None) -> Path:
    """The nearest folder, from `start` (default: the working directory) upwards, that
    holds nbgrader_config.py and solutions/."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise CourseError(f"no course directory at or above {here}: run this inside the folder "
                      "that holds nbgrader_config.py and solutions/")


def assignments(root: Path) -> list[str]:
    """Assignment names: the folders of solutions/ that hold a notebook."""
    return sorted(p.name for p in (root / "solutions").iterdir()
                  if p.is_dir() and any(p.glob("*.ipynb")))


def shown_name(name: str) -> str:
    """A file or folder name, as students chose it, for the instructor's terminal: unchanged
    when printable, else escaped on one line (`st\\xffud`, `x\\n\\x1b[2J`): a newline or an escape
    sequence in a name would forge lines or recolour the terminal, and bytes that are not
    UTF-8 cannot be printed at all."""
    return name if name.isprintable() else repr(os.fsencode(name))[2:-1]


NOT_A_STUDENT_ID = "its name is not a student id (bytes that are not UTF-8, or control characters)"


def submitted_students(root: Path) -> tuple[list[str], list[str]]:
    """(student ids, the escaped names of the folders passed over) for the folders of
    submitted/ (links too: grading reports them); hidden entries are passed over silently.

    A folder whose name is not printable text is not a student id: bytes that are not UTF-8
    (no gradebook, report or terminal can take them) or control characters (a newline or an
    escape sequence would forge lines of the summary or recolour the instructor's terminal).
    It is named, escaped, and left alone."""
    submitted, students, passed_over = root / "submitted", [], []
    if not submitted.is_dir():
        return students, passed_over
    for entry in os.scandir(submitted):
        if entry.name.startswith(".") or not (entry.is_dir(follow_symlinks=False) or entry.is_symlink()):
            continue
        if entry.name.isprintable():
            students.append(entry.name)
        else:
            passed_over.append(shown_name(entry.name))
    return sorted(students), sorted(passed_over)


def require_assignment(root: Path, assignment: str) -> None:
    """Raise CourseError, naming the assignments there are, unless `assignment` is one."""
    names = assignments(root)
    if assignment not in names:
        raise CourseError(f"no assignment {assignment!r} in {root / 'solutions'}; "
                          f"there are: {', '.join(names) or 'none'}")


def nbgrader_env() -> dict:
    """nbgrader calls helper programs (alembic) by name: put this interpreter's bin first."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_nbgrader(root: Path, *args: str, timeout: float | None = None) -> str:
    """Run `nbgrader ARGS` in the course root; return its log, or raise CourseError with
    nbgrader's first error line."""
    command = [sys.executable, "-m", "nbgrader", *args]
    completed = subprocess.run(command, cwd=root, env=nbgrader_env(), capture_output=True,
                               text=True, timeout=timeout)
    log = completed.stdout + completed.stderr
    if completed.returncode != 0 or "| ERROR]" in log:
        errors = [line for line in log.splitlines() if "ERROR" in line or "Error" in line]
        raise CourseError(f"nbgrader {' '.join(args)} failed: {errors[0].strip() if errors else log[-300:]}")
    return log


def release(root: Path, assignment: str | None = None) -> list[Path]:
    """Regenerate exercises/<assignment>/ from solutions/ with nbgrader (solutions and
    hidden tests stripped, checksums written) and register each assignment in the gradebook."""
    names = assignments(root)
    if assignment is not None:
        require_assignment(root, assignment)
        names = [assignment]
    written = []
    for name in names:
        run_nbgrader(root, "generate_assignment", name, "--force", "--create")
        written += sorted((root / "exercises" / name).glob("*.ipynb"))
    return written
