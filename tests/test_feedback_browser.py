"""Feedback pages in Debian's headless Chromium, offline: math is typeset by the MathJax
copy next to the page, nothing is requested from another host, and nothing the student
wrote runs (no script, handler or link fires; no dialog opens)."""
from __future__ import annotations

import functools
import http.server
import threading

import pytest

from dlcourse.grading.feedback import _page, _place_mathjax
from dlcourse.grading.feedback_render import render_page
from test_book import QuietHandler, open_offline
from test_feedback import hostile_notebook, job_for

# The "book" group: the same worker as the book's browser tests, sharing their Chromium
# (and a thread with no asyncio loop left running by other tests, which Playwright's sync API
# refuses).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]

PROBE = "window.pwned === undefined && !document.querySelector('base') && !document.querySelector('svg script')"


@pytest.fixture(scope="module")
def feedback_site(tmp_path_factory):
    """A graded page (math, a figure, hostile Markdown and outputs) and a short page, served locally."""
    root = tmp_path_factory.mktemp("feedback-site")
    job = job_for(root)
    folder = root / "feedback" / "s" / job["notebook_id"].split("/")[-1]
    folder.mkdir(parents=True)
    job["output"] = str(folder / "page.html")
    job["mathjax_src"] = _place_mathjax(folder)
    notebook = hostile_notebook()
    notebook.cells[1].source += "\n\n$$\\frac{\\partial L}{\\partial x} = \\sum_i w_i$$\n"
    (folder / "page.html").write_text(render_page(notebook, job), encoding="utf-8")
    row = {"assignment": "a", "student": "s", "status": "invalid", "score": 0.0, "max_score": 15.0,
           "reason": "<script>window.pwned = 1</script> not valid JSON"}
    (folder / "short.html").write_text(_page(row, "feedback too large"), encoding="utf-8")
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/feedback/s/{folder.name}"
    httpd.shutdown()


def serious(errors: list[str]) -> list[str]:
    """Console errors other than the 404 of the student's <img src=x> (a relative image is allowed)."""
    return [e for e in errors if "404" not in e]


def test_the_feedback_page_typesets_math_offline_and_runs_nothing_of_the_students(browser, feedback_site):  # noqa: F811
    page, blocked, errors = open_offline(browser, f"{feedback_site}/page.html")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("MathJax.startup.promise")
        assert page.evaluate("document.querySelectorAll('mjx-container').length") >= 2, "no typeset math"
        assert "$$" not in page.inner_text("body"), "raw TeX left on the page"
        for link in page.query_selector_all("a"):
            href = (link.get_attribute("href") or "").strip().lower()
            assert not href.startswith(("javascript:", "data:", "vbscript:")), href
            if not href or href.startswith("#"):   # a click that stays on the page: it must run nothing
                link.dispatch_event("click")
            # other links (the rendered chapter) only navigate, which would end this page
        assert page.evaluate(PROBE), page.evaluate("String(window.pwned)")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        figure = page.evaluate("Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
                               ".map(i => i.naturalWidth)")
        assert figure and figure[0] > 0, "the run's figure did not load"
        assert not dialogs and not blocked, (dialogs, blocked[:5])
        assert not serious(errors), errors[:5]
    finally:
        page.close()


def test_the_short_page_shows_its_note_and_escapes_the_reason(browser, feedback_site):  # noqa: F811
    page, blocked, errors = open_offline(browser, f"{feedback_site}/short.html")
    try:
        assert "feedback too large" in page.inner_text("body")
        assert "<script>" in page.inner_text("body") and page.evaluate(PROBE)
        assert not blocked and not serious(errors)
    finally:
        page.close()
