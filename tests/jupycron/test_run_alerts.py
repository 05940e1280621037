"""Run-state alerts: one message per change, retries of channels that are down, late
notebooks, and the real Alertmanager receiving a failure and its resolution."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from jupycron import run_alerts, senders
from jupycron.cli_web import alerts_command
from jupycron.config import Settings
from jupycron.exceptions import ConfigError
from jupycron.ledger import SqliteRunStore
from jupycron.models import Finding, FindingLevel, Run, RunStatus, Trigger
from jupycron.run_alerts import alert_lock_file, load_state, notify_changes
from tests.support.alertmanager import alertmanager_server
from tests.support.fake_webhooks import fake_webhook_server
from tests.support.ledger import write_history_doc
from tests.support.services import free_port, poll_until
from tests.support.trickle import trickling_server

NOW = datetime(2024, 5, 1, 10, 40, tzinfo=UTC)
HOURLY = '{"every": "1 hour"}'


def run(rel: str, slot: datetime, status: RunStatus, n: int = 0, **kw) -> Run:
    return Run(rel, f"{slot:%Y%m%dT%H%M%S}-{n:06x}", slot + timedelta(seconds=5), status,
               trigger=Trigger.SCHEDULE, slot=slot, finished_at=slot + timedelta(seconds=9),
               duration_s=4.0, output=rel.replace(".ipynb", ".html"), **kw)


def failed(rel: str, slot: datetime, n: int = 0) -> Run:
    return run(rel, slot, RunStatus.FAILED, n, error_name="ValueError", error_value="boom")


def write_history(s: Settings, runs: dict[str, list[Run]]) -> None:
    """The history file as the runner writes it (newest first), built from Run.to_json."""
    doc = {"version": 1, "notebooks": {
        rel: {"runs": [r.to_json() for r in sorted(rs, key=lambda r: r.started_at, reverse=True)],
              "deleted_at": None, "last_success_output": None,
              "first_seen": "2024-04-01T00:00:00+00:00"}
        for rel, rs in runs.items()}}
    write_history_doc(s.output_dir, doc)
    for rel in runs:
        (s.output_dir / rel.replace(".ipynb", ".html")).write_text("<html></html>")


def state(s: Settings) -> dict:
    doc = SqliteRunStore(s.output_dir).alert_state("run_alerts")
    assert doc is not None, "no alert state was saved"
    return doc["notebooks"]


@pytest.fixture(autouse=True)
def ooniutils_senders():
    """The senders the CLI installs (ooniutils' transports, loaded by name)."""
    before = senders.installed()
    senders.install(senders.load())
    yield
    senders.install(before)


def told(ch: dict) -> str:
    """What a channel's record says it was told: "firing", "resolved" or "nothing"."""
    if ch.get("told") is None:
        return "nothing"
    return "firing" if ch["told"]["open"] else "resolved"


@pytest.fixture
def hook(monkeypatch):
    with fake_webhook_server() as h:
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", h.url("/services/T0/B0/secretpath"))
        monkeypatch.setenv("OONI_NTFY_URL", h.url("/jupycron-topic"))
        yield h


@pytest.fixture
def site(tmp_path: Path, jc) -> Settings:
    s = jc.make_settings(tmp_path, alert_channels="slack, ntfy",
                         output_base_url="https://mon.example/jupycron/")
    for name in ("a_autorun.ipynb", "b_autorun.ipynb"):
        jc.copy_notebook("ok_autorun.ipynb", s.notebooks, name, line=HOURLY)
    return s


def by_path(hook) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in hook.requests:
        out.setdefault("slack" if r.path.startswith("/services") else "ntfy", []).append(r)
    return out


def test_failure_then_recovery_sends_one_message_each(site: Settings, hook) -> None:
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [run("a_autorun.ipynb", ten - timedelta(hours=1),
                                                 RunStatus.SUCCESS), failed("a_autorun.ipynb", ten)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", ten, RunStatus.SUCCESS)]})
    sent = notify_changes(site, NOW)
    assert [(d.notebook, d.kind, d.channel, d.action, d.ok) for d in sent] == [
        ("a_autorun.ipynb", "failing", "slack", "fire", True),
        ("a_autorun.ipynb", "failing", "ntfy", "fire", True)]
    reqs = by_path(hook)
    att = reqs["slack"][0].json()["attachments"][0]
    assert att["title"] == "jupycron: a_autorun.ipynb is failing (error)"
    assert "ValueError: boom" in att["text"]
    assert "<https://mon.example/jupycron/a_autorun.html|output>" in att["text"]
    assert att["color"] == "danger"
    ntfy = reqs["ntfy"][0]
    assert ntfy.header("Title") == "jupycron: a_autorun.ipynb is failing (error)"
    assert "https://mon.example/jupycron/a_autorun.html" in ntfy.text()
    st = state(site)["a_autorun.ipynb"]["failing"]
    assert st["active"] and told(st["channels"]["slack"]) == "firing"

    # later checks while still failing (and one more failure): nothing new
    assert notify_changes(site, NOW + timedelta(minutes=1)) == []
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten),
                                             failed("a_autorun.ipynb", ten + timedelta(hours=1), 1)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", ten + timedelta(hours=1),
                                                 RunStatus.SUCCESS)]})
    assert notify_changes(site, NOW + timedelta(hours=1)) == []
    assert len(hook.requests) == 2

    # recovery: one resolution per channel, then the entry is forgotten
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten),
                                             run("a_autorun.ipynb", ten + timedelta(hours=2),
                                                 RunStatus.SUCCESS, 2)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", ten + timedelta(hours=2),
                                                 RunStatus.SUCCESS)]})
    sent = notify_changes(site, NOW + timedelta(hours=2))
    assert [(d.channel, d.action, d.ok) for d in sent] == [("slack", "resolve", True),
                                                          ("ntfy", "resolve", True)]
    resolved = by_path(hook)["slack"][1].json()["attachments"][0]
    assert resolved["title"] == "jupycron: a_autorun.ipynb recovered" and resolved["color"] == "good"
    assert state(site) == {}
    assert notify_changes(site, NOW + timedelta(hours=2, minutes=1)) == []
    assert len(hook.requests) == 4


