"""Queries behind the blocking-event notebook (``event_detector_changepoints``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn
from .flow import time_range

COLUMNS = ["ts", "probe_cc", "probe_asn", "domain", "block_type", "change_dir", "current_state",
           "count", "dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked",
           "s_pos", "s_neg", "h"]


def fetch_changepoints(since: Any = "2 days", until: Any = None) -> pd.DataFrame:
    """Changepoints with ``ts`` in ``[since, until)``, newest first; ts as naive UTC."""
    start, stop = time_range(since, until)
    df = click_query_fsn(
        f"SELECT {', '.join(COLUMNS)} FROM event_detector_changepoints "
        "WHERE ts >= %(since)s AND ts < %(until)s ORDER BY ts DESC, probe_cc, probe_asn, domain",
        since=start.to_pydatetime(), until=stop.to_pydatetime(),
    )
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"])
        if df["ts"].dt.tz is not None:
            df["ts"] = df["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    return df


def newest_changepoint_time() -> pd.Timestamp | None:
    """``ts`` (naive UTC) of the newest changepoint; None when the table is empty."""
    df = click_query_fsn("SELECT count() AS n, max(ts) AS newest FROM event_detector_changepoints")
    if df.empty or int(df["n"].iloc[0]) == 0:
        return None
    ts = pd.Timestamp(df["newest"].iloc[0])
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
