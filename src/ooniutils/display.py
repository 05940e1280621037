"""Notebook display set-up: readable pandas tables and Altair charts as static SVG.

Charts are rendered to SVG inside the kernel by vl-convert (``alt.renderers.enable("svg")``),
so an executed notebook's HTML holds the picture itself: no JavaScript, no CDN, and it
displays the same offline, in e-mail previews and in the jupycron outputs folder.
The 5,000-row limit of Altair is lifted (``disable_max_rows``): our charts aggregate in SQL.

:func:`setup_notebook` is idempotent; ``from ooniutils import *`` calls it once.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_done = False


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
    _done = True
    log.debug("notebook display set up: pandas options, Altair SVG renderer (vl-convert)")