def test_alert_after_failures_threshold(site: Settings, hook) -> None:
    site = replace(site, alert_after_failures=2)
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten)]})
    assert notify_changes(site, NOW) == []
    # an interrupted run neither counts nor breaks the streak
    write_history(site, {"a_autorun.ipynb": [
        failed("a_autorun.ipynb", ten - timedelta(hours=1)),
        run("a_autorun.ipynb", ten - timedelta(minutes=30), RunStatus.INTERRUPTED, 1),
        failed("a_autorun.ipynb", ten, 2)]})
    sent = notify_changes(site, NOW)
    assert {(d.channel, d.action) for d in sent} == {("slack", "fire"), ("ntfy", "fire")}
    assert "2 failed run(s) in a row" in by_path(hook)["ntfy"][0].text()


def test_channel_down_is_recorded_and_retried(site: Settings, hook) -> None:
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    hook.script(503)  # the first request (Slack) fails once
    sent = notify_changes(site, NOW)
    assert [(d.channel, d.ok) for d in sent] == [("slack", False), ("ntfy", True)]
    assert len(hook.requests) == 2   # one attempt only: no retry inside the call
    ch = state(site)["a_autorun.ipynb"]["failing"]["channels"]
    assert "503" in ch["slack"]["last_error"] and "secretpath" not in ch["slack"]["last_error"]
    assert told(ch["slack"]) == "nothing" and told(ch["ntfy"]) == "firing"
    sent = notify_changes(site, NOW + timedelta(minutes=1))
    assert [(d.channel, d.action, d.ok) for d in sent] == [("slack", "fire", True)]
    ch = state(site)["a_autorun.ipynb"]["failing"]["channels"]
    assert ch["slack"]["last_error"] is None and told(ch["slack"]) == "firing"


def test_unreachable_channel_is_skipped_for_the_rest_of_the_check(site: Settings, hook,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/services/x")
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten)],
                         "b_autorun.ipynb": [failed("b_autorun.ipynb", ten)]})
    sent = notify_changes(site, NOW)
    slack = [d for d in sent if d.channel == "slack"]
    assert [d.ok for d in slack] == [False, False]
    assert "could not deliver" in slack[0].error and slack[1].error.startswith("skipped:")
    assert [d.ok for d in sent if d.channel == "ntfy"] == [True, True]
    assert len(hook.requests) == 2


def test_missing_channel_setting_is_recorded(site: Settings, hook, monkeypatch) -> None:
    monkeypatch.delenv("OONI_SLACK_WEBHOOK_URL")
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    sent = notify_changes(replace(site, alert_channels="slack"), NOW)
    assert len(sent) == 1 and not sent[0].ok and "OONI_SLACK_WEBHOOK_URL" in sent[0].error
    assert "OONI_SLACK_WEBHOOK_URL" in state(site)["a_autorun.ipynb"]["failing"]["channels"]["slack"]["last_error"]


