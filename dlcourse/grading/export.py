"""`dlcourse export [--csv FILE]`: the grades as CSV, nbgrader's columns plus ours.

The columns are those of `nbgrader export` (assignment, duedate, timestamp, student_id,
last_name, first_name, email, raw_score, late_submission_penalty, score, max_score), one
row per assignment and student of the gradebook, computed the same way (a student with no
submission scores 0), followed by ``status`` and ``reason`` from dlcourse's outcome table
(empty where dlcourse never graded that pair), and ``similarity``, the student's highest
share of answer code found elsewhere by the last `dlcourse similarity` (empty if never run). Values are quoted properly (csv module).
"""
from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["export_csv", "NBGRADER_COLUMNS"]

NBGRADER_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score"]


def _text(value) -> str:
    return "" if value is None else str(value)


def export_csv(root: Path, path, db_url: str | None = None, assignment: str | None = None) -> tuple[Path, int]:
    from nbgrader.api import MissingEntry

    from dlcourse.grading.course import require_assignment
    from dlcourse.grading.gradebook import absolute_db_url, course_settings, open_gradebook, outcome_rows
    from dlcourse.grading.similarity import load_scores

    if assignment is not None:
        require_assignment(root, assignment)
    course_id, default_url = course_settings(root)
    db_url = absolute_db_url(db_url, Path.cwd()) if db_url else default_url
    target = Path(path)
    gradebook = open_gradebook(db_url, course_id)
    count = 0
    try:
        outcomes = {(r["assignment"], r["student"]): r for r in outcome_rows(gradebook, assignment)}
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(NBGRADER_COLUMNS + ["status", "reason", "similarity"])
            for item in gradebook.assignments:
                if assignment and item.name != assignment:
                    continue
                similarity = load_scores(root, item.name)
                for student in gradebook.students:
                    row = {"assignment": item.name, "duedate": item.duedate, "student_id": student.id,
                           "last_name": student.last_name, "first_name": student.first_name,
                           "email": student.email, "max_score": item.max_score}
                    try:
                        submission = gradebook.find_submission(item.name, student.id)
                    except MissingEntry:
                        row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                    else:
                        penalty = submission.late_submission_penalty or 0.0
                        row.update(timestamp=submission.timestamp, raw_score=submission.score,
                                   late_submission_penalty=penalty, score=submission.score - penalty)
                    outcome = outcomes.get((item.name, student.id))
                    writer.writerow([_text(row[c]) for c in NBGRADER_COLUMNS] +
                                    [outcome["status"] if outcome else "", outcome["reason"] if outcome else "",
                                     _text(similarity.get(student.id))])
                    count += 1
    finally:
        gradebook.close()
    return target, count
