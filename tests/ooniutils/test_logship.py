"""journald → logs: parsing, batching, cursor, restart and kill -9 without loss or duplicates."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils import logship
from ooniutils.journal_sample import journal_lines
from ooniutils.logship import (
    CursorFile,
    Shipper,
    ShipStats,
    parse_batch,
    read_blocks,
    ship,
    to_logs,
)
from tests.support.services import poll_until, require_program


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


def test_a_second_shipper_on_the_same_cursor_is_refused(store, tmp_path):
    from ooniutils.exceptions import StoreError

    lines = journal_lines(40)
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, f"{cursor}.lock"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreError, match=rf"another shipper \(pid {holder.pid}\) is using the cursor file"):
            ship(store, cursor, from_file=str(src))
        assert count(store) == (0, 0) and CursorFile(cursor).read() is None
    finally:
        holder.kill()
        holder.wait()
    stats = ship(store, cursor, from_file=str(src))  # the lock died with its holder
    assert stats.inserted == 40 and count(store) == (40, 40)
    assert (tmp_path / "cursor.lock").read_text() == f"{os.getpid()}\n"


_LOCK_HOLDER = ("import fcntl, os, sys, time; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
                "fh.truncate(0); fh.write(f'{os.getpid()}\\n'); fh.flush(); print('locked', flush=True); "
                "time.sleep(600)")


@pytest.mark.integration
def test_kill_9_during_shipping_loses_and_duplicates_nothing(store, tmp_path):
    n = 60_000
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(journal_lines(n, seed=7)) + b"\n")
    cursor = tmp_path / "cursor"
    env = {**os.environ, "OONI_DATA_DIR": os.environ["OONI_DATA_DIR"]}
    cmd = [sys.executable, "-m", "ooniutils", "logs", "ship", "--from-file", str(src),
           "--cursor-file", str(cursor), "--batch-size", "2000"]
    # Kill it mid-way a few times, each after at least one commit, then a little later each
    # time, so the kill lands at different points of the pipelined shipper. (The CLI streams
    # these 60k lines into one part: the kills land around its commit and the closing
    # compaction; test_kill_9_mid_stream_ships_every_line_exactly_once kills inside parts.)
    for delay in (0.0, 0.03, 0.08):
        before = CursorFile(cursor).read()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while CursorFile(cursor).read() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
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


def _entries(n: int, seed: int = 1) -> list[dict]:
    return [json.loads(line) for line in journal_lines(n, seed=seed)]


def test_bad_lines_inside_big_blocks_cost_only_themselves(store, tmp_path, monkeypatch):
    # 5000 lines in one block, bad ones scattered: the block falls back to 1024-line
    # chunks, and only the chunks holding bad lines are parsed line by line.
    per_line: list[int] = []
    real = logship._parse_per_line
    monkeypatch.setattr(logship, "_parse_per_line", lambda lines, stats: (per_line.append(len(lines)),
                                                                          real(lines, stats))[1])
    entries = _entries(5000)
    lines = [json.dumps(e).encode() for e in entries]
    for at in (10, 2047, 4999):
        lines[at] = b'{"__CURSOR": "broken", '
    lines.insert(3000, b"")  # blank lines are neither rows nor invalid
    lines.insert(3001, b"   \r")
    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    stats = ship(store, tmp_path / "cursor", from_file=str(src), batch_size=100_000)
    assert (stats.read, stats.inserted, stats.invalid) == (5000, 4997, 3)
    got = store.query("SELECT __CURSOR AS c FROM logs ORDER BY __REALTIME_TIMESTAMP")["c"].tolist()
    assert got == [e["__CURSOR"] for i, e in enumerate(entries) if i not in (10, 2047, 4999)]
    assert len(per_line) == 3 and sum(per_line) <= 3 * logship.FALLBACK_CHUNK


def test_unknown_fields_are_ignored_even_when_their_types_clash():
    entries = _entries(3)
    entries[0]["SYSLOG_RAW"] = [60, 51, 62]  # journald's byte-array encoding
    entries[1]["SYSLOG_RAW"] = "<3>text"
    entries[2]["_SOURCE_BOOTTIME_TIMESTAMP"] = {"nested": True}
    stats = ShipStats()
    rows = to_logs(parse_batch([json.dumps(e).encode() for e in entries], stats), stats)
    assert rows.num_rows == 3 and stats.invalid == 0


def test_non_string_values_and_out_of_range_integers():
    entries = _entries(3)
    entries[0]["PRIORITY"] = 6  # a number, not journald's string: parsed line by line
    entries[1]["PRIORITY"] = "300"  # does not fit UInt8: null, the line is kept
    entries[2]["_PID"] = "-5"  # UInt32 cannot be negative
    stats = ShipStats()
    rows = to_logs(parse_batch([json.dumps(e).encode() for e in entries], stats), stats)
    assert rows["PRIORITY"].to_pylist() == [6, None, int(entries[2]["PRIORITY"])]
    assert rows["_PID"].to_pylist()[2] is None
    assert stats.invalid == 0


def test_to_logs_has_the_store_schema_and_derived_columns():
    from ooniutils.store.params import arrow_schema
    from ooniutils.store.schema import LOGS

    stats = ShipStats()
    entry = _entries(1)[0]
    del entry["_HOSTNAME"]
    now = datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=UTC)
    rows = to_logs(parse_batch([json.dumps(entry).encode()], stats), stats, now=now)
    assert rows.schema == arrow_schema(LOGS)
    r = rows.to_pylist()[0]
    assert (r["host"], r["_HOSTNAME"], r["message"]) == ("", "", entry["MESSAGE"])
    assert r["inserted_at"] == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert r["__REALTIME_TIMESTAMP"] == int(entry["__REALTIME_TIMESTAMP"])


@pytest.mark.parametrize("size", [1, 7, 300, 1 << 20])
def test_read_blocks_cut_at_line_ends_whatever_the_read_size(size):
    text = b'{"a": 1}\n{"b": "' + b"x" * 500 + b'"}\n\n{"c": 3}'  # no newline at the end
    blocks = list(read_blocks(io.BytesIO(text), size))
    assert b"".join(blocks) == text
    assert all(b.endswith(b"\n") for b in blocks[:-1])
    assert [line for b in blocks for line in b.split(b"\n") if line] == [x for x in text.split(b"\n") if x]


def test_resume_cursor_found_in_a_later_block(store, tmp_path):
    lines = journal_lines(3000)
    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"
    CursorFile(cursor).write(json.loads(lines[1999])["__CURSOR"])
    shipper = Shipper(store, cursor, batch_size=250)
    with open(src, "rb") as fh:
        stats = shipper.ship_blocks(read_blocks(fh, 100_000), skip_until_cursor=shipper.stats.last_cursor)
    assert (stats.read, stats.inserted, stats.batches) == (1000, 1000, 4)
    first = store.query("SELECT min(__REALTIME_TIMESTAMP) AS t FROM logs")["t"].iloc[0]
    assert first == int(json.loads(lines[2000])["__REALTIME_TIMESTAMP"])


@pytest.mark.parametrize("saved", ["s=garbage", "CUT"])
def test_a_cursor_not_in_the_input_is_an_error_until_reset(store, tmp_path, saved):
    from click.testing import CliRunner

    from ooniutils.cli import cli

    lines = journal_lines(50)
    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"
    if saved == "CUT":  # a cursor cut off (e.g. a hand-edited file)
        saved = json.loads(lines[20])["__CURSOR"][:-3]
    CursorFile(cursor).write(saved)
    with pytest.raises(logship.CursorNotFound, match="--reset-cursor=head"):
        ship(store, cursor, from_file=str(src))
    assert count(store) == (0, 0) and CursorFile(cursor).read() == saved
    run = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src), "--cursor-file", str(cursor)])
    assert run.exit_code == 1 and "is not in the input" in run.output and "--reset-cursor" in run.output
    # from a time: the lines from the 31st on
    since = datetime.fromtimestamp(int(json.loads(lines[30])["__REALTIME_TIMESTAMP"]) / 1e6, UTC)
    run = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src), "--cursor-file", str(cursor),
                                   "--reset-cursor", since.isoformat()])
    assert run.exit_code == 0, run.output
    assert "read 20 line(s): inserted 20" in run.output and count(store) == (20, 20)
    # from the head: the other 30 (the 20 already stored are dropped)
    stats = ship(store, cursor, from_file=str(src), reset_cursor=logship.parse_reset_cursor("head"))
    assert (stats.inserted, stats.duplicates) == (30, 20) and count(store) == (50, 50)
    assert CursorFile(cursor).read() == json.loads(lines[-1])["__CURSOR"]
    assert ship(store, cursor, from_file=str(src)).inserted == 0  # and it resumes normally
    bad = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src), "--cursor-file",
                                   str(cursor), "--reset-cursor", "yesterday"])
    assert bad.exit_code == 2 and "neither 'head' nor an ISO time" in bad.output


def test_parse_reset_cursor():
    assert logship.parse_reset_cursor(" HEAD ") == "head"
    assert logship.parse_reset_cursor("2024-11-19T07:00:00") == datetime(2024, 11, 19, 7, tzinfo=UTC)
    assert logship.parse_reset_cursor("2024-11-19T09:00:00+02:00") == datetime(2024, 11, 19, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither"):
        logship.parse_reset_cursor("s=abc")


def test_failed_insert_stops_shipping_and_keeps_the_cursor_of_the_last_commit(store, tmp_path):
    from ooniutils.exceptions import StoreError

    lines = journal_lines(1000)
    cursor = tmp_path / "cursor"
    real = store.insert_arrow
    calls = {"n": 0}

    def insert_arrow(table, arrow):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreError("disk full")
        return real(table, arrow)

    store.insert_arrow = insert_arrow
    with pytest.raises(StoreError, match="disk full"):
        Shipper(store, cursor, batch_size=200).ship_lines(iter(lines))
    assert calls["n"] == 2  # no batch after the failed one was committed
    assert count(store) == (200, 200)
    assert CursorFile(cursor).read() == json.loads(lines[199])["__CURSOR"]


def test_cli_ship_from_stdin(store, tmp_path):
    from click.testing import CliRunner

    from ooniutils.cli import cli

    data = b"\n".join(journal_lines(30)) + b"\n"
    res = CliRunner().invoke(cli, ["logs", "ship", "--from-file", "-", "--batch-size", "7",
                                   "--cursor-file", str(tmp_path / "cur")], input=data)
    assert res.exit_code == 0, res.output
    assert "read 30 line(s): inserted 30, skipped 0 invalid" in res.output
    assert count(store) == (30, 30)


def test_follow_mode_ships_journalctl_output_after_the_cursor(store, tmp_path):
    lines = journal_lines(20)
    cursor = tmp_path / "cursor"
    CursorFile(cursor).write("s=earlier")
    seen: list[list[str]] = []

    class FakeJournalctl:  # ends its output, as journalctl only does on an error
        def __init__(self, cmd, stdout, stderr):
            seen.append(cmd)
            self.stdout = io.BytesIO(b"\n".join(lines) + b"\n{bad\n")
            self.stderr = io.BytesIO(b"Journal file corrupted\n")

        def terminate(self):
            pass

        def wait(self, timeout):
            return 1

    with pytest.raises(logship.LoadError, match=r"journalctl stopped \(exit code 1\) after 21 "
                       r"line\(s\): Journal file corrupted"):
        ship(store, cursor, batch_size=8, flush_interval=60, popen=FakeJournalctl)
    assert seen[0][-1] == "--after-cursor=s=earlier"
    assert count(store) == (20, 20)  # what was read before is committed
    assert CursorFile(cursor).read() == json.loads(lines[-1])["__CURSOR"]


def test_journalctl_ending_with_our_own_sigterm_is_a_clean_stop(store, tmp_path):
    lines = journal_lines(5)
    stop = threading.Event()

    class Stopped:  # systemd's SIGTERM reached journalctl just before the shipper
        def __init__(self, cmd, stdout, stderr):
            self.stdout = io.BytesIO(b"\n".join(lines) + b"\n")
            self.stderr = io.BytesIO(b"")
            threading.Timer(0.3, stop.set).start()

        def terminate(self):
            pass

        def wait(self, timeout):
            return 0

    stats = ship(store, tmp_path / "cursor", flush_interval=60, stop=stop, popen=Stopped)
    assert stats.inserted == 5


@pytest.mark.parametrize("bulk", [False, True])
def test_stop_commits_what_was_read_and_reads_no_further(store, tmp_path, bulk):
    import threading

    lines = journal_lines(900)
    blocks = [b"\n".join(lines[i:i + 300]) + b"\n" for i in range(0, 900, 300)]
    stop = threading.Event()
    read: list[int] = []

    def source():
        for i, block in enumerate(blocks):
            read.append(i)
            yield block
            stop.set()  # e.g. SIGTERM while the first block is being shipped

    stats = Shipper(store, tmp_path / "cursor", batch_size=200, bulk=bulk).ship_blocks(source(), stop=stop)
    assert read == [0, 1]  # the second block was fetched, seen after stop, and not parsed
    assert (stats.read, stats.inserted) == (300, 300) and count(store) == (300, 300)
    assert CursorFile(tmp_path / "cursor").read() == json.loads(lines[299])["__CURSOR"]


# --- invalid UTF-8 inside JSON strings ------------------------------------------------------------


def _json_string(raw: bytes) -> bytes:
    """``raw`` as a JSON string the way journald writes it: quote, backslash and control
    bytes escaped, every other byte (invalid UTF-8 included) as is."""
    out = bytearray(b'"')
    for x in raw:
        if x in (0x22, 0x5C) or x < 0x20:
            out += b"\\u%04x" % x
        else:
            out.append(x)
    return bytes(out + b'"')


def _line(tag: str, i: int, message: bytes, unit: bytes) -> bytes:
    return (b'{"__CURSOR":"s=%s;i=%d","__REALTIME_TIMESTAMP":"%d","_HOSTNAME":"h","MESSAGE":%s,'
            b'"_COMM":%s}' % (tag.encode(), i, 1_700_000_000_000_000 + i, _json_string(message),
                              _json_string(unit)))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_invalid_utf8_in_a_string_is_replaced_and_counted():
    lines = [_line("a", 1, b"caf\xc3\xa9 \xff\xfe end", b"ok"), _line("a", 2, b"fine", b"\xc3")]
    for extra in ([], [b"{not json"]):  # pyarrow's reader, then the line-by-line fallback
        stats = ShipStats()
        df = to_logs(parse_batch(lines + extra, stats), stats).to_pandas()
        assert df["MESSAGE"].tolist() == ["café \ufffd\ufffd end", "fine"]
        assert df["message"].tolist() == df["MESSAGE"].tolist()
        assert df["_COMM"].tolist() == ["ok", "\ufffd"]
        assert (stats.replaced, stats.invalid) == (2, len(extra))


_TAGS = iter(range(10**9))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entries=st.lists(st.tuples(st.binary(max_size=24), st.binary(max_size=6)), min_size=1,
                        max_size=40),
       garbage=st.sets(st.integers(0, 40), max_size=3), cut=st.integers(0, 40),
       batch_size=st.integers(1, 16))
def test_arbitrary_bytes_in_journal_lines(store, tmp_path, entries, garbage, cut, batch_size):
    tag = f"t{next(_TAGS)}"
    lines = [_line(tag, i, msg, unit) for i, (msg, unit) in enumerate(entries)]
    for at in sorted(garbage, reverse=True):
        lines.insert(min(at, len(lines)), b'{"MESSAGE":"\xff no cursor"')
    src, cursor = tmp_path / f"{tag}.json", tmp_path / f"{tag}.cursor"
    total = ShipStats()
    for part in (lines[:cut], lines, lines):  # journal grows, then a restart with nothing new
        src.write_bytes(b"".join(line + b"\n" for line in part))
        stats = ship(store, cursor, from_file=str(src), batch_size=batch_size)
        assert stats.read == stats.inserted + stats.invalid + stats.duplicates
        for k in ("read", "inserted", "invalid", "replaced", "duplicates"):
            setattr(total, k, getattr(total, k) + getattr(stats, k))
    df = store.query("SELECT __CURSOR, MESSAGE, message, _COMM FROM logs WHERE startsWith(__CURSOR, "
                     "%(prefix)s) ORDER BY __REALTIME_TIMESTAMP", {"prefix": f"s={tag};"})
    assert len(df) == len(entries) == total.inserted and total.duplicates == 0  # exactly once
    assert df["__CURSOR"].tolist() == [f"s={tag};i={i}" for i in range(len(entries))]
    for col in ("MESSAGE", "message", "_COMM"):
        assert all(isinstance(v, str) for v in df[col]), col
    assert df["MESSAGE"].tolist() == [m.decode("utf-8", "replace") for m, _ in entries]
    assert df["_COMM"].tolist() == [u.decode("utf-8", "replace") for _, u in entries]
    assert total.replaced == sum(not (_is_utf8(m) and _is_utf8(u)) for m, u in entries)


# --- the real journalctl, over a journal written by systemd-journal-remote --------------------


@dataclass
class Journal:
    directory: Path
    cursors: list[str]
    times_us: list[int]


@pytest.fixture
def journal(tmp_path) -> Journal:
    """A journal folder of 30 entries (journald's own file format, written by
    systemd-journal-remote from the export format) and the cursors journalctl gives them."""
    remote = require_program("systemd-journal-remote", "/lib/systemd/systemd-journal-remote",
                             "/usr/lib/systemd/systemd-journal-remote", package="systemd-journal-remote")
    journalctl = require_program("journalctl", "/usr/bin/journalctl", package="systemd")
    d = tmp_path / "journal"
    d.mkdir()
    export = b"".join(
        b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n_HOSTNAME=probe-7\n"
        b"_SYSTEMD_UNIT=oonib.service\nPRIORITY=6\nMESSAGE=entry %d\n\n"
        % (1_700_000_000_000_000 + i * 1000, 1_000 + i, b"0123456789abcdef" * 2, i)
        for i in range(30))
    subprocess.run([remote, f"--output={d / 'remote.journal'}", "-"], input=export, check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run([journalctl, f"--directory={d}", "-o", "json", "--no-pager"],
                         capture_output=True, check=True, timeout=60).stdout.splitlines()
    entries = [json.loads(line) for line in out]
    assert len(entries) == 30
    return Journal(d, [e["__CURSOR"] for e in entries], [int(e["__REALTIME_TIMESTAMP"]) for e in entries])


def _follow(store, cursor, journal: Journal, expect: int, **kw) -> ShipStats:
    """`ship` following the real journalctl until ``expect`` rows are stored, then stopped."""
    stop = threading.Event()
    result: dict = {}

    def run() -> None:
        try:
            result["stats"] = ship(store, cursor, batch_size=7, flush_interval=0.2, stop=stop,
                                   journal_dir=journal.directory, **kw)
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    try:
        poll_until(lambda: "error" in result or count(store)[0] >= expect, timeout=60)
        time.sleep(0.5)  # nothing more arrives
    finally:
        stop.set()
        t.join(30)
    if "error" in result:
        raise result["error"]
    return result["stats"]


@pytest.mark.integration
def test_real_journalctl_resumes_after_the_saved_cursor(store, tmp_path, journal):
    cursor = tmp_path / "cursor"
    CursorFile(cursor).write(journal.cursors[9])
    stats = _follow(store, cursor, journal, expect=20)
    assert stats.inserted == 20 and count(store) == (20, 20)
    stored = store.query("SELECT __CURSOR FROM logs ORDER BY __REALTIME_TIMESTAMP")["__CURSOR"].tolist()
    assert stored == journal.cursors[10:]
    assert CursorFile(cursor).read() == journal.cursors[-1]


@pytest.mark.integration
@pytest.mark.parametrize("garbled", ["s=garbage", "CUT"])
def test_real_journalctl_refusing_the_cursor_is_an_error_until_reset(store, tmp_path, journal, garbled):
    cursor = tmp_path / "cursor"
    if garbled == "CUT":  # cut inside the boot id: journalctl cannot parse it
        garbled = journal.cursors[9][:journal.cursors[9].index(";b=") + 12]
    CursorFile(cursor).write(garbled)
    with pytest.raises(logship.CursorNotFound, match=r"(?s)Failed to seek to cursor.*--reset-cursor=head"):
        ship(store, cursor, flush_interval=0.2, journal_dir=journal.directory)
    assert count(store) == (0, 0) and CursorFile(cursor).read() == garbled
    # the CLI, as systemd runs it: a failure exit code and the reason
    cli = subprocess.run([sys.executable, "-m", "ooniutils", "logs", "ship", "--cursor-file", str(cursor),
                          "--journal-dir", str(journal.directory)], capture_output=True, timeout=120)
    assert cli.returncode == 1 and b"not valid for this journal" in cli.stderr, cli.stderr
    # restart from a time, then from the head: every entry once
    since = datetime.fromtimestamp(journal.times_us[20] / 1e6, UTC)
    assert _follow(store, cursor, journal, expect=10, reset_cursor=since).inserted == 10
    stats = _follow(store, cursor, journal, expect=30, reset_cursor="head")
    assert (stats.inserted, stats.duplicates) == (20, 10) and count(store) == (30, 30)
    assert CursorFile(cursor).read() == journal.cursors[-1]


# --- bulk ship: batches streamed into parts (store.insert_stream) ----------------------------------


def test_bulk_ship_commits_a_part_with_the_cursor_of_its_last_batch(store, tmp_path):
    lines = journal_lines(2000)
    cursor = tmp_path / "cursor"
    written: list[str] = []
    shipper = Shipper(store, cursor, batch_size=300, bulk=True, part_rows=900)
    real_write = shipper.cursor.write
    shipper.cursor.write = lambda c: (written.append(c), real_write(c))  # type: ignore[method-assign]
    stats = shipper.ship_lines(iter(lines))
    # parts of 3 batches (900 rows), then 2 batches (600) and the last 200 lines
    assert written == [json.loads(lines[i])["__CURSOR"] for i in (899, 1799, 1999)]
    assert (stats.inserted, stats.batches) == (2000, 7)
    assert sorted(p.rows for p in store.part_infos("logs")) == [200, 900, 900]
    assert count(store) == (2000, 2000)


def test_bulk_crash_between_part_commit_and_cursor_write_does_not_duplicate(store, tmp_path):
    lines = journal_lines(2000)
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"

    class Crash(Exception):
        pass

    shipper = Shipper(store, cursor, batch_size=300, bulk=True, part_rows=600)
    calls = {"n": 0}
    real_write = shipper.cursor.write

    def write_then_crash(c):
        calls["n"] += 1
        if calls["n"] == 2:  # the second part is visible, its cursor never recorded
            raise Crash
        real_write(c)

    shipper.cursor.write = write_then_crash
    with pytest.raises(Crash):
        shipper.ship_lines(iter(lines))
    assert count(store) == (1200, 1200)
    assert CursorFile(cursor).read() == json.loads(lines[599])["__CURSOR"]
    stats = ship(store, cursor, from_file=str(src), batch_size=300, part_rows=600)
    assert stats.duplicates == 600 and stats.inserted == 800
    assert count(store) == (2000, 2000)


def test_bulk_ship_read_error_keeps_what_was_committed(store, tmp_path, monkeypatch):
    """The input fails mid-way (an I/O error): a clear error naming the file; the parts
    committed before stay with their cursor, the open one is dropped (no temp part left);
    a restart ships the rest, every line once."""
    lines = journal_lines(2000)
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cursor = tmp_path / "cursor"
    real_read_blocks = logship.read_blocks

    def failing(fh, size=logship.READ_CHUNK):
        blocks = real_read_blocks(fh, size)
        for i, block in enumerate(blocks):
            if i == 5:
                raise OSError(5, "Input/output error")
            yield block

    monkeypatch.setattr(logship, "read_blocks", lambda fh, size: failing(fh, 300 * len(lines[0])))
    with pytest.raises(logship.LoadError, match=r"journal.json: cannot read .*input/output error"):
        ship(store, cursor, from_file=str(src), batch_size=100, part_rows=300)
    stored = count(store)[0]
    assert stored > 0 and stored % 300 == 0  # whole parts only
    assert CursorFile(cursor).read() == json.loads(lines[stored - 1])["__CURSOR"]
    assert list((store.table_dir("logs") / "tmp").iterdir()) == []
    monkeypatch.setattr(logship, "read_blocks", real_read_blocks)
    stats = ship(store, cursor, from_file=str(src), batch_size=100, part_rows=300)
    assert stats.inserted == 2000 - stored and stats.duplicates == 0
    assert count(store) == (2000, 2000)


_STREAMING_SHIPPER = """
import sys
from pathlib import Path
from ooniutils.logship import ship
from ooniutils.store import parts
from ooniutils.store.embedded import EmbeddedStore