def test_late_then_on_time(site: Settings, hook) -> None:
    nine = NOW.replace(hour=9, minute=0)
    write_history(site, {"a_autorun.ipynb": [run("a_autorun.ipynb", nine, RunStatus.SUCCESS)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", NOW.replace(minute=0),
                                                 RunStatus.SUCCESS)]})
    # 10:05: the 10:00 slot is 5 min overdue, within late_grace_s (600 s)
    assert notify_changes(site, NOW.replace(minute=5)) == []
    sent = notify_changes(site, NOW)
    assert [(d.notebook, d.kind, d.action) for d in sent] == [
        ("a_autorun.ipynb", "late", "fire")] * 2
    ntfy = by_path(hook)["ntfy"][0]
    assert ntfy.header("Title") == "jupycron: a_autorun.ipynb is late"
    assert "2024-05-01 10:00 UTC slot (every 1 hour) passed 40 min ago" in ntfy.text()
    assert notify_changes(site, NOW + timedelta(minutes=5)) == []
    write_history(site, {"a_autorun.ipynb": [run("a_autorun.ipynb", NOW.replace(minute=0),
                                                 RunStatus.SUCCESS)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", NOW.replace(minute=0),
                                                 RunStatus.SUCCESS)]})
    sent = notify_changes(site, NOW + timedelta(minutes=6))
    assert [(d.kind, d.action) for d in sent] == [("late", "resolve")] * 2
    assert by_path(hook)["ntfy"][1].header("Title") == "jupycron: a_autorun.ipynb is on time again"


def test_late_counts_from_the_first_missed_slot(site: Settings, hook) -> None:
    """Served 08:00, missed 09:00: at 10:05 the 10:00 slot is within the grace period, but
    the notebook has been late since 09:10."""
    eight = NOW.replace(hour=8, minute=0)
    write_history(site, {"a_autorun.ipynb": [run("a_autorun.ipynb", eight, RunStatus.SUCCESS)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", NOW.replace(minute=0),
                                                 RunStatus.SUCCESS)]})
    sent = notify_changes(site, NOW.replace(minute=5))
    assert [(d.notebook, d.kind, d.action) for d in sent] == [("a_autorun.ipynb", "late", "fire")] * 2
    assert "2024-05-01 09:00 UTC slot" in by_path(hook)["ntfy"][0].text()


def test_removed_or_disabled_notebook_resolves(site: Settings, hook, jc) -> None:
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten)],
                         "b_autorun.ipynb": [failed("b_autorun.ipynb", ten)]})
    assert len(notify_changes(site, NOW)) == 4
    (site.notebooks / "a_autorun.ipynb").unlink()
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "b_autorun.ipynb",
                     line='{"every": "1 hour", "enabled": false}')
    sent = notify_changes(site, NOW + timedelta(minutes=1))
    assert sorted((d.notebook, d.action) for d in sent) == [
        ("a_autorun.ipynb", "resolve"), ("a_autorun.ipynb", "resolve"),
        ("b_autorun.ipynb", "resolve"), ("b_autorun.ipynb", "resolve")]
    titles = {r.header("Title") for r in by_path(hook)["ntfy"][2:]}
    assert titles == {"jupycron: a_autorun.ipynb was removed", "jupycron: b_autorun.ipynb recovered"}
    assert state(site) == {}


def test_channel_configuration(site: Settings, hook) -> None:
    with pytest.raises(ConfigError, match="unknown channel.*pager"):
        notify_changes(replace(site, alert_channels="slack,pager"), NOW)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    assert notify_changes(replace(site, alert_channels=""), NOW) == []
    assert SqliteRunStore(site.output_dir).alert_state("run_alerts") is None


def test_busy_lock_skips_the_check(site: Settings, hook, monkeypatch) -> None:
    monkeypatch.setattr(run_alerts, "LOCK_WAIT_S", 0.2)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    lock = alert_lock_file(site.output_dir)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert notify_changes(site, NOW) == []
    finally:
        os.close(fd)
    assert len(notify_changes(site, NOW)) == 2


def test_alerts_command(site: Settings, hook, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'notebooks = "{site.notebooks}"\noutput = "{site.output_dir}"\n'
                   'alert_channels = "ntfy"\nlate_grace_s = 3e8\n')  # the history is old (< 9 years)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    r = CliRunner().invoke(alerts_command, ["--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ["ntfy\tfire\tfailing\ta_autorun.ipynb\tok"]


