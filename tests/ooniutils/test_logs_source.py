"""Measurements and logs from different ClickHouses: with OONI_LOGS_CLICKHOUSE_URL or
OONI_LOGS_DATA_DIR set, the log shipper writes and the log queries read the logs' own store,
while click_query_fsn keeps reading the measurements'. Two real stores at once each time."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.clickhouse import click_query_fsn, click_query_logs
from ooniutils.datasets.logs import fetch_log_counts, fetch_recent_logs
from ooniutils.journal_sample import journal_lines
from ooniutils.store import get_logs_store, get_store, reset_stores


def _journal(tmp_path: Path, n: int) -> Path:
    start_us = int((time.time() - 1800) * 1_000_000)
    p = tmp_path / "journal.json"
    p.write_bytes(b"\n".join(journal_lines(n, start_us=start_us, seed=5)) + b"\n")
    return p


def _ship_and_check(tmp_path: Path, measurements, logs) -> None:
    measurements.insert("fastpath", pd.DataFrame({"measurement_uid": ["m1", "m2"], "probe_cc": ["IT", "BR"],
                                                  "measurement_start_time": [pd.Timestamp("2026-01-01")] * 2}))
    res = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(_journal(tmp_path, 300)),
                                   "--cursor-file", str(tmp_path / "cursor")])
    assert res.exit_code == 0, res.output
    assert "inserted 300" in res.output
    assert int(logs.query("SELECT count() AS n FROM logs").n[0]) == 300
    assert int(measurements.query("SELECT count() AS n FROM logs").n[0]) == 0
    assert int(click_query_logs("SELECT count() AS n FROM logs").n[0]) == 300
    assert int(click_query_fsn("SELECT count() AS n FROM fastpath").n[0]) == 2
    assert int(click_query_fsn("SELECT count() AS n FROM logs").n[0]) == 0
    assert len(fetch_recent_logs(since="2 hours", limit=1000)) == 300
    assert int(fetch_log_counts(since="2 hours").n.sum()) == 300


def test_logs_in_their_own_embedded_store(store, tmp_path, monkeypatch):
    logs_dir = tmp_path / "logs-data"
    monkeypatch.setenv("OONI_LOGS_DATA_DIR", str(logs_dir))
    reset_stores()
    measurements, logs = get_store(), get_logs_store(create=True)
    assert logs is not measurements
    logs.init()
    _ship_and_check(tmp_path, measurements, logs)


def test_logs_on_a_clickhouse_server_while_measurements_stay_embedded(store, fake_clickhouse_port, tmp_path,
                                                                      monkeypatch):
    db = f"logs_{uuid.uuid4().hex[:12]}"
    base = f"http://127.0.0.1:{fake_clickhouse_port}"
    httpx.post(base + "/", content=f"CREATE DATABASE {db}").raise_for_status()
    monkeypatch.setenv("OONI_LOGS_CLICKHOUSE_URL", f"http://default:secret@127.0.0.1:{fake_clickhouse_port}/{db}")
    reset_stores()
    measurements, logs = get_store(), get_logs_store()
    assert type(logs).__name__ == "ServerStore" and type(measurements).__name__ == "EmbeddedStore"
    logs.init()
    _ship_and_check(tmp_path, measurements, logs)


def test_without_a_logs_setting_the_logs_share_the_measurements_store(store):
    assert get_logs_store() is get_store()


@pytest.mark.parametrize("var", ["OONI_LOGS_DATA_DIR", "OONI_LOGS_CLICKHOUSE_URL"])
def test_logs_settings_are_documented(var):
    from tests.support.services import REPO

    assert var in (REPO / "docs" / "CONFIGURATION.md").read_text()
