"""The run's output page: nbconvert's "lab" template made offline and reader-first.

The template is ``templates/jupycron_output.html`` (package data): the finding the notebook
reported opens the page (:func:`finding_banner`), code inputs are folded with a "Show all
code" toggle, wide outputs scroll inside their box, and nothing is loaded from a CDN.
:func:`exporter_options` is what the HTML exporter is built with::

    HTMLExporter(template_name="lab", embed_images=True, **exporter_options())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from .findings import finding_html, last_finding

__all__ = ["TEMPLATE", "TEMPLATES", "exporter_options", "finding_banner"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "jupycron_output.html"


def finding_banner(nb: Any) -> str:
    """HTML for the top of the page: the notebook's last finding, or a quiet line saying
    it reported none (an old notebook is not an "ok")."""
    finding = last_finding(nb)
    if finding is None:
        return ('<p class="jupycron-nofinding">This notebook reported no finding '
                '(<code>ooniutils.report_finding</code>); read its outputs below.</p>')
    return finding_html(finding)


def exporter_options() -> dict[str, Any]:
    """Keyword arguments for ``nbconvert.HTMLExporter``: the template and its filter."""
    return {"extra_loaders": [jinja2.FileSystemLoader(str(TEMPLATES))],
            "template_file": TEMPLATE,
            "filters": {"jupycron_finding_banner": finding_banner}}
