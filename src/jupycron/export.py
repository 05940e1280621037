"""Make an executed notebook fit for the HTML export.

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

import re
from typing import Any

__all__ = ["fix_svg", "normalise_kernelspec", "prepare_for_export"]

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
