"""`dlcourse feedback ASSIGNMENT`: one HTML file per student, in nbgrader's feedback layout.

Each autograded notebook is rendered into ``feedback/<student>/<assignment>/<notebook>.html``
with nbgrader's feedback layout (scores per cell from the gradebook, the outputs of the
graded run — plots and tables included — and the grader's note under each test cell whose
hidden check failed), made safe and offline by :mod:`dlcourse.grading.feedback_render`.
On top of each page is a banner with our outcome: status, score and the one-line reason.
A student with no autograded notebook (missing, invalid) gets a short page with the same
banner at the same path, so that every student who has an outcome has a page.

Bounds: each student's page is rendered in its own child process with a time limit
(``FEEDBACK_TIMEOUT``) and a memory limit, students in parallel; a notebook over
``MAX_FEEDBACK_BYTES``, or one whose rendering fails or runs out of time, gets the banner
page with a one-line note ("feedback too large …") instead. One student never stops the
others. MathJax (the book's pinned copy) is placed next to every page, so the pages need
no network.
"""
from __future__ import annotations

import html
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dlcourse.grading.course import CourseError

__all__ = ["generate_feedback", "banner", "MAX_FEEDBACK_BYTES", "FEEDBACK_TIMEOUT", "MATHJAX_FILE"]

MAX_FEEDBACK_BYTES = 5 * 1024 * 1024     # above this a page would take minutes (~35 s per MB): the short page
FEEDBACK_TIMEOUT = 120                   # seconds to render one student's page
FEEDBACK_MEMORY = 4 * 1024 ** 3          # bytes of address space for one rendering
MATHJAX_FILE = "tex-svg-full.js"         # every TeX package and SVG output: one file, no fonts to fetch

_COLOURS = {"graded": "#2e7d32", "timeout": "#ef6c00", "crashed": "#c62828", "invalid": "#c62828",
            "missing": "#616161"}


def banner(row: dict) -> str:
    colour = _COLOURS.get(row["status"], "#616161")
    return (f'<div class="dlcourse-outcome" style="border-left:6px solid {colour};background:#f7f7f7;'
            f'padding:0.8em 1.2em;margin:1em auto;max-width:1000px;font-family:sans-serif">'
            f'<strong>{html.escape(row["assignment"])}: {html.escape(row["status"])}</strong> — '
            f'{row["score"]:g} of {row["max_score"]:g} points'
            f'<div style="margin-top:0.4em">{html.escape(row["reason"])}</div></div>')


def _page(row: dict, note: str = "") -> str:
    from dlcourse.grading.feedback_render import csp

    paragraph = f'<p style="max-width:1000px;margin:1em auto;font-family:sans-serif">{html.escape(note)}</p>' \
        if note else ""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp("")}">'
            f"<title>{html.escape(row['assignment'])} — {html.escape(row['student'])}</title></head>"
            f"<body>{banner(row)}{paragraph}</body></html>\n")


def _grades(gradebook, notebook_id: str, assignment: str, student: str) -> tuple[dict, float]:
    """({grade_id: score, max_score, awaiting, comment}, late penalty) from the gradebook."""
    from nbgrader.api import MissingEntry

    try:
        submission = gradebook.find_submission_notebook(notebook_id, assignment, student)
    except MissingEntry:
        return {}, 0.0
    comments = {c.name: c.comment for c in submission.comments}
    grades = {g.name: {"score": float(g.score or 0.0), "max_score": float(g.max_score or 0.0),
                       "awaiting": g.manual_score is None and g.auto_score is None,
                       "comment": comments.get(g.name)} for g in submission.grades}
    return grades, float(submission.late_submission_penalty or 0.0)


