"""Slack and ntfy delivery through a local recording server; retries; errors and secrets."""

from __future__ import annotations

import email.header
import logging
import threading

import pytest

from ooniutils.alerts import (
    AlertError,
    HttpRequest,
    RetryPolicy,
    alertmanager_fire_alert,
    alertmanager_resolve_alert,
    send_alert_through_ntfy,
    send_slack_msg,
)
from ooniutils.alerts import http as alert_http
from ooniutils.exceptions import ConfigError
from tests.support.fake_webhooks import Reply, fake_webhook_server
from tests.support.services import free_port, poll_until
from tests.support.trickle import trickling_server

SECRET_PATH = "/services/T0001/B0002/s3cr3tW3bh00k"
TOKEN = "tk_supersecrettoken42"


@pytest.fixture
def hook(monkeypatch):
    """A recording server, with fast retries configured through the settings."""
    monkeypatch.setenv("OONI_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("OONI_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("OONI_HTTP_RETRIES", "3")
    with fake_webhook_server() as server:
        yield server


@pytest.fixture
def slack(hook, monkeypatch):
    monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", hook.url(SECRET_PATH))
    return hook


# --- Slack ------------------------------------------------------------------------------------

def test_slack_message_is_the_documented_payload(slack):
    send_slack_msg("Fastpath lag ⚠", "see <https://grafana.example/d/x|Grafana>", color="E01E5A")
    [req] = slack.requests
    assert (req.method, req.path) == ("POST", SECRET_PATH)
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {"attachments": [{
        "fallback": "Fastpath lag ⚠: see Grafana (https://grafana.example/d/x)",
        "color": "#E01E5A",
        "title": "Fastpath lag ⚠",
        "text": "see <https://grafana.example/d/x|Grafana>",
        "mrkdwn_in": ["text"],
    }]}


def test_slack_default_colour(slack):
    send_slack_msg("t", "m")
    assert slack.requests[0].json()["attachments"][0]["color"] == "#3AA3E3"


def test_settings_can_come_from_the_config_file(hook, tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'slack_webhook_url = "{hook.url(SECRET_PATH)}"\n')
    monkeypatch.setenv("OONI_MONITORING_CONFIG", str(cfg))
    send_slack_msg("from file", "m")
    assert [r.path for r in hook.requests] == [SECRET_PATH]


# --- ntfy -------------------------------------------------------------------------------------

def test_ntfy_message_headers_and_body(hook, monkeypatch):
    monkeypatch.setenv("OONI_NTFY_URL", hook.url("/ooni-alerts"))
    monkeypatch.setenv("OONI_NTFY_TOKEN", TOKEN)
    send_alert_through_ntfy("Disk full", "/var at 95% — see https://x.org", priority="high",
                            tags=["warning", "floppy_disk"])
    [req] = hook.requests
    assert (req.method, req.path) == ("POST", "/ooni-alerts")
    assert req.text() == "/var at 95% — see https://x.org"
    assert req.header("Title") == "Disk full"
    assert req.header("Priority") == "high"
    assert req.header("Tags") == "warning,floppy_disk"
    assert req.header("Authorization") == f"Bearer {TOKEN}"
    assert req.header("Content-Type") == "text/plain; charset=utf-8"


def test_ntfy_defaults_and_non_ascii_title(hook, monkeypatch):
    monkeypatch.setenv("OONI_NTFY_URL", hook.url("/t"))
    send_alert_through_ntfy("Müller’s probe down 🚨", "msg")
    [req] = hook.requests
    raw = req.header("Title")
    assert raw.isascii()
    assert str(email.header.make_header(email.header.decode_header(raw))) == "Müller’s probe down 🚨"
    assert (req.header("Priority"), req.header("Tags")) == ("urgent", "warning")
    assert req.header("Authorization") is None


def test_ntfy_bad_priority_sends_nothing(hook, monkeypatch):
    monkeypatch.setenv("OONI_NTFY_URL", hook.url("/t"))
    with pytest.raises(ValueError, match="critical"):
        send_alert_through_ntfy("t", "m", priority="critical")
    assert hook.requests == []


# --- missing settings -------------------------------------------------------------------------

@pytest.mark.parametrize("call, setting", [
    (lambda: send_slack_msg("t", "m"), "OONI_SLACK_WEBHOOK_URL"),
    (lambda: send_alert_through_ntfy("t", "m"), "OONI_NTFY_URL"),
    (lambda: alertmanager_fire_alert("s", "A"), "OONI_ALERTMANAGER_URL"),
    (lambda: alertmanager_resolve_alert("A"), "OONI_ALERTMANAGER_URL"),
])
def test_missing_endpoint_raises_config_error_naming_it(call, setting):
    with pytest.raises(ConfigError, match=setting) as info:
        call()
    assert info.value.setting == setting


@pytest.mark.parametrize("var, value", [("OONI_HTTP_RETRIES", "0"), ("OONI_HTTP_RETRIES", "x"),
                                        ("OONI_HTTP_TIMEOUT", "-1"), ("OONI_HTTP_BACKOFF", "no")])
def test_bad_http_settings_raise_config_error(slack, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        send_slack_msg("t", "m")
    assert slack.requests == []


# --- retries ----------------------------------------------------------------------------------

def test_transient_failures_are_retried_until_success(slack, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(alert_http, "_sleep", waits.append)
    slack.script(503, 503)
    send_slack_msg("t", "m")
    assert [r.path for r in slack.requests] == [SECRET_PATH] * 3
    assert waits == [0.01, 0.02]


def test_client_error_is_permanent_and_not_retried(slack, caplog):
    slack.script(Reply(400, b"invalid_payload"))
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertError) as info:
        send_slack_msg("t", "m")
    err = info.value
    assert (err.channel, err.host, err.permanent) == ("slack", slack.base_url[7:], True)
    assert "HTTP 400" in str(err) and "invalid_payload" in str(err)
    assert len(slack.requests) == 1
    _assert_no_secret(err, caplog, "s3cr3tW3bh00k")


def test_retry_after_is_honoured(slack, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(alert_http, "_sleep", waits.append)
    slack.script(Reply(429, b"slow down", {"Retry-After": "7"}),
                 Reply(429, b"", {"Retry-After": "86400"}))
    send_slack_msg("t", "m")
    assert waits == [7.0, alert_http.RETRY_AFTER_CAP]
    assert len(slack.requests) == 3


def test_exhausted_retries_are_transient_and_hide_the_secret(slack, caplog):
    slack.script(Reply(500, f"boom at {SECRET_PATH}".encode()), 502, 503)
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertError) as info:
        send_slack_msg("t", "m")
    err = info.value
    assert err.permanent is False and "after 3 attempts" in str(err) and "HTTP 503" in str(err)
    assert len(slack.requests) == 3
    # httpx logged the requests, but with the webhook path scrubbed
    assert any("HTTP Request: POST" in r.getMessage() and "***" in r.getMessage()
               for r in caplog.records if r.name == "httpx")
    _assert_no_secret(err, caplog, "s3cr3tW3bh00k")


def test_timeouts_are_retried(hook, monkeypatch, caplog):
    monkeypatch.setenv("OONI_HTTP_TIMEOUT", "0.2")
    monkeypatch.setenv("OONI_HTTP_RETRIES", "2")
    monkeypatch.setenv("OONI_NTFY_URL", hook.url("/secret-topic"))
    monkeypatch.setenv("OONI_NTFY_TOKEN", TOKEN)
    hook.script(Reply(200, b"late", delay=1.0))
    with caplog.at_level(logging.DEBUG):
        send_alert_through_ntfy("t", "m")  # the first attempt times out, the second succeeds
    assert len(hook.requests) == 2
    assert any("ReadTimeout" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert "secret-topic" not in record.getMessage() and TOKEN not in record.getMessage()


def test_connection_refused_names_host_not_credentials(monkeypatch, caplog):
    monkeypatch.setenv("OONI_HTTP_BACKOFF", "0")
    port = free_port()
    monkeypatch.setenv("OONI_NTFY_URL", f"http://alice:pa55word@127.0.0.1:{port}/secret-topic")
    monkeypatch.setenv("OONI_NTFY_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertError) as info:
        send_alert_through_ntfy("t", "m")
    err = info.value
    assert (err.channel, err.host, err.permanent) == ("ntfy", f"127.0.0.1:{port}", False)
    assert f"127.0.0.1:{port}" in str(err) and "ConnectError" in str(err)
    for secret in ("pa55word", "alice", "secret-topic", TOKEN):
        _assert_no_secret(err, caplog, secret)


@pytest.mark.parametrize("url", ["ftp://files.example/secret-path", "http://[bad/secret-path",
                                 "http://h:99999/secret-path", "https:///secret-path"])
def test_malformed_endpoint_is_permanent(url):
    with pytest.raises(AlertError) as info:
        alert_http.send("slack", HttpRequest("POST", url), RetryPolicy(attempts=2))
    assert info.value.permanent and "secret-path" not in str(info.value)


def _assert_no_secret(err: AlertError, caplog, secret: str) -> None:
    assert secret not in str(err) and secret not in repr(err.args)
    cause = err.__cause__
    assert cause is None or secret not in str(cause)
    for record in caplog.records:
        assert secret not in record.getMessage(), record.name


# --- a whole-delivery deadline (issue 12 #4) ---------------------------------------------------

def _in_thread(fn) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


def test_a_trickling_endpoint_is_cut_off_at_the_deadline():
    """One byte every 0.3 s never trips httpx's 2 s per-read timeout: only the 1.5 s
    deadline of the whole delivery (both attempts, the wait between) ends it."""
    with trickling_server(every=0.3) as server:
        policy = RetryPolicy(attempts=2, timeout=2.0, backoff=0.1, deadline=1.5)
        request = HttpRequest("POST", server.url(SECRET_PATH), json={"text": "t"})
        t, errors = _in_thread(lambda: alert_http.send("slack", request, policy))
        t.join(30)  # without the deadline: 100 000 bytes at 0.3 s, i.e. for ever
        assert not t.is_alive(), "the delivery did not end"
    assert len(errors) == 1 and isinstance(errors[0], AlertError)
    err = errors[0]
    assert err.permanent is False and "1.5 s deadline" in str(err)
    assert "s3cr3tW3bh00k" not in str(err) and server.connections >= 1


def test_the_default_deadline_covers_every_attempt_and_wait():
    policy = RetryPolicy(attempts=3, timeout=10.0, backoff=0.5)
    assert policy.total_deadline() == 3 * 10.0 + 2 * alert_http.RETRY_AFTER_CAP
    assert RetryPolicy(attempts=1, timeout=5.0, deadline=2.0).total_deadline() == 2.0
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)


def test_cancel_aborts_a_delivery_in_flight():
    """A SIGTERM handler sets the policy's cancel event: the blocked read gives up within
    a poll interval, long before the deadline."""
    cancel = threading.Event()
    with trickling_server(every=0.3) as server:
        policy = RetryPolicy(attempts=3, timeout=5.0, deadline=600.0, cancel=cancel)
        request = HttpRequest("POST", server.url("/hook"), json={"text": "t"})
        t, errors = _in_thread(lambda: alert_http.send("ntfy", request, policy))
        poll_until(lambda: server.requests, timeout=10)
        cancel.set()
        t.join(10)
        assert not t.is_alive(), "cancel did not stop the delivery"
    assert len(errors) == 1 and "cancelled" in str(errors[0])
    assert server.connections == 1  # not retried
