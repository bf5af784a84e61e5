"""`dlcourse feedback`: pages that are safe in a student's browser (sanitized, with a CSP),
honest (awaiting grading, the student's traceback, no broken chapter links), bounded (size
cap, per-student timeout, one failure costs only that student) and complete (the run's
plots and tables reach the page)."""
from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading import feedback as feedback_module
from dlcourse.grading.feedback import generate_feedback
from dlcourse.grading.feedback_render import render_page
from dlcourse.grading.outputs import clean_outputs
from test_grading_support import (A, ROOT, cell_of, correct_notebook, course, grade,  # noqa: F401
                                  registered_course, submit, wrong)

FORGED_BANNER = ('<div class="dlcourse-outcome" style="position:fixed;top:0;left:0;width:100%;height:100%;'
                 'background:#fff;z-index:9999">ch07-regularization: graded — 15 of 15 points</div>')
HOSTILE = ("<script>window.pwned = 'script'</script>"
           "<img src=x onerror=\"window.pwned='onerror'\">"
           "<a href=\"javascript:window.pwned='link'\">click me</a>"
           "<a href=\"data:text/html,<script>alert(1)</script>\">data link</a>"
           "<svg onload=\"window.pwned='svg'\"><script>window.pwned='svg script'</script></svg>"
           "<base href=\"http://evil.example/\">"
           "<style>body { display: none }</style>"
           "<iframe src=\"http://evil.example/\"></iframe>"
           "<form action=\"http://evil.example/\"><input name=q></form>" + FORGED_BANNER)


def png_bytes() -> bytes:
    """A real PNG: a tiny matplotlib figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1, 1))
    axes.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def job_for(tmp_path: Path, grades: dict | None = None, course_root: Path = ROOT) -> dict:
    return {"notebook_id": A, "score": 12.0, "max_score": 15.0, "late_penalty": 0.0, "grades": grades or {},
            "banner": '<div class="dlcourse-outcome">real banner</div>', "mathjax_src": "mathjax/tex-svg-full.js",
            "course": str(course_root), "source_folder": str(course_root / "solutions" / A),
            "output": str(tmp_path / "feedback" / "s" / A / f"{A}.html")}


def hostile_notebook() -> nbformat.NotebookNode:
    notebook = correct_notebook()
    cell_of(notebook, "batchnorm_eval_answer").source = "My answer: $\\mu_B$ " + HOSTILE
    notebook.cells.insert(1, nbformat.v4.new_markdown_cell("A note of mine " + HOSTILE))
    code = nbformat.v4.new_code_cell("show()")
    code.outputs = clean_outputs([
        {"output_type": "display_data", "metadata": {"image/png": {"width": 120}},
         "data": {"image/png": base64.b64encode(png_bytes()).decode(), "text/plain": "<Figure>"}},
        {"output_type": "display_data", "metadata": {},
         "data": {"text/html": "<table><tr><td>cell 42</td></tr></table>" + HOSTILE, "text/plain": "table"}},
        {"output_type": "display_data", "metadata": {},
         "data": {"image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg' onload=\"window.pwned='svg'\">"
                                   "<script>window.pwned='svg'</script><circle r='4'/></svg>"}},
        {"output_type": "display_data", "metadata": {},
         "data": {"text/markdown": "[md link](javascript:window.pwned='md')", "application/javascript": "alert(1)"}},
    ])
    notebook.cells.insert(2, code)
    return notebook


class Elements(HTMLParser):
    """Every start tag with its attributes, and the <body>'s position."""
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict, bool]] = []
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.in_body = True
        self.tags.append((tag, dict(attrs), self.in_body))


def elements(html: str) -> list[tuple[str, dict, bool]]:
    parser = Elements()
    parser.feed(html)
    return parser.tags


def test_nothing_the_student_wrote_can_run_restyle_or_navigate_the_page(tmp_path):
    html = render_page(hostile_notebook(), job_for(tmp_path))
    tags = elements(html)
    scripts = [attrs for tag, attrs, _ in tags if tag == "script"]
    assert scripts == [{}, {"src": "mathjax/tex-svg-full.js", "defer": ""}], scripts   # MathJax's, nothing else
    body = [(tag, attrs) for tag, attrs, in_body in tags if in_body]
    for tag, attrs in body:
        assert tag not in ("script", "style", "base", "iframe", "form", "input", "svg", "object", "embed", "link"), tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        href = (attrs.get("href") or "").strip().lower()
        assert not href.startswith(("javascript:", "data:")), (tag, attrs)
        if tag != "div" or attrs.get("class") != "dlcourse-outcome":
            assert "position" not in (attrs.get("style") or ""), (tag, attrs)
    assert [attrs for tag, attrs in body if "dlcourse-outcome" in (attrs.get("class") or "")] == \
        [{"class": "dlcourse-outcome"}], "the student's forged banner kept our class"
    assert "15 of 15 points" in html                       # the forged text is shown as text, powerless
    assert "cell 42" in html                               # the table itself is kept
    policy = re.search(r'<meta content="([^"]+)" http-equiv="Content-Security-Policy"', html)
    assert policy and "default-src 'none'" in policy.group(1) and "base-uri 'none'" in policy.group(1)
    assert "unsafe-eval" not in policy.group(1) and "script-src 'self' 'sha256-" in policy.group(1)


