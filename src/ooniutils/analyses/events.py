"""Blocking-event changepoints: summary table, Explorer links, and "which ones are new".

A changepoint (a row of ``event_detector_changepoints``) is identified by
:func:`changepoint_key` — network, domain, time, direction and block type — so the hourly
notebook can tell the ones it already announced from new ones. What was announced is kept
in a small JSON file (:class:`~ooniutils.alerts.sent_log.SentLog`, re-exported here): written
atomically, and only *after* Slack accepted the message, so a failed send is retried on the
next run and a successful one is never repeated. Keys older than ``keep_days`` are pruned so
the file stays small. A changepoint is an event, not an episode: it is never "resolved".
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from ..alerts.sent_log import STATE_ENV, SentLog, default_state_dir
from ..alerts.slack import escape_mrkdwn
from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

REQUIRED = ["ts", "probe_cc", "probe_asn", "domain"]
__all__ = ["REQUIRED", "STATE_ENV", "SentLog", "changepoint_key", "default_state_dir",
           "direction_label", "explorer_url", "new_changepoints", "slack_message",
           "state_change", "summary_table", "table_html"]


def _check(df: pd.DataFrame) -> None:
    missing = set(REQUIRED) - set(df.columns)
    if missing:
        raise AnalysisError(f"changepoints lack column(s) {sorted(missing)}; need {REQUIRED}")


def changepoint_key(row: pd.Series | dict[str, Any]) -> str:
    """Stable identity of a changepoint: ``cc|ASn|domain|ts(ISO, seconds)|dir|block_type``."""
    ts = pd.Timestamp(row["ts"])
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    direction = row.get("change_dir")
    direction = "" if direction is None or pd.isna(direction) else str(int(direction))
    block = row.get("block_type") or ""
    return (f"{row['probe_cc']}|AS{int(row['probe_asn'])}|{row['domain']}|"
            f"{ts.strftime('%Y-%m-%dT%H:%M:%S')}|{direction}|{block}")


def explorer_url(row: pd.Series | dict[str, Any], base_url: str, days_before: int = 7,
                 days_after: int = 1) -> str:
    """OONI Explorer measurement-aggregation chart for the changepoint's network and domain,
    from ``days_before`` days before the change to ``days_after`` days after it."""
    ts = pd.Timestamp(row["ts"])
    query = {
        "test_name": "web_connectivity",
        "axis_x": "measurement_start_day",
        "probe_cc": row["probe_cc"],
        "probe_asn": f"AS{int(row['probe_asn'])}",
        "domain": row["domain"],
        "since": (ts - timedelta(days=days_before)).strftime("%Y-%m-%d"),
        "until": (ts + timedelta(days=days_after)).strftime("%Y-%m-%d"),
    }
    return f"{base_url.rstrip('/')}/chart/mat?{urlencode(query)}"


_STATE_WORDS = {"blk": "blocked", "ok": "ok", "": "?"}


def state_change(before: Any, change_dir: Any) -> str:
    """``"ok → blocked"``: the detector's ``current_state`` is the state *before* the
    changepoint (OONI's detector records it, then flips), so shown alone beside "blocking
    started" it read as a contradiction; the state after follows from ``change_dir``."""
    b = "" if before is None or (not isinstance(before, str) and pd.isna(before)) else str(before)
    b = _STATE_WORDS.get(b, b)
    after = {"blocking started": "blocked", "blocking ended": "ok"}.get(direction_label(change_dir))
    return f"{b} → {after}" if after else b


def direction_label(change_dir: Any) -> str:
    """``1`` → "blocking started", ``-1`` → "blocking ended", else "change"."""
    if change_dir is None or pd.isna(change_dir):
        return "change"
    return {1: "blocking started", -1: "blocking ended"}.get(int(change_dir), "change")


def summary_table(changepoints: pd.DataFrame, base_url: str) -> pd.DataFrame:
    """One row per changepoint (newest first) with ``key``, ``change``, ``state`` (before →
    after, :func:`state_change`) and ``explorer`` (URL)."""
    _check(changepoints)
    cols = ["ts", "probe_cc", "probe_asn", "domain", "change", "block_type", "state",
            "explorer", "key"]
    if changepoints.empty:
        return pd.DataFrame(columns=cols)
    df = changepoints.copy()
    for c in ("block_type", "current_state"):
        if c not in df.columns:
            df[c] = ""
    directions = df.get("change_dir", pd.Series([None] * len(df), index=df.index))
    df["change"] = [direction_label(x) for x in directions]
    df["state"] = [state_change(before, d) for before, d in zip(df["current_state"], directions,
                                                                  strict=True)]
    df["explorer"] = [explorer_url(r, base_url) for _, r in df.iterrows()]
    df["key"] = [changepoint_key(r) for _, r in df.iterrows()]
    return df.sort_values("ts", ascending=False)[cols].reset_index(drop=True)


def table_html(table: pd.DataFrame) -> str:
    """HTML of :func:`summary_table` with clickable Explorer links (all values escaped)."""
    shown = table.drop(columns=["key"], errors="ignore").copy()
    shown["explorer"] = [f'<a href="{html.escape(u, quote=True)}" target="_blank">explorer</a>'
                         for u in shown["explorer"]]
    for c in shown.columns:
        if c != "explorer":
            shown[c] = [html.escape(str(v)) for v in shown[c]]
    return shown.to_html(escape=False, index=False)


def new_changepoints(table: pd.DataFrame, sent: Iterable[str]) -> pd.DataFrame:
    """Rows of :func:`summary_table` whose key is not in ``sent``."""
    sent_set = set(sent)
    return table[~table["key"].isin(sent_set)].reset_index(drop=True)


def slack_message(new: pd.DataFrame, max_lines: int = 20) -> str:
    """Slack mrkdwn text listing new changepoints (``<url|text>`` links), capped."""
    lines = []
    for _, r in new.head(max_lines).iterrows():
        label = escape_mrkdwn(f"{r['probe_cc']} AS{int(r['probe_asn'])} {r['domain']}")
        kind = escape_mrkdwn(f"{r['change']} ({r['block_type'] or 'unknown type'})")
        lines.append(f"• <{r['explorer']}|{label}>: {kind} at "
                     f"{pd.Timestamp(r['ts']).strftime('%Y-%m-%d %H:%M')} UTC")
    if len(new) > max_lines:
        lines.append(f"… and {len(new) - max_lines} more (see the notebook output)")
    return "\n".join(lines)