def test_real_alertmanager_receives_failure_then_resolution(site: Settings, tmp_path: Path,
                                                            monkeypatch) -> None:
    now = datetime.now(UTC)
    slot = now.replace(minute=0, second=0, microsecond=0)
    site = replace(site, alert_channels="alertmanager", late_grace_s=1e6)  # failing only
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", slot)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", slot, RunStatus.SUCCESS)]})
    with alertmanager_server(tmp_path) as am:
        monkeypatch.setenv("OONI_ALERTMANAGER_URL", am)

        def active() -> list[dict]:
            r = httpx.get(am + "/api/v2/alerts", params={"active": "true"}, timeout=5)
            r.raise_for_status()
            return [a for a in r.json() if a["labels"].get("alertname") == "JupycronRunFailing"]

        sent = notify_changes(site, now)
        assert [(d.channel, d.action, d.ok) for d in sent] == [("alertmanager", "fire", True)]
        alerts = active()
        assert len(alerts) == 1
        a = alerts[0]
        assert a["labels"]["notebook"] == "a_autorun.ipynb" and a["labels"]["job"] == "jupycron"
        assert a["annotations"]["summary"] == "jupycron: a_autorun.ipynb is failing (error)"
        assert a["annotations"]["output"] == "https://mon.example/jupycron/a_autorun.html"
        ends = datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00"))
        assert ends - now > timedelta(hours=3)
        # still failing near expiry: re-fired (refreshes endsAt), not re-announced elsewhere
        sent = notify_changes(site, now + run_alerts.ALERTMANAGER_REFIRE)
        assert [(d.action, d.ok) for d in sent] == [("refresh", True)]
        assert notify_changes(site, now + run_alerts.ALERTMANAGER_REFIRE) == []

        write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", slot),
                                                 run("a_autorun.ipynb", slot, RunStatus.SUCCESS, 1)],
                             "b_autorun.ipynb": [run("b_autorun.ipynb", slot, RunStatus.SUCCESS)]})
        sent = notify_changes(site, datetime.now(UTC))
        assert [(d.action, d.ok) for d in sent] == [("resolve", True)]
        deadline = time.monotonic() + 20
        while active() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert active() == []


def test_dashboard_server_checks_alerts_periodically(site: Settings, hook, jc) -> None:
    """``jupycron serve`` notices changes even when no scheduler runs (a real server thread)."""
    from jupycron.web import start_in_thread

    site = replace(site, late_grace_s=1e12)  # the fixture history is old: failing only
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    handle = start_in_thread(site, "127.0.0.1", 0, alerts=True, alert_interval_s=0.1)
    try:
        jc.wait_until(lambda: len(hook.requests) == 2, what="the server's alert check")
    finally:
        handle.stop()
    assert {r.path.split("/")[1] for r in hook.requests} == {"services", "jupycron-topic"}


def test_scheduler_view_fires_and_recovers_once_without_rescanning(site: Settings, hook,
                                                                   monkeypatch) -> None:
    """The scheduler checks after every run from its own scan and cached history view: a
    run recorded through that view fires once and recovers once, with no scan and no new
    History per check."""
    ten = NOW.replace(minute=0)
    rel = "a_autorun.ipynb"
    write_history(site, {rel: [run(rel, ten, RunStatus.SUCCESS)],
                         "b_autorun.ipynb": [run("b_autorun.ipynb", ten, RunStatus.SUCCESS)]})
    from jupycron import status

    notebooks = status.scan(site.notebooks, site.output_dir)
    view = SqliteRunStore(site.output_dir, keep=site.history_runs)
    monkeypatch.setattr(status, "scan", lambda *a, **k: pytest.fail("scanned again"))
    monkeypatch.setattr(status, "open_store", lambda *a, **k: pytest.fail("ledger reopened"))

    def check(at: datetime) -> list[tuple[str, str, str, str]]:
        return [(d.notebook, d.kind, d.channel, d.action) for d in
                notify_changes(site, at, history=view, notebooks=notebooks)]

    assert check(NOW) == []
    view.record(failed(rel, ten, n=1))
    assert check(NOW) == [(rel, "failing", "slack", "fire"), (rel, "failing", "ntfy", "fire")]
    assert check(NOW + timedelta(minutes=1)) == []
    view.record(run(rel, ten + timedelta(hours=1), RunStatus.SUCCESS, n=1))
    view.record(run("b_autorun.ipynb", ten + timedelta(hours=1), RunStatus.SUCCESS, n=1))
    later = NOW + timedelta(hours=1)
    assert check(later) == [(rel, "failing", "slack", "resolve"),
                            (rel, "failing", "ntfy", "resolve")]
    assert check(later) == [] and len(hook.requests) == 4


