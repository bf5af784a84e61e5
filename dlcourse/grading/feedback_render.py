"""One student's feedback page, rendered in a child process of `dlcourse feedback`.

The page is nbgrader's feedback layout (template ``templates/dlcourse_feedback``) made safe
to open in a student's browser and readable offline:

- everything the student controls that becomes HTML (Markdown cells, written answers,
  ``text/html`` and ``text/markdown`` outputs) goes through :func:`clean_html` (nh3, the
  Ammonia sanitizer): no scripts, event handlers, styles, ``<base>``, forms, frames or SVG
  elements, and only http(s)/mailto links; images may be ``data:`` URLs (an ``<img>`` runs
  no script), SVG outputs are shown as such images;
- a Content-Security-Policy allows scripts only from the page's own folder (MathJax) and
  the one inline configuration, by its hash; no request leaves the page's folder;
- tracebacks keep the student's cells and the failure message, not the grader's frames;
- links to the course's Markdown chapters point at the rendered chapter when the course
  has one (``_build/html``), otherwise they become plain text;
- a written answer that awaits manual grading says so instead of "0 / 3".

Run as ``python -m dlcourse.grading.feedback_render`` with a JSON job on stdin (see
:func:`main`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import nh3

__all__ = ["clean_html", "student_traceback", "link_chapters", "render_page", "csp", "MATHJAX_CONFIG"]

TEMPLATES = Path(__file__).parent / "templates"

# What Markdown produces (CommonMark, GitHub tables, nbconvert's code highlighting) and
# what MathJax reads (plain text with $…$); nothing that runs, styles or navigates the page.
STUDENT_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
                "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
                "q", "s", "samp", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
                "thead", "tr", "u", "ul", "var"}
STUDENT_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
                      "td": {"align", "colspan", "rowspan"}, "th": {"align", "colspan", "rowspan", "scope"},
                      "ol": {"start"}, "span": {"class"}, "code": {"class"}}
DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|svg\+xml);base64,[A-Za-z0-9+/=\s]*\Z")


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Only <img> may use a data: URL, and only for an image."""
    if value.strip().lower().startswith("data:"):
        return value if tag == "img" and attribute == "src" and DATA_IMAGE.match(value.strip()) else None
    return value


def clean_html(html) -> str:
    """Student-controlled HTML, sanitized for the feedback page (the template's clean_html filter)."""
    html = html.decode() if isinstance(html, bytes) else str(html)
    return nh3.clean(html, tags=STUDENT_TAGS, clean_content_tags={"script", "style"}, attributes=STUDENT_ATTRIBUTES,
                     attribute_filter=_keep_attribute, url_schemes={"http", "https", "mailto", "data"},
                     strip_comments=True, link_rel="noopener noreferrer nofollow")


MATHJAX_CONFIG = ("window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
                  "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true}, "
                  "svg: {fontCache: 'global'}, options: {enableMenu: false}};")


def csp(inline_script: str = MATHJAX_CONFIG) -> str:
    """The page's Content-Security-Policy: its own files, the inline MathJax configuration
    (by hash), inline styles (MathJax's SVG output sets them) and data: images; nothing else."""
    digest = base64.b64encode(hashlib.sha256(inline_script.encode()).digest()).decode()
    return ("default-src 'none'; "
            f"script-src 'self' 'sha256-{digest}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-src 'none'; object-src 'none'")


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def student_traceback(output, hidden: list[str]) -> list[str]:
    """An error output's traceback without the frames in files (the grader's, the
    libraries'): the student's cell frames and the failure message. Paths in `hidden`
    left in the text are shortened to '…'."""
    kept = []
    for entry in output.get("traceback", []):
        plain = ANSI.sub("", str(entry)).lstrip()
        if plain.startswith("File ") or plain.startswith("/"):
            continue
        for path in hidden:
            entry = str(entry).replace(path, "…")
        kept.append(entry)
    message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
    if not any(message in ANSI.sub("", str(entry)) for entry in kept):
        kept.append(message)
    return kept


MD_LINK = re.compile(r"\[([^\]]*)\]\(\s*([^)\s]+?\.md)(#[^)\s]*)?\s*\)")


def link_chapters(text: str, source_folder: Path, course: Path, page_folder: Path) -> str:
    """Markdown links to the course's .md chapters: to the rendered page in
    course/_build/html when it exists, else the link's text alone."""
    def replace(match):
        label, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            return match.group(0)   # a full URL: not one of the course's files
        chapter = (source_folder / target).resolve()
        try:
            relative = chapter.relative_to(course.resolve())
        except ValueError:
            return label
        rendered = course / "_build" / "html" / relative.with_suffix(".html")
        if not rendered.is_file():
            return label
        return f"[{label}]({os.path.relpath(rendered, page_folder)}{anchor})"
    return MD_LINK.sub(replace, text)


def _prepare(notebook, job: dict) -> float:
    """Scores, comments, tracebacks and links onto the notebook; the points awaiting grading."""
    import dlcourse

    grades = job["grades"]
    hidden = [str(Path(dlcourse.__file__).parent.parent), sys.prefix, sys.base_prefix]
    awaiting = 0.0
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict):
            grade = grades.get(meta.get("grade_id")) if meta.get("grade") else None
            if meta.get("grade") and grade is None:   # not a graded cell of this assignment
                cell.metadata.pop("nbgrader")
            elif grade is not None:
                meta.update(score=grade["score"], points=grade["max_score"], awaiting=grade["awaiting"],
                            comment=grade.get("comment"))
                awaiting += grade["max_score"] if grade["awaiting"] else 0.0
        if cell.cell_type == "markdown":
            cell.source = link_chapters(cell.source, Path(job["source_folder"]), Path(job["course"]),
                                        Path(job["output"]).parent)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = student_traceback(output, hidden)
    return awaiting


def render_page(notebook, job: dict) -> str:
    """The feedback page's HTML for one autograded notebook (job: see main)."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    import nbgrader

    awaiting = _prepare(notebook, job)
    config = Config()
    config.HTMLExporter.template_name = "dlcourse_feedback"
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATES)]
    config.HTMLExporter.extra_template_paths = [str(Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
                                                    / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    config.HTMLExporter.sanitize_html = True   # outputs: no scripts or widgets; SVG as an <img>
    config.HTMLExporter.filters = {"clean_html": clean_html}
    exporter = HTMLExporter(config=config)
    resources = {"nbgrader": {"notebook": job["notebook_id"], "score": job["score"], "max_score": job["max_score"],
                              "late_penalty": job.get("late_penalty", 0.0), "awaiting": awaiting},
                 "dlcourse": {"csp": csp(), "mathjax_config": MATHJAX_CONFIG, "mathjax_src": job["mathjax_src"]}}
    html, _ = exporter.from_notebook_node(notebook, resources=resources)
    match = re.search(r"<body[^>]*>", html)
    position = match.end() if match else 0
    return html[:position] + job["banner"] + html[position:]


def main() -> int:
    """Job on stdin (JSON): notebook (path of the autograded notebook), output (path of the
    page), notebook_id, score, max_score, late_penalty, grades ({grade_id: {score,
    max_score, awaiting, comment}}), banner (HTML), mathjax_src (relative URL), course and
    source_folder (paths, for chapter links)."""
    import nbformat

    job = json.loads(sys.stdin.read())
    notebook = nbformat.read(job["notebook"], as_version=4)
    page = render_page(notebook, job)
    output = Path(job["output"])
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
