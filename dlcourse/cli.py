"""The `dlcourse` command.

    dlcourse train MODEL [--epochs N] [--seed S] [--out DIR] [--data digits|mnist|fashion]
    dlcourse release [ASSIGNMENT]      regenerate exercises/ from solutions/ (nbgrader)
    dlcourse check NOTEBOOK            run a notebook's visible tests, one line per part
    dlcourse collect ARCHIVE ASSIGNMENT   import an LMS zip into submitted/<student>/<assignment>/
    dlcourse grade ASSIGNMENT [--workers N] [--scheduler ADDRESS] [--db URL] [--timeout S] [--memory MB] [--json]
    dlcourse feedback ASSIGNMENT [--workers N] [--timeout S]   one HTML page per student, offline
    dlcourse export [--csv FILE]       grades as CSV: nbgrader's columns plus status, reason, similarity
    dlcourse similarity ASSIGNMENT     the copy report: answers against each other and the course's code
    dlcourse kit OUT [--html DIR]      the student kit: book, exercises, a wheel without the answer key

Errors a user can fix are printed as one line (`error: …`) with exit status 2.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


class UserError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def _train(args) -> int:
    from dlcourse.recipes import RECIPES

    recipe = RECIPES[args.model]
    options = {"epochs": args.epochs, "seed": args.seed, "out_dir": args.out,
               "progress": None if not args.no_progress else False}
    if args.model == "mlp":
        options.update(dataset=args.data, mnist_path=args.mnist_path)
    options = {k: v for k, v in options.items() if v is not None or k == "progress"}
    result = recipe(**options)
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key.replace('_', ' ')}: {value:.4f}")
        elif isinstance(value, int) and not isinstance(value, bool):
            print(f"{key.replace('_', ' ')}: {value}")
        elif isinstance(value, str) and key != "plot":
            print(f"{key.replace('_', ' ')}: {value}")
    print(f"loss curve: {result['plot']}")
    return 0


def _release(args) -> int:
    from dlcourse.grading.course import find_root, release

    root = find_root()
    for path in release(root, args.assignment):
        print(f"released {path.relative_to(root)}")
    return 0


def _check(args) -> int:
    from dlcourse.grading.selfcheck import format_table, run_visible_tests

    results = run_visible_tests(args.notebook, timeout=args.timeout)
    print(format_table(results))
    return 0 if all(r.passed is not False for r in results) else 1


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _grade(args) -> int:
    from dlcourse.grading.course import find_root
    from dlcourse.grading.grade import GradeOptions, grade_assignment

    options = GradeOptions(workers=args.workers, scheduler=args.scheduler, db_url=args.db, timeout=args.timeout,
                           total_timeout=args.notebook_timeout, memory_mb=args.memory, json=args.json,
                           force=args.force, progress=False if args.no_progress else None,
                           sandbox=None if args.sandbox == "auto" else args.sandbox)
    return grade_assignment(find_root(), args.assignment, options)


def _collect(args) -> int:
    from dlcourse.grading.collect import collect
    from dlcourse.grading.course import find_root

    report = collect(find_root(), args.archive, args.assignment, force=args.force)
    for line in report.imported:
        print(f"collected {line}")
    for line in report.unchanged:
        print(f"unchanged {line}")
    for line in report.rejected:
        print(f"rejected {line}", file=sys.stderr)
    print(f"{len(report.imported)} collected, {len(report.unchanged)} unchanged, {len(report.rejected)} rejected")
    return 1 if report.rejected else 0


def _feedback(args) -> int:
    from dlcourse.grading.course import find_root
    from dlcourse.grading.feedback import generate_feedback

    root = find_root()
    for path in generate_feedback(root, args.assignment, db_url=args.db, workers=args.workers, timeout=args.timeout):
        print(f"feedback {path.relative_to(root)}")
    return 0


def _export(args) -> int:
    from dlcourse.grading.course import find_root
    from dlcourse.grading.export import export_csv

    root = find_root()
    path, count = export_csv(root, args.csv, db_url=args.db, assignment=args.assignment)
    print(f"exported {count} rows to {path}")
    return 0


def _similarity(args) -> int:
    from dlcourse.grading.course import find_root
    from dlcourse.grading.similarity import FLAG_AT, similarity_report

    root = find_root()
    report = similarity_report(root, args.assignment, out=args.out)
    for student, entry in sorted(report.scores.items(), key=lambda item: -item[1]["similarity"]):
        mark = "  flagged" if entry["similarity"] >= FLAG_AT else ""
        print(f"{student}: {100 * entry['similarity']:.0f}% {entry['closest']}{mark}")
    for student, reason in sorted(report.skipped.items()):
        print(f"{student}: not compared: {reason}", file=sys.stderr)
    print(f"report: {report.path}")
    return 0


def _kit(args) -> int:
    from dlcourse.grading.course import find_root
    from dlcourse.grading.kit import build_kit

    folder, archive = build_kit(find_root(), args.out, html=args.html)
    print(f"student kit: {folder}\narchive: {archive}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dlcourse.grading.feedback import FEEDBACK_TIMEOUT
    from dlcourse.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="dlcourse", description="The deep-learning course's command.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one of the course's models and save its loss curve")
    train.add_argument("model", choices=sorted(RECIPES), help="which model: %(choices)s")
    train.add_argument("--epochs", type=int, default=None, help="passes over the training data")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the initial weights, the data split and the batches (default 0)")
    train.add_argument("--out", default="outputs", help="folder for the loss-curve PNG")
    train.add_argument("--data", default="digits", choices=["digits", "mnist", "fashion"],
                       help="mlp only: digits (embedded) or IDX files you have")
    train.add_argument("--mnist-path", default=None, help="folder with the IDX files (mlp only)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_train)

    release = commands.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    release.add_argument("assignment", nargs="?", default=None, help="one assignment, a folder of solutions/ (default: all)")
    release.set_defaults(handler=_release)

    check = commands.add_parser("check", help="run a notebook's visible tests and show a table per part")
    check.add_argument("notebook", help="the .ipynb file to check")
    check.add_argument("--timeout", type=_positive, default=120, help="seconds per cell (default 120)")
    check.set_defaults(handler=_check)

    collect = commands.add_parser("collect", help="import an LMS download (zip, one notebook per student) "
                                                  "into submitted/<student>/<assignment>/")
    collect.add_argument("archive", help="the zip file")
    collect.add_argument("assignment", help="the assignment (a folder of solutions/)")
    collect.add_argument("--force", action="store_true", help="replace submissions that differ from the zip's")
    collect.set_defaults(handler=_collect)

    grade = commands.add_parser("grade", help="grade every submitted/<student>/<assignment>/, isolated and in parallel")
    grade.add_argument("assignment", help="the assignment (a folder of solutions/)")
    grade.add_argument("--workers", type=int, default=None, help="local worker processes (default: the cores)")
    grade.add_argument("--scheduler", default=None, help="address of a Dask scheduler to grade on instead")
    grade.add_argument("--db", default=None, help="gradebook URL (default: nbgrader_config.py's, SQLite), "
                                                  "e.g. postgresql://user@host/db")
    grade.add_argument("--timeout", type=_positive, default=60, help="seconds per cell (default 60)")
    grade.add_argument("--notebook-timeout", type=_positive, default=None,
                       help="seconds per notebook (default 3 × --timeout + 30)")
    grade.add_argument("--memory", type=_positive, default=2048, help="MB of memory per notebook (default 2048)")
    grade.add_argument("--json", action="store_true", help="one JSON object per submission on stdout, nothing else")
    grade.add_argument("--force", action="store_true", help="grade again what was already graded")
    grade.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grade.add_argument("--sandbox", choices=["auto", "root", "userns", "none"], default="auto",
                       help="isolation: namespaces + a fresh uid (root), a user namespace (a normal user), "
                            "or none (rlimits only; see docs/grading-security.md); default: what this machine allows")
    grade.set_defaults(handler=_grade)

    feedback = commands.add_parser("feedback", help="one HTML feedback file per student "
                                                    "(feedback/<student>/<assignment>/)")
    feedback.add_argument("assignment", help="the assignment (a folder of solutions/)")
    feedback.add_argument("--db", default=None, help="gradebook URL (default: nbgrader_config.py's)")
    feedback.add_argument("--workers", type=_positive, default=None,
                          help="pages rendered at once (default: the cores)")
    feedback.add_argument("--timeout", type=_positive, default=FEEDBACK_TIMEOUT,
                          help="seconds for one student's page; past it the student gets a short page "
                               "(default %(default)s)")
    feedback.set_defaults(handler=_feedback)

    export = commands.add_parser("export", help="grades as CSV: nbgrader's columns plus status and reason")
    export.add_argument("--csv", default="grades.csv", help="output file (default grades.csv)")
    export.add_argument("--assignment", default=None, help="only this assignment (a folder of solutions/)")
    export.add_argument("--db", default=None, help="gradebook URL (default: nbgrader_config.py's)")
    export.set_defaults(handler=_export)

    similarity = commands.add_parser("similarity", help="the copy report: each student's answers against every "
                                                        "other student's and the course's own code (HTML)")
    similarity.add_argument("assignment", help="the assignment (a folder of solutions/)")
    similarity.add_argument("--out", default=None, help="folder for report.html and scores.json "
                                                        "(default similarity/<assignment>/)")
    similarity.set_defaults(handler=_similarity)

    kit = commands.add_parser("kit", help="build the student kit (book, exercises/, a wheel without the answer key, "
                                          "README) in OUT and OUT.zip")
    kit.add_argument("out", help="the kit's folder (must not exist, or be an earlier kit)")
    kit.add_argument("--html", default=None, help="an already built book (_build/html); default: build it")
    kit.set_defaults(handler=_kit)
    return parser


def main(argv=None) -> int:
    # jsonschema (under nbformat) otherwise compiles an IRI grammar that no notebook check
    # uses: ~1.5 s at every start of the grading commands
    sys.modules.setdefault("rfc3987_syntax", None)
    from dlcourse.grading.course import CourseError
    from dlcourse.grading.selfcheck import NotebookError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (UserError, FileNotFoundError, ValueError, CourseError, NotebookError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
