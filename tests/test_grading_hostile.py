"""Broken and hostile submissions (item 5 of the grading issue): each gets a clear status
and reason, and the others in the same batch are graded correctly.

One `dlcourse grade` run grades the whole batch (a good and a wrong submission among the
hostile ones); each test then checks one case.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading

import nbformat
import pytest

from test_grading_support import (A, AUTO, FULL, TOTAL, cell_of, correct_notebook, expect_full, first_helper_slot,
                                  grade, gradebook_scores, hashes, insert_code, meta, outcome_rows, outputs_text,
                                  registered_course, submit, wrong, autograded)  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading")]


# this batch's sandboxes get their own uids, so that leftovers can be told from other runs'
UID_BASE = 40000 + (os.getpid() % 2000) * 10


def helper(code: str):
    """The correct notebook with a helper cell right after the setup cell."""
    notebook = correct_notebook()
    return insert_code(notebook, code, at=first_helper_slot(notebook))


class Listener(threading.Thread):
    """A TCP server on the host's loopback that must never hear from a submission."""

    def __init__(self):
        super().__init__(daemon=True)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(5)
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            connection.close()


NOT_STUDENT_IDS = (b"st\xffud", b"x y\n\x1b[31mred")


@pytest.fixture(scope="module")
def batch(registered_course, tmp_path_factory):
    import shutil

    course = tmp_path_factory.mktemp("hostile") / "course"
    shutil.copytree(registered_course, course)
    listener = Listener()
    listener.start()
    c = str(course)

    submit(course, "good", correct_notebook())
    submit(course, "wrong", wrong(correct_notebook(), "dropout_forward", "batchnorm_backward"))
    submit(course, "malformed", raw=b'{"cells": [{"cell_type": "code", "source": ')
    submit(course, "empty", raw=b"")
    submit(course, "garbage", raw=bytes(range(256)) * 40)
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""},
          "worksheets": [{"cells": [{"cell_type": "code", "input": "1 + 1", "language": "python", "outputs": []}]}]}
    submit(course, "nbformat3", raw=json.dumps(v3).encode())
    # JSON's \\u escapes: a lone surrogate (no text file can hold it) and a proper pair (an emoji)
    odd = correct_notebook()
    odd.cells.append(nbformat.v4.new_code_cell("note = 'LONE' + 'PAIR'  # \U0001F600"))
    text = json.dumps(odd)                       # ensure_ascii: the emoji as \\ud83d\\ude00
    submit(course, "surrogate_pair", raw=text.encode())
    submit(course, "lone_surrogate", raw=text.replace("\\ud83d\\ude00", "\\ud83d").encode())
    # an error message made of terminal control sequences, bound for the instructor's summary table
    noisy = correct_notebook()
    answer = cell_of(noisy, "dropout_forward")
    answer.source = answer.source.replace("return x * mask / (1 - p)",
                                          "raise ValueError('\\x1b[2J\\x1b]0;title\\x07\\rFAKE 15/15')")
    submit(course, "escape_error", noisy)
    # folder names that are not student ids: bytes that are not UTF-8, and a terminal escape after a newline
    for name in NOT_STUDENT_IDS:
        folder = os.path.join(os.fsencode(course / "submitted"), name, A.encode())
        os.makedirs(folder)
        nbformat.write(correct_notebook(), os.fsdecode(os.path.join(folder, A.encode() + b".ipynb")))
    (course / "submitted" / "no_notebook" / A).mkdir(parents=True)
    (course / "submitted" / "no_notebook" / A / "my-work.ipynb").write_text("{}")
    (course / "submitted" / "absent").mkdir(parents=True)

    submit(course, "extra_files", helper(
        "import os\nprint('FILES', sorted(os.listdir('.')))\n"
        "for name in ('helper.py', 'data.csv'):\n"
        "    try:\n        print(open(name).read())\n    except OSError as error:\n        print('NOFILE', type(error).__name__)"))
    extra = course / "submitted" / "extra_files" / A
    (extra / "helper.py").write_text("print('EXTRA-FILE-LEAK')\n")
    (extra / "data.csv").write_text("EXTRA-FILE-LEAK\n")
    (extra / "sub").mkdir()
    (extra / "sub" / "notes.txt").write_text("x" * 100_000)

    link_folder = course / "submitted" / "symlink" / A
    link_folder.mkdir(parents=True)
    os.symlink(course / "solutions" / A / f"{A}.ipynb", link_folder / f"{A}.ipynb")

    notebook = correct_notebook()
    notebook.metadata["kernelspec"] = {"name": "evil-kernel", "display_name": "Evil", "language": "python"}
    submit(course, "kernelspec", notebook)

    notebook = correct_notebook()
    for grade_id in ("dropout_forward_tests", "batchnorm_backward_tests", "setup"):
        notebook.cells.remove(cell_of(notebook, grade_id))
    submit(course, "deleted_tests", notebook)

    notebook = wrong(correct_notebook(), "dropout_forward")
    cell_of(notebook, "dropout_forward_tests").source = "pass  # all good"
    submit(course, "edited_tests", notebook)

    notebook = wrong(correct_notebook(), "dropout_forward")
    cell_of(notebook, "dropout_forward_tests").metadata["nbgrader"]["points"] = 100
    cell_of(notebook, "batchnorm_backward_tests").metadata["nbgrader"]["points"] = 500
    submit(course, "inflated", notebook)

    notebook = correct_notebook()
    for cell in notebook.cells:
        cell.metadata.pop("nbgrader", None)
    submit(course, "no_metadata", notebook)

    submit(course, "system_exit", helper("import sys\nsys.exit(3)"))
    submit(course, "keyboard_interrupt", helper("raise KeyboardInterrupt"))
    notebook = correct_notebook()
    submit(course, "os_exit", insert_code(notebook, "import os\nos._exit(1)", before="batchnorm_forward"))
    notebook = correct_notebook()
    submit(course, "shutdown", insert_code(notebook, "exit()", before="batchnorm_forward"))
    submit(course, "infinite_loop", helper("while True:\n    pass"))
    submit(course, "sleep_forever", helper("import time\ntime.sleep(10**9)"))
    submit(course, "stubborn_loop", helper("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                           "while True:\n    pass"))
    submit(course, "memory_bomb", helper("chunks = []\nwhile True:\n    chunks.append(bytearray(10**8))"))
    submit(course, "fork_bomb", helper("import os\nwhile True:\n    os.fork()"))
    submit(course, "output_flood", helper("for i in range(300_000):\n    print('flood' * 20, i)"))
    submit(course, "read_solutions", helper(
        f"for path in [r'{c}/solutions/{A}/{A}.ipynb', '../../../solutions/{A}/{A}.ipynb',\n"
        f"             r'{c}/submitted/good/{A}/{A}.ipynb', r'{c}/gradebook.db']:\n"
        "    try:\n        open(path).read()\n        print('LEAKED', path)\n"
        "    except OSError as error:\n        print('BLOCKED', type(error).__name__)"))
    submit(course, "write_gradebook", helper(
        "import sqlite3\n"
        f"def overwrite():\n    open(r'{c}/gradebook.db', 'wb').write(b'destroyed')\n"
        f"def drop():\n    sqlite3.connect(r'{c}/gradebook.db').execute('drop table grade')\n"
        f"def plant():\n    open(r'{c}/autograded/planted.txt', 'w').write('x')\n"
        "for attempt in (overwrite, drop, plant):\n"
        "    try:\n        attempt()\n        print('WROTE', attempt.__name__)\n"
        "    except Exception as error:\n        print('BLOCKED', type(error).__name__)"))
    submit(course, "network", helper(
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {listener.port}), timeout=3)\n    print('CONNECTED')\n"
        "except OSError as error:\n    print('BLOCKED', error)"))
    submit(course, "shell_magic", helper(
        f"!cat {c}/solutions/{A}/{A}.ipynb\n!ls {c}\n!id -u\n!cat /proc/1/cmdline; echo"))

    # attacks on the grader itself (outside the sandbox)
    (course / "submitted" / "fifo_folder").mkdir(parents=True)
    os.mkfifo(course / "submitted" / "fifo_folder" / A)
    (course / "submitted" / "sparse_folder").mkdir(parents=True)
    with open(course / "submitted" / "sparse_folder" / A, "wb") as handle:
        handle.truncate(3 * 1024**3)
    submit(course, "directory_flood", helper(
        "import os\nfor i in range(50_000):\n    os.makedirs(f'probe/out/p{i + 100}', exist_ok=True)"))
    submit(course, "restore_bomb", helper("a=1\n" * 250_000))   # 1 MB (test_grading_bounds: 7.6 MB)

    before = hashes(course)
    try:
        lines, completed = grade(course, "--workers", "2", "--timeout", "15", "--notebook-timeout", "120",
                                 timeout=1500, env={"DLCOURSE_SANDBOX_UID_BASE": str(UID_BASE)})
    finally:
        listener.stop = True
    return {"course": course, "lines": lines, "stderr": completed.stderr, "before": before,
            "accepted": listener.accepted}


