"""`dlcourse collect` (an LMS zip into submitted/, with one message per rejected file),
`dlcourse feedback` (one HTML page per student) and `dlcourse export` (CSV)."""
from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
import zipfile

import nbformat
import pytest

from dlcourse.grading import collect as collect_module
from dlcourse.grading.collect import collect, student_of
from dlcourse.grading.course import nbgrader_env
from test_grading_support import (A, AUTO, TOTAL, correct_notebook, course, grade, new_course,  # noqa: F401
                                  registered_course, run_dlcourse, submit, wrong)

NOTEBOOK = nbformat.writes(correct_notebook()).encode()


def make_zip(path, members):
    """members: (name, bytes, unix mode or None)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def test_student_ids_come_from_the_member_names():
    assert student_of("alice.ipynb", A) == ("alice", "")
    assert student_of(f"bob_{A}.ipynb", A) == ("bob", "")
    assert student_of(f"carol-{A}.ipynb", A) == ("carol", "")
    assert student_of("dave/whatever.ipynb", A) == ("dave", "")
    assert student_of("a/b/c.ipynb", A)[0] is None
    assert student_of("bad name!.ipynb", A)[0] is None


def test_collect_imports_good_members_and_rejects_each_bad_one(tmp_path, monkeypatch):
    course = new_course(tmp_path)
    monkeypatch.setattr(collect_module, "MAX_MEMBER_BYTES", 1_000_000)
    archive = make_zip(tmp_path / "lms.zip", [
        ("alice.ipynb", NOTEBOOK, 0o100644),
        (f"bob_{A}.ipynb", NOTEBOOK, None),
        ("carol/my notebook.ipynb", NOTEBOOK, 0o100644),
        ("/etc/evil.ipynb", NOTEBOOK, 0o100644),
        ("../escape.ipynb", NOTEBOOK, 0o100644),
        ("dave/../../escape.ipynb", NOTEBOOK, 0o100644),
        ("link.ipynb", b"/etc/passwd", stat.S_IFLNK | 0o777),
        ("notes.txt", b"hello", 0o100644),
        ("big.ipynb", b" " * 1_500_000, 0o100644),
        ("twice.ipynb", NOTEBOOK, 0o100644),
        (f"twice_{A}.ipynb", NOTEBOOK, 0o100644),
        ("deep/er/x.ipynb", NOTEBOOK, 0o100644),
        ("bad name!.ipynb", NOTEBOOK, 0o100644),
    ])
    report = collect(course, archive, A)
    submitted = sorted(p.relative_to(course).as_posix() for p in (course / "submitted").rglob("*.ipynb"))
    assert submitted == [f"submitted/{s}/{A}/{A}.ipynb" for s in ("alice", "bob", "carol")]
    assert (course / "submitted" / "alice" / A / f"{A}.ipynb").read_bytes() == NOTEBOOK
    rejected = "\n".join(report.rejected)
    assert len(report.rejected) == 10, rejected
    for words in ("/etc/evil.ipynb: has an absolute", "../escape.ipynb: has '..'", "dave/../../escape.ipynb: has '..'",
                  "link.ipynb: is a symbolic link", "notes.txt: is not a notebook", "big.ipynb: is larger than",
                  "student twice has 2 notebooks", "deep/er/x.ipynb: is nested", "bad name!.ipynb: cannot tell"):
        assert words in rejected
    assert not (tmp_path / "escape.ipynb").exists() and not (course / "escape.ipynb").exists()


def test_collect_never_overwrites_silently(tmp_path):
    course = new_course(tmp_path)
    collect(course, make_zip(tmp_path / "one.zip", [("alice.ipynb", NOTEBOOK, None)]), A)
    changed = NOTEBOOK.replace(b"YOUR", b"OUR")
    again = collect(course, make_zip(tmp_path / "two.zip", [("alice.ipynb", NOTEBOOK, None)]), A)
    assert again.unchanged and not again.imported
    refused = collect(course, make_zip(tmp_path / "three.zip", [("alice.ipynb", changed, None)]), A)
    assert "exists and differs (--force replaces it)" in refused.rejected[0]
    assert (course / "submitted" / "alice" / A / f"{A}.ipynb").read_bytes() == NOTEBOOK
    forced = collect(course, tmp_path / "three.zip", A, force=True)
    assert forced.imported and (course / "submitted" / "alice" / A / f"{A}.ipynb").read_bytes() == changed


def test_collect_command_messages_and_errors(tmp_path):
    course = new_course(tmp_path)
    archive = make_zip(tmp_path / "lms.zip", [("alice.ipynb", NOTEBOOK, None), ("x.pdf", b"%PDF", None),
                                              ("fake\n\x1b[2Jcollected.ipynb", NOTEBOOK, None)])
    completed = run_dlcourse(course, "collect", str(archive), A)
    assert completed.returncode == 1
    assert f"collected alice.ipynb -> submitted/alice/{A}/{A}.ipynb" in completed.stdout
    assert "rejected x.pdf: is not a notebook (.ipynb)" in completed.stderr
    # a member's name cannot clear the instructor's screen or forge a line of its own
    assert "rejected fake\\n\\x1b[2Jcollected.ipynb: cannot tell the student" in completed.stderr
    assert "\x1b" not in completed.stderr + completed.stdout and len(completed.stderr.strip().splitlines()) == 2
    (tmp_path / "not.zip").write_text("plain text")
    completed = run_dlcourse(course, "collect", str(tmp_path / "not.zip"), A)
    assert completed.returncode == 2 and completed.stderr.startswith("error: ") and "not a zip" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("grading")
def test_feedback_and_export_after_grading(course):
    submit(course, "alice", correct_notebook())
    submit(course, "bob", wrong(correct_notebook(), "dropout_forward"))
    submit(course, "eve", raw=b"not json")
    (course / "submitted" / "zed").mkdir(parents=True)
    lines, _ = grade(course, "--workers", "2")
    completed = run_dlcourse(course, "feedback", A)
    assert completed.returncode == 0, completed.stderr
    for student in ("alice", "bob", "eve", "zed"):
        page = (course / "feedback" / student / A / f"{A}.html").read_text()
        assert 'class="dlcourse-outcome"' in page and lines[student]["status"] in page
    bob = (course / "feedback" / "bob" / A / f"{A}.html").read_text()
    assert "dropout_forward_tests" in bob and ("HiddenCheckFailed" in bob or "AssertionError" in bob)
    assert "not valid JSON" in (course / "feedback" / "eve" / A / f"{A}.html").read_text()

    completed = run_dlcourse(course, "export", "--csv", "grades.csv")
    assert completed.returncode == 0, completed.stderr
    with open(course / "grades.csv", newline="") as handle:
        rows = {r["student_id"]: r for r in csv.DictReader(handle)}
    assert list(next(iter(rows.values())))[:11] == ["assignment", "duedate", "timestamp", "student_id", "last_name",
                                                      "first_name", "email", "raw_score", "late_submission_penalty",
                                                      "score", "max_score"]
    assert float(rows["alice"]["score"]) == AUTO and float(rows["alice"]["max_score"]) == TOTAL
    assert float(rows["bob"]["score"]) == AUTO - 2 and rows["bob"]["status"] == "graded"
    assert rows["eve"]["status"] == "invalid" and rows["zed"]["status"] == "missing"

    # nbgrader's own export reads the same gradebook
    completed = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", "nbgrader.csv"], cwd=course,
                               env=nbgrader_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    with open(course / "nbgrader.csv", newline="") as handle:
        theirs = {r["student_id"]: r for r in csv.DictReader(handle)}
    assert {s: float(r["score"]) for s, r in theirs.items()} == {s: float(r["score"]) for s, r in rows.items()}


# --- hostile archives and targets: never abort, hang or write outside ---------------------

def with_deflate64(path, name):
    """Mark the member `name` as Deflate64 (method 9), which zipfile cannot decompress."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, method_at, name_at in ((b"PK\x03\x04", 8, 30), (b"PK\x01\x02", 10, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at:start + name_at + len(encoded)] == encoded:
                data[start + method_at:start + method_at + 2] = (9).to_bytes(2, "little")
            start += 4
    path.write_bytes(bytes(data))
    return path


