"""Measurement counts over time from ``fastpath`` (the input of the flow notebooks).

Every function returns a *long* DataFrame ``(t, <key columns>, n)`` sorted by time; turn it
into one column per series with :func:`ooniutils.analyses.flow.pivot_hourly`. Time ranges
are half-open ``[since, until)`` in UTC; ``since``/``until`` accept what :func:`parse_when`
reads. Filters are bound as query parameters, never pasted into the SQL.

Example::

    df = hourly_counts_by_software(since="28 days")
    wide = pivot_hourly(df, "t", "software_name", start=..., end=...)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn
from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

_RELATIVE = re.compile(r"^\s*(\d+)\s*(hour|hours|day|days|week|weeks|month|months|year|years)(\s+ago)?\s*$",
                       re.IGNORECASE)
RELATIVE_HELP = ('"N hour(s)/day(s)/week(s)/month(s)/year(s)" (optionally followed by "ago"), '
                 'a date "2024-05-01" or a datetime "2024-05-01 12:00"')

GRANULARITY_SQL = {
    "hour": "toStartOfHour(measurement_start_time)",
    "day": "toStartOfDay(measurement_start_time)",
    "week": "toDateTime(toMonday(measurement_start_time))",
    "month": "toDateTime(toStartOfMonth(measurement_start_time))",
}

# fastpath columns that make sense to group or filter by
KEY_COLUMNS = ("software_name", "software_version", "probe_cc", "probe_asn", "test_name", "platform",
               "engine_name", "engine_version", "architecture", "test_helper_address",
               "test_helper_type", "domain", "input", "blocking_type", "anomaly", "confirmed",
               "msm_failure", "test_version", "server_cc")


def utcnow() -> pd.Timestamp:
    """Now, naive UTC (the store's time zone). Tests patch this one name."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def parse_when(value: Any, now: pd.Timestamp | None = None, name: str = "time") -> pd.Timestamp:
    """Read a point in time: ``"3 months"`` (= 3 months before ``now``), ``"2 days ago"``,
    ``"2024-05-01"``, a datetime, a Timestamp. Aware values are converted to naive UTC.
    Raises :class:`AnalysisError` saying what is accepted."""
    now = utcnow() if now is None else now
    if isinstance(value, str) and (m := _RELATIVE.match(value)):
        n, unit = int(m.group(1)), m.group(2).lower().rstrip("s")
        offset = pd.DateOffset(**{unit + "s": n})
        return now - offset
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"cannot read {name}={value!r}; use {RELATIVE_HELP}") from exc
    if ts is pd.NaT:
        raise AnalysisError(f"cannot read {name}={value!r}; use {RELATIVE_HELP}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def time_range(since: Any, until: Any = None, now: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(since, until)`` as naive UTC Timestamps; ``until`` defaults to now. Checks order."""
    now = utcnow() if now is None else now
    start = parse_when(since, now, "since")
    stop = now if until is None else parse_when(until, now, "until")
    if start >= stop:
        raise AnalysisError(f"since ({start}) must be before until ({stop})")
    return start, stop


def filter_sql(filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``AND col IN %(f_col)s`` clauses for the non-None filters (scalar or list values)."""
    clauses, params = [], {}
    for col, val in filters.items():
        if val is None:
            continue
        if col not in KEY_COLUMNS:
            raise AnalysisError(f"cannot filter on {col!r}; allowed: {', '.join(KEY_COLUMNS)}")
        values = list(val) if isinstance(val, list | tuple | set) else [val]
        if not values:
            raise AnalysisError(f"filter {col} is an empty list")
        if col == "probe_asn":
            try:
                values = [int(str(v).upper().removeprefix("AS")) for v in values]
            except ValueError as exc:
                raise AnalysisError(f"probe_asn filter must be numbers like 3269 or 'AS3269', got {val!r}") from exc
        else:
            values = [str(v) for v in values]
        clauses.append(f" AND {col} IN %(f_{col})s")
        params[f"f_{col}"] = values
    return "".join(clauses), params


def measurement_counts(granularity: str, by: Sequence[str], since: Any, until: Any = None,
                       **filters: Any) -> pd.DataFrame:
    """Counts of fastpath rows per ``granularity`` bucket and ``by`` columns in [since, until).

    Columns: ``t`` (bucket start, naive UTC), the ``by`` columns, ``n``. Buckets without
    rows are absent (pivot with :func:`~ooniutils.analyses.flow.pivot_hourly` to get zeros).
    """
    if granularity not in GRANULARITY_SQL:
        raise AnalysisError(f"granularity must be one of {', '.join(GRANULARITY_SQL)}; got {granularity!r}")
    bad = [c for c in by if c not in KEY_COLUMNS]
    if bad:
        raise AnalysisError(f"cannot group by {bad}; allowed: {', '.join(KEY_COLUMNS)}")
    start, stop = time_range(since, until)
    where, params = filter_sql(filters)
    keys = "".join(f", {c}" for c in by)
    sql = (f"SELECT {GRANULARITY_SQL[granularity]} AS t{keys}, count() AS n FROM fastpath "
           f"WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s{where} "
           f"GROUP BY t{keys} ORDER BY t{keys}")
    df = click_query_fsn(sql, since=start.to_pydatetime(), until=stop.to_pydatetime(), **params)
    if df.empty:
        return pd.DataFrame({"t": pd.Series(dtype="datetime64[ns]"),
                             **{c: pd.Series(dtype=object) for c in by}, "n": pd.Series(dtype="int64")})
    df["t"] = pd.to_datetime(df["t"])
    if df["t"].dt.tz is not None:
        df["t"] = df["t"].dt.tz_convert("UTC").dt.tz_localize(None)
    df["n"] = df["n"].astype("int64")
    log.debug("measurement_counts %s by %s: %d rows", granularity, by, len(df))
    return df


def hourly_counts_by_software(since: Any = "28 days", until: Any = None, **filters: Any) -> pd.DataFrame:
    """Hourly counts per ``software_name`` (probe type): columns t, software_name, n."""
    return measurement_counts("hour", ["software_name"], since, until, **filters)


def hourly_counts_by_country_software(since: Any = "28 days", until: Any = None,
                                      **filters: Any) -> pd.DataFrame:
    """Hourly counts per ``(probe_cc, software_name)``: columns t, probe_cc, software_name, n."""
    return measurement_counts("hour", ["probe_cc", "software_name"], since, until, **filters)


def daily_counts_by_software(since: Any = "3 years", until: Any = None, **filters: Any) -> pd.DataFrame:
    """Daily counts per ``software_name`` (multi-year flow): columns t, software_name, n."""
    return measurement_counts("day", ["software_name"], since, until, **filters)


def newest_measurement_time() -> pd.Timestamp | None:
    """``measurement_start_time`` (naive UTC) of the newest fastpath row; None when empty.
    The flow notebooks pass it to :func:`~ooniutils.datasets.source.require_rows`, so an
    empty window tells "the table is empty" from "nothing arrived since <time>"."""
    df = click_query_fsn("SELECT count() AS n, max(measurement_start_time) AS newest FROM fastpath")
    if df.empty or int(df["n"].iloc[0]) == 0:
        return None
    ts = pd.Timestamp(df["newest"].iloc[0])
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def last_complete_hour(now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Start of the current (incomplete) hour, i.e. the exclusive end of complete hours."""
    return (utcnow() if now is None else now).floor("h")