def test_every_submission_has_one_outcome_and_nothing_was_modified(batch):
    course, lines = batch["course"], batch["lines"]
    students = sorted(p.name for p in (course / "submitted").iterdir() if os.fsencode(p.name) not in NOT_STUDENT_IDS)
    assert sorted(lines) == students
    rows = outcome_rows(course)
    assert sorted(r["student"] for r in rows) == students  # exactly one row each
    assert hashes(course) == batch["before"], "a submitted file changed"
    leftover = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True).stdout.split()
    assert not [u for u in leftover if UID_BASE <= int(u) < UID_BASE + 10], "sandbox processes outlived the run"


def test_good_and_wrong_submissions_in_the_batch_are_graded_correctly(batch):
    lines, course = batch["lines"], batch["course"]
    expect_full(lines["good"])
    assert lines["good"]["reason"].startswith(FULL)
    assert lines["wrong"]["status"] == "graded" and lines["wrong"]["score"] == AUTO - 2 - 5
    assert "dropout_forward_tests" in lines["wrong"]["reason"] and "batchnorm_backward_tests" in lines["wrong"]["reason"]
    assert gradebook_scores(course, "good") == {"dropout_forward_tests": 2, "dropout_backward_tests": 2,
                                                "batchnorm_forward_tests": 3, "batchnorm_backward_tests": 5}
    assert gradebook_scores(course, "wrong") == {"dropout_forward_tests": 0, "dropout_backward_tests": 2,
                                                 "batchnorm_forward_tests": 3, "batchnorm_backward_tests": 0}


