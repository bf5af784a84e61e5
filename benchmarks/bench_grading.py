"""`dlcourse grade --workers 2` against plain `nbgrader autograde`, on identical copies.

    python benchmarks/bench_grading.py [--submissions 40] [--rounds 3]

A temporary course with chapter 7 (registered in its gradebook by nbgrader) gets N
submissions: about half correct, a third with a typical mistake, the rest failing (the
unsolved release, NotImplementedError). Each round copies it twice and grades one copy with
each tool, alternating which goes first; the medians of the rounds give the throughput
ratio (goal ≥ 1.8×). Both tools' autograded scores are compared.

The per-submission overhead beyond the notebook's own execution (goal ≤ 1 s) is reported
two ways:
- worker accounting: for every submission graded, the worker's wall time minus the
  notebook's own execution (kernel start-up + cells, as the executor measured it); the
  median over all graded submissions;
- sequential: one extra `dlcourse grade --workers 1` run, (its wall time − its start-up) / N,
  minus the mean time plain nbclient needs to execute the same restored notebooks, one after
  another, without any sandbox (measured here, in this process).
Results are recorded in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.modules.setdefault("rfc3987_syntax", None)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
A = "ch07-regularization"
MISTAKES = [
    ("dropout_forward", "return x * mask / (1 - p)", "return x * mask * (1 - p)"),
    ("dropout_backward", "return grad_output * mask / (1 - p)", "return grad_output / (1 - p)"),
    ("batchnorm_forward", "var = x.var(axis=0)", "var = x.var(axis=0, ddof=1)"),
    ("batchnorm_backward", "dx = inv_std * (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0))",
     "dx = inv_std * (g - g.mean(axis=0))"),
]


def env() -> dict:
    from dlcourse.grading.course import nbgrader_env
    return nbgrader_env()


def build_base(folder: Path, count: int) -> dict[str, str]:
    """The course, registered; `count` submissions. Returns student -> kind."""
    import nbformat

    from dlcourse.grading.gradebook import course_settings, ensure_assignment

    course = folder / "base"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / A, course / "solutions" / A)
    source = nbformat.read(course / "solutions" / A / f"{A}.ipynb", as_version=4)
    course_id, db_url = course_settings(course)
    ensure_assignment(course, A, A, source, db_url, course_id)
    solutions = {c.metadata["nbgrader"]["grade_id"]: "\n".join(
        line for line in c.source.splitlines() if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
        for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")}
    kinds = {}
    for number in range(count):
        student = f"student{number:03d}"
        notebook = nbformat.read(ROOT / "exercises" / A / f"{A}.ipynb", as_version=4)
        kind = "correct" if number % 5 in (0, 2, 4) else "wrong" if number % 5 == 1 else "failing"
        if kind != "failing":
            for cell in notebook.cells:
                meta = cell.metadata.get("nbgrader", {})
                if meta.get("solution"):
                    cell.source = solutions[meta["grade_id"]] if cell.cell_type == "code" else "Running averages."
        if kind == "wrong":
            name, text, replacement = MISTAKES[number % len(MISTAKES)]
            for cell in notebook.cells:
                if cell.metadata.get("nbgrader", {}).get("grade_id") == name:
                    cell.source = cell.source.replace(text, replacement)
        folder_path = course / "submitted" / student / A
        folder_path.mkdir(parents=True)
        nbformat.write(notebook, folder_path / f"{A}.ipynb")
        kinds[student] = kind
    return kinds


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return elapsed


def scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "dlcourse") as gradebook:
        return {s.student.id: float(sum(g.auto_score or 0 for n in s.notebooks for g in n.grades))
                for s in gradebook.assignment_submissions(A)}


def worker_overheads(course: Path) -> list[float]:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{course / 'gradebook.db'}")
    with engine.connect() as connection:
        rows = connection.execute(text("select timings from dlcourse_outcome")).all()
    engine.dispose()
    return [json.loads(r[0])["overhead_s"] for r in rows if "overhead_s" in json.loads(r[0])]


def plain_execution(base: Path, limit: int) -> list[float]:
    """Seconds plain nbclient takes for the restored notebooks (kernel start, cells, shutdown)."""
    import nbformat
    from nbclient import NotebookClient

    from dlcourse.grading.restore import restore_notebook

    source = nbformat.read(base / "solutions" / A / f"{A}.ipynb", as_version=4)
    times = []
    quiet = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(quiet, 2)   # the kernels' start-up chatter
    try:
        return _plain(base, source, limit, times, restore_notebook, NotebookClient, nbformat)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


def _plain(base, source, limit, times, restore_notebook, NotebookClient, nbformat):
    with tempfile.TemporaryDirectory() as work:
        for path in sorted((base / "submitted").glob(f"*/{A}/{A}.ipynb"))[:limit]:
            notebook = restore_notebook(nbformat.read(path, as_version=4), source).notebook
            started = time.perf_counter()
            NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": work}}).execute()
            times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    python = sys.executable
    nbgrader_cmd = [python, "-m", "nbgrader", "autograde", A, "--create"]
    ours_cmd = [python, "-m", "dlcourse.cli", "grade", A, "--workers", str(args.workers), "--no-progress"]

    with tempfile.TemporaryDirectory(prefix="bench-grading-") as temp:
        folder = Path(temp)
        kinds = build_base(folder, args.submissions)
        base = folder / "base"
        times = {"nbgrader": [], "dlcourse": []}
        overheads: list[float] = []
        agree = None
        for number in range(args.rounds):
            order = ["nbgrader", "dlcourse"] if number % 2 == 0 else ["dlcourse", "nbgrader"]
            for tool in order:
                copy = folder / f"{tool}{number}"
                shutil.copytree(base, copy)
                elapsed = timed(nbgrader_cmd if tool == "nbgrader" else ours_cmd, copy)
                times[tool].append(elapsed)
                print(f"round {number + 1}: {tool:<9} {elapsed:6.1f} s", flush=True)
            ours, theirs = scores(folder / f"dlcourse{number}"), scores(folder / f"nbgrader{number}")
            overheads += worker_overheads(folder / f"dlcourse{number}")
            agree = sum(1 for s in kinds if ours.get(s) == theirs.get(s))
        # sequential overhead: one worker, against plain nbclient on the same notebooks
        copy = folder / "sequential"
        shutil.copytree(base, copy)
        sequential = timed([python, "-m", "dlcourse.cli", "grade", A, "--workers", "1", "--no-progress"], copy)
        empty = folder / "startup"
        shutil.copytree(base, empty, ignore=shutil.ignore_patterns("submitted"))
        startup = timed([python, "-m", "dlcourse.cli", "grade", A, "--workers", "1", "--no-progress"], empty)
        plain = plain_execution(base, args.submissions)

    n = args.submissions
    t_nb, t_ours = statistics.median(times["nbgrader"]), statistics.median(times["dlcourse"])
    ratio = (n / t_ours) / (n / t_nb)
    per_submission = (sequential - startup) / n - statistics.mean(plain)
    print()
    print(f"## Grading throughput ({date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{n} submissions of {A}: {sum(k == 'correct' for k in kinds.values())} correct, "
          f"{sum(k == 'wrong' for k in kinds.values())} wrong, {sum(k == 'failing' for k in kinds.values())} failing)")
    print()
    print("| grader | runs (s) | median (s) | submissions/s |")
    print("| --- | --- | ---: | ---: |")
    print(f"| nbgrader autograde | {', '.join(f'{t:.1f}' for t in times['nbgrader'])} | {t_nb:.1f} | {n / t_nb:.2f} |")
    print(f"| dlcourse grade --workers {args.workers} | {', '.join(f'{t:.1f}' for t in times['dlcourse'])} | "
          f"{t_ours:.1f} | {n / t_ours:.2f} |")
    print()
    print(f"throughput ratio: {ratio:.2f}x (goal >= 1.8x)")
    print(f"per-submission overhead beyond the notebook's execution, worker accounting: median "
          f"{statistics.median(overheads):.2f} s, 90th percentile "
          f"{sorted(overheads)[int(0.9 * (len(overheads) - 1))]:.2f} s (goal <= 1 s)")
    print(f"sequential, end to end: dlcourse grade --workers 1 takes ({sequential:.1f} s - {startup:.1f} s start-up) / {n}"
          f" = {(sequential - startup) / n:.2f} s per submission; plain nbclient, unsandboxed, "
          f"{statistics.mean(plain):.2f} s per notebook; difference {per_submission:+.2f} s")
    print(f"scores agree with nbgrader's: {agree}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
