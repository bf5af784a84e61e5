"""The outputs of a graded run, rebuilt from what the sandbox wrote (untrusted) before they
go into the autograded notebook and the feedback page.

Kept: stdout/stderr streams, errors, and ``display_data``/``execute_result`` outputs with
the MIME types a notebook shows — text, HTML, Markdown, LaTeX, JSON, PNG/JPEG/GIF images
(base64 only) and SVG — so plots and tables reach the feedback, where HTML is sanitized.
Scripts and widgets (``application/javascript``, ``application/vnd.jupyter.widget-*``) are
dropped; image metadata keeps only integer width and height. Each rebuilt rich output must
pass nbformat's schema (validated inside a one-cell notebook: the schema has no entry point
for a lone output).
"""
from __future__ import annotations

import re

import nbformat

__all__ = ["clean_outputs", "RICH_TYPES", "MAX_OUTPUTS"]

MAX_OUTPUTS = 200
RICH_TYPES = {"text/plain", "text/html", "text/markdown", "text/latex", "application/json",
              "image/png", "image/jpeg", "image/gif", "image/svg+xml"}
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*\Z")
BINARY_IMAGES = ("image/png", "image/jpeg", "image/gif")


def _valid(output) -> bool:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[output])])
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError:
        return False
    return True


def _bundle(data: dict) -> dict:
    """The known MIME types of a data bundle, with well-typed values."""
    bundle = {}
    for mime, value in data.items():
        if mime not in RICH_TYPES:
            continue
        if isinstance(value, list) and all(isinstance(line, str) for line in value):
            value = "".join(value)
        if mime == "application/json":
            if isinstance(value, (dict, list)):
                bundle[mime] = value
        elif isinstance(value, str) and (mime not in BINARY_IMAGES or BASE64.match(value)):
            bundle[mime] = value
    return bundle


def _size(metadata, bundle: dict) -> dict:
    """Only integer width/height of the bundle's types survive from an output's metadata."""
    if not isinstance(metadata, dict):
        return {}
    sizes = {}
    for mime, values in metadata.items():
        if mime in bundle and isinstance(values, dict):
            kept = {k: v for k, v in values.items()
                    if k in ("width", "height") and isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10_000}
            if kept:
                sizes[mime] = kept
    return sizes


def _rich(out: dict, kind: str):
    bundle = _bundle(out["data"])
    if not bundle:
        return None
    new = nbformat.v4.new_output(kind, data=bundle, metadata=_size(out.get("metadata"), bundle))
    if kind == "execute_result":
        count = out.get("execution_count")
        new["execution_count"] = count if isinstance(count, int) and not isinstance(count, bool) else None
    return new if _valid(new) else None


def _rebuild(out: dict):
    kind = out.get("output_type")
    if kind == "stream" and out.get("name") in ("stdout", "stderr") and isinstance(out.get("text"), str):
        return nbformat.v4.new_output("stream", name=out["name"], text=out["text"])
    if kind == "error":
        trace = out.get("traceback") if isinstance(out.get("traceback"), list) else []
        return nbformat.v4.new_output("error", ename=str(out.get("ename", "Error"))[:200],
                                      evalue=str(out.get("evalue", ""))[:2000],
                                      traceback=[str(line)[:2000] for line in trace[:60]])
    if kind in ("display_data", "execute_result") and isinstance(out.get("data"), dict):
        return _rich(out, kind)
    return None


def clean_outputs(outputs) -> list:
    """Well-formed copies of a cell's outputs (at most MAX_OUTPUTS); anything else is dropped."""
    if not isinstance(outputs, list):
        return []
    clean = []
    for out in outputs[:MAX_OUTPUTS]:
        if isinstance(out, dict):
            new = _rebuild(out)
            if new is not None:
                clean.append(new)
    return clean
