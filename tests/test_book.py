"""The book: a strict, offline Jupyter Book build, checked in a real browser.

The build runs once per test session from clean (a fresh output folder, so every chapter
executes) with warnings as errors. The browser test opens the built site in Debian's
headless Chromium over a local HTTP server, with every non-local request aborted.
"""
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


CHAPTERS = [f for f in toc_files() if re.match(r"book/\d\d-", f)]


def glossary_terms():
    """The names of the glossary's entries: the unindented lines of its {glossary} block."""
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    block = text.split("```{glossary}\n", 1)[1].split("\n```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line[0].isspace()]


def chapter_prose(text):
    """A chapter's Markdown without code cells, fenced code, display or inline math."""
    text = re.sub(r"^(```|~~~)[^\n]*\n.*?^\1\s*$", "", text, flags=re.S | re.M)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    return re.sub(r"\$[^$\n]+\$", "", text)


def marked_terms(text):
    """The glossary targets of a chapter's {term} roles and the phrases it sets in bold."""
    roles = [match.group(2) or match.group(1)
             for match in re.finditer(r"\{term\}`([^`<]*?)\s*(?:<([^>]+)>)?`", text)]
    bold = [phrase.strip() for phrase in re.findall(r"\*\*([^*\n]+?)\*\*", chapter_prose(text))]
    return [role.strip() for role in roles], bold


def names_a_glossary_term(phrase, english_names):
    """A bold phrase names a term if it is an entry's English name (any case, plural, or with a
    trailing full stop as in a run-in heading); "zero-shot and one-shot learning" names two."""
    phrase = phrase.replace("`", "").strip().rstrip(".:").lower()
    parts = phrase.split(" and ")
    head = parts[-1].split()[-1]
    parts = [part if part.endswith(head) else f"{part} {head}" for part in parts]
    return all(part in english_names or (part.endswith("s") and part[:-1] in english_names)
               for part in parts)


def is_run_in_label(phrase):
    """A bold sentence of several words ending in a full stop ("**It is linear regression.**")
    labels the paragraph it starts; it is not a term. "**Sigmoid.**" is a term."""
    return phrase.endswith(".") and len(phrase.split()) > 1


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_marked_term_is_in_the_glossary(chapter):
    """Every {term} role of a chapter points at a glossary entry, and every bold phrase names one:
    the book sets a term in bold where it introduces it, and uses italics for mere emphasis
    (a bold sentence that labels a paragraph is neither)."""
    entries = glossary_terms()
    english_names = {entry.split(" (")[0].strip().lower() for entry in entries}
    roles, bold = marked_terms((ROOT / f"{chapter}.md").read_text(encoding="utf-8"))
    missing_roles = sorted(set(roles) - set(entries))
    assert not missing_roles, f"{{term}} targets with no glossary entry: {missing_roles}"
    missing_bold = sorted({phrase for phrase in bold
                           if not is_run_in_label(phrase) and not names_a_glossary_term(phrase, english_names)})
    assert not missing_bold, ("bold phrases that are not glossary terms (add the term to "
                              f"book/glossary.md, or use *italics* for emphasis): {missing_bold}")


def test_glossary_gives_every_term_a_chinese_name_and_a_chapter():
    entries = glossary_terms()
    assert len(entries) == len(set(entries)), "duplicate glossary entries"
    for entry in entries:
        assert re.search(r"\([^)]*[\u3400-\u9fff][^)]*\)", entry), f"{entry}: no Chinese name"
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    for required in ["convolutional neural network", "exploding gradient", "forget gate", "input gate",
                     "output gate", "reset gate", "update gate", "stride", "padding", "feature map",
                     "self-attention", "encoder", "decoder", "logits", "perplexity", "validation set"]:
        assert any(entry.lower().startswith(required + " (") for entry in entries), required
    for variant in ["表征学习", "递归神经网络", "门控递归单元", "变压器", "恒常门", "忘记门", "动量损失"]:
        assert f"| {variant}" in text, f"the 'in the documents' table lacks {variant}"


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


def test_launch_buttons_open_only_configured_targets(built_site):
    """A launch target appears only when _config.yml gives it a URL, and the chapters that
    launch (MyST-Markdown notebooks) open as notebooks because jupytext is a requirement."""
    launch = yaml.safe_load((ROOT / "_config.yml").read_text())["launch_buttons"]
    page = (built_site / "book" / "01-introduction.html").read_text()
    for key, marker in [("binderhub_url", "mybinder.org"), ("jupyterhub_url", "hub/user-redirect"),
                        ("colab_url", "colab.research.google.com")]:
        configured = bool(launch.get(key))
        assert (marker in page) == configured, f"{key} = {launch.get(key)!r} but '{marker}' in page: {marker in page}"
    assert "example.edu" not in page, "a placeholder JupyterHub URL is on the page"
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^jupytext==", requirements, re.M), "the chapters launch as .md notebooks: pin jupytext"


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


def search_results(browser, server, query):
    """The result links of the built site's own search page for `query`."""
    page, blocked, errors = open_offline(browser, f"{server}/search.html?q={quote(query)}")
    try:
        page.wait_for_selector("#search-results li a", timeout=60_000)
        links = page.evaluate("Array.from(document.querySelectorAll('#search-results li a')).map(a => a.href)")
        assert not errors, f"console errors: {errors[:5]}"
        assert not blocked, f"requests to other hosts: {blocked[:5]}"
        return links
    finally:
        page.close()


@pytest.mark.parametrize("query, chapters", [
    ("LSTM", ["11-lstm-and-gru"]),
    # Chinese, segmented by jieba: 梯度 is only ever part of a compound (梯度下降, 梯度消失, ...)
    ("梯度", ["03-backpropagation", "06-optimizers"]),
    ("反向传播", ["01-introduction", "03-backpropagation"]),
])
def test_search_finds_the_chapters_in_english_and_chinese(browser, server, query, chapters):
    links = search_results(browser, server, query)
    for chapter in chapters:
        assert any(chapter in link for link in links), f"{query}: {chapter} not among {links[:10]}"


# Draws one character on a canvas with the font of the page's text and returns its pixels, so
# that a character can be compared with a codepoint no font has: a missing glyph is drawn as the
# same "tofu" box whatever the character.
GLYPH_PIXELS = """([characters, font]) => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 48;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    return characters.map(character => {
        context.clearRect(0, 0, 48, 48);
        context.font = font;
        context.textBaseline = 'top';
        context.fillText(character, 4, 4);
        return Array.from(context.getImageData(0, 0, 48, 48).data).join(',');
    });
}"""
UNASSIGNED = ["\u0378", "\u0379"]  # Greek block, unassigned: no font has a glyph for them


def test_chinese_text_renders_with_real_glyphs(browser, server):
    """No Chinese character of the glossary falls back to the missing-glyph box (tofu)."""
    page, blocked, errors = open_offline(browser, f"{server}/book/glossary.html")
    try:
        page.evaluate("document.fonts.ready")
        text = page.inner_text("main")
        characters = sorted(set(re.findall(r"[\u3400-\u9fff]", text)))
        assert len(characters) > 100, "the glossary shows too few Chinese characters"
        font = page.evaluate("(() => { const s = getComputedStyle(document.querySelector('main dd, main p'));"
                             " return s.fontSize + ' ' + s.fontFamily; })()")
        tofu, other_tofu, *pixels = page.evaluate(GLYPH_PIXELS, [UNASSIGNED + characters, font])
        blank = page.evaluate(GLYPH_PIXELS, [[" "], font])[0]
        assert tofu == other_tofu != blank, "the missing-glyph check cannot tell glyphs apart on this browser"
        boxes = [character for character, image in zip(characters, pixels) if image in (tofu, blank)]
        assert not boxes, (f"{len(boxes)} of {len(characters)} Chinese characters render as missing-glyph "
                           f"boxes ({''.join(boxes[:20])}...): install a CJK font (fonts-noto-cjk)")
    finally:
        page.close()


# [width, available width, text] of every block wider than the space it has, at 1280 px.
TOO_WIDE = {
    "display equations": """Array.from(document.querySelectorAll('mjx-container[display="true"]'))
        .map(box => [box.querySelector('mjx-math').getBoundingClientRect().width, box.clientWidth,
                     (box.querySelector('mjx-assistive-mml') || box).textContent.slice(0, 60)])
        .filter(([width, available]) => width > available + 1)""",
    "code blocks and outputs": """Array.from(document.querySelectorAll('div.cell pre'))
        .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
        .map(pre => [pre.scrollWidth, pre.clientWidth,
                     pre.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 80)])""",
}


@pytest.mark.parametrize("what", list(TOO_WIDE))
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_equations_and_code_fit_the_text_column(browser, server, chapter, what):
    """At a 1280-px window no display equation, code cell or printed output is wider than the
    text column (none scrolls sideways or looks cut off)."""
    page, blocked, errors = open_offline(browser, f"{server}/{chapter}.html")
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("MathJax.startup.promise")
        too_wide = page.evaluate(TOO_WIDE[what])
        assert not too_wide, f"{len(too_wide)} {what} wider than the column: " + "; ".join(
            f"{width:.0f} px > {available} px: {text}" for width, available, text in too_wide[:8])
    finally:
        page.close()
