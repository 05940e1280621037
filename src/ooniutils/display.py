"""Notebook display set-up: readable pandas tables and Altair charts as static SVG.

Charts are rendered to SVG inside the kernel by vl-convert (``alt.renderers.enable("svg")``),
so an executed notebook's HTML holds the picture itself: no JavaScript, no CDN, and it
displays the same offline, in e-mail previews and in the jupycron outputs folder.
The 5,000-row limit of Altair is lifted (``disable_max_rows``): our charts aggregate in SQL.

The ``ooniutils`` Altair theme (enabled here) names the font, :data:`CHART_FONT`: vl-convert
sizes the SVG with the metrics of the font it finds, and with the generic "sans-serif" it
measured a narrower font than the one a browser draws (DejaVu Sans on Debian), so legend
labels and titles ran past the picture's edge and were cut. Its legends also allow labels
up to :data:`LEGEND_LABEL_LIMIT` pixels (Vega-Lite cuts at 160).

:func:`setup_notebook` is idempotent; ``from ooniutils import *`` calls it once.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_done = False

#: The charts' font: DejaVu Sans (Debian's default sans-serif, installed with Chromium and
#: measured by vl-convert), then wide fallbacks so a reader without it sees no clipped text.
CHART_FONT = "DejaVu Sans, Verdana, sans-serif"
LEGEND_LABEL_LIMIT = 400


def _theme() -> Any:  # altair.theme.ThemeConfig (a TypedDict), imported lazily
    return {"config": {"font": CHART_FONT,
                       "legend": {"labelLimit": LEGEND_LABEL_LIMIT, "titleLimit": LEGEND_LABEL_LIMIT}}}


def setup_notebook(force: bool = False) -> None:
    """Apply pandas display options and the Altair SVG renderer (once per process)."""
    global _done
    if _done and not force:
        return
    import altair as alt
    import pandas as pd

    pd.set_option("display.max_rows", 200)
    pd.set_option("display.max_columns", 50)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 120)
    pd.set_option("display.float_format", "{:,.3f}".format)
    alt.data_transformers.disable_max_rows()
    alt.renderers.enable("svg")
    alt.theme.register("ooniutils", enable=True)(_theme)
    _done = True
    log.debug("notebook display set up: pandas options, Altair SVG renderer (vl-convert)")