def test_special_files_at_the_targets_are_skipped_not_opened(tmp_path):
    course = new_course(tmp_path)
    for student in ("alice", "bob", "carol"):
        (course / "submitted" / student / A).mkdir(parents=True)
    os.mkfifo(course / "submitted" / "alice" / A / f"{A}.ipynb")      # would hang a plain open()
    (course / "submitted" / "bob" / A / f"{A}.ipynb").mkdir()          # IsADirectoryError before
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (course / "submitted" / "carol" / A / f".{A}.ipynb.collect").symlink_to(outside)   # the old temporary name
    (course / "submitted" / "dave").symlink_to(tmp_path)               # a linked student folder
    archive = make_zip(tmp_path / "lms.zip", [(f"{s}.ipynb", NOTEBOOK, None) for s in ("alice", "bob", "carol",
                                                                                       "dave", "erin")])
    completed = run_dlcourse(course, "collect", str(archive), A, timeout=120)
    assert completed.returncode == 1, completed.stderr
    rejected = completed.stderr.strip().splitlines()
    assert len(rejected) == 3, rejected
    assert f"rejected alice.ipynb: submitted/alice/{A}/{A}.ipynb is not a regular file" in rejected[0]
    assert f"rejected bob.ipynb: submitted/bob/{A}/{A}.ipynb is not a regular file" in rejected[1]
    assert "rejected dave.ipynb: dave is a symbolic link or not a folder" in rejected[2]
    assert "3 collected" not in completed.stdout and "2 collected, 0 unchanged, 3 rejected" in completed.stdout
    assert (course / "submitted" / "carol" / A / f"{A}.ipynb").read_bytes() == NOTEBOOK
    assert (course / "submitted" / "erin" / A / f"{A}.ipynb").read_bytes() == NOTEBOOK
    assert outside.read_text() == "precious" and not (tmp_path / A).exists()
    assert stat.S_ISFIFO(os.lstat(course / "submitted" / "alice" / A / f"{A}.ipynb").st_mode)


