"""journald → logs: parsing, batching, cursor, restart and kill -9 without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ooniutils.journal_sample import journal_lines
from ooniutils.logship import CursorFile, Shipper, ShipStats, parse_batch, ship, to_logs
from ooniutils.store import get_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "data"))
    s = get_store()
    s.init()
    yield s
    s.close()


def count(store) -> tuple[int, int]:
    df = store.query("SELECT count() AS n, uniqExact(__CURSOR) AS u FROM logs")
    return int(df["n"][0]), int(df["u"][0])


def test_parse_keeps_valid_lines_and_counts_bad_ones():
    lines = journal_lines(5)
    lines.insert(2, b"{not json")
    lines.insert(3, json.dumps({"MESSAGE": "no cursor or time"}).encode())
    lines.insert(4, b'["an", "array"]')
    stats = ShipStats()
    df = to_logs(parse_batch(lines, stats), stats).to_pandas()
    assert len(df) == 5
    assert stats.invalid == 3
    first = json.loads(journal_lines(1)[0])
    assert df["__REALTIME_TIMESTAMP"].iloc[0] == int(first["__REALTIME_TIMESTAMP"])
    assert df["PRIORITY"].iloc[0] == int(first["PRIORITY"])
    assert df["host"].iloc[0] == first["_HOSTNAME"]
    assert df["message"].iloc[0] == first["MESSAGE"]
    assert df["_SYSTEMD_UNIT"].iloc[0] == first["_SYSTEMD_UNIT"]
    assert df["timestamp"].iloc[0] == "2024-11-19T07:06:40.000000Z"


def test_binary_message_field_is_decoded():
    entry = json.loads(journal_lines(1)[0])
    entry["MESSAGE"] = list("héllo".encode())
    stats = ShipStats()
    df = to_logs(parse_batch([json.dumps(entry).encode()], stats), stats).to_pandas()
    assert df["MESSAGE"].iloc[0] == "héllo"
    assert stats.invalid == 0


def test_non_integer_timestamp_is_skipped():
    entry = json.loads(journal_lines(1)[0])
    entry["__REALTIME_TIMESTAMP"] = "yesterday"
    stats = ShipStats()
    df = to_logs(parse_batch([json.dumps(entry).encode(), journal_lines(2)[1]], stats), stats).to_pandas()
    assert len(df) == 1 and stats.invalid == 1


def test_ship_file_then_resume_without_duplicates(store, tmp_path):
    lines = journal_lines(2500)
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(lines[:1500]) + b"\n")
    cursor = tmp_path / "cursor"
    stats = ship(store, cursor, from_file=str(src), batch_size=400)
    assert stats.inserted == 1500 and stats.batches == 4
    assert CursorFile(cursor).read() == json.loads(lines[1499])["__CURSOR"]
    # the journal grew; a restart reads the whole file again but ships only what is new
    src.write_bytes(b"\n".join(lines) + b"\n")
    stats = ship(store, cursor, from_file=str(src), batch_size=400)
    assert stats.inserted == 1000
    assert count(store) == (2500, 2500)
    ordered = store.query("SELECT __REALTIME_TIMESTAMP AS t FROM logs ORDER BY __REALTIME_TIMESTAMP")
    assert ordered["t"].is_monotonic_increasing


def test_crash_between_insert_and_cursor_write_does_not_duplicate(store, tmp_path):
    lines = journal_lines(1000)
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"

    class Crash(Exception):
        pass

    shipper = Shipper(store, cursor, batch_size=300)
    calls = {"n": 0}
    real_write = shipper.cursor.write

    def write_then_crash(c):
        calls["n"] += 1
        if calls["n"] == 2:  # second batch committed, its cursor never recorded
            raise Crash
        real_write(c)

    shipper.cursor.write = write_then_crash
    with pytest.raises(Crash):
        shipper.ship_lines(iter(lines))
    assert count(store) == (600, 600)
    stats = ship(store, cursor, from_file=str(src), batch_size=300)
    assert stats.duplicates == 300
    assert count(store) == (1000, 1000)


def test_missing_file_is_a_clear_error(store, tmp_path):
    from ooniutils.exceptions import LoadError

    with pytest.raises(LoadError, match="nope.json"):
        ship(store, tmp_path / "c", from_file=str(tmp_path / "nope.json"))


@pytest.mark.integration
def test_kill_9_during_shipping_loses_and_duplicates_nothing(store, tmp_path):
    n = 60_000
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(journal_lines(n, seed=7)) + b"\n")
    cursor = tmp_path / "cursor"
    env = {**os.environ, "OONI_DATA_DIR": os.environ["OONI_DATA_DIR"]}
    cmd = [sys.executable, "-m", "ooniutils", "logs", "ship", "--from-file", str(src),
           "--cursor-file", str(cursor), "--batch-size", "2000"]
    for _ in range(3):  # kill it mid-way a few times, each after at least one committed batch
        before = CursorFile(cursor).read()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while CursorFile(cursor).read() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert count(store) == (n, n)


def test_cli_ship_reports_counts(store, tmp_path):
    from click.testing import CliRunner

    from ooniutils.cli import cli

    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(journal_lines(10)) + b"\n{bad\n")
    res = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src),
                                   "--cursor-file", str(tmp_path / "cur")])
    assert res.exit_code == 0, res.output
    assert "inserted 10, skipped 1 invalid" in res.output
