"""Say which data source a notebook read, and fail loudly when it returned nothing at all.

A monitoring notebook that finds no rows over its whole history window is not looking at a
quiet world: the table is empty or the notebook reads the wrong store (a fresh folder, a
server without data, a setting that did not reach the run). :func:`require_rows` turns that
into a :class:`~ooniutils.exceptions.NoDataError` whose message names the table, the window
and the data source, so the run turns red with the reason instead of reporting "no alarm".

Example::

    counts = hourly_counts_by_software(since=since, until=until)
    require_rows(counts, "fastpath", since, until, "measurements")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..config import describe_data_source
from ..exceptions import NoDataError

log = logging.getLogger(__name__)

SETTINGS_HINT = ("check OONI_DATA_DIR / OONI_CLICKHOUSE_URL (or data_dir / clickhouse_url in "
                 "the config file) in the environment of the run")


def require_rows(rows: Any, table: str, since: Any = None, until: Any = None,
                 what: str = "rows", newest: Callable[[], Any] | None = None) -> None:
    """Raise :class:`NoDataError` when ``rows`` (a DataFrame, or a count) is empty/zero.

    ``table`` and ``what`` name what was expected, ``since``/``until`` the window searched
    (both None: the whole table). ``newest`` (called only then) returns the time of the
    table's newest row, or None when it is empty, so the message can tell an empty table
    from one whose data stopped before the window.
    """
    n = rows if isinstance(rows, int | float) else len(rows)
    if n:
        return
    window = f" between {since} and {until} UTC" if since is not None or until is not None else ""
    last = newest() if newest is not None else None
    if last is not None and last == last:  # not NaT
        cause = (f"the newest row is from {last} UTC: nothing arrived since (a pipeline "
                 f"outage), or this data source is a stale copy")
    elif newest is not None:
        cause = "the table is empty: this is the wrong data source, or nothing was ever loaded"
    else:
        cause = "the table is empty or this is the wrong data source"
    msg = (f"no {what} at all in the {table} table{window} (reading the "
           f"{describe_data_source(table)}): {cause}; {SETTINGS_HINT}")
    log.error("%s", msg)
    raise NoDataError(msg, table=table)


def require_recent(newest: Any, table: str, since: Any, what: str, producer: str) -> None:
    """Raise :class:`NoDataError` when the newest row of ``table`` (``newest``: a timestamp,
    None when the table is empty) is older than ``since``: whatever writes the table
    (``producer``, named in the message) has stopped, and an empty window is not "quiet"."""
    if newest is None or newest != newest:  # None or NaT
        require_rows(0, table, what=what)
    if newest < since:
        msg = (f"no {what} in the {table} table since {since} UTC: the newest is from "
               f"{newest} UTC (reading the {describe_data_source(table)}); {producer} has stopped "
               f"writing here")
        log.error("%s", msg)
        raise NoDataError(msg, table=table)
