"""ooniutils.alarm_notify against a local recording server: Alertmanager on every run,
Slack/ntfy once per episode plus one "recovered" message, per-channel state, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ooniutils.alarm_notify import (
    Episode,
    notify_episodes,
    send_decline_alerts,
    send_flow_alerts,
    send_helper_alerts,
    send_tls_alerts,
)
from ooniutils.exceptions import AlertError, AnalysisError
from ooniutils.tls import cert_alert_state
from tests.support.fake_webhooks import fake_webhook_server

T0 = datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
H = timedelta(hours=1)
FLOW_HTML = "autorun_incoming_measurements_prediction_alarming.html"


@pytest.fixture
def hook(monkeypatch, tmp_path):
    monkeypatch.setenv("OONI_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("OONI_HTTP_RETRIES", "1")
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "state"))
    with fake_webhook_server() as server:
        monkeypatch.setenv("OONI_ALERTMANAGER_URL", server.base_url)
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", server.url("/slack/secret"))
        monkeypatch.setenv("OONI_OUTPUT_BASE_URL", "https://monitoring.example/out/")
        yield server


def _split(requests):
    am = [r for r in requests if r.path == "/api/v2/alerts"]
    slack = [r.json()["attachments"][0] for r in requests if r.path == "/slack/secret"]
    ntfy = [r for r in requests if r.path == "/ntfy"]
    return am, slack, ntfy


def flow_current(series=("ooniprobe-android",), end="2024-05-01 09:00") -> pd.DataFrame:
    return pd.DataFrame({"series": list(series), "start": pd.Timestamp("2024-05-01 06:00"),
                         "end": pd.Timestamp(end), "actual": 500.0, "expected": 1000.0,
                         "severity": 0.5})


def test_flow_episode_is_announced_once_then_recovered_once(hook, tmp_path):
    first = send_flow_alerts(flow_current(), "probe type", FLOW_HTML, "IncomingMeasurementsDrop",
                             send=True, now=T0)
    first.raise_for_errors()
    am, slack, _ = _split(hook.requests)
    assert len(am) == 1 and len(slack) == 1
    alert = am[0].json()[0]
    assert alert["labels"] == {"alertname": "IncomingMeasurementsDrop", "instance": "ooniprobe-android",
                               "job": "jupycron"}
    assert alert["annotations"]["link"] == "https://monitoring.example/out/" + FLOW_HTML
    assert alert["annotations"]["expected"] == "1000"
    assert slack[0]["title"] == "Measurement drop" and "ooniprobe-android" in slack[0]["text"]
    assert slack[0]["color"] == "danger"
    assert "alert: probe type ooniprobe-android: 500 measurements" in str(first)
    assert first.channel("slack").announced == ["IncomingMeasurementsDrop|ooniprobe-android"]

    # the next two hours: the alarm is still current; Alertmanager is refreshed, Slack is quiet
    for i in (1, 2):
        rep = send_flow_alerts(flow_current(end="2024-05-01 10:00"), "probe type", FLOW_HTML,
                               "IncomingMeasurementsDrop", send=True, now=T0 + i * H)
        assert rep.channel("slack").ongoing == ["IncomingMeasurementsDrop|ooniprobe-android"]
        assert "1 already announced (not repeated)" in str(rep)
    am, slack, _ = _split(hook.requests)
    assert len(am) == 3 and len(slack) == 1

    # it drops out of the window: one "recovered" message, nothing to Alertmanager
    empty = flow_current().iloc[:0]
    rep = send_flow_alerts(empty, "probe type", FLOW_HTML, "IncomingMeasurementsDrop", send=True,
                           now=T0 + 3 * H)
    assert rep.channel("slack").resolved == ["IncomingMeasurementsDrop|ooniprobe-android"]
    send_flow_alerts(empty, "probe type", FLOW_HTML, "IncomingMeasurementsDrop", send=True,
                     now=T0 + 4 * H)
    am, slack, _ = _split(hook.requests)
    assert len(am) == 3 and len(slack) == 2
    assert slack[1]["title"] == "Measurements recovered" and slack[1]["color"] == "good"
    assert "probe type ooniprobe-android is back to the expected volume (announced 2024-05-01 10:05 UTC)" \
        in slack[1]["text"]
    state = tmp_path / "state" / "autorun_incoming_measurements_prediction_alarming.slack.json"
    assert json.loads(state.read_text())["sent"]["IncomingMeasurementsDrop|ooniprobe-android"]["open"] is False


def test_not_under_autorun_nothing_is_sent_or_written(hook, tmp_path):
    rep = send_flow_alerts(flow_current(), "probe type", FLOW_HTML, "IncomingMeasurementsDrop",
                           send=False, now=T0)
    assert hook.requests == []
    assert "not running under jupycron (AUTORUN unset): alerts not sent" in str(rep)
    assert not (tmp_path / "state").exists()


def test_unconfigured_channels_are_noted_and_nothing_is_written(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "state"))
    rep = send_flow_alerts(flow_current(), "probe type", FLOW_HTML, "IncomingMeasurementsDrop",
                           send=True, now=T0)
    text = str(rep)
    assert "not sent to Alertmanager: OONI_ALERTMANAGER_URL not configured" in text
    assert "not sent to slack: OONI_SLACK_WEBHOOK_URL not configured" in text
    assert rep.errors == [] and not (tmp_path / "state").exists()


def test_failed_send_is_retried_next_run_and_channels_are_independent(hook, monkeypatch):
    monkeypatch.setenv("OONI_NTFY_URL", hook.url("/ntfy"))
    episodes = [Episode("disk|/var", "/var is 95% full", subject="/var")]
    hook.script(400)  # Slack (tried before ntfy) refuses once: a permanent error
    rep = notify_episodes("disk_alarm", episodes, title="Disk almost full", send=True, now=T0)
    assert isinstance(rep.channel("slack").error, AlertError)
    assert rep.channel("ntfy").announced == ["disk|/var"]
    with pytest.raises(AlertError):
        rep.raise_for_errors()
    rep = notify_episodes("disk_alarm", episodes, title="Disk almost full", send=True, now=T0 + H)
    rep.raise_for_errors()
    assert rep.channel("slack").announced == ["disk|/var"] and rep.channel("ntfy").ongoing == ["disk|/var"]
    _, slack, ntfy = _split(hook.requests)
    assert len(slack) == 2 and len(ntfy) == 1  # the refused one, then the retry
    assert ntfy[0].header("Title") == "Disk almost full" and ntfy[0].text() == "• /var is 95% full"


def test_helper_recovery_waits_for_two_quiet_runs(hook):
    current = pd.DataFrame([{"helper": "3.th.ooni.org", "alarm": True, "recent_rate": 0.97,
                             "recent_total": 400, "baseline_rate": 0.02, "p_value": 1e-30,
                             "rest_rate": 0.96, "top_cc": "IT"},
                            {"helper": "0.th.ooni.org", "alarm": False, "recent_rate": 0.02,
                             "recent_total": 400, "baseline_rate": 0.02, "p_value": 0.5,
                             "rest_rate": 0.02, "top_cc": "US"}])
    inventory = pd.DataFrame([{"host": "3.th.ooni.org", "provider": "Digital Ocean",
                               "region": "ams3", "state": "live"}])
    html = "autorun_test_helper_failure_rate_alarm.html"
    send_helper_alerts(current, inventory, html, send=True, now=T0).raise_for_errors()
    quiet = current.assign(alarm=False)
    r1 = send_helper_alerts(quiet, inventory, html, send=True, now=T0 + H - timedelta(minutes=3))
    assert r1.channel("slack").waiting == ["TestHelperFailing|3.th.ooni.org"]
    send_helper_alerts(current, inventory, html, send=True, now=T0 + 2 * H)  # flaps back: quiet
    send_helper_alerts(quiet, inventory, html, send=True, now=T0 + 3 * H)
    r4 = send_helper_alerts(quiet, inventory, html, send=True, now=T0 + 4 * H - timedelta(minutes=4))
    assert r4.channel("slack").resolved == ["TestHelperFailing|3.th.ooni.org"]
    am, slack, _ = _split(hook.requests)
    assert len(am) == 2  # the two alarmed runs
    assert [s["title"] for s in slack] == ["Test helper failing for all probes", "Test helper recovered"]
    assert "3.th.ooni.org (Digital Ocean ams3, live): 97.0% of 400" in slack[0]["text"]
    assert "0.th.ooni.org" not in slack[0]["text"]


def _cert(port, status, days_left, error=None):
    not_after = None if status == "unreachable" else pd.Timestamp(T0) + pd.Timedelta(days=days_left)
    return {"host": "127.0.0.1", "port": port, "status": "error" if status == "unreachable" else status,
            "days_left": days_left, "not_after": not_after, "error": error}


def test_tls_announces_window_entry_reminders_expiry_and_fix_not_daily(hook):
    def run(day, rows, offline=()):
        certs = pd.DataFrame(rows)
        certs["not_after"] = pd.to_datetime(certs["not_after"], utc=True)
        rep = send_tls_alerts(certs, "autorun_tls_cert_expiry.html", send=True, now=T0 + day * 24 * H,
                              expected_offline=offline)
        rep.raise_for_errors()
        return rep

    days = {0: 20, 1: 19, 2: 18, 14: 6, 15: 5, 20: 0.5, 21: -1, 22: -2}
    for day, left in days.items():
        status = "expired" if left < 0 else "expiring"
        run(day, [_cert(443, status, int(left)), _cert(8443, "ok", 90)])
    # marked as expected offline: unknown this run, kept as it is (neither alerted nor fixed)
    run(23, [_cert(443, "unreachable", None, "refused"), _cert(8443, "ok", 90)], offline="127.0.0.1:443")
    run(24, [_cert(443, "ok", 89), _cert(8443, "ok", 90)])
    run(25, [_cert(443, "ok", 88), _cert(8443, "ok", 90)])
    am, slack, _ = _split(hook.requests)
    assert len(am) == len(days)  # every run with a problem refreshes Alertmanager
    assert am[-1].json()[0]["labels"]["severity"] == "critical"
    texts = [(s["title"], s["color"], s["text"].splitlines()[0]) for s in slack]
    assert [t[0] for t in texts] == ["TLS certificates need attention"] * 4 + ["TLS certificates fixed"]
    assert "expires in 20 days" in texts[0][2] and "expires in 6 days" in texts[1][2]
    assert "expires in 0 days" in texts[2][2] and "EXPIRED" in texts[3][2] and texts[3][1] == "danger"
    assert texts[4] == ("TLS certificates fixed", "good",
                        "• 127.0.0.1:443 certificate is valid again (announced 2024-05-01 10:05 UTC)")
    assert not any(":8443" in s["text"] for s in slack)


def test_cert_alert_state():
    row = pd.Series({"status": "expiring", "days_left": 12})
    assert cert_alert_state(row) == "expiring"
    assert cert_alert_state(row.copy().replace({12: 7})) == "expiring<=7d"
    assert cert_alert_state(pd.Series({"status": "expiring", "days_left": 0})) == "expiring<=1d"
    assert cert_alert_state(pd.Series({"status": "expired", "days_left": -3})) == "expired"
    assert cert_alert_state(pd.Series({"status": "error", "days_left": 40})) == "invalid"


def test_duplicate_keys_are_refused():
    with pytest.raises(ValueError, match="repeated"):
        notify_episodes("x", [Episode("k", "a"), Episode("k", "b")], title="t", send=False)
    with pytest.raises(ValueError, match="summary"):
        Episode("k", "")


def test_decline_alerts_once_and_on_an_empty_table(hook):
    html = "autorun_incoming_measurements_prediction_long_term_alarming.html"
    declining = pd.DataFrame([{"series": "ooniprobe-desktop", "decline": 0.4, "level": 12000.0,
                               "p_value": 1e-5, "alarm": True}])
    for day in range(2):
        send_decline_alerts(declining, 8, html, send=True, now=T0 + day * 24 * H).raise_for_errors()
    # an empty table may have lost its columns (boolean indexing of an empty frame)
    rep = send_decline_alerts(pd.DataFrame(), 8, html, send=True, now=T0 + 48 * H)
    assert rep.active == [] and rep.channel("slack").resolved == ["IncomingMeasurementsDecline|ooniprobe-desktop"]
    am, slack, _ = _split(hook.requests)
    assert len(am) == 2 and am[0].json()[0]["labels"]["alertname"] == "IncomingMeasurementsDecline"
    assert [s["title"] for s in slack] == ["Measurement decline", "Measurement decline over"]
    assert "declining 40% over 8 weeks" in slack[0]["text"] and slack[0]["color"] == "warning"


def test_total_outage_is_announced_first_as_critical(hook):
    from ooniutils.analyses.flow import TotalOutage

    outage = TotalOutage(since=pd.Timestamp("2024-05-01 06:00"), until=pd.Timestamp("2024-05-01 10:00"),
                         last_seen=pd.Timestamp("2024-05-01 05:00"), expected=12000.0)
    rep = send_flow_alerts(flow_current(), "probe type", FLOW_HTML, "IncomingMeasurementsDrop",
                           send=True, now=T0, outage=outage)
    rep.raise_for_errors()
    assert str(rep).startswith("alert: *TOTAL OUTAGE: no measurements at all since 2024-05-01 06:00 UTC")
    am, slack, _ = _split(hook.requests)
    fired = [a for r in am for a in r.json()]
    critical = [a for a in fired if a["labels"]["alertname"] == "IncomingMeasurementsTotalOutage"]
    assert len(critical) == 1 and critical[0]["labels"]["severity"] == "critical"
    assert critical[0]["labels"]["instance"] == "all"
    assert len(slack) == 1 and slack[0]["title"] == "Measurement outage (2)"
    assert slack[0]["text"].index("TOTAL OUTAGE") < slack[0]["text"].index("ooniprobe-android")
    # the daily notebook sends the same episode
    rep = send_decline_alerts(pd.DataFrame(), 8, "lt.html", send=True, now=T0, outage=outage)
    assert [e.key for e in rep.active] == ["IncomingMeasurementsTotalOutage|all"]


def test_tls_unreachable_host_alerts_with_the_reason_unless_expected_offline(hook):
    def run(day, rows, offline=()):
        certs = pd.DataFrame(rows)
        certs["not_after"] = pd.to_datetime(certs["not_after"], utc=True)
        rep = send_tls_alerts(certs, "autorun_tls_cert_expiry.html", send=True,
                              now=T0 + day * 24 * H, expected_offline=offline)
        rep.raise_for_errors()
        return rep

    down = [_cert(443, "unreachable", None, "cannot fetch certificate from 127.0.0.1:443: refused"),
            _cert(8443, "unreachable", None, "cannot fetch certificate from 127.0.0.1:8443: timed out")]
    first = run(0, down, offline="127.0.0.1:8443")
    assert [e.key for e in first.active] == ["TLSCertExpiry|127.0.0.1:443"]
    assert "alert: 127.0.0.1:443: UNREACHABLE, certificate not checked" in str(first)
    run(1, down, offline="127.0.0.1:8443")  # still down: Alertmanager again, Slack quiet
    run(2, [_cert(443, "ok", 80), down[1]], offline=["127.0.0.1:8443"])  # back: "fixed" once
    am, slack, _ = _split(hook.requests)
    fired = [a for r in am for a in r.json()]
    assert len(fired) == 2 and {a["labels"]["alertname"] for a in fired} == {"TLSHostUnreachable"}
    assert fired[0]["labels"]["instance"] == "127.0.0.1:443" and "refused" in fired[0]["annotations"]["error"]
    assert [s["title"] for s in slack] == ["TLS certificates need attention", "TLS certificates fixed"]
    assert "refused" in slack[0]["text"] and ":8443" not in slack[0]["text"]
    with pytest.raises(AnalysisError, match="host"):
        send_tls_alerts(pd.DataFrame(down), "x.html", send=False, expected_offline="https://x/")


def test_helper_silence_is_an_alarm(hook):
    from ooniutils.analyses.flow import total_outage

    t = pd.date_range("2024-05-01", periods=48, freq="h")
    counts = pd.DataFrame({"hour": t, "helper": "0.th.ooni.org", "total": 100})
    until = t[-1] + pd.Timedelta(hours=5)  # five silent hours
    silence = total_outage(counts, until - pd.Timedelta(hours=3), until, time_col="hour",
                           value_col="total")
    rep = send_helper_alerts(pd.DataFrame(), None, "autorun_test_helper_failure_rate_alarm.html",
                             send=True, now=T0, silence=silence)
    rep.raise_for_errors()
    assert [e.key for e in rep.active] == ["TestHelperNoMeasurements|all"]
    assert "no web_connectivity measurements with a test helper at all since 2024-05-03 00:00" in str(rep)
    am, slack, _ = _split(hook.requests)
    assert am[0].json()[0]["labels"]["alertname"] == "TestHelperNoMeasurements"
    assert len(slack) == 1 and "cannot be judged" in slack[0]["text"]


def test_a_country_outage_on_several_probe_types_is_one_message_listing_them(hook):
    from ooniutils.analyses.flow_episodes import fold_episodes

    alarms = pd.concat([flow_current(series=(f"IR/{sw}",)) for sw in
                        ("ooniprobe-android", "ooniprobe-ios", "miniooni")], ignore_index=True)
    rep = send_flow_alerts(fold_episodes(alarms), "country", FLOW_HTML, "IncomingMeasurementsDropPerCountry",
                           send=True, now=T0)
    rep.raise_for_errors()
    am, slack, _ = _split(hook.requests)
    assert len(slack) == 1 and len(am[0].json()) == 1
    assert am[0].json()[0]["labels"]["instance"] == "IR"
    assert "probe types: miniooni, ooniprobe-android, ooniprobe-ios" in slack[0]["text"]
    assert rep.channel("slack").announced == ["IncomingMeasurementsDropPerCountry|IR"]
