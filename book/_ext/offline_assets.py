"""Sphinx extension: the book loads nothing from the internet.

- MathJax comes from the pinned Python package, never from a CDN.
- Scripts and stylesheets that point at another host are dropped from every page: the
  only one Jupyter Book adds is sphinx-thebe's loader (live code cells are off in this book).

`django-static-mathjax` ships MathJax 3's browser files. After an HTML build the parts
the book uses (TeX input, CommonHTML output with its woff fonts, the menu) are copied into
`_static/mathjax/`, and `mathjax_path` (set in _config.yml) points the pages there.
"""
import shutil
from pathlib import Path

# What tex-chtml.js loads at run time, relative to MathJax's es5/ folder.
MATHJAX_PARTS = ["tex-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors"]


def mathjax_source() -> Path:
    import mathjax  # the django-static-mathjax package; no Django needed to read its files

    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax files not found under {source}; reinstall django-static-mathjax")
    return source


def copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        origin, destination = source / part, target / part
        if origin.is_dir():
            shutil.copytree(origin, destination, dirs_exist_ok=True)
        elif not destination.exists() or destination.stat().st_mtime < origin.stat().st_mtime:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)


def _is_remote(asset) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return filename.startswith(("http://", "https://", "//")) or "https://" in body \
        or filename.endswith("sphinx-thebe.js")


def drop_remote_assets(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not _is_remote(asset)]


def setup(app):
    mathjax_source()  # fail early, with the message above, if the package is missing
    app.connect("build-finished", copy_mathjax)
    app.connect("html-page-context", drop_remote_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
