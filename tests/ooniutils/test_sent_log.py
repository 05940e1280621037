"""Unit tests of ooniutils.alerts.sent_log: once per episode, state changes, reminders,
resolution, hysteresis, corrupt and legacy files, pruning, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from ooniutils.alerts.sent_log import SentLog, default_state_dir, episode_key, state_path

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def log(tmp_path) -> SentLog:
    return SentLog(tmp_path / "state" / "alarm.slack.json")


def test_first_send_then_suppressed_until_resolved(log):
    assert log.should_send("a", T0)
    assert log.plan(["a"], T0).announce == ["a"]
    assert not log.path.exists()  # planning never writes
    log.record(["a"], T0, notes={"a": "helper a"})
    assert not log.should_send("a", T0 + H)
    plan = log.plan(["a"], T0 + H)
    assert plan.announce == [] and plan.ongoing == ["a"] and plan.resolved == []
    # the key disappears: resolved exactly once
    assert log.plan([], T0 + 2 * H).resolved == ["a"]
    log.record_resolved(["a"], T0 + 2 * H)
    assert log.plan([], T0 + 3 * H).resolved == []
    entry = log.entries()["a"]
    assert not entry.open and entry.resolved == T0 + 2 * H and entry.note == "helper a"
    # it comes back: a new episode, announced again with a new first_sent
    assert log.plan(["a"], T0 + 5 * H).announce == ["a"]
    log.record(["a"], T0 + 5 * H)
    log.record(["a"], T0 + 6 * H)  # e.g. a reminder: the episode keeps its start
    entry = log.entries()["a"]
    assert entry.open and entry.first_sent == T0 + 5 * H and entry.last_sent == T0 + 6 * H


def test_state_change_and_repeat_after(log):
    log.record(["cert"], T0, states={"cert": "expiring"})
    assert not log.should_send("cert", T0 + 24 * H, state="expiring")
    assert log.should_send("cert", T0 + 24 * H, state="expired")
    assert log.plan({"cert": "expired"}, T0 + 24 * H).announce == ["cert"]
    week = timedelta(days=7)
    assert not log.should_send("cert", T0 + 6 * 24 * H, state="expiring", repeat_after=week)
    assert log.should_send("cert", T0 + week, state="expiring", repeat_after=week)


def test_resolve_after_waits_and_touch_restarts_the_clock(log):
    log.record(["h"], T0)
    log.touch(["h"], T0 + 3 * H)  # still active, nothing sent
    grace = timedelta(minutes=90)
    plan = log.plan([], T0 + 4 * H, resolve_after=grace)
    assert plan.waiting == ["h"] and plan.resolved == []
    assert log.plan([], T0 + 5 * H, resolve_after=grace).resolved == ["h"]
    assert log.entries()["h"].last_seen == T0 + 3 * H


def test_unknown_keys_are_neither_announced_nor_resolved(log):
    log.record(["x", "y"], T0)
    plan = log.plan([], T0 + H, unknown=["x"])
    assert plan.resolved == ["y"] and plan.announce == []


def test_times_are_normalised_and_naive_ones_refused(log):
    cest = timezone(timedelta(hours=2))
    log.record(["a"], T0.astimezone(cest))
    assert log.entries()["a"].first_sent == T0
    assert json.loads(log.path.read_text())["sent"]["a"]["first_sent"] == "2024-05-01T10:00:00+00:00"
    with pytest.raises(ValueError, match="timezone-aware"):
        log.plan(["a"], datetime(2024, 5, 1))


def test_corrupt_file_is_moved_aside(log):
    log.record(["a"], T0)
    log.path.write_text('{"sent": {"a": {"last_sent": "yesterday"}}}')
    assert log.entries() == {}
    assert not log.path.exists()
    assert len(list(log.path.parent.glob("alarm.slack.json.corrupt-*"))) == 1
    assert log.plan(["a"], T0).announce == ["a"]  # announcing again beats crashing
    log.record(["a"], T0)
    assert set(log.entries()) == {"a"}


def test_version_1_event_log_is_read(tmp_path):
    path = tmp_path / "event_detector_alerts.json"
    path.write_text(json.dumps({"sent": {"IR|AS1|x.org|2024-05-01T10:00:00|1|dns": "2024-05-01T11:00:00+00:00"}}))
    log = SentLog(path)
    assert log.load() == {"IR|AS1|x.org|2024-05-01T10:00:00|1|dns": "2024-05-01T11:00:00+00:00"}
    assert not log.should_send("IR|AS1|x.org|2024-05-01T10:00:00|1|dns", T0 + H)
    log.record(["new"], T0 + H)
    data = json.loads(path.read_text())
    assert data["version"] == 2 and set(data["sent"]) == {"IR|AS1|x.org|2024-05-01T10:00:00|1|dns", "new"}


def test_prune_drops_entries_idle_for_keep_days(tmp_path):
    log = SentLog(tmp_path / "s.json", keep_days=30)
    log.record(["old", "resolved-recently"], T0)
    log.record_resolved(["resolved-recently"], T0 + timedelta(days=20))
    log.record(["new"], T0 + timedelta(days=29))
    assert log.prune(T0 + timedelta(days=31)) == ["old"]
    assert set(log.entries()) == {"new", "resolved-recently"}
    # every write prunes too
    log.record(["newest"], T0 + timedelta(days=60))
    assert set(log.entries()) == {"newest"}
    with pytest.raises(ValueError, match="keep_days"):
        SentLog(tmp_path / "s.json", keep_days=0)


def _writer(path: str, worker: int, n: int) -> None:
    log = SentLog(path)
    for i in range(n):
        log.record([f"w{worker}-{i}"], T0 + i * timedelta(seconds=1))


def test_concurrent_writers_lose_nothing(tmp_path):
    """Each record() is a read-modify-write: without the folder lock, processes writing at
    the same time would overwrite each other's keys."""
    path = tmp_path / "shared.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 20)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(SentLog(path).entries()) == 4 * 20
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]  # no temp or lock files


def test_episode_key():
    ts = pd.Timestamp("2024-05-01 12:00", tz="Europe/Rome")
    assert episode_key("Drop", "IR/ooniprobe-android", ts) == "Drop|IR/ooniprobe-android|2024-05-01T10:00:00Z"
    assert episode_key("x", datetime(2024, 5, 1, 10)) == episode_key("x", T0)
    for bad in [("a|b",), ("",), ("a", "line\nbreak"), ()]:
        with pytest.raises(ValueError):
            episode_key(*bad)


def test_state_path_and_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "s"))
    assert default_state_dir() == tmp_path / "s"
    assert state_path("nb.slack") == tmp_path / "s" / "nb.slack.json"
    assert state_path("nb", tmp_path) == tmp_path / "nb.json"
    monkeypatch.delenv("JUPYCRON_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x" / "ooni-monitoring"
    for bad in ["../x", "a/b", ".hidden", ""]:
        with pytest.raises(ValueError, match="sent-log name"):
            state_path(bad)
