"""nbgrader's gradebook (SQLAlchemy: SQLite by default, PostgreSQL by URL) plus our outcome table.

Scores go into nbgrader's own tables (submissions, grades, comments), so `nbgrader export`,
`nbgrader generate_feedback` and formgrader keep working. Next to them, in the same
database, ``dlcourse_outcome`` holds one row per (assignment, student): the status
(graded/timeout/crashed/invalid/missing), a one-line reason, the score, flags, the secret
seed of the hidden probes, and the sha256 of the submitted file and of the source notebook
that were graded — which is what lets an interrupted run resume without re-grading.

Only the grading parent process writes here, one submission per transaction.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import BigInteger, Column, DateTime, Float, MetaData, String, Table, Text, select

from dlcourse.grading.course import CourseError, nbgrader_env

__all__ = ["OUTCOME", "course_settings", "open_gradebook", "ensure_assignment", "stored_outcomes",
           "record_result", "outcome_rows"]

_META = MetaData()
OUTCOME = Table(
    "dlcourse_outcome", _META,
    Column("assignment", String(128), primary_key=True),
    Column("student", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("score", Float, nullable=False, default=0.0),
    Column("max_score", Float, nullable=False, default=0.0),
    Column("flags", Text, nullable=False, default="[]"),
    Column("details", Text, nullable=False, default="{}"),
    Column("seed", BigInteger, nullable=True),
    Column("sha256", String(80), nullable=True),
    Column("source_sha256", String(64), nullable=True),
    Column("timings", Text, nullable=False, default="{}"),
    Column("graded_at", DateTime, nullable=False),
)

# nbgrader (through nbformat/jsonschema) would spend seconds compiling an unused IRI grammar
_FAST_NBGRADER = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
                  "from nbgrader.apps.nbgraderapp import main; sys.exit(main())")


def course_settings(root: Path) -> tuple[str, str]:
    """(course_id, db_url) from nbgrader_config.py; a relative SQLite path is made absolute."""
    from traitlets.config.loader import PyFileConfigLoader

    try:
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    except Exception as error:
        raise CourseError(f"cannot read {root / 'nbgrader_config.py'}: {error}") from None
    course = config.get("CourseDirectory", {})
    course_id = str(course.get("course_id", "default_course")) if "course_id" in course else "default_course"
    db_url = str(course["db_url"]) if "db_url" in course else "sqlite:///gradebook.db"
    return course_id, absolute_db_url(db_url, root)


def absolute_db_url(db_url: str, root: Path) -> str:
    prefix = "sqlite:///"
    if db_url.startswith(prefix) and not db_url.startswith(prefix + "/") and db_url != prefix + ":memory:":
        return prefix + str((Path(root) / db_url[len(prefix):]).resolve())
    return db_url


def with_driver(db_url: str) -> str:
    """`postgresql://…` names no driver; SQLAlchemy then wants psycopg (3). Use psycopg2 when
    only that one is installed."""
    if db_url.startswith("postgresql://") or db_url.startswith("postgres://"):
        import importlib.util
        rest = db_url.split("://", 1)[1]
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + rest
        if importlib.util.find_spec("psycopg") is None:
            raise CourseError("a PostgreSQL gradebook needs a driver: pip install 'psycopg[binary]'")
        return "postgresql+psycopg://" + rest
    return db_url


def open_gradebook(db_url: str, course_id: str):
    """nbgrader's Gradebook, with our outcome table created beside its tables."""
    from nbgrader.api import Gradebook

    # a new database asks the `alembic` program for its schema version: find ours
    os.environ["PATH"] = nbgrader_env()["PATH"]
    try:
        gradebook = Gradebook(with_driver(db_url), course_id)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CourseError(f"cannot open the gradebook {_safe_url(db_url)}: {first}") from None
    _META.create_all(gradebook.engine, checkfirst=True)
    return gradebook


