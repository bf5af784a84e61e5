"""Build the notebook that the grader runs from the SOURCE notebook and a submission.

Nothing the student wrote outside their answer cells is trusted:

- a cell whose nbgrader ``grade_id`` names a source cell is replaced by the source cell
  when the source cell is locked, a test or read-only (hidden tests included, points from
  the source); an answer (solution) cell keeps the student's text under the source's
  metadata and cell type;
- cells without nbgrader metadata are the student's helper code and stay where they are,
  unless their text is exactly a released locked cell or they define exactly the functions
  of an answer cell (a submission whose nbgrader metadata was stripped): then they are
  matched to that source cell;
- source cells missing from the submission (deleted tests) are inserted where the source
  has them; a missing answer cell is inserted empty (never the instructor's solution);
- kernelspec and notebook metadata come from the source; outputs are cleared.

Everything that was changed is reported as a short flag for the outcome's reason.
"""
from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field

import nbformat

__all__ = ["Restored", "restore_notebook", "release_text", "scan_tampering", "audit_tampering", "nbgrader_meta"]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
MARKDOWN_STUB = "YOUR ANSWER HERE"
MISSING_ANSWER = "# (this answer cell was missing from the submission)"


@dataclass
class Restored:
    notebook: nbformat.NotebookNode
    flags: list[str] = field(default_factory=list)
    # grade_id of each answer cell -> True when the student left the released stub unchanged
    unanswered: dict[str, bool] = field(default_factory=dict)
    # index in the restored notebook -> grade_id, for every cell with nbgrader metadata
    grade_ids: dict[int, str] = field(default_factory=dict)
    # the student's own code (answers and helper cells), for the static tampering scan
    student_code: list[tuple[str, str]] = field(default_factory=list)


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    value = meta.get("nbgrader") if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else {}


def _text(cell) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(str(s) for s in source)
    return source if isinstance(source, str) else ""


def _strip_region(text: str, begin: str, end: str, replacement: str | None) -> str:
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if begin in line and not inside:
            inside = True
            if replacement is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + r for r in replacement.splitlines())
            continue
        if end in line and inside:
            inside = False
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def release_text(cell) -> str:
    """What nbgrader's release of a source cell holds: hidden tests removed, solutions stubbed."""
    text = _strip_region(_text(cell), BEGIN_HIDDEN, END_HIDDEN, None)
    stub = CODE_STUB if cell.get("cell_type") == "code" else MARKDOWN_STUB
    return _strip_region(text, BEGIN_SOLUTION, END_SOLUTION, stub)


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _defined_names(text: str) -> frozenset:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return frozenset()
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def _fresh_cell(cell_type: str, source: str, metadata: dict) -> nbformat.NotebookNode:
    if cell_type == "code":
        return nbformat.v4.new_code_cell(source=source, metadata=metadata)
    if cell_type == "raw":
        return nbformat.v4.new_raw_cell(source=source, metadata=metadata)
    return nbformat.v4.new_markdown_cell(source=source, metadata=metadata)


def _source_copy(cell) -> nbformat.NotebookNode:
    fresh = _fresh_cell(cell.cell_type, _text(cell), copy.deepcopy(dict(cell.get("metadata", {}))))
    if "id" in cell:
        fresh["id"] = cell["id"]
    return fresh


def _points(meta: dict):
    try:
        return float(meta.get("points"))
    except (TypeError, ValueError):
        return meta.get("points")


