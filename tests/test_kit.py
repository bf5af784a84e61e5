"""The student kit (`dlcourse kit`) holds no reference answer and no solution.

The secrets are every function of the answer key (dlcourse/answers/*.py, each body without
its docstring) and every solution region of solutions/*/*.ipynb (the lines between
### BEGIN SOLUTION and ### END SOLUTION). They are looked for in every text file of the kit —
the book's HTML as the text a reader sees, the notebooks' cells, the README, every file inside
the wheel — in two ways:

- as text: a secret whose whitespace-normalized text (at least MIN_TEXT_CHARS characters)
  occurs in a file, verbatim;
- as code under other names: copydetect's fingerprints (the copy report's tokenizer, which
  maps every name to V and drops blanks and comments, and its winnowing), so renamed
  variables and moved statements still match. A secret is found in a file when at least
  LEAK_SHARE of its fingerprints are. One half: the copy report flags a student at 0.35 of
  their code found in one other document, and a kit file is long, so chance matches of a
  secret's short statements (`V=V.V(V=0)`) are more likely there; honest package code that
  shares a formula with an answer matches 0.2-0.4 of it, while any copy, renamed or reordered,
  matches 0.6 or more (tests/test_similarity.py measures both). Secrets with fewer than
  MIN_FINGERPRINTS fingerprints (one-liners such as `return x * mask / (1 - p)`, whose
  filtered form is shorter than copydetect's noise threshold) are checked as text only:
  such a line is also what anyone writes, so it cannot be told apart from independent code.

The package legitimately implements layers that parts ask students to write (nn.LSTMCell,
Adam's step, ...), and the answer key's functions mostly configure and call those layers:
neither is a reference answer in the package; grading forbids their use instead. So a secret
whose fingerprints are found in a package module of the wheel is reported (a warning naming
both, for the maintainers to read), not failed. Anything else fails: a secret's verbatim text
in any file, package modules included, and its fingerprints in the book, the exercises, the
README or the wheel's other files.
"""
from __future__ import annotations

import ast
import html
import json
import re
import subprocess
import sys
import warnings
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from test_book import built_site  # noqa: F401  (the book, built once from clean and strictly)

ROOT = Path(__file__).resolve().parents[1]
MIN_TEXT_CHARS = 30
MIN_FINGERPRINTS = 3
LEAK_SHARE = 0.5

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


def _normal(text: str) -> str:
    return " ".join(text.split())


class _Text(HTMLParser):
    """The text a reader sees in an HTML page (code blocks are spans of highlighted tokens)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def readable_text(name: str, data: bytes) -> str | None:
    """A kit file as text a student can read (None for binary files)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if name.endswith((".html", ".htm")):
        parser = _Text()
        parser.feed(text)
        return "".join(parser.parts)
    if name.endswith(".ipynb"):
        cells = json.loads(text).get("cells", [])
        return "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    return text