def test_a_member_that_cannot_be_unpacked_or_parsed_costs_only_itself(tmp_path):
    course = new_course(tmp_path)
    archive = make_zip(tmp_path / "lms.zip", [("alice.ipynb", NOTEBOOK, None), ("bob.ipynb", NOTEBOOK, None),
                                              ("carol.ipynb", b'{"cells": "none"}', None),
                                              ("dave.ipynb", b"\xff\xfe binary", None), ("erin.ipynb", NOTEBOOK, None)])
    with_deflate64(archive, "bob.ipynb")
    report = collect(course, archive, A)
    assert [line.split(" ->")[0] for line in report.imported] == ["alice.ipynb", "erin.ipynb"]
    assert len(report.rejected) == 3, report.rejected
    assert report.rejected[0].startswith("bob.ipynb: cannot be unpacked (")
    assert report.rejected[1] == "carol.ipynb: is not an nbformat-4 notebook (no list of cells)"
    assert report.rejected[2] == "dave.ipynb: is not a notebook (not JSON text)"
    assert not (course / "submitted" / "bob").exists()


def test_the_archive_has_a_total_size_cap_and_a_member_cap(tmp_path, monkeypatch):
    course = new_course(tmp_path)
    monkeypatch.setattr(collect_module, "MAX_TOTAL_BYTES", int(2.5 * len(NOTEBOOK)))
    archive = make_zip(tmp_path / "lms.zip", [(f"s{i}.ipynb", NOTEBOOK, None) for i in range(4)])
    report = collect(course, archive, A)
    assert len(report.imported) == 2 and len(report.rejected) == 2, report
    assert all("past its total cap" in line for line in report.rejected)
    written = sum(p.stat().st_size for p in (course / "submitted").rglob("*") if p.is_file())
    assert written <= 2.5 * len(NOTEBOOK)

    monkeypatch.setattr(collect_module, "MAX_TOTAL_BYTES", 10**9)
    monkeypatch.setattr(collect_module, "MAX_MEMBERS", 3)
    archive = make_zip(tmp_path / "many.zip", [(f"t{i}.ipynb", NOTEBOOK, None) for i in range(7)])
    report = collect(course, archive, A)
    assert len(report.imported) == 3
    assert report.rejected == ["4 members after the first 3: the archive holds 7 entries, more than the cap of 3; "
                               "not read"]
