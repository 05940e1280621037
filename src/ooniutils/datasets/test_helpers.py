"""Queries behind the test helper notebooks (web_connectivity measurements per helper).

``fetch_helper_counts`` is the input of :mod:`ooniutils.analyses.test_helpers`; a
measurement counts as *failed* when ``control_failure`` is set (the helper did not answer
the control request) or ``msm_failure`` is true (the measurement as a whole failed) — both
rise when a helper breaks, and both rise when a network path breaks, which is what the
analysis tells apart.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..analyses.test_helpers import helper_host
from ..clickhouse import click_query_fsn
from .flow import time_range

log = logging.getLogger(__name__)

FAILED_SQL = "(control_failure != '' OR lower(msm_failure) IN ('t', 'true', '1'))"


def fetch_helper_counts(since: Any = "8 days", until: Any = None) -> pd.DataFrame:
    """Hourly web_connectivity counts per helper and probe network in ``[since, until)``.

    Columns: hour (naive UTC), helper (host name, e.g. ``2.th.ooni.org``), probe_cc,
    probe_asn, total, failures, control_failures. Measurements without a
    ``test_helper_address`` are left out.
    """
    start, stop = time_range(since, until)
    df = click_query_fsn(
        "SELECT toStartOfHour(measurement_start_time) AS hour, test_helper_address AS address, "
        "probe_cc, probe_asn, count() AS total, countIf(" + FAILED_SQL + ") AS failures, "
        "countIf(control_failure != '') AS control_failures FROM fastpath "
        "WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "AND test_name = 'web_connectivity' AND test_helper_address != '' "
        "GROUP BY hour, address, probe_cc, probe_asn ORDER BY hour",
        since=start.to_pydatetime(), until=stop.to_pydatetime(),
    )
    cols = ["hour", "helper", "probe_cc", "probe_asn", "total", "failures", "control_failures"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c == "hour" else "int64"
                                          if c in ("total", "failures", "control_failures", "probe_asn")
                                          else object) for c in cols})
    df["hour"] = pd.to_datetime(df["hour"])
    if df["hour"].dt.tz is not None:
        df["hour"] = df["hour"].dt.tz_convert("UTC").dt.tz_localize(None)
    hosts = {a: helper_host(a) for a in df["address"].unique()}
    df["helper"] = df["address"].map(hosts)
    for c in ("total", "failures", "control_failures", "probe_asn"):
        df[c] = df[c].astype("int64")
    log.debug("helper counts since %s: %d rows", start, len(df))
    return df[cols]


def fetch_helper_instances() -> pd.DataFrame:
    """Raw rows of ``test_helper_instances`` (collapse them with
    :func:`ooniutils.analyses.test_helpers.helper_inventory`)."""
    return click_query_fsn(
        "SELECT rdn, dns_zone, name, provider, region, toString(ipaddr) AS ipaddr, "
        "toString(ipv6addr) AS ipv6addr, draining_at, destroyed_at, sign "
        "FROM test_helper_instances"
    )