@pytest.mark.parametrize("student, words", [
    ("malformed", "is not valid JSON"),
    ("empty", "is empty"),
    ("garbage", "binary data"),
    ("nbformat3", "nbformat 3, not 4"),
    ("lone_surrogate", "lone UTF-16 surrogate"),
])
def test_unreadable_notebooks_are_invalid(batch, student, words):
    line = batch["lines"][student]
    assert line["status"] == "invalid" and line["score"] == 0 and line["max_score"] == TOTAL
    assert words in line["reason"] and f"submitted/{student}/{A}/{A}.ipynb" in line["reason"]


def test_a_surrogate_pair_escape_is_an_ordinary_character(batch):
    expect_full(batch["lines"]["surrogate_pair"])


def test_terminal_sequences_in_an_error_never_reach_the_instructor(batch):
    line = batch["lines"]["escape_error"]
    assert "ValueError" in line["reason"] and "FAKE 15/15" in line["reason"]
    assert not [c for c in line["reason"] if not c.isprintable()] and "\x1b" not in batch["stderr"]


def test_folders_whose_names_are_not_student_ids_are_named_escaped_and_left_alone(batch):
    """Not UTF-8 (no gradebook or report can take the name) or with control characters (a
    newline and an escape sequence would forge summary lines or recolour the terminal)."""
    stderr = batch["stderr"]
    assert "note: submitted/st\\xffud is not graded: its name is not a student id" in stderr
    assert "note: submitted/x y\\n\\x1b[31mred is not graded" in stderr
    assert "\x1b[31m" not in stderr and not [s for s in batch["lines"] if not s.isprintable()]


