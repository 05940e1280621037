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
from typing import Any
from urllib.parse import urlsplit

from .. import config
from ..exceptions import NoDataError

log = logging.getLogger(__name__)

SETTINGS_HINT = ("check OONI_DATA_DIR / OONI_CLICKHOUSE_URL (or data_dir / clickhouse_url in "
                 "the config file) in the environment of the run")


def describe_data_source() -> str:
    """The store queries go to, without credentials: ``ClickHouse server host:port/db`` or
    ``embedded store at <folder>``."""
    url = config.get("OONI_CLICKHOUSE_URL")
    if url:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"ClickHouse server {host}{port}{parts.path or ''}"
    return f"embedded store at {config.data_dir()}"


def require_rows(rows: Any, table: str, since: Any = None, until: Any = None,
                 what: str = "rows") -> None:
    """Raise :class:`NoDataError` when ``rows`` (a DataFrame, or a count) is empty/zero.

    ``table`` and ``what`` name what was expected, ``since``/``until`` the window searched
    (both None: the whole table).
    """
    n = rows if isinstance(rows, int | float) else len(rows)
    if n:
        return
    window = f" between {since} and {until} UTC" if since is not None or until is not None else ""
    msg = (f"no {what} at all in the {table} table{window} (reading the "
           f"{describe_data_source()}): the table is empty or this is the wrong data source; "
           f"{SETTINGS_HINT}")
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
               f"{newest} UTC (reading the {describe_data_source()}); {producer} has stopped "
               f"writing here")
        log.error("%s", msg)
        raise NoDataError(msg, table=table)