# --- a trickling endpoint, SIGTERM and the run workers (issue 12 #4) ----------------------------

def test_a_trickling_channel_costs_one_bounded_delivery(site: Settings, monkeypatch) -> None:
    """An endpoint sending one byte every 0.3 s (never a per-read timeout) is cut off at
    SEND_TIMEOUT_S, skipped for the rest of the check, and the message is kept for the next
    check. Before, the check (``jupycron alerts``, a tick) never ended."""
    monkeypatch.setattr(run_alerts, "SEND_TIMEOUT_S", 1.0)
    site = replace(site, alert_channels="slack", late_grace_s=1e12)
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten)],
                         "b_autorun.ipynb": [failed("b_autorun.ipynb", ten)]})
    with trickling_server(every=0.3) as server:
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", server.url("/services/T0/B0/secretpath"))
        result: list = []
        t = threading.Thread(target=lambda: result.append(notify_changes(site, NOW)), daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "the alert check did not end"
    sent = result[0]
    assert [(d.notebook, d.ok) for d in sent] == [("a_autorun.ipynb", False),
                                                   ("b_autorun.ipynb", False)]
    assert "1 s deadline" in (sent[0].error or "") and server.connections == 1
    assert told(state(site)["a_autorun.ipynb"]["failing"]["channels"]["slack"]) == "nothing"


def test_a_cancelled_check_defers_what_it_did_not_send(site: Settings, hook) -> None:
    site = replace(site, late_grace_s=1e12)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    stop = threading.Event()
    stop.set()
    sent = notify_changes(site, NOW, cancel=stop)
    assert {d.ok for d in sent} == {False} and "stopping" in (sent[0].error or "")
    assert hook.requests == []
    assert [d.ok for d in notify_changes(site, NOW)] == [True, True]  # sent at the next check


def test_the_alerts_command_stops_on_sigterm(site: Settings, tmp_path: Path) -> None:
    """``jupycron alerts`` against a trickling endpoint ends on SIGTERM, recording the
    delivery as cancelled (kept for the next check)."""
    import signal
    import subprocess
    import sys

    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    with trickling_server(every=0.3) as server:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'notebooks = "{site.notebooks}"\noutput = "{site.output_dir}"\n'
                       'alert_channels = "slack"\nlate_grace_s = 3e8\n')
        env = {**os.environ, "OONI_SLACK_WEBHOOK_URL": server.url("/services/T0/B0/x")}
        proc = subprocess.Popen([sys.executable, "-m", "jupycron", "--config", str(cfg), "alerts"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            poll_until(lambda: server.requests, timeout=30)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "cancelled" in out, (out, err)
    assert "cancelled" in state(site)["a_autorun.ipynb"]["failing"]["channels"]["slack"]["last_error"]


# --- findings routed like run states (issue 14 §1) ----------------------------------------------

def found(rel: str, slot: datetime, level: str, summary: str, n: int = 0, **kw) -> Run:
    return run(rel, slot, RunStatus.SUCCESS, n,
               finding=Finding(FindingLevel(level), summary, kw.pop("detail", None)), **kw)


def test_finding_level_changes_are_told_once_each(site: Settings, hook, jc) -> None:
    """A notebook with ``"AlertOnFinding": ["slack"]``: ok -> alarm fires on Slack only,
    alarm -> warning is told as a change, warning -> ok resolves; a notebook without the key
    (alert_on_finding off) is not told about its findings."""
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "a_autorun.ipynb",
                     line='{"every": "1 hour", "AlertOnFinding": ["slack"]}')
    site = replace(site, late_grace_s=1e12)
    ten = NOW.replace(minute=0)
    a, b = "a_autorun.ipynb", "b_autorun.ipynb"
    history = {a: [found(a, ten - timedelta(hours=2), "ok", "all quiet")],
               b: [found(b, ten, "alarm", "not routed")]}
    write_history(site, history)
    assert notify_changes(site, NOW) == []

    history[a].append(found(a, ten - timedelta(hours=1), "alarm", "IR: measurements down 40 %", 1,
                            detail=[{"country": "IR", "drop": "40 %"}]))
    write_history(site, history)
    sent = notify_changes(site, NOW)
    assert [(d.notebook, d.kind, d.channel, d.action, d.ok) for d in sent] == [
        (a, "finding", "slack", "fire", True)]
    att = by_path(hook)["slack"][0].json()["attachments"][0]
    assert att["title"] == "jupycron: a_autorun.ipynb reports alarm: IR: measurements down 40 %"
    assert "country: IR, drop: 40 %" in att["text"] and att["color"] == "danger"
    assert "<https://mon.example/jupycron/a_autorun.html|output>" in att["text"]
    assert notify_changes(site, NOW + timedelta(minutes=1)) == []

    # a failed run without a finding keeps the episode as it is (failing is its own alert)
    history[a].append(failed(a, ten, 2))
    write_history(site, history)
    assert [(d.kind, d.channel) for d in notify_changes(site, NOW + timedelta(minutes=2))] == [
        ("failing", "slack"), ("failing", "ntfy")]
    # the run-state message names the latest finding too
    assert "latest finding: alarm: IR: measurements down 40 %" in by_path(hook)["ntfy"][-1].text()

    history[a].append(found(a, ten + timedelta(hours=1), "warning", "IR: down 15 %", 3))
    write_history(site, history)
    sent = notify_changes(site, NOW + timedelta(hours=1))
    assert {(d.kind, d.channel, d.action) for d in sent} == {
        ("finding", "slack", "fire"), ("failing", "slack", "resolve"), ("failing", "ntfy", "resolve")}
    changed = [r.json()["attachments"][0] for r in by_path(hook)["slack"]
               if "reports" in r.json()["attachments"][0]["title"]][-1]
    assert changed["title"] == "jupycron: a_autorun.ipynb reports warning: IR: down 15 %"
    assert changed["text"].startswith("(was alarm) finding warning") and changed["color"] == "warning"

    history[a].append(found(a, ten + timedelta(hours=2), "ok", "all quiet", 4))
    write_history(site, history)
    sent = notify_changes(site, NOW + timedelta(hours=2))
    assert [(d.kind, d.channel, d.action, d.ok) for d in sent] == [
        ("finding", "slack", "resolve", True)]
    resolved = by_path(hook)["slack"][-1].json()["attachments"][0]
    assert resolved["title"] == "jupycron: a_autorun.ipynb finding is ok again"
    assert resolved["color"] == "good"
    assert state(site) == {}
    assert notify_changes(site, NOW + timedelta(hours=2, minutes=1)) == []
    assert not any("not routed" in r.text() for r in hook.requests)


def test_a_finding_channel_not_configured_is_said(site: Settings, hook, jc, caplog) -> None:
    """Found by using the product: a notebook asking for its findings on a channel the host
    does not configure was told nowhere, silently. The check now warns (once), and the
    notebook's page says where its findings go and what does not reach a channel."""
    from jupycron import discovery
    from jupycron.run_alerts import describe_finding_routing, finding_routing

    site = replace(site, alert_channels="slack", late_grace_s=1e12)
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "a_autorun.ipynb",
                     line='{"every": "1 hour", "AlertOnFinding": ["ntfy", "slack"]}')
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "b_autorun.ipynb",
                     line='{"every": "1 hour", "AlertOnFinding": ["ntfy"]}')
    a = discovery.read_notebook(site.notebooks / "a_autorun.ipynb", "a_autorun.ipynb")
    b = discovery.read_notebook(site.notebooks / "b_autorun.ipynb", "b_autorun.ipynb")
    assert finding_routing(site, a, ["slack"]) == (("slack",), ("ntfy",))
    assert describe_finding_routing(site, b) == (
        "not sent — NOT SENT to ntfy: not in alert_channels (slack)")
    assert describe_finding_routing(replace(site, alert_channels=""), None) == "not sent"
    assert describe_finding_routing(replace(site, alert_channels="", alert_on_finding=True),
                                    None) == "not sent — NOT SENT to any channel: not in " \
                                             "alert_channels (empty)"
    ten = NOW.replace(minute=0)
    write_history(site, {"b_autorun.ipynb": [found("b_autorun.ipynb", ten, "ok", "quiet"),
                                            found("b_autorun.ipynb", ten + timedelta(minutes=1),
                                                  "alarm", "down", 1)]})
    with caplog.at_level(logging.WARNING, logger="jupycron.run_alerts"):
        assert [d.kind for d in notify_changes(site, NOW + timedelta(minutes=5))] == []
        notify_changes(site, NOW + timedelta(minutes=6))
    told = [r.getMessage() for r in caplog.records if "b_autorun.ipynb asks" in r.getMessage()]
    assert told == ["b_autorun.ipynb asks for its findings on ntfy, not in alert_channels "
                    "(slack): not sent there"]


