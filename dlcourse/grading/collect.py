"""`dlcourse collect ARCHIVE ASSIGNMENT`: import an LMS download into submitted/.

The archive is a zip with one notebook per student. Who a notebook belongs to comes from
its name in the archive:

- ``<student>.ipynb``, ``<student>_<assignment>.ipynb`` or ``<student>-<assignment>.ipynb``
  at the top of the archive (the assignment suffix is dropped), or
- ``<student>/<any name>.ipynb``: one folder per student.

A student id is 1–64 characters of letters, digits and ``. _ - + @``, starting with a
letter or a digit. Each notebook lands in ``submitted/<student>/<assignment>/<assignment>.ipynb``
(nbgrader's layout; the file is renamed to the assignment's notebook name).

Rejected, one message per file: absolute paths, ``..``, links and other special entries
(zip external attributes), files that are not ``.ipynb``, members over 20 MB (checked
while reading, not only from the header), deeper folders, names without a usable student
id, students with more than one notebook (none of theirs is imported), and a submission
that already exists with different content (unless ``force``). Nothing outside submitted/
is ever written, and identical re-imports are reported as unchanged.
"""
from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dlcourse.grading.course import CourseError, require_assignment

__all__ = ["collect", "CollectReport", "student_of", "MAX_MEMBER_BYTES"]

MAX_MEMBER_BYTES = 20 * 1024 * 1024
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


@dataclass
class CollectReport:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def student_of(member: str, assignment: str) -> tuple[str | None, str]:
    """(student id, '') from an archive member's name, or (None, why not)."""
    parts = PurePosixPath(member).parts
    if len(parts) == 1:
        stem = parts[0][: -len(".ipynb")]
        for separator in ("_", "-"):
            suffix = separator + assignment
            if stem.lower().endswith(suffix.lower()) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                break
        student = stem
    elif len(parts) == 2:
        student = parts[0]
    else:
        return None, "is nested more than one folder deep (expected <student>.ipynb or <student>/<name>.ipynb)"
    if not STUDENT_ID.fullmatch(student) or student in (".", ".."):
        return None, f"cannot tell the student from the name ({student!r} is not a student id)"
    return student, ""


def _problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return "has an absolute (or Windows) path"
    if ".." in PurePosixPath(name).parts:
        return "has '..' in its path"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return "is not a regular file"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if not name.endswith(".ipynb"):
        return "is not a notebook (.ipynb)"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"is larger than {MAX_MEMBER_BYTES // (1024 * 1024)} MB"
    return None


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    with archive.open(info) as handle:
        data = handle.read(MAX_MEMBER_BYTES + 1)
    return None if len(data) > MAX_MEMBER_BYTES else data


def collect(root: Path, archive_path, assignment: str, force: bool = False) -> CollectReport:
    require_assignment(root, assignment)
    notebooks = sorted((root / "solutions" / assignment).glob("*.ipynb"))
    notebook_id = assignment if (root / "solutions" / assignment / f"{assignment}.ipynb").exists() else notebooks[0].stem
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise CourseError(f"{archive_path} does not exist")
    if not zipfile.is_zipfile(archive_path):
        raise CourseError(f"{archive_path} is not a zip archive")
    report = CollectReport()
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as error:
        raise CourseError(f"{archive_path} is not a readable zip archive: {error}") from None
    with archive:
        wanted: dict[str, list[zipfile.ZipInfo]] = {}
        for info in archive.infolist():
            if info.is_dir() and not stat.S_ISLNK(info.external_attr >> 16) and ".." not in PurePosixPath(info.filename).parts \
                    and not info.filename.startswith(("/", "\\")):
                continue
            problem = _problem(info)
            if problem is None:
                student, why = student_of(info.filename, assignment)
                if student is None:
                    problem = why
            if problem:
                report.rejected.append(f"{info.filename}: {problem}")
                continue
            wanted.setdefault(student, []).append(info)
        submitted = root / "submitted"
        for student, members in sorted(wanted.items()):
            if len(members) > 1:
                listed = ", ".join(m.filename for m in members)
                for member in members:
                    report.rejected.append(f"{member.filename}: student {student} has {len(members)} notebooks in the "
                                           f"archive ({listed}); none was imported")
                continue
            info = members[0]
            data = _read_capped(archive, info)
            if data is None:
                report.rejected.append(f"{info.filename}: is larger than {MAX_MEMBER_BYTES // (1024 * 1024)} MB")
                continue
            folder = submitted / student / assignment
            target = folder / f"{notebook_id}.ipynb"
            relative = f"submitted/{student}/{assignment}/{notebook_id}.ipynb"
            linked = [p for p in (submitted, submitted / student, folder, target) if p.is_symlink()]
            if linked:
                report.rejected.append(f"{info.filename}: {linked[0]} is a symbolic link; not writing through it")
                continue
            if target.exists():
                if target.read_bytes() == data:
                    report.unchanged.append(f"{info.filename} = {relative}")
                    continue
                if not force:
                    report.rejected.append(f"{info.filename}: {relative} exists and differs (--force replaces it)")
                    continue
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / f".{notebook_id}.ipynb.collect"
            temp.write_bytes(data)
            os.replace(temp, target)
            report.imported.append(f"{info.filename} -> {relative}")
    return report