parts.ROW_GROUP_ROWS = 1024  # 2000-line batches are then written as they come, into 10k-row parts
ship(EmbeddedStore(sys.argv[1]), Path(sys.argv[2]), from_file=sys.argv[3], batch_size=2000, part_rows=10_000)
"""


@pytest.mark.integration
def test_kill_9_mid_stream_ships_every_line_exactly_once(store, tmp_path):
    """kill -9 of a bulk ship while a part is half written (its temp file growing), and
    around part commits; after a restart every line is stored exactly once and no temp
    part is left."""
    n = 60_000
    src = tmp_path / "journal.json"
    src.write_bytes(b"\n".join(journal_lines(n, seed=11)) + b"\n")
    cursor = tmp_path / "cursor"
    data = store.data_dir
    tmp_parts = data / "logs" / "tmp"
    cmd = [sys.executable, "-c", _STREAMING_SHIPPER, str(data), str(cursor), str(src)]
    mid_part = 0
    for point in ("temp part", "temp part", "commit", "commit+0.05"):
        before = CursorFile(cursor).read()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        if point == "temp part":  # a part being written: kill before it is committed
            while not any(tmp_parts.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            mid_part += bool(any(tmp_parts.iterdir()))
        else:
            while CursorFile(cursor).read() == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(0.05 if point.endswith("0.05") else 0)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    assert mid_part >= 1  # at least one kill hit a half-written part
    stored = count(store)
    assert stored[0] == stored[1] and stored[0] % 2000 == 0  # whole batches, each line once
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert count(store) == (n, n)
    assert list(tmp_parts.iterdir()) == []
