"""`dlcourse feedback ASSIGNMENT`: one HTML file per student, in nbgrader's feedback layout.

nbgrader's own ``generate_feedback`` renders every autograded notebook (scores per cell from
the gradebook, the outputs of the graded run — including the grader's note under each
test cell whose hidden check failed) into ``feedback/<student>/<assignment>/<notebook>.html``.
On top of it, each page gets a banner with our outcome: status, score and the one-line
reason. A student with no autograded notebook (missing, invalid) gets a short page with the
same banner at the same path, so that every student who has an outcome has a page.
"""
from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

from dlcourse.grading.course import CourseError, nbgrader_env

__all__ = ["generate_feedback", "banner"]

_COLOURS = {"graded": "#2e7d32", "timeout": "#ef6c00", "crashed": "#c62828", "invalid": "#c62828",
            "missing": "#616161"}


def banner(row: dict) -> str:
    colour = _COLOURS.get(row["status"], "#616161")
    return (f'<div class="dlcourse-outcome" style="border-left:6px solid {colour};background:#f7f7f7;'
            f'padding:0.8em 1.2em;margin:1em auto;max-width:1000px;font-family:sans-serif">'
            f'<strong>{html.escape(row["assignment"])}: {html.escape(row["status"])}</strong> — '
            f'{row["score"]:g} of {row["max_score"]:g} points'
            f'<div style="margin-top:0.4em">{html.escape(row["reason"])}</div></div>')


def _page(row: dict) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(row['assignment'])} — {html.escape(row['student'])}</title></head>"
            f"<body>{banner(row)}</body></html>\n")


def generate_feedback(root: Path, assignment: str, db_url: str | None = None) -> list[Path]:
    from dlcourse.grading.grade import source_notebook
    from dlcourse.grading.gradebook import (_FAST_NBGRADER, absolute_db_url, course_settings, open_gradebook,
                                            outcome_rows, with_driver)

    notebook_id = source_notebook(root, assignment).stem
    course_id, default_url = course_settings(root)
    db_url = absolute_db_url(db_url, Path.cwd()) if db_url else default_url
    gradebook = open_gradebook(db_url, course_id)
    try:
        rows = outcome_rows(gradebook, assignment)
    finally:
        gradebook.close()
    if not rows:
        raise CourseError(f"no outcomes for {assignment} in the gradebook: run `dlcourse grade {assignment}` first")
    autograded = [r for r in rows if (root / "autograded" / r["student"] / assignment / f"{notebook_id}.ipynb").exists()]
    if autograded:
        command = [sys.executable, "-c", _FAST_NBGRADER, "generate_feedback", assignment, "--force",
                   f"--CourseDirectory.root={root}", f"--CourseDirectory.db_url={with_driver(db_url)}",
                   f"--CourseDirectory.course_id={course_id}"]
        # one notebook nbgrader cannot render must not cost the others their feedback
        subprocess.run(command, cwd=root, env=nbgrader_env(), capture_output=True, text=True, timeout=1800)
    written = []
    for row in rows:
        target = root / "feedback" / row["student"] / assignment / f"{notebook_id}.html"
        if target.exists() and row in autograded:
            text = target.read_text(encoding="utf-8", errors="replace")
            text = re.sub(r'<div class="dlcourse-outcome".*?</div></div>', "", text, flags=re.S)
            match = re.search(r"<body[^>]*>", text)
            position = match.end() if match else 0
            text = text[:position] + banner(row) + text[position:]
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _page(row)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
