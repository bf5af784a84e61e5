"""`dlcourse kit OUT`: the student kit, in OUT/ and OUT.zip.

    OUT/book/                 the rendered book (open book/index.html)
    OUT/exercises/            the released notebooks (no solutions, no hidden tests)
    OUT/wheel/dlcourse-*.whl  the package WITHOUT the answer key (dlcourse/answers)
    OUT/README.md             install, JupyterLab, `dlcourse check`, how to hand in

The repository is the instructor's course: solutions/, the answer key dlcourse/answers/ and
the grader stay there. The wheel is built from a copy of the package in which the answer key
is absent, with the student README as its description; `tests/test_kit.py` proves that no
reference answer and no solution cell is anywhere in the kit, the wheel's files included.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["ANSWER_KEY", "build_kit", "build_wheel", "STUDENT_README"]

ANSWER_KEY = "dlcourse/answers"            # the grader-side package left out of the wheel
KIT_MARKER = ".dlcourse-student-kit"        # marks a folder `dlcourse kit` may replace
BOOK_TIMEOUT = 3600                         # seconds for a book build (every chapter executes)

STUDENT_README = """# Deep learning from scratch: the student kit

This kit holds the course book, the exercises and the `dlcourse` package. It does not hold
the solutions: your notebooks are graded by running them against hidden tests with fresh inputs.

## Install (once)

You need Python 3.11 or newer.

    python3 -m venv dlcourse-env
    source dlcourse-env/bin/activate            # Windows: dlcourse-env\\Scripts\\activate
    pip install wheel/dlcourse-*.whl jupyterlab

## Read the book

Open `book/index.html` in a browser. It works offline.

## Work on an exercise

    jupyter lab exercises/

Each chapter's notebook is in `exercises/<chapter>/`. Write your code where a cell says
`# YOUR CODE HERE` (remove the `raise NotImplementedError()` line), then run the notebook's
test cells. Do not edit the test cells or the cells above your answers: the grader restores
them from its own copy.

## Check before you hand in

    dlcourse check exercises/ch07-regularization/ch07-regularization.ipynb

runs the notebook's visible tests and prints one line per part. Some parts ask you to write a
mechanic that the package already has (a layer, an optimizer step): an answer that calls the
package's version, or PyTorch, of the very thing the part asks for earns 0 for that part, and
`dlcourse check` says so. Earlier parts and NumPy are always fine to use.

## Hand in

Upload the notebook file itself (`<chapter>.ipynb`, with its name unchanged) where your
course tells you to. Save it first; a notebook over 50 MB is not graded, so clear large
outputs. Work on your own: the instructors compare every submission with the others and
with the course's code.
"""


def build_kit(root: Path, out, html=None) -> tuple[Path, Path]:
    """Build the kit in `out` (a new folder, or an earlier kit, which is replaced) and
    `out`.zip; `html` is an already rendered book, else the book is built. Returns both paths."""
    from dlcourse.grading.course import CourseError

    out = Path(out).resolve()
    if out.exists() and not (out / KIT_MARKER).is_file():
        raise CourseError(f"{out} exists and is not a student kit; give a new folder")
    inside = [root / name for name in ("solutions", "exercises", "book", "dlcourse", "submitted")]
    if out == root or out in root.parents or any(out == p or p in out.parents for p in inside):
        raise CourseError(f"{out} is part of the course; give another folder")
    book = Path(html).resolve() if html else _build_book(root)
    if not (book / "index.html").is_file():
        raise CourseError(f"{book} holds no rendered book (index.html is missing); build it with `make run`")
    if not (root / "exercises").is_dir():
        raise CourseError(f"{root / 'exercises'} is missing; release the exercises with `dlcourse release`")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kit-", dir=out.parent))
    try:
        (staging / KIT_MARKER).write_text("built by dlcourse kit\n")
        shutil.copytree(book, staging / "book", ignore=shutil.ignore_patterns(".buildinfo", "*.pickle"))
        shutil.copytree(root / "exercises", staging / "exercises",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".*"))
        (staging / "README.md").write_text(STUDENT_README, encoding="utf-8")
        build_wheel(root, staging / "wheel")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, _zip(out)


def _build_book(root: Path) -> Path:
    """`jupyter-book build` of the course, as `make run` does; returns _build/html."""
    from dlcourse.grading.course import CourseError

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=str(bin_dir) + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    completed = subprocess.run([str(bin_dir / "jupyter-book"), "build", str(root), "--keep-going"], cwd=root,
                               env=env, capture_output=True, text=True, timeout=BOOK_TIMEOUT)
    if completed.returncode != 0:
        errors = [line for line in (completed.stdout + completed.stderr).splitlines() if "ERROR" in line]
        raise CourseError(f"the book did not build: {errors[0] if errors else completed.stderr[-300:]}")
    return root / "_build" / "html"


def build_wheel(root: Path, target: Path) -> Path:
    """A wheel of the package from a copy without the answer key (and without caches), whose
    description is the student README. Returns the wheel's path."""
    from dlcourse.grading.course import CourseError

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlcourse-wheel-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(root / "dlcourse", source / "dlcourse",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        shutil.rmtree(source / ANSWER_KEY)
        shutil.copy(root / "pyproject.toml", source)
        (source / "README.md").write_text(STUDENT_README, encoding="utf-8")
        completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                    "--no-index", "--quiet", "-w", str(target), str(source)],
                                   capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            raise CourseError(f"the wheel did not build: {completed.stderr.strip().splitlines()[-1:]}")
    wheels = sorted(target.glob("dlcourse-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        leaked = [name for name in wheel.namelist() if name.startswith(ANSWER_KEY + "/")]
    if leaked:   # the copy above removed it: only a changed build backend could bring it back
        raise CourseError(f"the wheel holds the answer key ({leaked[0]}); the kit was not built")
    return wheels[-1]


def _zip(folder: Path) -> Path:
    archive = folder.parent / f"{folder.name}.zip"
    partial = archive.with_name(archive.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name != KIT_MARKER:
                bundle.write(path, Path(folder.name) / path.relative_to(folder))
    os.replace(partial, archive)
    return archive