def test_slack_shows_a_hostile_finding_as_written(site: Settings, hook, jc) -> None:
    """Found by using the product: jupycron's texts went to Slack as mrkdwn, so a finding
    summary taken from data could ping a channel (``<!channel>``), turn into a link or lose
    a ``&``. Slack now gets them escaped (its three characters); ntfy gets them as they are."""
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "a_autorun.ipynb",
                     line='{"every": "1 hour", "AlertOnFinding": true}')
    site = replace(site, late_grace_s=1e12)
    ten = NOW.replace(minute=0)
    a = "a_autorun.ipynb"
    hostile = "<!channel> down: <https://evil.example|login> & https://x.org/?a=1&b=2"
    history = {a: [found(a, ten - timedelta(hours=2), "ok", "all quiet"),
                   found(a, ten - timedelta(hours=1), "alarm", hostile, 1,
                         detail=[{"url": "<b>&amp;</b>"}])]}
    write_history(site, history)
    sent = notify_changes(site, NOW)
    assert {d.channel for d in sent} == {"slack", "ntfy"}
    att = by_path(hook)["slack"][-1].json()["attachments"][0]
    escaped = ("&lt;!channel&gt; down: &lt;https://evil.example|login&gt; &amp; "
               "https://x.org/?a=1&amp;b=2")
    assert escaped in att["title"] and "<!channel>" not in att["title"]
    assert "<" not in att["text"].replace("<https://mon.example/jupycron/a_autorun.html|output>", "")
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in att["text"]
    assert hostile in att["fallback"]  # the plain fallback shows it as written
    assert hostile in by_path(hook)["ntfy"][-1].text()