def test_the_runs_figure_and_svg_are_images_on_the_page(tmp_path):
    html = render_page(hostile_notebook(), job_for(tmp_path))
    images = [attrs for tag, attrs, in_body in elements(html) if tag == "img" and in_body]
    sources = [attrs["src"] for attrs in images]
    png = [s for s in sources if s.startswith("data:image/png;base64,")]
    assert len(png) == 1 and base64.b64decode(png[0].split(",", 1)[1]) == png_bytes()
    assert any(s.startswith("data:image/svg+xml;base64,") for s in sources)   # an <img>: its scripts never run


def test_written_answers_awaiting_grading_say_so(tmp_path):
    grades = {"batchnorm_eval_answer": {"score": 0.0, "max_score": 3.0, "awaiting": True, "comment": None},
              "dropout_forward_tests": {"score": 2.0, "max_score": 2.0, "awaiting": False, "comment": None}}
    html = render_page(correct_notebook(), job_for(tmp_path, grades))
    text = re.sub(r"<[^>]+>", " ", html)
    assert "awaiting grading (3.0 points)" in " ".join(text.split())
    assert "Score: 0.0 / 3.0" not in text and "Score: 2.0 / 2.0" in text
    assert "3.0 points awaiting grading" in text


def test_tracebacks_show_the_students_cell_not_the_graders_files(tmp_path):
    notebook = correct_notebook()
    test_cell = cell_of(notebook, "dropout_forward_tests")
    package = str(ROOT / "dlcourse")
    test_cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="dropout_forward is off by 2x",
                                                traceback=["\x1b[0;31m-----\x1b[0m",
                                                           "Cell \x1b[0;32mIn[7], line 3\x1b[0m\n----> 3 check(y)",
                                                           f"File \x1b[0;32m{package}/checks/__init__.py:163\x1b[0m, "
                                                           "in check(y)\n    162 ...\n--> 163 raise",
                                                           "\x1b[0;31mAssertionError\x1b[0m: dropout_forward is off "
                                                           "by 2x"])]
    html = render_page(notebook, job_for(tmp_path))
    assert "checks/__init__.py" not in html and package not in html
    assert "In[7], line 3" in html and "check(y)" in html and "dropout_forward is off by 2x" in html


def test_chapter_links_point_at_the_rendered_chapter_or_nowhere(tmp_path):
    html = render_page(correct_notebook(), job_for(tmp_path, course_root=ROOT))
    if not (ROOT / "_build" / "html" / "book" / "07-regularization.html").exists():
        assert "07-regularization.md" not in html and "Chapter 7, <em>Regularization</em>" in html
    course = tmp_path / "course"
    (course / "solutions" / A).mkdir(parents=True)
    (course / "_build" / "html" / "book").mkdir(parents=True)
    (course / "_build" / "html" / "book" / "07-regularization.html").write_text("<p>chapter</p>")
    html = render_page(correct_notebook(), job_for(tmp_path, course_root=course))
    page_folder = Path(job_for(tmp_path)["output"]).parent
    link = re.search(r'href="([^"]*07-regularization[^"]*)"', html).group(1)
    assert link.endswith("07-regularization.html") and (page_folder / link).resolve() == \
        (course / "_build" / "html" / "book" / "07-regularization.html").resolve()
    assert ".md" not in link


def test_outputs_keep_plots_and_tables_and_drop_scripts_and_forged_images():
    outputs = clean_outputs([
        {"output_type": "execute_result", "execution_count": 4, "metadata": {},
         "data": {"text/plain": ["1.5"], "text/html": "<b>1.5</b>"}},
        {"output_type": "display_data", "metadata": {"image/png": {"width": 100, "onload": "x"}},
         "data": {"image/png": "iVBORw0KGgo=\n", "application/javascript": "alert(1)"}},
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": '"><script>alert(1)</script>'}},
        {"output_type": "display_data", "metadata": {}, "data": {"application/vnd.jupyter.widget-view+json": {}}},
        {"output_type": "update_display_data", "data": {}},
    ])
    assert [o.output_type for o in outputs] == ["execute_result", "display_data"]
    assert outputs[0].data == {"text/plain": "1.5", "text/html": "<b>1.5</b>"} and outputs[0].execution_count == 4
    assert outputs[1].data == {"image/png": "iVBORw0KGgo=\n"} and outputs[1].metadata == {"image/png": {"width": 100}}


