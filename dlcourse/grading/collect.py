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
while reading, not only from the header), members past the archive's total of 1 GB or
its first 5000 entries, members that cannot be unpacked (e.g. Deflate64) or are not
nbformat-4 JSON, deeper folders, names without a usable student id, students with more
than one notebook (none of theirs is imported), a target that is not a regular file
(a FIFO, a folder, a link: never opened), and a submission that already exists with
different content (unless ``force``). One bad member never stops the others.

Nothing outside submitted/ is ever written: every folder is opened relative to its parent
with O_NOFOLLOW, and each notebook is written to a fresh temporary (O_CREAT|O_EXCL|
O_NOFOLLOW) renamed into place. Identical re-imports are reported as unchanged.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dlcourse.grading.course import CourseError, require_assignment, shown_name

__all__ = ["collect", "CollectReport", "student_of", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_MEMBERS"]

MAX_MEMBER_BYTES = 20 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024   # all members together, decompressed
MAX_MEMBERS = 5000                      # entries read from one archive
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


@dataclass
class CollectReport:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def _reject(report: CollectReport, info: zipfile.ZipInfo, why: str) -> None:
    report.rejected.append(f"{shown_name(info.filename)}: {why}")


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


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> tuple[bytes | None, str]:
    """(the member's bytes, '') or (None, why not): at most MAX_MEMBER_BYTES and `budget`
    bytes are decompressed, whatever the header claims, and it must parse as a notebook."""
    limit = min(MAX_MEMBER_BYTES, budget)
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except NotImplementedError as error:   # e.g. Deflate64, which zipfile cannot decompress
        return None, f"cannot be unpacked ({error})"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError) as error:
        return None, f"cannot be unpacked ({type(error).__name__}: {error})"
    if len(data) > limit:
        if limit < MAX_MEMBER_BYTES:
            return None, f"would take the archive past its total cap of {MAX_TOTAL_BYTES // (1024 * 1024)} MB"
        return None, f"is larger than {MAX_MEMBER_BYTES // (1024 * 1024)} MB"
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "is not a notebook (not JSON text)"
    cells = record.get("cells") if isinstance(record, dict) else None
    if not isinstance(record, dict) or record.get("nbformat") != 4 or not isinstance(cells, list) \
            or not all(isinstance(c, dict) and isinstance(c.get("cell_type"), str) for c in cells):
        return None, "is not an nbformat-4 notebook (no list of cells)"
    return data, ""


def _open_folder(parent: int, name: str) -> int:
    """A descriptor of the folder `name` in `parent`, created if missing; never through a link."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        raise _Refused(f"{name} is a symbolic link or not a folder; not writing through it") from None


class _Refused(Exception):
    """A submission that is not written, with the reason."""


def _existing(folder: int, name: str) -> bytes | None:
    """The bytes of the regular file `name` in `folder`, None if there is none; refuses a FIFO,
    a folder, a link or anything else that is not a regular file, without opening it."""
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise _Refused("is not a regular file (a folder, a link, a FIFO or a device); skipped")
    descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read(MAX_MEMBER_BYTES + 1)


def _write(folder: int, name: str, data: bytes) -> None:
    """Write `name` atomically: a fresh temporary (O_EXCL|O_NOFOLLOW: never an existing path) renamed over it."""
    temporary = f".{name}.{secrets.token_hex(8)}.collect"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(temporary, dir_fd=folder)
        raise


def _store(root: Path, student: str, assignment: str, notebook_id: str, data: bytes, force: bool) -> str:
    """Put one submission in place: 'imported' or 'unchanged'; raises _Refused."""
    descriptors = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for part in ("submitted", student, assignment):
            descriptors.append(_open_folder(descriptors[-1], part))
        relative = f"submitted/{student}/{assignment}/{notebook_id}.ipynb"
        try:
            existing = _existing(descriptors[-1], f"{notebook_id}.ipynb")
        except _Refused as why:
            raise _Refused(f"{relative} {why}") from None
        if existing == data:
            return "unchanged"
        if existing is not None and not force:
            raise _Refused(f"{relative} exists and differs (--force replaces it)")
        _write(descriptors[-1], f"{notebook_id}.ipynb", data)
        return "imported"
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _wanted_members(archive: zipfile.ZipFile, assignment: str, report: CollectReport) -> dict[str, list]:
    """{student: [members]} of the archive's acceptable entries; one rejection line per other entry."""
    entries = archive.infolist()
    if len(entries) > MAX_MEMBERS:
        report.rejected.append(f"{len(entries) - MAX_MEMBERS} members after the first {MAX_MEMBERS}: the archive "
                               f"holds {len(entries)} entries, more than the cap of {MAX_MEMBERS}; not read")
    wanted: dict[str, list[zipfile.ZipInfo]] = {}
    for info in entries[:MAX_MEMBERS]:
        if info.is_dir() and not stat.S_ISLNK(info.external_attr >> 16) and ".." not in PurePosixPath(info.filename).parts \
                and not info.filename.startswith(("/", "\\")):
            continue
        problem = _problem(info)
        if problem is None:
            student, why = student_of(info.filename, assignment)
            if student is None:
                problem = why
        if problem:
            _reject(report, info, problem)
            continue
        wanted.setdefault(student, []).append(info)
    return wanted


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
        budget = MAX_TOTAL_BYTES
        for student, members in sorted(_wanted_members(archive, assignment, report).items()):
            if len(members) > 1:
                listed = ", ".join(shown_name(m.filename) for m in members)
                for member in members:
                    _reject(report, member, f"student {student} has {len(members)} notebooks in the archive "
                                            f"({listed}); none was imported")
                continue
            info = members[0]
            data, problem = _read_member(archive, info, budget)
            if data is None:
                _reject(report, info, problem)
                continue
            budget -= len(data)
            relative = f"submitted/{student}/{assignment}/{notebook_id}.ipynb"
            try:
                outcome = _store(root, student, assignment, notebook_id, data, force)
            except _Refused as why:
                _reject(report, info, why)
                continue
            except OSError as error:
                _reject(report, info, f"cannot write {relative} ({error.strerror or error})")
                continue
            if outcome == "unchanged":
                report.unchanged.append(f"{info.filename} = {relative}")
            else:
                report.imported.append(f"{info.filename} -> {relative}")
    return report
