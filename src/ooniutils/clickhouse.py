"""Querying the measurement store from notebooks.

Example::

    from ooniutils.clickhouse import click_query_fsn
    df = click_query_fsn(
        "SELECT toStartOfHour(measurement_start_time) AS t, count() AS n FROM fastpath "
        "WHERE probe_cc = %(cc)s AND measurement_start_time >= %(since)s GROUP BY t ORDER BY t",
        cc="IT", since=datetime(2024, 1, 1),
    )

The same code runs on the embedded store (``OONI_DATA_DIR``, made by ``ooniutils data
init``) and on a ClickHouse server (``OONI_CLICKHOUSE_URL``); see
:func:`ooniutils.store.get_store`. Neither configured, or a data folder never initialised:
:class:`~ooniutils.exceptions.ConfigError` naming those settings (a query never creates an
empty store, so a notebook cannot report on data it does not have).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .query_checks import check_query
from .store import get_logs_store, get_store

__all__ = ["click_query", "click_query_fsn", "click_query_logs"]


def click_query_fsn(query: str, /, **params: Any) -> pd.DataFrame:
    """Run a ClickHouse SELECT on the store and return a DataFrame.

    Parameters are bound by the engine, never pasted into the SQL: write ClickHouse
    placeholders ``{name:Type}`` or pyformat ``%(name)s`` (its type is inferred from the
    value: str→String, int→Int64, float→Float64, bool→Bool, datetime→DateTime64(3) in
    UTC, date→Date, list/tuple→Array(T)). With pyformat, write ``%%`` for a literal ``%``.
    Raises :class:`ooniutils.exceptions.QueryError` carrying ClickHouse's message, and
    :class:`ooniutils.exceptions.ConfigError` when no data source is configured. Mistakes
    that would return a plausible wrong answer are refused before the query runs
    (:mod:`ooniutils.query_checks`): an empty query, a parameter no placeholder uses, a list
    for a one-value placeholder, ``None`` for one that is not ``Nullable``.
    """
    check_query(query, params)
    return get_store().query(query, params)


click_query = click_query_fsn


def click_query_logs(query: str, /, **params: Any) -> pd.DataFrame:
    """:func:`click_query_fsn` on the store holding the ``logs`` table, which may be another
    ClickHouse than the measurements' (``OONI_LOGS_CLICKHOUSE_URL`` / ``OONI_LOGS_DATA_DIR``;
    by default the same one)."""
    check_query(query, params)
    return get_logs_store().query(query, params)
