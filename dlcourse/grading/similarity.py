"""`dlcourse similarity ASSIGNMENT`: the copy report.

Each student's answer cells (the solution cells of submitted/<student>/<assignment>/, plus
code cells of their own that the release does not hold) are compared with every other
student's and with the course's own code: the installed `dlcourse` package (every module but
the grader's, the answer key `dlcourse.answers` included where it is installed) and the
solution regions of the assignment's source notebook. The comparison is copydetect's (token filtering, so
renamed variables still match; k-gram winnowing, so reordered statements still match); the
released notebook's code (stubs, test cells, the setup cell) is boilerplate and never counts.

A pair's score is the larger of its two shares (the share of one side's fingerprinted code
that is found in the other): who copied from whom is not known, and a copier who pads the copy
with code of their own dilutes only their own share. Against the package, which is far larger
than any answer, it is the student's share. A student's similarity is the highest score of the
pairs they are in. The report (similarity/<assignment>/report.html, offline, student text escaped)
ranks the pairs and highlights the matching code; similarity/<assignment>/scores.json keeps
each student's similarity for `dlcourse export`.
"""
from __future__ import annotations

import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["NOISE_CHARS", "GUARANTEE_CHARS", "FLAG_AT", "Document", "Match", "Report", "solution_regions",
           "fingerprint", "similarity_report", "load_scores"]

# copydetect's thresholds, counted in characters of filtered code (names -> V/F/O, no blanks):
# shorter matches are noise (`returnV*V/(1-V)` is 15 and written alike by everyone); a match
# of GUARANTEE_CHARS or more is always found. Smaller than copydetect's defaults (25, 30),
# because NumPy answers are dense: a whole statement is often 20-30 filtered characters.
NOISE_CHARS = 20
GUARANTEE_CHARS = 25
# a student is flagged when this share of their answer code is found in one other document.
# Measured on chapter 7 (tests/test_similarity.py, stable_kgram_hashes below, so every run
# gives the same shares): independent honest answers score at most 0.18 (0.15-0.37 over 14
# runs of copydetect's own salted hashes, by their own shares), planted copies 0.44 (package
# code pasted and adapted), 0.80 (the solution renamed, alone or padded with 4x as much code of
# one's own), 0.83 (reordered) and 1.0 (renamed variables; a classmate's answers padded 4x).
FLAG_AT = 0.35
MAX_CODE_CHARS = 200_000           # answer code kept per student (the notebook is capped at 50 MB)
REPORT_PAIRS = 100                 # pairs shown with their code in the report
OUT_FOLDER = "similarity"


@dataclass
class Document:
    label: str                    # a student's name, or "course: <where>"
    kind: str                     # "student" or "course"
    code: str
    fingerprint: object = field(repr=False, default=None)   # copydetect.detector.CodeFingerprint
    library: bool = False         # the whole package: far larger than any answer


@dataclass
class Match:
    student: Document
    other: Document
    student_share: float          # share of the student's code found in `other`
    other_share: float            # share of `other`'s code found in the student's
    slices: tuple = field(repr=False, default=())

    @property
    def score(self) -> float:
        """The larger share: who copied from whom is not known, and a copier who pads the copy
        with code of their own lowers only their own share, not the share of the other's code
        found in theirs. Against the package, the student's share (the package is far larger
        than any answer, so the other share says nothing)."""
        if self.other.library:
            return self.student_share
        return max(self.student_share, self.other_share)


@dataclass
class Report:
    path: Path
    scores: dict[str, dict]       # student -> {"similarity": share, "closest": label}
    matches: list[Match]
    skipped: dict[str, str]       # student -> why they were not compared


def solution_regions(text: str) -> list[str]:
    """The code between ### BEGIN SOLUTION and ### END SOLUTION lines, one string per region."""
    from dlcourse.grading.restore import BEGIN_SOLUTION, END_SOLUTION

    regions, current = [], None
    for line in text.splitlines():
        if BEGIN_SOLUTION in line and current is None:
            current = []
        elif END_SOLUTION in line and current is not None:
            regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


_KGRAM_MULTIPLIER = np.uint64(0x100000001B3)          # FNV-1a's 64-bit prime: odd, so no bits are lost