def test_alert_on_finding_setting_and_the_notebook_override(site: Settings, hook, jc) -> None:
    """The setting routes every notebook's findings to every channel; a notebook's
    ``"AlertOnFinding": false`` opts out."""
    jc.copy_notebook("ok_autorun.ipynb", site.notebooks, "b_autorun.ipynb",
                     line='{"every": "1 hour", "AlertOnFinding": false}')
    site = replace(site, late_grace_s=1e12, alert_on_finding=True)
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [found("a_autorun.ipynb", ten, "no_data", "no rows")],
                         "b_autorun.ipynb": [found("b_autorun.ipynb", ten, "alarm", "opted out")]})
    sent = notify_changes(site, NOW)
    assert [(d.notebook, d.kind, d.channel) for d in sent] == [
        ("a_autorun.ipynb", "finding", "slack"), ("a_autorun.ipynb", "finding", "ntfy")]
    ntfy = by_path(hook)["ntfy"][0]
    assert ntfy.header("Title") == "jupycron: a_autorun.ipynb reports no data: no rows"


def test_senders_are_injected(site: Settings, monkeypatch) -> None:
    """run_alerts delivers through whatever senders it is given (no ooniutils involved);
    with none installed, the channel's delivery fails with a clear error and is kept."""
    from jupycron.exceptions import DeliveryError
    from jupycron.senders import AlertMessage

    site = replace(site, alert_channels="slack", late_grace_s=1e12)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0))]})
    senders.install({})
    (d,) = notify_changes(site, NOW)
    assert not d.ok and "no sender for channel 'slack' is installed" in (d.error or "")

    got: list[tuple[AlertMessage, float]] = []

    class Fake:
        def send(self, message: AlertMessage, *, timeout_s: float, cancel) -> None:
            got.append((message, timeout_s))

    (d,) = notify_changes(site, NOW + timedelta(minutes=1), senders={"slack": Fake})
    assert d.ok and d.action == "fire"
    message, timeout_s = got[0]
    assert message.name == "JupycronRunFailing" and not message.resolved
    assert message.link == "https://mon.example/jupycron/a_autorun.html"
    assert message.labels["notebook"] == "a_autorun.ipynb" and timeout_s == run_alerts.SEND_TIMEOUT_S

    class Refusing:
        def send(self, message: AlertMessage, *, timeout_s: float, cancel) -> None:
            raise DeliveryError("403 from the webhook", "slack", permanent=True)

    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", NOW.replace(minute=0)),
                                             run("a_autorun.ipynb", NOW.replace(minute=0) + timedelta(hours=1),
                                                 RunStatus.SUCCESS, 1)]})
    (d,) = notify_changes(site, NOW + timedelta(hours=1), senders={"slack": Refusing})
    assert (d.action, d.ok, d.error) == ("resolve", False, "403 from the webhook")
    (d,) = notify_changes(site, NOW + timedelta(hours=1, minutes=1), senders={"slack": Fake})
    assert (d.action, d.ok) == ("resolve", True) and got[-1][0].resolved