def _place_mathjax(folder: Path) -> str:
    """MathJax next to the page: the book's pinned copy (django-static-mathjax), hard-linked
    where possible; its relative URL."""
    import mathjax  # django-static-mathjax; no Django needed to read its files

    origin = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / MATHJAX_FILE
    if not origin.is_file():
        raise CourseError(f"MathJax not found at {origin}; reinstall django-static-mathjax (requirements.txt)")
    target = folder / "mathjax" / MATHJAX_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.stat().st_size != origin.stat().st_size:
        target.unlink(missing_ok=True)
        try:
            os.link(origin, target)
        except OSError:
            shutil.copyfile(origin, target)
    return f"mathjax/{MATHJAX_FILE}"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (FEEDBACK_MEMORY, FEEDBACK_MEMORY))


def _render(job: dict, timeout: float) -> str:
    """Render one page in a child process; '' when it worked, else the note for the short page."""
    try:
        info = os.lstat(job["notebook"])
    except OSError:
        return "feedback unavailable: the autograded notebook cannot be read"
    if not stat.S_ISREG(info.st_mode):
        return "feedback unavailable: the autograded notebook is not a regular file"
    if info.st_size > MAX_FEEDBACK_BYTES:
        return (f"feedback too large: the graded notebook has {info.st_size / 2**20:.0f} MB of content, more than "
                f"the {MAX_FEEDBACK_BYTES // 2**20} MB a feedback page shows; ask your instructor for the details")
    try:
        completed = subprocess.run([sys.executable, "-m", "dlcourse.grading.feedback_render"], input=json.dumps(job),
                                   capture_output=True, text=True, timeout=timeout, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return (f"feedback too large: the graded notebook took more than {timeout:g} s to show; "
                "ask your instructor for the details")
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        return f"feedback unavailable: it could not be rendered ({lines[-1][:200] if lines else 'no message'})"
    return ""


def _feedback_for(root: Path, row: dict, job: dict | None, timeout: float) -> Path:
    """Write one student's page: the rendered notebook, or the short page with a note.
    Never raises for a problem with that student's notebook."""
    note = _render(job, timeout) if job is not None else ""
    if job is not None and not note:
        return Path(job["output"])
    target = root / "feedback" / row["student"] / row["assignment"] / f"{row['notebook_id']}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_page(row, note), encoding="utf-8")
    return target


def generate_feedback(root: Path, assignment: str, db_url: str | None = None, workers: int | None = None,
                      timeout: float = FEEDBACK_TIMEOUT) -> list[Path]:
    from dlcourse.grading.grade import source_notebook
    from dlcourse.grading.gradebook import absolute_db_url, course_settings, open_gradebook, outcome_rows

    source = source_notebook(root, assignment)
    notebook_id = source.stem
    course_id, default_url = course_settings(root)
    db_url = absolute_db_url(db_url, Path.cwd()) if db_url else default_url
    gradebook = open_gradebook(db_url, course_id)
    jobs = []
    try:
        rows = outcome_rows(gradebook, assignment)
        if not rows:
            raise CourseError(f"no outcomes for {assignment} in the gradebook: run `dlcourse grade {assignment}` first")
        for row in rows:
            row = {**row, "notebook_id": notebook_id}
            notebook = root / "autograded" / row["student"] / assignment / f"{notebook_id}.ipynb"
            if not os.path.lexists(notebook):
                jobs.append((row, None))
                continue
            folder = root / "feedback" / row["student"] / assignment
            folder.mkdir(parents=True, exist_ok=True)
            grades, late_penalty = _grades(gradebook, notebook_id, assignment, row["student"])
            jobs.append((row, {"notebook": str(notebook), "output": str(folder / f"{notebook_id}.html"),
                               "notebook_id": notebook_id, "score": row["score"], "max_score": row["max_score"],
                               "late_penalty": late_penalty, "grades": grades, "banner": banner(row),
                               "mathjax_src": _place_mathjax(folder), "course": str(root),
                               "source_folder": str(source.parent)}))
    finally:
        gradebook.close()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda pair: _feedback_for(root, *pair, timeout), jobs))
