"""Queries behind the log dashboards (the journald ``logs`` table, on the logs' data source:
:func:`~ooniutils.clickhouse.click_query_logs`) and the heavy-queries dashboard (ClickHouse
``system.query_log`` of the measurements' server).

Log times come from ``__REALTIME_TIMESTAMP`` (microseconds since the epoch, journald's own
clock), never from ``inserted_at``. ``unit`` is ``_SYSTEMD_UNIT``, else ``UNIT``, else
``SYSLOG_IDENTIFIER``; ``host`` is Vector's ``host``, else ``_HOSTNAME``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn, click_query_logs
from .flow import time_range

log = logging.getLogger(__name__)

_HOST = "if(host != '', host, _HOSTNAME)"
_UNIT = "coalesce(_SYSTEMD_UNIT, UNIT, SYSLOG_IDENTIFIER, '')"
_TIME = "fromUnixTimestamp64Micro(__REALTIME_TIMESTAMP, 'UTC')"
_GRANULARITY = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}


def _us(ts: pd.Timestamp) -> int:
    return int(ts.tz_localize("UTC").value // 1000)


def _naive(df: pd.DataFrame, col: str) -> None:
    if not df.empty:
        df[col] = pd.to_datetime(df[col])
        if df[col].dt.tz is not None:
            df[col] = df[col].dt.tz_convert("UTC").dt.tz_localize(None)


def fetch_recent_logs(since: Any = "1 hour", until: Any = None, limit: int = 500,
                      per_unit: int | None = None) -> pd.DataFrame:
    """Newest log lines first: time (naive UTC), host, unit, priority, message.

    ``per_unit`` keeps at most that many lines per (host, unit), so one chatty unit cannot
    hide the others; ``limit`` caps the total.
    """
    start, stop = time_range(since, until)
    by = " LIMIT %(per_unit)s BY host_, unit" if per_unit else ""
    params: dict[str, Any] = {"since": _us(start), "until": _us(stop), "limit": int(limit)}
    if per_unit:
        params["per_unit"] = int(per_unit)
    df = click_query_logs(
        f"SELECT {_TIME} AS time, {_HOST} AS host_, {_UNIT} AS unit, PRIORITY AS priority, "
        "coalesce(MESSAGE, message, '') AS message FROM logs "
        "WHERE __REALTIME_TIMESTAMP >= %(since)s AND __REALTIME_TIMESTAMP < %(until)s "
        f"ORDER BY __REALTIME_TIMESTAMP DESC{by} LIMIT %(limit)s",
        **params,
    ).rename(columns={"host_": "host"})
    _naive(df, "time")
    return df


def fetch_log_counts(since: Any = "24 hours", until: Any = None, granularity: str = "hour"
                     ) -> pd.DataFrame:
    """Lines per time bucket, host, unit and priority: t, host, unit, priority, n."""
    if granularity not in _GRANULARITY:
        from ..exceptions import AnalysisError

        raise AnalysisError(f"granularity must be one of {', '.join(_GRANULARITY)}, got {granularity!r}")
    start, stop = time_range(since, until)
    df = click_query_logs(
        f"SELECT {_GRANULARITY[granularity]}({_TIME}) AS t, {_HOST} AS host_, {_UNIT} AS unit, "
        "PRIORITY AS priority, count() AS n FROM logs "
        "WHERE __REALTIME_TIMESTAMP >= %(since)s AND __REALTIME_TIMESTAMP < %(until)s "
        "GROUP BY t, host_, unit, priority ORDER BY t",
        since=_us(start), until=_us(stop),
    ).rename(columns={"host_": "host"})
    _naive(df, "t")
    return df


def newest_log_time() -> pd.Timestamp | None:
    """Time (naive UTC) of the newest line in ``logs``; None when the table is empty."""
    df = click_query_fsn(f"SELECT count() AS n, max({_TIME}) AS newest FROM logs")
    if df.empty or int(df["n"].iloc[0]) == 0:
        return None
    _naive(df, "newest")
    return pd.Timestamp(df["newest"].iloc[0])


def query_log_available() -> bool:
    """True when the engine has ``system.query_log`` (a ClickHouse server with query logging;
    embedded chDB has none)."""
    df = click_query_fsn(
        "SELECT count() AS n FROM system.tables WHERE database = 'system' AND name = 'query_log'")
    return bool(len(df)) and int(df["n"].iloc[0]) > 0


def fetch_heavy_queries(since: Any = "1 day", until: Any = None, limit: int = 25,
                        order_by: str = "total_duration_s") -> pd.DataFrame:
    """Finished queries in ``[since, until)`` grouped by ``normalized_query_hash``, heaviest
    first: example query, user, calls, total/max duration, rows and bytes read, peak memory.
    Call :func:`query_log_available` first; this raises QueryError where the table is absent.
    """
    allowed = ("total_duration_s", "max_duration_s", "read_bytes", "peak_memory", "calls")
    if order_by not in allowed:
        from ..exceptions import AnalysisError

        raise AnalysisError(f"order_by must be one of {', '.join(allowed)}, got {order_by!r}")
    start, stop = time_range(since, until)
    df = click_query_fsn(
        "SELECT normalized_query_hash AS query_hash, any(query) AS example_query, "
        "any(user) AS user, count() AS calls, sum(query_duration_ms) / 1000 AS total_duration_s, "
        "max(query_duration_ms) / 1000 AS max_duration_s, sum(read_rows) AS read_rows, "
        "sum(read_bytes) AS read_bytes, max(memory_usage) AS peak_memory, "
        "max(event_time) AS last_run FROM system.query_log "
        "WHERE type = 'QueryFinish' AND event_time >= %(since)s AND event_time < %(until)s "
        f"GROUP BY query_hash ORDER BY {order_by} DESC LIMIT %(limit)s",
        since=start.to_pydatetime(), until=stop.to_pydatetime(), limit=int(limit),
    )
    log.debug("heavy queries since %s: %d", start, len(df))
    return df