def test_a_probe_less_test_cells_number_is_partial_credit_again():
    from dlcourse.grading.grade import _clean_outputs, _partial_credit

    result = _clean_outputs([{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                              "data": {"text/plain": "1.5"}}])
    assert _partial_credit(result, 3.0) == 1.5
    assert _partial_credit(_clean_outputs([{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                            "data": {"text/plain": "'done'"}}]), 3.0) == 3.0


# --- whole runs: `dlcourse grade`, then the feedback -----------------------------------------

PLOT_CELL = ("%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2))\n"
             "plt.plot([0, 1, 2], [2, 0, 1])\nplt.title('my curve')\nplt.show()")
TABLE_CELL = ("from IPython.display import HTML, display\n"
              "display(HTML('<table><tr><td>epoch 42</td></tr></table>"
              "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>'))")


@pytest.mark.slow
@pytest.mark.xdist_group("grading")
def test_a_submissions_figure_reaches_its_feedback_and_one_slow_page_stops_nobody(course, monkeypatch):
    alice = correct_notebook()
    alice.cells.insert(3, nbformat.v4.new_code_cell(PLOT_CELL))
    alice.cells.insert(4, nbformat.v4.new_code_cell(TABLE_CELL))
    cell_of(alice, "batchnorm_eval_answer").source = "Running averages. " + HOSTILE
    submit(course, "alice", alice)
    submit(course, "bob", wrong(correct_notebook(), "dropout_forward"))
    # 300 KB of unclosed "[", under the cap below: the Markdown parser's time grows with the square of
    # their number (80,000 take 27 s of CPU here), so these take minutes on any machine
    slow = correct_notebook()
    slow.cells.append(nbformat.v4.new_markdown_cell("[" * 300_000))
    submit(course, "carol", slow)
    huge = correct_notebook()
    huge.cells.append(nbformat.v4.new_markdown_cell("word " * 700_000))
    submit(course, "dave", huge)
    lines, _ = grade(course, "--workers", "2")
    assert {s: lines[s]["status"] for s in lines} == dict.fromkeys(("alice", "bob", "carol", "dave"), "graded")

    monkeypatch.setattr(feedback_module, "MAX_FEEDBACK_BYTES", 3 * 1024 * 1024)
    # an ordinary page takes ~4 s of CPU: 60 s leaves room for a loaded machine
    pages = generate_feedback(course, A, workers=2, timeout=60)
    text = {p.parent.parent.name: p.read_text() for p in pages}
    assert sorted(text) == ["alice", "bob", "carol", "dave"]
    autograded = nbformat.read(course / "autograded" / "alice" / A / f"{A}.ipynb", as_version=4)
    kinds = [o.output_type for c in autograded.cells if c.cell_type == "code" for o in c.outputs]
    assert "display_data" in kinds, kinds                   # the run's figure is in the autograded notebook
    figures = re.findall(r'<img[^>]* src="data:image/png;base64,([^"]+)"', text["alice"])
    assert figures and base64.b64decode(figures[0]).startswith(b"\x89PNG"), "the figure is not on alice's page"
    assert "epoch 42" in text["alice"]                      # the HTML table output, sanitized:
    tags = elements(text["alice"])
    assert [attrs.get("src") for tag, attrs, _ in tags if tag == "script"] == [None, "mathjax/tex-svg-full.js"]
    assert not [attrs for _, attrs, _ in tags if any(name.startswith("on") for name in attrs)]
    assert "awaiting grading" in text["alice"] and "Score: 0.0 / 3.0" not in text["alice"]
    assert "07-regularization.md" not in text["alice"] and "mathjax/tex-svg-full.js" in text["alice"]
    assert (pages[0].parent / "mathjax" / "tex-svg-full.js").is_file()
    assert "AssertionError" in text["bob"] or "HiddenCheckFailed" in text["bob"]
    assert "dlcourse/checks" not in text["bob"] and "site-packages" not in text["bob"]
    assert "feedback too large" in text["carol"] and "took more than 60 s" in text["carol"]
    assert "feedback too large" in text["dave"] and "more than the 3 MB" in text["dave"]
    for student in ("carol", "dave"):
        assert 'class="dlcourse-outcome"' in text[student] and "Content-Security-Policy" in text[student]