def stable_kgram_hashes(string: str, k: int) -> np.ndarray:
    """Hashes of every k-gram of `string`, shape (len(string) - k + 1,), int64; the same in every process.

    Stands in for copydetect's `hashed_kgrams`, which uses Python's `hash()`: that is salted per
    process (PYTHONHASHSEED), so winnowing kept different fingerprints in every run, and a
    share near a threshold was over it in one run and under it in the next. Here a k-gram's
    hash is a polynomial in its code points (mod 2^64), then splitmix64's finalizer, so that
    the minimum that winnowing picks in each window is as good as random, and reproducible.
    """
    # surrogatepass: a lone surrogate (valid in a notebook's JSON escapes) is a code point like any other
    codes = np.frombuffer(string.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    count = len(codes) - k + 1
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore"):
        value = np.zeros(count, dtype=np.uint64)
        for offset in range(k):
            value = value * _KGRAM_MULTIPLIER + codes[offset:offset + count]
        value ^= value >> np.uint64(30)
        value *= np.uint64(0xBF58476D1CE4E5B9)
        value ^= value >> np.uint64(27)
        value *= np.uint64(0x94D049BB133111EB)
        value ^= value >> np.uint64(31)
    return value.view(np.int64)


def _use_stable_hashes() -> None:
    import copydetect.utils

    copydetect.utils.hashed_kgrams = stable_kgram_hashes   # looked up at call time by its fingerprinting


def fingerprint(label: str, code: str, boilerplate=()):
    """copydetect's fingerprint of Python code (an empty one for code it cannot tokenize)."""
    from copydetect import CodeFingerprint

    _use_stable_hashes()
    return CodeFingerprint(label, NOISE_CHARS, GUARANTEE_CHARS - NOISE_CHARS + 1, boilerplate=list(boilerplate),
                           language="python", fp=io.StringIO(code))


def _cell_text(cell) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def _answer_code(notebook: dict, released: set[str]) -> str:
    """The student's answer cells and their own code cells; released and test cells excluded."""
    from dlcourse.grading.restore import nbgrader_meta

    pieces = []
    cells = notebook.get("cells", []) if isinstance(notebook, dict) else []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        meta, text = nbgrader_meta(cell), _cell_text(cell)
        own = meta.get("solution") is True or not (meta.get("grade") or meta.get("locked"))
        if own and text.strip() and text.strip() not in released:
            pieces.append(text)
    return "\n\n".join(pieces)[:MAX_CODE_CHARS]


def _student_documents(root: Path, assignment: str, notebook_id: str, released: set[str]):
    from dlcourse.grading.course import NOT_A_STUDENT_ID, submitted_students
    from dlcourse.grading.grade import read_submission

    base = root / "submitted"
    names, passed_over = submitted_students(root)
    documents, skipped = [], {f"submitted/{name}": NOT_A_STUDENT_ID for name in passed_over}
    for student in names:
        if not (base / student / assignment).is_dir():
            continue                # nothing handed in for this assignment
        found = read_submission(root, student, assignment, notebook_id)   # refuses links, caps the size
        if found["state"] != "ok":
            skipped[student] = found["reason"]
            continue
        try:
            notebook = json.loads(found["data"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            skipped[student] = f"{found['display']} is not a notebook ({type(error).__name__})"
            continue
        code = _answer_code(notebook, released)
        if not code.strip():
            skipped[student] = "no answer code"
            continue
        documents.append(Document(student, "student", code))
    return documents, skipped


def _package_source() -> str:
    """Every module of the installed package but the grader's own, one after the other, each
    under a comment naming it (comments are not fingerprinted)."""
    import dlcourse

    package = Path(dlcourse.__file__).resolve().parent
    pieces = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).as_posix()
        if not relative.startswith("dlcourse/grading/"):
            pieces.append(f"# ---- {relative}\n{path.read_text(encoding='utf-8')}")
    return "\n".join(pieces)


def _course_documents(source: dict, assignment: str) -> list[Document]:
    """The package as one document and the assignment's solution regions as another: a
    copier takes from several modules or cells at once, and a share counts one document."""
    from dlcourse.grading.restore import nbgrader_meta

    regions = [region for cell in source.get("cells", [])
               if cell.get("cell_type") == "code" and nbgrader_meta(cell).get("solution")
               for region in solution_regions(_cell_text(cell))]
    return [Document("course: the dlcourse package", "course", _package_source(), library=True),
            Document(f"course: solutions/{assignment}", "course", "\n\n".join(regions))]


def _compare(students: list[Document], course: list[Document]) -> list[Match]:
    from copydetect.detector import compare_files

    matches = []
    for i, student in enumerate(students):
        for other in students[i + 1:] + course:
            overlap, (share, other_share), slices = compare_files(student.fingerprint, other.fingerprint)
            if overlap:
                matches.append(Match(student, other, float(share), float(other_share), slices))
    return sorted(matches, key=lambda m: (-m.score, m.student.label, m.other.label))


def _scores(students: list[Document], matches: list[Match]) -> dict[str, dict]:
    scores = {s.label: {"similarity": 0.0, "closest": ""} for s in students}
    for match in matches:
        # both students of a pair get the pair's score: the copier's own share may be diluted
        sides = [(match.student.label, match.other.label)]
        if match.other.kind == "student":
            sides.append((match.other.label, match.student.label))
        for student, closest in sides:
            if match.score > scores[student]["similarity"]:
                scores[student] = {"similarity": round(match.score, 4), "closest": closest}
    return scores


def similarity_report(root: Path, assignment: str, out: Path | None = None) -> Report:
    """Compare every submission of `assignment` with the others and with the course's code;
    write the HTML report and scores.json under similarity/<assignment>/ (or `out`)."""
    import nbformat

    from dlcourse.grading.grade import source_notebook
    from dlcourse.grading.restore import release_text

    source_path = source_notebook(root, assignment)
    source = nbformat.read(source_path, as_version=4)
    released = {release_text(c).strip() for c in source.cells if c.cell_type == "code"}
    boilerplate = set()
    for text in released:
        boilerplate |= fingerprint("release", text).hashes
    students, skipped = _student_documents(root, assignment, source_path.stem, released)
    course = _course_documents(source, assignment)
    for document in students + course:
        document.fingerprint = fingerprint(document.label, document.code, boilerplate)
    matches = _compare(students, course)
    scores = _scores(students, matches)
    folder = Path(out) if out else root / OUT_FOLDER / assignment
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "scores.json", json.dumps(scores, indent=1, sort_keys=True))
    _write_atomic(folder / "report.html", render_html(assignment, scores, matches, skipped))
    return Report(folder / "report.html", scores, matches, skipped)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    # "replace": a lone surrogate from a notebook's JSON (a \\u escape) is shown as "?"
    partial.write_text(text, encoding="utf-8", errors="replace")
    os.replace(partial, path)


def load_scores(root: Path, assignment: str) -> dict[str, float]:
    """student -> similarity from the last `dlcourse similarity ASSIGNMENT` ({} if never run)."""
    from dlcourse.grading.course import CourseError

    path = root / OUT_FOLDER / assignment / "scores.json"
    if not path.is_file():
        return {}
    try:
        return {student: float(entry["similarity"]) for student, entry in json.loads(path.read_text()).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CourseError(f"{path} is damaged ({type(error).__name__}); run dlcourse similarity {assignment} "
                          "again") from None


# ----------------------------------------------------------------------------------------
# the HTML report: one file, inline style, no scripts, every student text escaped
# ----------------------------------------------------------------------------------------

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.flag{background:#fdd}
.pair{display:flex;gap:1em}.pair>div{flex:1;min-width:0}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:85%}mark{background:#ffd54f}h3{margin-top:2em}"""


def _highlighted(document: Document, slices) -> str:
    from copydetect.utils import highlight_overlap

    # the package is long: show its matching lines with two lines around them
    context = 2 if document.kind == "course" else -1
    text, _ = highlight_overlap(document.code, slices, "<mark>", "</mark>", truncate=context, escape_html=True)
    return text


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def render_html(assignment: str, scores: dict, matches: list[Match], skipped: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='{'flag' if entry['similarity'] >= FLAG_AT else ''}'><td>{e(student)}</td>"
        f"<td>{_percent(entry['similarity'])}</td><td>{e(entry['closest'])}</td></tr>"
        for student, entry in sorted(scores.items(), key=lambda item: -item[1]["similarity"]))
    ranked = "".join(
        f"<tr class='{'flag' if m.score >= FLAG_AT else ''}'><td>{rank}</td><td><a href='#pair{rank}'>"
        f"{e(m.student.label)}</a></td><td>{e(m.other.label)}</td><td>{_percent(m.score)}</td>"
        f"<td>{_percent(m.student_share)} / {_percent(m.other_share)}</td></tr>"
        for rank, m in enumerate(matches[:REPORT_PAIRS], 1))
    pairs = "".join(
        f"<h3 id='pair{rank}'>{rank}. {e(m.student.label)} and {e(m.other.label)}: {_percent(m.score)}</h3>"
        f"<div class='pair'><div><b>{e(m.student.label)}</b> ({_percent(m.student_share)} found in the other)"
        f"<pre>{_highlighted(m.student, m.slices[0])}</pre></div><div><b>{e(m.other.label)}</b> "
        f"({_percent(m.other_share)} found in the other)<pre>{_highlighted(m.other, m.slices[1])}</pre></div></div>"
        for rank, m in enumerate(matches[:REPORT_PAIRS], 1))
    left_out = "".join(f"<li>{e(s)}: {e(reason)}</li>" for s, reason in sorted(skipped.items()))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Copy report: {e(assignment)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>Copy report: {e(assignment)}</h1>"
            f"<p>Shares of each student's answer code found in another document (copydetect: names and "
            f"strings normalized, matches of at least {NOISE_CHARS} filtered characters; the released notebook "
            f"is boilerplate). Rows at or above {_percent(FLAG_AT)} are flagged. A high share is a reason to "
            f"read both, not a verdict.</p><h2>Students</h2><table><tr><th>student</th><th>similarity</th>"
            f"<th>closest</th></tr>{rows}</table><h2>Pairs</h2><table><tr><th>#</th><th>student</th><th>other</th>"
            f"<th>score</th><th>shares</th></tr>{ranked}</table>"
            + (f"<h2>Not compared</h2><ul>{left_out}</ul>" if left_out else "") + pairs + "</body></html>")