def test_missing_notebook_and_missing_folder(batch):
    lines = batch["lines"]
    assert lines["no_notebook"]["status"] == "missing"
    assert "my-work.ipynb" in lines["no_notebook"]["reason"]  # says what is there instead
    assert lines["absent"]["status"] == "missing" and "no submitted/absent/" in lines["absent"]["reason"]


def test_extra_files_are_ignored(batch):
    expect_full(batch["lines"]["extra_files"])
    text = outputs_text(autograded(batch["course"], "extra_files"))
    assert "NOFILE FileNotFoundError" in text and "EXTRA-FILE-LEAK" not in text
    assert "helper.py" not in text.split("FILES", 1)[1].split("\n", 1)[0]


def test_a_symlink_instead_of_the_notebook_is_invalid_and_not_followed(batch):
    line = batch["lines"]["symlink"]
    assert line["status"] == "invalid" and "symbolic link" in line["reason"]
    assert not (batch["course"] / "autograded" / "symlink").exists()


def test_a_changed_kernelspec_is_replaced_by_the_source(batch):
    line = batch["lines"]["kernelspec"]
    expect_full(line)
    assert "kernelspec 'evil-kernel' replaced" in line["reason"]
    assert autograded(batch["course"], "kernelspec").metadata.kernelspec.name == "python3"


def test_deleted_test_cells_are_restored(batch):
    line = batch["lines"]["deleted_tests"]
    expect_full(line)
    assert "deleted cells restored from the source: setup, dropout_forward_tests, batchnorm_backward_tests" \
        in line["reason"]
    notebook = autograded(batch["course"], "deleted_tests")
    assert "BEGIN HIDDEN TESTS" in cell_of(notebook, "batchnorm_backward_tests").source


def test_edited_test_cells_are_restored(batch):
    line = batch["lines"]["edited_tests"]
    assert line["status"] == "graded" and line["score"] == AUTO - 2
    assert "locked cells edited (restored from the source): dropout_forward_tests" in line["reason"]


def test_inflated_points_are_ignored(batch):
    line = batch["lines"]["inflated"]
    assert line["status"] == "graded" and line["score"] == AUTO - 2 and line["max_score"] == TOTAL
    assert "points of dropout_forward_tests changed to 100" in line["reason"]
    assert gradebook_scores(batch["course"], "inflated")["batchnorm_backward_tests"] == 5


def test_removed_nbgrader_metadata_is_matched_by_content(batch):
    line = batch["lines"]["no_metadata"]
    expect_full(line)
    assert "nbgrader metadata removed (cells matched by their content): setup, dropout_forward," in line["reason"]


@pytest.mark.parametrize("student", ["system_exit", "keyboard_interrupt"])
def test_systemexit_and_keyboardinterrupt_only_fail_their_cell(batch, student):
    expect_full(batch["lines"][student])
    error = "SystemExit" if student == "system_exit" else "KeyboardInterrupt"
    assert error in outputs_text(autograded(batch["course"], student))


def test_os_exit_kills_the_kernel_and_keeps_what_was_graded(batch):
    line = batch["lines"]["os_exit"]
    assert line["status"] == "crashed" and "kernel died" in line["reason"]
    assert line["score"] == 4  # both dropout parts ran before the kernel died
    assert gradebook_scores(batch["course"], "os_exit")["batchnorm_backward_tests"] == 0


