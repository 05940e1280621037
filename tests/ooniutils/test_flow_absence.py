"""Absence is an alarm: total_outage (no measurement at all in the recent window while the
history had some) and require_rows (no history at all is a data-path error naming the data
source), on empty and absent inputs."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ooniutils.analyses.flow import total_outage
from ooniutils.datasets.source import describe_data_source, require_rows
from ooniutils.exceptions import AnalysisError, NoDataError

UNTIL = pd.Timestamp("2024-05-10 12:00")


def hourly(hours: int, stop_before: int = 0, per_hour: int = 100) -> pd.DataFrame:
    """Two probe types with ``per_hour`` each for ``hours`` hours ending ``stop_before``
    hours before UNTIL."""
    end = UNTIL - pd.Timedelta(hours=stop_before)
    t = pd.date_range(end=end - pd.Timedelta(hours=1), periods=hours, freq="h")
    return pd.concat([pd.DataFrame({"t": t, "software_name": sw, "n": per_hour})
                      for sw in ("ooniprobe-android", "ooniprobe-ios")], ignore_index=True)


def test_recent_data_is_no_outage():
    assert total_outage(hourly(48), UNTIL - pd.Timedelta(hours=3), UNTIL) is None
    # one measurement in the window is enough: a drop, not a total outage
    df = hourly(48, stop_before=3)
    df.loc[len(df)] = [UNTIL - pd.Timedelta(hours=1), "ooniprobe-ios", 1]
    assert total_outage(df, UNTIL - pd.Timedelta(hours=3), UNTIL) is None


def test_silent_recent_window_is_a_total_outage():
    out = total_outage(hourly(48, stop_before=5), UNTIL - pd.Timedelta(hours=3), UNTIL)
    assert out is not None
    assert out.last_seen == UNTIL - pd.Timedelta(hours=6)
    assert out.since == UNTIL - pd.Timedelta(hours=5) and out.buckets == 5
    assert out.expected == pytest.approx(200.0)  # both probe types, per hour
    text = out.describe()
    assert text.startswith("TOTAL OUTAGE: no measurements at all since 2024-05-10 07:00 UTC")
    assert "5 hours" in text and "200 per hour" in text


def test_zero_counts_are_silence_too():
    df = hourly(48)
    df.loc[df["t"] >= UNTIL - pd.Timedelta(hours=4), "n"] = 0
    out = total_outage(df, UNTIL - pd.Timedelta(hours=3), UNTIL)
    assert out is not None and out.since == UNTIL - pd.Timedelta(hours=4)


def test_daily_unit():
    t = pd.date_range("2024-04-01", periods=30, freq="D")
    df = pd.DataFrame({"t": t, "software_name": "x", "n": 1000})
    until = pd.Timestamp("2024-05-03")  # the data ends 2024-04-30: two silent days
    out = total_outage(df, until - pd.Timedelta(days=1), until, unit="day")
    assert out is not None and out.buckets == 2 and out.unit == "day"
    assert "2 days" in out.describe() and "1,000 per day" in out.describe()
    assert total_outage(df, pd.Timestamp("2024-04-30"), pd.Timestamp("2024-05-01"), unit="day") is None


def test_no_history_at_all_is_not_an_outage_but_an_error():
    empty = hourly(48).iloc[:0]
    with pytest.raises(AnalysisError, match="data path error"):
        total_outage(empty, UNTIL - pd.Timedelta(hours=3), UNTIL)
    with pytest.raises(AnalysisError, match="missing column"):
        total_outage(pd.DataFrame({"x": [1]}), UNTIL - pd.Timedelta(hours=3), UNTIL)
    with pytest.raises(AnalysisError, match="before"):
        total_outage(hourly(5), UNTIL, UNTIL)


@settings(max_examples=50, deadline=None)
@given(hours=st.integers(1, 200), silent=st.integers(0, 60), window=st.integers(1, 24))
def test_outage_iff_the_window_is_silent(hours, silent, window):
    df = hourly(hours, stop_before=silent)
    out = total_outage(df, UNTIL - pd.Timedelta(hours=window), UNTIL)
    if silent >= window:
        assert out is not None and out.buckets == silent and out.until == UNTIL
    else:
        assert out is None


def test_require_rows_names_the_table_window_and_source(monkeypatch, tmp_path):
    monkeypatch.delenv("OONI_CLICKHOUSE_URL", raising=False)
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("OONI_MONITORING_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "store"))
    require_rows(hourly(2), "fastpath", "a", "b")  # rows: nothing happens
    with pytest.raises(NoDataError) as exc:
        require_rows(hourly(2).iloc[:0], "fastpath", UNTIL - pd.Timedelta(days=36), UNTIL,
                     "measurements")
    msg = str(exc.value)
    assert exc.value.table == "fastpath"
    assert "no measurements at all in the fastpath table between 2024-04-04 12:00:00" in msg
    assert f"embedded store {tmp_path / 'store'} (OONI_DATA_DIR)" in msg
    with pytest.raises(NoDataError):
        require_rows(0, "citizenlab", "-", "-")


def test_describe_server_source_hides_credentials(monkeypatch):
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "https://reader:s3cret@ch.example:8443/ooni")
    text = describe_data_source()
    assert text == "ClickHouse server https://ch.example:8443/ooni (OONI_CLICKHOUSE_URL)" and "s3cret" not in text


def test_describe_names_the_logs_own_source(monkeypatch, tmp_path):
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("OONI_LOGS_DATA_DIR", str(tmp_path / "logs"))
    assert describe_data_source("logs").startswith(f"embedded store {tmp_path / 'logs'} (OONI_LOGS_DATA_DIR) - MISSING")
    assert describe_data_source("fastpath").startswith(f"embedded store {tmp_path / 'm'} (OONI_DATA_DIR)")


def test_require_recent_tells_empty_from_stopped(monkeypatch, tmp_path):
    from ooniutils.datasets.source import require_recent

    monkeypatch.delenv("OONI_CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path))
    since = pd.Timestamp("2024-05-09")
    require_recent(pd.Timestamp("2024-05-09 10:00"), "logs", since, "log lines", "Vector")
    with pytest.raises(NoDataError, match="no log lines at all in the logs table"):
        require_recent(None, "logs", since, "log lines", "Vector")
    with pytest.raises(NoDataError, match=r"no log lines in the logs table since 2024-05-09 00:00:00 UTC: "
                                          r"the newest is from 2024-05-01 08:00:00 UTC .*Vector has stopped"):
        require_recent(pd.Timestamp("2024-05-01 08:00"), "logs", since, "log lines", "Vector")


def test_require_rows_tells_empty_from_stopped(monkeypatch, tmp_path):
    monkeypatch.delenv("OONI_CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path))
    empty = hourly(1).iloc[:0]
    with pytest.raises(NoDataError, match="the table is empty: this is the wrong data source"):
        require_rows(empty, "fastpath", "a", "b", "measurements", newest=lambda: None)
    with pytest.raises(NoDataError, match="the newest row is from 2024-03-01 10:00:00 UTC: nothing "
                                          "arrived since"):
        require_rows(empty, "fastpath", "a", "b", "measurements",
                     newest=lambda: pd.Timestamp("2024-03-01 10:00"))
    calls = []
    require_rows(hourly(1), "fastpath", newest=lambda: calls.append(1))
    assert calls == []  # only asked when there is nothing


def test_newest_times_on_the_embedded_store(store):
    """The look-ups the notebooks use to tell an empty table from a stopped one."""
    from ooniutils.datasets.events import newest_changepoint_time
    from ooniutils.datasets.flow import newest_measurement_time
    from ooniutils.datasets.logs import newest_log_time

    assert newest_measurement_time() is None and newest_log_time() is None
    assert newest_changepoint_time() is None
    store.insert("fastpath", pd.DataFrame({
        "measurement_uid": ["a", "b"], "probe_cc": ["IT", "DE"],
        "measurement_start_time": [pd.Timestamp("2024-05-01 10:00"), pd.Timestamp("2024-05-02 11:30")]}))
    assert newest_measurement_time() == pd.Timestamp("2024-05-02 11:30")
    store.insert("logs", pd.DataFrame({"host": ["h"], "MESSAGE": ["x"], "__REALTIME_TIMESTAMP": [
        int(pd.Timestamp("2024-05-03 08:00", tz="UTC").value // 1000)]}))
    assert newest_log_time() == pd.Timestamp("2024-05-03 08:00")