def kit_files(folder: Path) -> dict[str, str]:
    """Every readable file of the kit, the wheel's members included: {where: text}."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        where = path.relative_to(folder).as_posix()
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                for member in wheel.namelist():
                    text = readable_text(member, wheel.read(member))
                    if text is not None:
                        files[f"{where}!{member}"] = text
        else:
            text = readable_text(path.name, path.read_bytes())
            if text is not None:
                files[where] = text
    return files


def reference_functions() -> dict[str, str]:
    """{answers/chNN.py:function: body without docstring} for every function of the answer key."""
    found = {}
    for path in sorted((ROOT / "dlcourse" / "answers").glob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                if body:
                    found[f"answers/{path.name}:{node.name}"] = "\n".join(ast.get_source_segment(text, s) for s in body)
    return found


def solution_cells() -> dict[str, str]:
    """{solutions/<assignment>:<grade_id>: region} for every solution region of every source notebook."""
    from dlcourse.grading.similarity import solution_regions

    found = {}
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell{index}")
            for number, region in enumerate(solution_regions(source)):
                if region.strip():
                    found[f"solutions/{path.parent.name}:{grade_id}#{number}"] = region
    return found


def find_leaks(secrets: dict[str, str], files: dict[str, str]) -> list[tuple[str, str, str]]:
    """(secret, file, how) for every secret that a kit file holds, as text or as fingerprints."""
    from dlcourse.grading.similarity import fingerprint

    index: dict[int, set[str]] = {}
    normal_files = {where: _normal(text) for where, text in files.items()}
    for where, text in files.items():
        for value in fingerprint(where, text).hashes:
            index.setdefault(value, set()).add(where)
    leaks = []
    for name, code in secrets.items():
        normal = _normal(code)
        if len(normal) >= MIN_TEXT_CHARS:
            leaks += [(name, where, "text") for where, text in normal_files.items() if normal in text]
        hashes = fingerprint(name, code).hashes
        if len(hashes) < MIN_FINGERPRINTS:
            continue
        counts: dict[str, int] = {}
        for value in hashes:
            for where in index.get(value, ()):
                counts[where] = counts.get(where, 0) + 1
        leaks += [(name, where, f"{count / len(hashes):.0%} of its fingerprints")
                  for where, count in counts.items() if count / len(hashes) >= LEAK_SHARE
                  and (name, where, "text") not in leaks]
    return leaks


def _package_module(where: str) -> bool:
    return ".whl!dlcourse/" in where and where.endswith(".py")


@pytest.fixture(scope="module")
def kit(built_site, tmp_path_factory):  # noqa: F811
    from dlcourse.grading.kit import build_kit

    folder, archive = build_kit(ROOT, tmp_path_factory.mktemp("kit") / "student-kit", html=built_site)
    return folder, archive


def test_the_kit_holds_the_book_exercises_wheel_and_readme(kit):
    folder, archive = kit
    assert (folder / "book" / "index.html").is_file() and (folder / "README.md").is_file()
    released = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "exercises").glob("*/*.ipynb"))
    assert sorted(p.relative_to(folder).as_posix() for p in (folder / "exercises").glob("*/*.ipynb")) == released
    assert not list(folder.rglob("solutions")) and not list(folder.rglob("*.pyc"))
    [wheel] = list((folder / "wheel").glob("dlcourse-*.whl"))
    with zipfile.ZipFile(wheel) as members:
        names = members.namelist()
    assert "dlcourse/nn/__init__.py" in names and "dlcourse/checks/ch07.py" in names
    assert not [n for n in names if n.startswith("dlcourse/answers")]
    with zipfile.ZipFile(archive) as bundle:
        zipped = sorted(bundle.namelist())
    on_disk = sorted(f"{folder.name}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*")
                     if p.is_file() and p.name != ".dlcourse-student-kit")
    assert zipped == on_disk


def test_no_reference_answer_and_no_solution_is_in_the_kit(kit):
    folder, _ = kit
    files = kit_files(folder)
    references, solutions = reference_functions(), solution_cells()
    assert len(references) >= 40 and len(solutions) >= 40, (len(references), len(solutions))
    assert any(".whl!dlcourse/nn/rnn.py" in where for where in files) and any(w.startswith("book/") for w in files)
    leaks = find_leaks({**references, **solutions}, files)
    in_package = [leak for leak in leaks if leak[2] != "text" and _package_module(leak[1])]
    if in_package:
        warnings.warn("answers that the package implements too (layers the parts ask for, which grading "
                      "forbids): " + "; ".join(f"{s} ~ {w.split('!')[1]} ({how})" for s, w, how in in_package))
    failures = [leak for leak in leaks if leak not in in_package]
    assert not failures, "reference answers or solutions in the student kit:\n" + "\n".join(
        f"  {secret} in {where} ({how})" for secret, where, how in failures)


def test_the_scan_finds_planted_answers(kit, tmp_path):
    """The scan itself is not blind: a renamed reference and a pasted solution are found."""
    references, solutions = reference_functions(), solution_cells()
    name, body = max(references.items(), key=lambda item: len(item[1]))
    renamed = re.sub(r"\b([a-z_][a-z0-9_]*)\b", lambda m: m.group(1) if m.group(1) in {"return", "for", "in", "if",
                     "else", "not", "and", "or", "None", "def", "lambda", "range", "len", "np"} else m.group(1) + "_x",
                     body)
    solution_name, solution = max(solutions.items(), key=lambda item: len(item[1]))
    planted = {"exercises/renamed.py": renamed,
               "book/page.html": readable_text("page.html", f"<pre>{html.escape(solution)}</pre>".encode())}
    found = {(secret, where) for secret, where, _ in find_leaks({name: body, solution_name: solution}, planted)}
    assert (name, "exercises/renamed.py") in found and (solution_name, "book/page.html") in found


def test_the_wheel_runs_check_without_the_answer_key(kit, tmp_path):
    """The kit's wheel, installed alone in a fresh virtual environment (which borrows the
    dependencies but not the editable course package), runs `dlcourse check` on a solved
    chapter 7, and its answer key is not importable."""
    import sysconfig

    folder, _ = kit
    [wheel] = list((folder / "wheel").glob("dlcourse-*.whl"))
    venv = tmp_path / "student"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    # the course's virtual environment as a plain path: its packages, without its .pth hooks
    (packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(packages), str(wheel)], check=True, timeout=300)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    probe = ("import importlib.util, dlcourse; print(dlcourse.__file__); "
             "print(importlib.util.find_spec('dlcourse.answers'))")
    completed = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, timeout=120,
                               cwd=tmp_path)
    assert completed.stdout.splitlines() == [str(packages / "dlcourse" / "__init__.py"), "None"], completed
    notebook = ROOT / "solutions" / "ch07-regularization" / "ch07-regularization.ipynb"
    completed = subprocess.run([str(python), "-m", "dlcourse.cli", "check", str(notebook)], capture_output=True,
                               text=True, env=env, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
