"""Queries behind the URL prioritisation notebooks: the test list, the ``url_priorities``
rules and web_connectivity measurements per URL (the inputs of
:mod:`ooniutils.analyses.priorities`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn
from ..exceptions import AnalysisError
from .flow import time_range

log = logging.getLogger(__name__)

CC_SQL = "upper(trimRight(toString(cc), '\\0'))"
"""citizenlab.cc is FixedString(32) (NUL-padded) and lower-case for country lists in OONI."""


def _countries(countries: str | Sequence[str]) -> list[str]:
    values = [countries] if isinstance(countries, str) else list(countries)
    out = sorted({str(c).strip().upper() for c in values if str(c).strip()})
    if not out:
        raise AnalysisError("no country given: pass country codes like ['IT', 'BR']")
    return out


def fetch_test_list(countries: str | Sequence[str]) -> pd.DataFrame:
    """Test-list entries a probe in ``countries`` can be given: each country's own list and
    the global one (ZZ). Columns url, domain, cc (upper case), category_code.
    Raises :class:`AnalysisError` when ``citizenlab`` holds no entry for them (an empty or
    wrong data source: nothing to prioritise)."""
    ccs = _countries(countries)
    df = click_query_fsn(
        f"SELECT url, domain, {CC_SQL} AS cc, category_code FROM citizenlab "
        f"WHERE {CC_SQL} IN %(ccs)s OR {CC_SQL} = 'ZZ'",
        ccs=ccs)
    if df.empty:
        raise AnalysisError(
            "the citizenlab table holds no test-list entry for "
            f"{', '.join(ccs)} nor a global list: load the test lists (`ooniutils data load-test-lists`) "
            "or check the data source")
    return df


def fetch_priority_rules() -> pd.DataFrame:
    """Every ``url_priorities`` row (sign, category_code, cc, domain, url, priority), as
    written; collapse them with :func:`ooniutils.analyses.priorities.active_rules`.
    Raises :class:`AnalysisError` when the table is empty: every URL would have priority 0
    and OONI would hand out none."""
    df = click_query_fsn("SELECT sign, category_code, cc, domain, url, priority FROM url_priorities")
    if df.empty:
        raise AnalysisError(
            "the url_priorities table is empty: load rules (`ooniutils data load-url-priorities FILE`) "
            "or check the data source")
    return df


def fetch_url_counts(countries: str | Sequence[str], since: Any = "7 days", until: Any = None,
                     test_name: str = "web_connectivity", daily: bool = False) -> pd.DataFrame:
    """Measurements per (probe_cc, input) in ``[since, until)``: columns cc, url, n (and
    ``day`` first with ``daily=True``: one row per day, the input of
    :func:`ooniutils.analyses.priorities.compare_weightings`)."""
    start, stop = time_range(since, until)
    keys = "day, cc, url" if daily else "cc, url"
    day = "toDate(measurement_start_time) AS day, " if daily else ""
    df = click_query_fsn(
        f"SELECT {day}probe_cc AS cc, input AS url, count() AS n FROM fastpath "
        "WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "AND test_name = %(test)s AND probe_cc IN %(ccs)s AND input != '' "
        f"GROUP BY {keys} ORDER BY {keys}",
        since=start.to_pydatetime(), until=stop.to_pydatetime(), test=test_name, ccs=_countries(countries))
    df["n"] = df["n"].astype("int64")
    if daily:
        df["day"] = pd.to_datetime(df["day"])
    return df


def fetch_daily_url_counts(countries: str | Sequence[str], since: Any = "28 days", until: Any = None,
                           test_name: str = "web_connectivity") -> pd.DataFrame:
    """:func:`fetch_url_counts` per day: columns day, cc, url, n."""
    return fetch_url_counts(countries, since, until, test_name, daily=True)