def test_kernel_shutdown_is_a_crash(batch):
    line = batch["lines"]["shutdown"]
    assert line["status"] == "crashed" and "the notebook shut it down" in line["reason"]
    assert line["score"] == 4


@pytest.mark.parametrize("student", ["infinite_loop", "sleep_forever"])
def test_endless_cells_are_interrupted_and_the_rest_is_graded(batch, student):
    line = batch["lines"][student]
    assert line["status"] == "timeout" and "ran longer than 15 s and was interrupted" in line["reason"]
    assert line["score"] == AUTO


def test_a_kernel_that_ignores_interrupts_is_stopped(batch):
    line = batch["lines"]["stubborn_loop"]
    assert line["status"] == "timeout" and "did not recover" in line["reason"] and line["score"] == 0


def test_memory_bomb_hits_the_memory_limit(batch):
    expect_full(batch["lines"]["memory_bomb"])
    assert "MemoryError" in outputs_text(autograded(batch["course"], "memory_bomb"))


def test_fork_bomb_is_contained(batch):
    line = batch["lines"]["fork_bomb"]
    assert line["status"] in ("graded", "timeout", "crashed") and line["reason"]
    text = outputs_text(autograded(batch["course"], "fork_bomb"))
    assert "Resource temporarily unavailable" in text or "BlockingIOError" in text or line["status"] != "graded"


def test_output_flood_is_truncated_and_the_autograded_notebook_stays_small(batch):
    expect_full(batch["lines"]["output_flood"])
    path = batch["course"] / "autograded" / "output_flood" / A / f"{A}.ipynb"
    assert path.stat().st_size < 1_500_000
    assert "output truncated by the grader" in path.read_text()


def test_solutions_other_students_and_the_gradebook_cannot_be_read(batch):
    expect_full(batch["lines"]["read_solutions"])
    text = outputs_text(autograded(batch["course"], "read_solutions"))
    assert "LEAKED" not in text and text.count("BLOCKED") == 4


def test_the_gradebook_cannot_be_written(batch):
    expect_full(batch["lines"]["write_gradebook"])
    text = outputs_text(autograded(batch["course"], "write_gradebook"))
    assert "WROTE" not in text and text.count("BLOCKED") == 3
    assert not (batch["course"] / "autograded" / "planted.txt").exists()
    assert gradebook_scores(batch["course"], "good")["batchnorm_backward_tests"] == 5  # intact


def test_there_is_no_network(batch):
    expect_full(batch["lines"]["network"])
    text = outputs_text(autograded(batch["course"], "network"))
    assert "BLOCKED" in text and "CONNECTED" not in text
    assert batch["accepted"] == 0


def test_shell_magics_run_inside_the_sandbox(batch):
    expect_full(batch["lines"]["shell_magic"])
    text = outputs_text(autograded(batch["course"], "shell_magic"))
    assert "No such file or directory" in text and "BEGIN SOLUTION" not in text
    assert re.search(rf"^{UID_BASE // 10}\d\r?$", text, re.M)  # `id -u`: the sandbox's own uid, not root


def test_a_fifo_or_sparse_file_instead_of_the_folder_is_invalid_and_nothing_hangs(batch):
    assert batch["lines"]["fifo_folder"]["status"] == "invalid"
    assert "FIFO" in batch["lines"]["fifo_folder"]["reason"]
    assert batch["lines"]["sparse_folder"]["status"] == "invalid"
    assert "is a file, not a folder" in batch["lines"]["sparse_folder"]["reason"]


def test_a_directory_flood_in_the_probe_folder_costs_the_grader_nothing(batch):
    expect_full(batch["lines"]["directory_flood"])


def test_a_huge_helper_cell_is_flagged_not_parsed_by_the_grader(batch):
    line = batch["lines"]["restore_bomb"]
    assert "a helper cell of 1.0 MB is over the grader's 256 KB limit" in line["reason"], line
