"""The `dlcourse` command's surface: every argument explains itself, defaults are shown,
and unknown assignments are refused the same way by every command."""
from __future__ import annotations

import argparse

from dlcourse.cli import build_parser, main
from test_grading_support import new_course, run_dlcourse


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_argument_of_every_command_has_help():
    missing = [f"{name} {action.dest}" for name, sub in subcommands().items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]
    assert not missing, missing


def test_check_help_shows_the_timeout_default(capsys):
    try:
        main(["check", "--help"])
    except SystemExit:
        pass
    assert "(default 120)" in " ".join(capsys.readouterr().out.split())


def test_export_refuses_an_unknown_assignment_like_grade_and_feedback(tmp_path):
    course = new_course(tmp_path)
    for command in (["export", "--assignment", "ch99"], ["grade", "ch99"], ["feedback", "ch99"]):
        completed = run_dlcourse(course, *command, timeout=300)
        assert completed.returncode == 2, (command, completed.stdout, completed.stderr)
        assert completed.stderr.startswith("error: no assignment 'ch99'"), (command, completed.stderr)
        assert len(completed.stderr.strip().splitlines()) == 1
    assert not (course / "grades.csv").exists()
