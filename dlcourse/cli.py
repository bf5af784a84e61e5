"""The `dlcourse` command.

    dlcourse train MODEL [--epochs N] [--seed S] [--out DIR] [--data digits|mnist|fashion]
    dlcourse release [ASSIGNMENT]      regenerate exercises/ from solutions/ (nbgrader)
    dlcourse check NOTEBOOK            run a notebook's visible tests, one line per part

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


def build_parser() -> argparse.ArgumentParser:
    from dlcourse.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="dlcourse", description="The deep-learning course's command.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one of the course's models and save its loss curve")
    train.add_argument("model", choices=sorted(RECIPES))
    train.add_argument("--epochs", type=int, default=None, help="passes over the training data")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="outputs", help="folder for the loss-curve PNG")
    train.add_argument("--data", default="digits", choices=["digits", "mnist", "fashion"],
                       help="mlp only: digits (embedded) or IDX files you have")
    train.add_argument("--mnist-path", default=None, help="folder with the IDX files (mlp only)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_train)

    release = commands.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    release.add_argument("assignment", nargs="?", default=None, help="one assignment (default: all)")
    release.set_defaults(handler=_release)

    check = commands.add_parser("check", help="run a notebook's visible tests and show a table per part")
    check.add_argument("notebook")
    check.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    check.set_defaults(handler=_check)
    return parser


def main(argv=None) -> int:
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