def test_a_version_1_state_file_is_carried_over(site: Settings, hook) -> None:
    """An alert state written by the previous version (told "firing") is not told again,
    and its recovery is told."""
    ten = NOW.replace(minute=0)
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten)]})
    site = replace(site, late_grace_s=1e12)
    store = SqliteRunStore(site.output_dir)  # as the importer leaves an old .alert-state.json
    store.save_alert_state("run_alerts", {"version": 1, "notebooks": {
        "a_autorun.ipynb": {"failing": {
            "active": True, "since": "2024-05-01T10:01:00+00:00",
            "title": "jupycron: a_autorun.ipynb is failing (error)",
            "channels": {"slack": {"told": "firing", "at": "2024-05-01T10:01:00+00:00"},
                         "ntfy": {"told": "resolved", "at": None}}}}}})
    store.close()
    sent = notify_changes(site, NOW)
    assert [(d.channel, d.action) for d in sent] == [("ntfy", "fire")]
    write_history(site, {"a_autorun.ipynb": [failed("a_autorun.ipynb", ten),
                                             run("a_autorun.ipynb", ten + timedelta(hours=1),
                                                 RunStatus.SUCCESS, 1)]})
    sent = notify_changes(site, NOW + timedelta(hours=1))
    assert [(d.channel, d.action) for d in sent] == [("slack", "resolve"), ("ntfy", "resolve")]
    store = SqliteRunStore(site.output_dir)
    assert load_state(store) == store.alert_state("run_alerts") == {"version": 2, "notebooks": {}}
    store.close()


def test_real_alertmanager_hears_a_finding_alarm_then_ok(site: Settings, tmp_path: Path,
                                                        monkeypatch) -> None:
    """A finding at alarm is a ``JupycronFinding`` alert in a real Alertmanager (its level as
    an annotation, the labels those of the notebook); back to ok, it is resolved."""
    now = datetime.now(UTC)
    slot = now.replace(minute=0, second=0, microsecond=0)
    site = replace(site, alert_channels="alertmanager", late_grace_s=1e6, alert_on_finding=True)
    rel = "a_autorun.ipynb"
    write_history(site, {rel: [found(rel, slot, "alarm", "IR: measurements down 40 %")],
                         "b_autorun.ipynb": [found("b_autorun.ipynb", slot, "ok", "fine")]})
    with alertmanager_server(tmp_path) as am:
        monkeypatch.setenv("OONI_ALERTMANAGER_URL", am)

        def active() -> list[dict]:
            r = httpx.get(am + "/api/v2/alerts", params={"active": "true"}, timeout=5)
            r.raise_for_status()
            return [a for a in r.json() if a["labels"].get("alertname") == "JupycronFinding"]

        sent = notify_changes(site, now)
        assert [(d.notebook, d.action, d.ok) for d in sent] == [(rel, "fire", True)]
        (a,) = active()
        assert a["labels"]["notebook"] == rel and a["annotations"]["level"] == "alarm"
        assert a["annotations"]["summary"] == f"jupycron: {rel} reports alarm: IR: measurements down 40 %"
        write_history(site, {rel: [found(rel, slot, "alarm", "x"), found(rel, slot + timedelta(minutes=1), "ok", "back", 1)],
                             "b_autorun.ipynb": [found("b_autorun.ipynb", slot, "ok", "fine")]})
        sent = notify_changes(site, datetime.now(UTC))
        assert [(d.notebook, d.action, d.ok) for d in sent] == [(rel, "resolve", True)]
        deadline = time.monotonic() + 20
        while active() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert active() == []


def test_the_status_and_alert_modules_load_no_domain_library() -> None:
    """The status model, the alerts and their seam import neither ooniutils nor its data
    stack: the transports come in through jupycron.senders (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import jupycron.run_alerts, jupycron.status, jupycron.episodes, jupycron.senders\n"
            "import jupycron.summary, jupycron.metrics, jupycron.status_icons, jupycron.cli_common\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.split('.')[0] in ('ooniutils', 'pandas', 'chdb', 'altair')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
