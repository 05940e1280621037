"""Log dashboards' queries and summaries, on the embedded store with synthetic journald rows."""

from __future__ import annotations

import pandas as pd
import pytest

from ooniutils.analyses.logs import (
    error_counts,
    errors_chart,
    priority_name,
    recent_by_unit,
    unit_summary,
)
from ooniutils.datasets.logs import (
    fetch_heavy_queries,
    fetch_log_counts,
    fetch_recent_logs,
    query_log_available,
)
from ooniutils.exceptions import AnalysisError, QueryError

NOW = pd.Timestamp.now(tz="UTC").floor("min").tz_localize(None)


def journal_rows(now: pd.Timestamp = NOW) -> pd.DataFrame:
    """Two hosts; nginx logs errors in the last hour, sshd only info; one old line."""
    rows = []
    spec = [
        ("mon-1", "nginx.service", 3, "upstream timed out", 10),
        ("mon-1", "nginx.service", 6, "GET / 200", 20),
        ("mon-1", "sshd.service", 6, "Accepted publickey", 5),
        ("mon-2", "clickhouse-server.service", 2, "Memory limit exceeded", 2),
        ("mon-2", "clickhouse-server.service", 4, "slow query", 3),
    ]
    for host, unit, prio, msg, n in spec:
        for i in range(n):
            t = now - pd.Timedelta(minutes=2 * i + 1)
            rows.append({"_HOSTNAME": host, "host": host, "_MACHINE_ID": "m" * 32,
                         "_SYSTEMD_UNIT": unit, "PRIORITY": prio, "MESSAGE": f"{msg} #{i}",
                         "__REALTIME_TIMESTAMP": int(t.tz_localize("UTC").value // 1000)})
    old = now - pd.Timedelta(days=3)
    rows.append({"_HOSTNAME": "mon-1", "host": "", "_MACHINE_ID": "m" * 32, "UNIT": "cron.service",
                 "PRIORITY": 3, "MESSAGE": "ancient", "__REALTIME_TIMESTAMP": int(old.tz_localize("UTC").value // 1000)})
    return pd.DataFrame(rows)


def test_priority_names():
    assert [priority_name(p) for p in (0, 3, 4, 6, 7)] == ["emerg", "err", "warning", "info", "debug"]
    assert priority_name(None) == priority_name(float("nan")) == priority_name(9) == "unknown"


def test_empty_logs_table(store):
    assert fetch_recent_logs("1 day").empty
    counts = fetch_log_counts("1 day")
    assert counts.empty
    assert unit_summary(counts).empty and error_counts(counts).empty


def test_logs_queries_and_summaries(store):
    store.insert("logs", journal_rows())
    lines = fetch_recent_logs("2 hours", limit=1000)
    assert len(lines) == 40  # the 3-day-old line is outside the window
    assert lines["time"].is_monotonic_decreasing
    assert set(lines["host"]) == {"mon-1", "mon-2"}
    assert lines.iloc[0]["message"].endswith("#0")

    capped = fetch_recent_logs("2 hours", per_unit=2)
    assert capped.groupby(["host", "unit"]).size().max() == 2

    counts = fetch_log_counts("2 hours", granularity="minute")
    assert counts["n"].sum() == 40
    summary = unit_summary(counts).set_index("unit")
    assert summary.loc["nginx.service", "errors"] == 10
    assert summary.loc["clickhouse-server.service", "errors"] == 2
    assert summary.loc["clickhouse-server.service", "warnings"] == 3
    assert summary.loc["sshd.service", "errors"] == 0
    assert summary.index[0] == "nginx.service"  # most errors first

    errors = error_counts(counts)
    assert set(errors["priority_name"]) == {"err", "crit"}
    assert errors.groupby("unit")["n"].sum().to_dict() == {"clickhouse-server.service": 2, "nginx.service": 10}
    errors_chart(errors).to_dict()  # builds a valid spec

    recent = recent_by_unit(lines, per_unit=3)
    assert recent.groupby(["host", "unit"]).size().to_dict() == {
        ("mon-1", "nginx.service"): 3, ("mon-1", "sshd.service"): 3,
        ("mon-2", "clickhouse-server.service"): 3}

    # old line: host falls back to _HOSTNAME and unit to UNIT
    old = fetch_recent_logs("4 days", until="2 days")
    assert list(old["host"]) == ["mon-1"] and list(old["unit"]) == ["cron.service"]


def test_bad_arguments(store):
    with pytest.raises(AnalysisError, match="granularity"):
        fetch_log_counts(granularity="fortnight")
    with pytest.raises(AnalysisError, match="order_by"):
        fetch_heavy_queries(order_by="query; DROP TABLE logs")
    with pytest.raises(AnalysisError, match="priority"):
        unit_summary(pd.DataFrame({"t": [], "host": [], "unit": []}))


def test_query_log_on_embedded_chdb(store):
    # chDB has no system.query_log: the dashboard must say so instead of failing
    assert query_log_available() is False
    with pytest.raises(QueryError):
        fetch_heavy_queries()