def _safe_url(db_url: str) -> str:
    """The URL without a password."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:
        return db_url.split("@")[-1]


def _source_grades(source_nb) -> dict[str, float]:
    grades = {}
    for cell in source_nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id"):
            grades[meta["grade_id"]] = float(meta.get("points", 0))
    return grades


def ensure_assignment(root: Path, assignment: str, notebook_id: str, source_nb, db_url: str, course_id: str) -> None:
    """Register the assignment from solutions/ when the gradebook does not know it (or knows
    an older version of its graded cells): nbgrader generate_assignment on a temporary copy
    of the course, writing into this gradebook and nowhere else."""
    from nbgrader.api import MissingEntry

    expected = _source_grades(source_nb)
    gradebook = open_gradebook(db_url, course_id)
    try:
        try:
            notebook = gradebook.find_notebook(notebook_id, assignment)
            known = {cell.name: float(cell.max_score) for cell in notebook.grade_cells}
            sources = {cell.name for cell in notebook.source_cells}
        except MissingEntry:
            known, sources = None, set()
    finally:
        gradebook.close()
    wanted_sources = {c.metadata["nbgrader"]["grade_id"] for c in source_nb.cells
                      if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")}
    if known == expected and sources >= wanted_sources:
        return
    with tempfile.TemporaryDirectory(prefix="dlcourse-register-") as temp:
        course = Path(temp) / "course"
        (course / "solutions").mkdir(parents=True)
        shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
        shutil.copytree(root / "solutions" / assignment, course / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        command = [sys.executable, "-c", _FAST_NBGRADER, "generate_assignment", assignment, "--force", "--create",
                   f"--CourseDirectory.root={course}", f"--CourseDirectory.db_url={with_driver(db_url)}",
                   f"--CourseDirectory.course_id={course_id}"]
        completed = subprocess.run(command, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                                   timeout=600)
        log = completed.stdout + completed.stderr
        if completed.returncode != 0 or "| ERROR]" in log:
            errors = [line for line in log.splitlines() if "ERROR" in line or "Error" in line]
            raise CourseError(f"cannot register {assignment} in the gradebook (nbgrader generate_assignment): "
                              f"{(errors[0] if errors else log[-300:]).strip()}")


def stored_outcomes(gradebook, assignment: str) -> dict[str, dict]:
    rows = gradebook.db.execute(select(OUTCOME).where(OUTCOME.c.assignment == assignment)).mappings().all()
    return {row["student"]: dict(row) for row in rows}


def outcome_rows(gradebook, assignment: str | None = None) -> list[dict]:
    query = select(OUTCOME)
    if assignment:
        query = query.where(OUTCOME.c.assignment == assignment)
    return [dict(row) for row in gradebook.db.execute(query.order_by(OUTCOME.c.assignment, OUTCOME.c.student))
            .mappings().all()]


def _write_autograded(root: Path, result: dict, gradebook) -> None:
    """autograded/<student>/<assignment>/<notebook>.ipynb (nbgrader's layout), atomically."""
    folder = root / "autograded" / result["student"] / result["assignment"]
    target = folder / f"{result['notebook_id']}.ipynb"
    if not result.get("notebook"):
        if target.exists():
            target.unlink()   # an older grading of a submission that is now missing or invalid
        return
    notebook = json.loads(result["notebook"])
    for cell in notebook.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and meta.get("grade_id"):
            try:
                meta["checksum"] = gradebook.find_source_cell(meta["grade_id"], result["notebook_id"],
                                                              result["assignment"]).checksum
            except Exception:
                pass
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{result['notebook_id']}.ipynb.tmp"
    temp.write_text(json.dumps(notebook, indent=1))
    os.replace(temp, target)
    os.chmod(target, 0o644)
    stamp = result.get("timestamp_text")
    if stamp:
        (folder / "timestamp.txt").write_text(stamp)


def record_result(gradebook, root: Path, result: dict) -> None:
    """Everything about one submission, committed as one transaction at the end."""
    import warnings

    from nbgrader.utils import parse_utc
    from sqlalchemy.exc import SAWarning

    # nbgrader's own relationship handling warns under SQLAlchemy 2 (harmless, and plain
    # `nbgrader autograde` prints the same)
    warnings.filterwarnings("ignore", category=SAWarning)

    assignment, student, notebook_id = result["assignment"], result["student"], result["notebook_id"]
    _write_autograded(root, result, gradebook)
    gradebook.update_or_create_student(student)
    kwargs = {}
    if result.get("timestamp_text"):
        try:
            kwargs["timestamp"] = parse_utc(result["timestamp_text"])
        except Exception:
            pass
    from nbgrader.api import MissingEntry

    if result["status"] == "missing":
        # nothing was handed in: nbgrader's export already counts that as 0; only an older
        # grading of a submission that has disappeared since is zeroed
        try:
            gradebook.find_submission(assignment, student)
        except MissingEntry:
            result = {**result, "grades": {}, "unanswered": {}}
        else:
            gradebook.update_or_create_submission(assignment, student)
    else:
        gradebook.update_or_create_submission(assignment, student, **kwargs)
    everything_zero = result["status"] in ("missing", "invalid")
    for grade_id, score in result.get("grades", {}).items():
        grade = gradebook.find_grade(grade_id, notebook_id, assignment, student)
        grade.auto_score = 0.0 if everything_zero else score
        grade.needs_manual_grade = False if everything_zero else (grade.manual_score is not None or score is None)
    for grade_id, unanswered in result.get("unanswered", {}).items():
        try:
            comment = gradebook.find_comment(grade_id, notebook_id, assignment, student)
        except Exception:
            continue
        comment.auto_comment = "No response." if unanswered else None
    values = dict(status=result["status"], reason=result["reason"][:4000], score=float(result["score"]),
                  max_score=float(result["max_score"]), flags=json.dumps(result.get("flags", [])),
                  details=json.dumps(result.get("details", {})), seed=result.get("seed"),
                  sha256=result.get("sha256"), source_sha256=result.get("source_sha256"),
                  timings=json.dumps(result.get("timings", {})),
                  graded_at=_dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None))
    key = (OUTCOME.c.assignment == assignment) & (OUTCOME.c.student == student)
    exists = gradebook.db.execute(select(OUTCOME.c.student).where(key)).first()
    if exists:
        gradebook.db.execute(OUTCOME.update().where(key).values(**values))
    else:
        gradebook.db.execute(OUTCOME.insert().values(assignment=assignment, student=student, **values))
    gradebook.db.commit()
