"""Build nbgrader notebooks from Python: how the course's `solutions/` notebooks are written.

    from dlcourse.grading.authoring import *
    cells = [how_to(...), markdown("## Part 1 …"), solution("dropout_forward", "def …"),
             tests("dropout_forward_tests", 3, "…"), written("why_dropout", 2, "Explain …")]
    write_notebook(cells, "solutions/ch07-regularization/ch07-regularization.ipynb")

Cell ids are derived from grade ids (or positions), so regenerating a notebook gives the
same file byte for byte, and `exercises/` stays in sync with `solutions/`.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

__all__ = ["markdown", "code", "solution", "tests", "written", "how_to", "write_notebook"]


def _nbgrader(grade_id, grade, solution, locked, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def markdown(text: str, read_only: bool = False):
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if read_only:
        cell.metadata["_read_only"] = True
    return cell


def code(text: str, grade_id: str | None = None):
    """A plain code cell (setup, demonstrations). With a grade_id it is locked by nbgrader."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if grade_id:
        cell.metadata["nbgrader"] = _nbgrader(grade_id, False, False, True)
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False
    return cell


def solution(grade_id: str, text: str):
    """The student's cell: code between `### BEGIN SOLUTION` and `### END SOLUTION` is
    replaced by `# YOUR CODE HERE / raise NotImplementedError()` in the release."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata["nbgrader"] = _nbgrader(grade_id, False, True, False)
    return cell


def tests(grade_id: str, points: float, text: str):
    """A locked, autograded test cell; `### BEGIN HIDDEN TESTS` … `### END HIDDEN TESTS`
    is removed from the release and restored at grading time."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata["nbgrader"] = _nbgrader(grade_id, True, False, True, points)
    cell.metadata["deletable"] = False
    cell.metadata["editable"] = False
    return cell


def written(grade_id: str, points: float, model_answer: str):
    """A manually graded written answer; the model answer sits between the solution markers."""
    text = f"### BEGIN SOLUTION\n{model_answer.strip()}\n### END SOLUTION"
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["nbgrader"] = _nbgrader(grade_id, True, True, False, points)
    return cell


def how_to(title: str, assignment: str, chapter_link: str, parts: list[tuple[str, str, float]]):
    """The opening cell: what to do, how to check, how to submit, and the points per part.

    parts: (grade_id, what the student does, points)."""
    rows = "\n".join(f"| `{grade_id}` | {what} | {points:g} |" for grade_id, what, points in parts)
    total = sum(points for _, _, points in parts)
    return markdown(f"""
# {title}

This is a graded exercise for {chapter_link}.

**How to work on this notebook**

1. Open it in JupyterLab (`jupyter lab` in the course folder, then `exercises/{assignment}/{assignment}.ipynb`).
2. Run the cells from the top. Write your code where a cell says `# YOUR CODE HERE` and delete the
   `raise NotImplementedError()` line; write your answers where a cell says `YOUR ANSWER HERE`.
3. Run the test cell under each part: it checks shapes, a small worked example and, where it
   fits, the gradients against numerical ones. A silent cell means the visible tests pass.
   From a terminal, `dlcourse check exercises/{assignment}/{assignment}.ipynb` runs them all and
   prints a table; the last cell of this notebook does the same.
4. Submit this `.ipynb` file as it is (save it first). Do not rename it. Test cells are locked:
   they are restored from the original when your work is graded, and hidden tests with other
   inputs run then too, so make your code correct, not just the visible cases.

| part | what you do | points |
| --- | --- | ---: |
{rows}
| | **total** | **{total:g}** |
""")


def write_notebook(cells, path) -> Path:
    """Write an nbformat-4 notebook with stable cell ids and a python3 kernelspec."""
    notebook = nbformat.v4.new_notebook()
    used = set()
    for index, cell in enumerate(cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell_id = (grade_id or f"cell-{index:02d}")[:64]
        if cell_id in used:
            raise ValueError(f"duplicate cell id {cell_id!r}: grade ids must be unique")
        used.add(cell_id)
        cell["id"] = cell_id
    notebook.cells = list(cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.validate(notebook)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path
