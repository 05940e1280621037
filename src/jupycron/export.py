"""Write an executed notebook as an offline HTML page.

:func:`export_html` writes the page atomically with the "lab" template, its CSS embedded and
no CDN script (require.js, MathJax, Mermaid, widgets); building an exporter (templates, CSS,
Pygments) costs more than a small export, so idle exporters are kept and reused, one per
thread at a time (:func:`warm_exporters` builds them ahead, the daemon at start-up).

:func:`prepare_for_export` runs on the run's in-memory copy (the notebook file is never
written) just before nbconvert:

* ``metadata.kernelspec`` must hold ``name`` and ``display_name`` (nbformat's schema; the
  exporter validates and refuses the notebook otherwise). A notebook written by another tool
  may carry ``{"language": "python"}`` only: the kernel that actually ran fills the gaps.
* SVG outputs are embedded as ``<img src="data:image/svg+xml;base64,...">``; a browser
  parses such an image as XML, so an ``<svg>`` without ``xmlns`` (valid inline in HTML, and
  what many libraries print) renders as a broken image. The missing ``xmlns`` (and
  ``xmlns:xlink`` when ``xlink:`` attributes are used) is added to the root element. The
  image route is kept over inlining the SVG in the page: an image cannot run scripts or
  restyle the page, and nbconvert's inline route strips SVG elements through its HTML
  sanitiser.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from safefiles.atomic import atomic_write_text

from . import output_page

__all__ = ["export_html", "fix_svg", "normalise_kernelspec", "prepare_for_export",
           "warm_exporters"]

# Idle exporters: one exporter must not serve two threads at once, so each export borrows
# one and gives it back.
_exporters: queue.SimpleQueue[HTMLExporter] = queue.SimpleQueue()
_exporters_built = 0
_exporters_lock = threading.Lock()


def _new_exporter() -> HTMLExporter:
    global _exporters_built
    exporter = HTMLExporter(template_name="lab", embed_images=True,
                            **output_page.exporter_options())
    # Render once: jinja compiles the templates on first use.
    exporter.from_notebook_node(nbformat.v4.new_notebook(), resources={"metadata": {"name": "warm"}})
    with _exporters_lock:
        _exporters_built += 1
    return exporter


@contextlib.contextmanager
def _exporter() -> Iterator[HTMLExporter]:
    try:
        exporter = _exporters.get_nowait()
    except queue.Empty:
        exporter = _new_exporter()
    try:
        yield exporter
    finally:
        _exporters.put(exporter)


def warm_exporters(count: int) -> None:
    """Build HTML exporters until ``count`` exist, so no run pays for building one (the
    daemon calls it in the background at start-up, one per concurrent run)."""
    while _exporters_built < count:
        _exporters.put(_new_exporter())


def export_html(nb: NotebookNode, dest: Path, title: str, folder: Path | None = None) -> None:
    """Write ``nb`` as a self-contained, offline HTML page to ``dest`` atomically.

    The "lab" template with its CSS embedded; require.js, MathJax, Mermaid and widget
    scripts (CDN links) are left out, so LaTeX in markdown shows as source text. Images,
    markdown attachments and files relative to ``folder`` (the notebook's), are embedded
    as data URIs.
    """
    meta = {"name": title, **({"path": str(folder)} if folder is not None else {})}
    with _exporter() as exporter:
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": meta})
    atomic_write_text(dest, body, durable=False)

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
_SVG_ROOT = re.compile(r"<svg\b[^>]*>", re.IGNORECASE)


def normalise_kernelspec(metadata: dict[str, Any], kernel_name: str) -> None:
    """Give ``metadata.kernelspec`` the ``name`` and ``display_name`` nbformat requires."""
    spec = metadata.get("kernelspec")
    if not isinstance(spec, dict):
        spec = {}
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        spec["name"] = kernel_name
    if not isinstance(spec.get("display_name"), str):
        spec["display_name"] = spec["name"]
    metadata["kernelspec"] = spec


def fix_svg(svg: str) -> str:
    """``svg`` with the namespace declarations a standalone SVG image needs."""
    m = _SVG_ROOT.search(svg)
    if m is None:
        return svg
    tag = m.group(0)
    add = []
    if not re.search(r"\sxmlns\s*=", tag):
        add.append(f' xmlns="{SVG_NS}"')
    if "xlink:" in svg and not re.search(r"\sxmlns:xlink\s*=", tag):
        add.append(f' xmlns:xlink="{XLINK_NS}"')
    if not add:
        return svg
    new_tag = tag[:4] + "".join(add) + tag[4:]
    return svg[:m.start()] + new_tag + svg[m.end():]


def prepare_for_export(nb: Any, kernel_name: str) -> None:
    """Normalise ``nb`` (an executed :class:`nbformat.NotebookNode`) in place for nbconvert."""
    normalise_kernelspec(nb.metadata, kernel_name)
    for cell in nb.cells:
        for out in cell.get("outputs", ()) if cell.get("cell_type") == "code" else ():
            data = out.get("data")
            if not data or "image/svg+xml" not in data:
                continue
            svg = data["image/svg+xml"]
            if isinstance(svg, list):  # multi-line string as stored on disk
                svg = "".join(svg)
            if isinstance(svg, str):
                data["image/svg+xml"] = fix_svg(svg)
