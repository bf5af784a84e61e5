"""Book build times: clean, cached with no change, and after touching one chapter.

    python benchmarks/bench_book.py [--repeats 1]

Builds a copy of the book in a temporary folder (the repository's _build is left alone)
with the same strict command as `make run`. Goals: clean ≤ 10 min on 2 cores, cached ≤ 30 s.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK_FILES = ["_config.yml", "_toc.yml", "references.bib", "book", "exercises"]


def build(folder: Path) -> float:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    completed = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(folder),
                                "-W", "-n", "--keep-going"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit("the build failed:\n" + (completed.stdout + completed.stderr)[-3000:])
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="clean builds to take the median of")
    args = parser.parse_args()
    clean, cached, touched = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "course"
            folder.mkdir()
            for name in BOOK_FILES:
                source = ROOT / name
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / name)
            clean.append(build(folder))
            cached.append(build(folder))
            chapter = folder / "book" / "07-regularization.md"
            chapter.write_text(chapter.read_text() + "\n```{code-cell} ipython3\nprint('touched')\n```\n")
            touched.append(build(folder))
    print(f"| build | seconds (median of {args.repeats}) | goal |")
    print("| --- | ---: | ---: |")
    print(f"| clean (14 chapters executed) | {statistics.median(clean):.1f} | ≤ 600 |")
    print(f"| cached, nothing changed | {statistics.median(cached):.1f} | ≤ 30 |")
    print(f"| cached, one chapter changed | {statistics.median(touched):.1f} | — |")


if __name__ == "__main__":
    main()
