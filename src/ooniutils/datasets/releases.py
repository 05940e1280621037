"""Queries behind the probe release notebooks: per-version counts and runtime samples."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn
from .flow import time_range

log = logging.getLogger(__name__)

TRUE_SQL = "('t', 'true', '1')"


def _names(software_name: str | Sequence[str]) -> list[str]:
    return [software_name] if isinstance(software_name, str) else list(software_name)


def fetch_release_stats(software_name: str | Sequence[str], since: Any = "60 days",
                        until: Any = None) -> pd.DataFrame:
    """Per (software_version, test_name) in ``[since, until)``: total, failures (msm_failure),
    anomalies, first_seen, last_seen — the input of
    :func:`ooniutils.analyses.releases.compare_release`."""
    start, stop = time_range(since, until)
    df = click_query_fsn(
        "SELECT software_version, test_name, count() AS total, "
        f"countIf(lower(msm_failure) IN {TRUE_SQL}) AS failures, "
        f"countIf(lower(anomaly) IN {TRUE_SQL}) AS anomalies, "
        "min(measurement_start_time) AS first_seen, max(measurement_start_time) AS last_seen "
        "FROM fastpath WHERE software_name IN %(names)s "
        "AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "GROUP BY software_version, test_name ORDER BY software_version, test_name",
        names=_names(software_name), since=start.to_pydatetime(), until=stop.to_pydatetime(),
    )
    for c in ("total", "failures", "anomalies"):
        if c in df.columns:
            df[c] = df[c].astype("int64")
    return df


def fetch_runtime_sample(software_name: str | Sequence[str], versions: Sequence[str],
                         since: Any = "60 days", until: Any = None, per_group: int = 2000
                         ) -> pd.DataFrame:
    """Up to ``per_group`` ``test_runtime`` values per (software_version, test_name) of the
    given versions (successful measurements only, so failures do not skew runtimes)."""
    if not versions:
        return pd.DataFrame(columns=["software_version", "test_name", "test_runtime"])
    start, stop = time_range(since, until)
    return click_query_fsn(
        "SELECT software_version, test_name, test_runtime FROM fastpath "
        "WHERE software_name IN %(names)s AND software_version IN %(versions)s "
        "AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        f"AND lower(msm_failure) NOT IN {TRUE_SQL} "
        "ORDER BY cityHash64(measurement_uid) LIMIT %(per_group)s BY software_version, test_name",
        names=_names(software_name), versions=list(versions), since=start.to_pydatetime(),
        until=stop.to_pydatetime(), per_group=int(per_group),
    )
