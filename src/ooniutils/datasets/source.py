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


def require_rows(rows: Any, table: str, since: Any, until: Any, what: str = "rows") -> None:
    """Raise :class:`NoDataError` when ``rows`` (a DataFrame, or a count) is empty/zero.

    ``table`` and ``what`` name what was expected, ``since``/``until`` the window searched.
    """
    n = rows if isinstance(rows, int | float) else len(rows)
    if n:
        return
    msg = (f"no {what} at all in the {table} table between {since} and {until} UTC "
           f"(reading the {describe_data_source()}): the table is empty or this is the wrong "
           f"data source; {SETTINGS_HINT}")
    log.error("%s", msg)
    raise NoDataError(msg, table=table)
