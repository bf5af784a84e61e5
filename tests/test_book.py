"""The book: a strict, offline Jupyter Book build, checked in a real browser.

The build runs once per test session from clean (a fresh output folder, so every chapter
executes) with warnings as errors. The browser test opens the built site in Debian's
headless Chromium over a local HTTP server, with every non-local request aborted.
"""
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


CHAPTERS = [f for f in toc_files() if re.match(r"book/\d\d-", f)]


def test_toc_lists_fourteen_chapters_in_order():
    numbers = [int(Path(f).name[:2]) for f in CHAPTERS]
    assert numbers == list(range(1, 15))
    for file in toc_files():
        assert (ROOT / f"{file}.md").is_file(), f"{file}.md is in _toc.yml but missing"


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """Build the whole book from clean, strictly; return the HTML folder."""
    output = tmp_path_factory.mktemp("book")
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--path-output",
               str(output), "-W", "-n", "--keep-going"]
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    log = completed.stdout + completed.stderr
    problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert completed.returncode == 0, "book build failed:\n" + "\n".join(problems[:30] or log[-3000:].splitlines())
    return output / "_build" / "html"


def test_build_is_strict_and_every_chapter_has_a_page(built_site):
    for file in toc_files():
        assert (built_site / f"{file}.html").is_file(), f"{file}.html was not built"


def test_no_page_loads_scripts_styles_or_fonts_from_the_internet(built_site):
    remote = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["'](https?:)?//""", re.I)
    css_remote = re.compile(r"""url\(\s*["']?(https?:)?//|@import\s+["']?(https?:)?//""", re.I)
    offenders = []
    for page in built_site.rglob("*.html"):
        for match in remote.finditer(page.read_text(errors="replace")):
            tag = match.group(0)
            # a <link> that is not a stylesheet, icon or font preload is an ordinary hyperlink
            if tag.lower().startswith("<link") and not re.search(r"stylesheet|preload|icon|font", tag, re.I):
                continue
            offenders.append(f"{page.relative_to(built_site)}: {tag[:120]}")
    for sheet in built_site.rglob("*.css"):
        if css_remote.search(sheet.read_text(errors="replace")):
            offenders.append(str(sheet.relative_to(built_site)))
    assert not offenders, "\n".join(offenders[:20])


def test_mathjax_is_served_from_the_build(built_site):
    assert (built_site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    page = (built_site / "book" / "03-backpropagation.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def server(built_site):
    handler = functools.partial(QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def open_offline(browser, url):
    """A page whose every request to a host other than 127.0.0.1 is aborted and recorded."""
    page = browser.new_page()
    blocked, errors = [], []

    def route(route_request):
        if route_request.request.url.startswith("http://127.0.0.1"):
            route_request.continue_()
        else:
            blocked.append(route_request.request.url)
            route_request.abort()

    page.route("**/*", route)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, wait_until="load")
    return page, blocked, errors


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_offline_with_math_images_and_no_console_errors(browser, server, chapter):
    page, blocked, errors = open_offline(browser, f"{server}/{chapter}.html")
    try:
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("MathJax.startup.promise")
        typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
        assert typeset > 0, "no typeset math on the page"
        text = page.inner_text("main")
        assert "$$" not in text and "\\begin{" not in text, "raw TeX left on the page"
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        images = page.evaluate("Array.from(document.images).map(i => [i.currentSrc, i.naturalWidth])")
        figures = [src for src, _ in images if "_images/" in src or src.endswith(".png")]
        assert figures, "the chapter shows no figure"
        broken = [src for src, width in images if width == 0]
        assert not broken, f"images that did not load: {broken}"
        assert not errors, f"console errors: {errors[:5]}"
        assert not blocked, f"requests to other hosts: {blocked[:5]}"
    finally:
        page.close()


def test_search_finds_the_lstm_chapter(browser, server):
    page, blocked, errors = open_offline(browser, f"{server}/search.html?q=LSTM")
    try:
        page.wait_for_selector("#search-results li a", timeout=60_000)
        links = page.evaluate("Array.from(document.querySelectorAll('#search-results li a')).map(a => a.href)")
        assert any("11-lstm-and-gru" in link for link in links), links[:10]
        assert not errors, f"console errors: {errors[:5]}"
    finally:
        page.close()