def restore_notebook(student: nbformat.NotebookNode, source: nbformat.NotebookNode) -> Restored:
    """The notebook to run (see the module docstring) and what was changed."""
    flags: list[str] = []
    tracked: dict[str, tuple[int, nbformat.NotebookNode]] = {}
    for index, cell in enumerate(source.cells):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id:
            tracked[grade_id] = (index, cell)
    released = {gid: _normal(release_text(cell)) for gid, (_, cell) in tracked.items()}
    answer_names = {gid: _defined_names(_text(cell)) for gid, (_, cell) in tracked.items()
                    if nbgrader_meta(cell).get("solution") and cell.cell_type == "code"}

    out: list[tuple[int | None, nbformat.NotebookNode]] = []
    edited: list[str] = []
    stripped: list[str] = []
    deleted: list[str] = []
    seen: set[str] = set()
    unanswered: dict[str, bool] = {}
    student_code: list[tuple[str, str]] = []

    def restore_tracked(grade_id: str, cell, how: str):
        index, src = tracked[grade_id]
        smeta = nbgrader_meta(src)
        seen.add(grade_id)
        if smeta.get("solution"):
            text = _text(cell)
            if cell.get("cell_type") != src.cell_type:
                flags.append(f"answer cell {grade_id} was turned into a {cell.get('cell_type')} cell (restored as {src.cell_type})")
            new = _fresh_cell(src.cell_type, text, copy.deepcopy(dict(src.metadata)))
            if "id" in src:
                new["id"] = src["id"]
            unanswered[grade_id] = _normal(text) == released[grade_id]
            if src.cell_type == "code":
                student_code.append((grade_id, text))
        else:
            new = _source_copy(src)
            if _normal(_text(cell)) != released[grade_id] and how == "metadata":
                edited.append(grade_id)
        if how == "metadata":
            meta = nbgrader_meta(cell)
            if smeta.get("grade") and "points" in meta and _points(meta) != _points(smeta):
                flags.append(f"points of {grade_id} changed to {meta.get('points')!r} in the submission "
                             f"(ignored; the source gives {smeta.get('points')!r})")
        else:
            stripped.append(grade_id)
        out.append((index, new))

    for cell in student.cells:
        meta = nbgrader_meta(cell)
        grade_id = meta.get("grade_id")
        cell_type = cell.get("cell_type", "code")
        if grade_id in tracked and grade_id not in seen:
            restore_tracked(grade_id, cell, "metadata")
            continue
        if grade_id in tracked:
            if nbgrader_meta(tracked[grade_id][1]).get("solution"):
                flags.append(f"cell {grade_id} appears twice (the copy runs as helper code)")
            else:
                flags.append(f"cell {grade_id} appears twice (the copy was dropped)")
                continue
        elif grade_id:
            flags.append(f"unknown nbgrader cell {str(grade_id)[:40]!r} (runs as helper code)")
        text = _text(cell)
        if not grade_id:
            # nbgrader metadata stripped? match a released locked cell by its exact text, or an
            # answer cell by the exact set of functions/classes it defines
            normal = _normal(text)
            match = next((gid for gid, (_, src) in tracked.items()
                          if gid not in seen and not nbgrader_meta(src).get("solution")
                          and src.cell_type == cell_type and normal and released[gid] == normal), None)
            if match:
                restore_tracked(match, cell, "text")
                continue
            if cell_type == "code":
                names = _defined_names(text)
                match = next((gid for gid, defined in answer_names.items()
                              if gid not in seen and defined and names == defined), None)
                if match:
                    restore_tracked(match, cell, "definitions")
                    continue
        if cell_type not in ("code", "markdown", "raw"):
            cell_type = "raw"
        out.append((None, _fresh_cell(cell_type, text, {})))
        if cell_type == "code":
            student_code.append(("", text))

    # source cells the submission lacks go back where the source has them
    for grade_id, (index, src) in sorted(tracked.items(), key=lambda item: item[1][0]):
        if grade_id in seen:
            continue
        smeta = nbgrader_meta(src)
        if smeta.get("solution"):
            text = MISSING_ANSWER if src.cell_type == "code" else ""
            new = _fresh_cell(src.cell_type, text, copy.deepcopy(dict(src.metadata)))
            unanswered[grade_id] = True
            flags.append(f"answer cell {grade_id} is missing (graded as unanswered)")
        else:
            new = _source_copy(src)
            deleted.append(grade_id)
        position = 0
        for at, (source_index, _) in enumerate(out):
            if source_index is not None and source_index < index:
                position = at + 1
        out.insert(position, (index, new))
        seen.add(grade_id)

    if edited:
        flags.append(f"locked cells edited (restored from the source): {', '.join(edited)}")
    if deleted:
        flags.append(f"deleted cells restored from the source: {', '.join(deleted)}")
    if stripped:
        flags.append(f"nbgrader metadata removed (cells matched by their content): {', '.join(stripped)}")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = copy.deepcopy(dict(source.metadata))
    notebook.nbformat, notebook.nbformat_minor = 4, max(int(source.get("nbformat_minor", 5)), 5)
    used_ids: set[str] = set()
    grade_ids: dict[int, str] = {}
    for position, (_, cell) in enumerate(out):
        cell_id = str(cell.get("id") or "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cell_id) or cell_id in used_ids:
            cell_id = f"cell-{position:04d}"
        cell["id"] = cell_id
        used_ids.add(cell_id)
        notebook.cells.append(cell)
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id:
            grade_ids[position] = grade_id

    student_kernel = student.get("metadata", {}).get("kernelspec", {})
    source_kernel = source.get("metadata", {}).get("kernelspec", {})
    if isinstance(student_kernel, dict) and student_kernel.get("name") != source_kernel.get("name"):
        flags.append(f"kernelspec {str(student_kernel.get('name'))[:40]!r} replaced by the source's "
                     f"{source_kernel.get('name')!r}")
    return Restored(notebook, flags, unanswered, grade_ids, student_code)


# --- static scan of the student's own code for tampering with the test machinery ----------

_TAMPER_PATTERNS = [
    (r"input_transformers|ast_transformers|input_splitter|register_magic_function|\.events\.register",
     "changes IPython's input/AST transformers or hooks"),
    (r"\b__builtins__\b|\bbuiltins\b", "touches builtins"),
    (r"\bsys\s*\.\s*modules\b", "touches sys.modules"),
    (r"dlcourse\s*\.\s*checks|from\s+dlcourse\s+import\s+[^\n]*\bchecks\b|\bget_part\b|\bverdict\b",
     "touches dlcourse.checks"),
    (r"\bcheck\s*=(?!=)|\bdef\s+check\s*\(", "redefines check()"),
    (r"(np|numpy)\s*\.\s*testing\s*\.\s*\w+\s*=|setattr\s*\(\s*(np|numpy)\s*\.\s*testing",
     "patches numpy.testing"),
    (r"\bsys\s*\.\s*(settrace|setprofile)\b", "installs a tracer"),
]


def scan_tampering(student_code: list[tuple[str, str]]) -> list[str]:
    """Short descriptions of what the student's code does to the test machinery."""
    found = []
    for pattern, description in _TAMPER_PATTERNS:
        for where, text in student_code:
            if re.search(pattern, text):
                label = f"{description} (in {where or 'a helper cell'})"
                if description not in " ".join(found):
                    found.append(label)
                break
    return found


# --- what the notebook did at run time (the executor's audit record) ----------------------

_WATCHED_IMPORTS = (("dlcourse.answers", "imported the answer key"),
                    ("dlcourse.grading", "imported the grader"),
                    ("torch", "imported torch"))


def audit_tampering(audit, counts: dict, notebook) -> list[str]:
    """Notes from the run-time audit record (untrusted: written next to student code, so it
    can only be trusted when it accuses). `counts` maps a cell's index to its execution count;
    imports are only held against the student's own cells (answers and helper cells)."""
    if not isinstance(audit, dict):
        return []
    student_counts = {}
    for index, count in counts.items():
        cell = notebook.cells[int(index)] if str(index).isdigit() and int(index) < len(notebook.cells) else None
        if cell is not None and isinstance(count, int) and (nbgrader_meta(cell).get("solution") or not nbgrader_meta(cell)):
            student_counts[count] = int(index)
    found = []
    imports = audit.get("imports") if isinstance(audit.get("imports"), list) else []
    for item in imports[:5000]:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in student_counts and isinstance(item[1], str)):
            continue
        for prefix, description in _WATCHED_IMPORTS:
            if item[1] == prefix or item[1].startswith(prefix + "."):
                note = f"{description} ({item[1][:60]}, in cell {student_counts[item[0]] + 1})"
                if description not in " ".join(found):
                    found.append(note)
    patched = audit.get("patched") if isinstance(audit.get("patched"), list) else []
    names = [str(name)[:60] for name in patched[:10]]
    if names:
        found.append("replaced at run time: " + ", ".join(names))
    if audit.get("hooks_added") is True:
        found.append("added IPython input or AST transformers at run time")
    return found
