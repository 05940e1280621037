"""Pure parts of the alert senders: payloads, validation, retry maths, secret handling."""

from __future__ import annotations

import base64
import email.header
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ooniutils.alerts import Alert, AlertmanagerTransport, NtfyTransport, SlackTransport, http
from ooniutils.alerts import alertmanager as am
from ooniutils.alerts.ntfy import header_value, ntfy_priority
from ooniutils.alerts.slack import plain_text, slack_color

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
WEBHOOK = "https://hooks.slack.com/services/T0001/B0002/s3cr3tW3bh00k"


# --- Alertmanager -----------------------------------------------------------------------------

def test_fire_payload_has_labels_annotations_and_window():
    alert = am.firing_alert("Fastpath lag", "FastpathLag", job="fastpath", instance="",
                            annotations={"runbook": "https://wiki/x", "count": 3},
                            duration_min=90, now=NOW)
    req = AlertmanagerTransport("http://am.example:9093/").payload(alert)
    assert req.method == "POST"
    assert req.url == "http://am.example:9093/api/v2/alerts"
    assert req.json == [{
        "labels": {"alertname": "FastpathLag", "job": "fastpath"},
        "annotations": {"runbook": "https://wiki/x", "count": "3", "summary": "Fastpath lag"},
        "startsAt": "2024-05-01T12:00:00.123Z",
        "endsAt": "2024-05-01T13:30:00.123Z",
    }]


def test_summary_argument_wins_over_annotation():
    alert = am.firing_alert("real", "A", annotations={"summary": "other"}, now=NOW)
    body = AlertmanagerTransport("http://am").payload(alert).json[0]
    assert body["annotations"] == {"summary": "real"}


def test_resolve_payload_ends_now_and_omits_start():
    alert = am.resolved_alert("FastpathLag", job="fastpath", instance="db1", now=NOW)
    body = AlertmanagerTransport("http://am").payload(alert).json[0]
    assert body == {"labels": {"alertname": "FastpathLag", "instance": "db1", "job": "fastpath"},
                    "annotations": {}, "endsAt": "2024-05-01T12:00:00.123Z"}


def test_rfc3339_converts_to_utc():
    paris = timezone(timedelta(hours=2))
    assert am.rfc3339(datetime(2024, 5, 1, 14, 0, tzinfo=paris)) == "2024-05-01T12:00:00.000Z"


@pytest.mark.parametrize("kwargs, problem", [
    ({"alertname": ""}, "alertname"),
    ({"alertname": "A", "duration_min": 0}, "duration_min"),
    ({"alertname": "A", "duration_min": -5}, "duration_min"),
    ({"alertname": "A", "duration_min": "10"}, "duration_min"),
    ({"alertname": "A", "labels": {"bad-name": "x"}}, "bad-name"),
])
def test_fire_rejects_bad_arguments(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        am.firing_alert("s", now=NOW, **kwargs)


# --- Slack ------------------------------------------------------------------------------------

def test_slack_payload_follows_attachment_format():
    text = "3h behind, see <https://grafana.example/d/x?a=1&amp;b=2|Grafana> &lt;now&gt;"
    req = SlackTransport(WEBHOOK).payload(Alert(title="Fastpath lag", text=text, color="e01e5a"))
    assert req.url == WEBHOOK
    assert req.json == {"attachments": [{
        "fallback": "Fastpath lag: 3h behind, see Grafana (https://grafana.example/d/x?a=1&b=2) <now>",
        "color": "#E01E5A",
        "title": "Fastpath lag",
        "text": text,
        "mrkdwn_in": ["text"],
    }]}


@pytest.mark.parametrize("given, sent", [("3AA3E3", "#3AA3E3"), ("#3aa3e3", "#3AA3E3"),
                                         ("f00", "#F00"), ("Danger", "danger"), ("good", "good")])
def test_slack_colours(given, sent):
    assert slack_color(given) == sent


@pytest.mark.parametrize("bad", ["red", "#12345", "GGGGGG", ""])
def test_slack_rejects_bad_colour(bad):
    with pytest.raises(ValueError, match="invalid Slack colour"):
        slack_color(bad)


def test_plain_text_handles_bare_links_and_mentions():
    assert plain_text("<!here> look at <https://x.org>") == "here look at https://x.org"


# --- ntfy -------------------------------------------------------------------------------------

def test_ntfy_payload_headers_and_body():
    alert = Alert(title="Disk full", text="/var at 95%", priority="high", tags=("warning", "cd"))
    req = NtfyTransport("https://ntfy.example/ooni-alerts", token="tk_abc").payload(alert)
    assert req.method == "POST" and req.url == "https://ntfy.example/ooni-alerts"
    assert req.content == b"/var at 95%"
    assert dict(req.headers) == {"Content-Type": "text/plain; charset=utf-8", "Priority": "high",
                                 "Title": "Disk full", "Tags": "warning,cd",
                                 "Authorization": "Bearer tk_abc"}
    assert "tk_abc" in req.all_secrets()


def test_ntfy_without_token_sends_no_authorization():
    req = NtfyTransport("https://ntfy.example/t").payload(Alert(title="t", text="m"))
    assert "Authorization" not in req.headers


@pytest.mark.parametrize("title", ["Disk ⚠️ full", "Müller’s check", "=?not encoded?="])
def test_header_value_encodes_non_ascii_reversibly(title):
    value = header_value(title)
    assert value.isascii() and value.startswith("=?utf-8?b?") and value.endswith("?=")
    assert str(email.header.make_header(email.header.decode_header(value))) == title
    assert base64.b64decode(value[10:-2]).decode("utf-8") == title


def test_header_value_keeps_ascii_and_removes_line_breaks():
    assert header_value("plain title") == "plain title"
    assert header_value("two\r\nlines\tand tab") == "two lines and tab"


@pytest.mark.parametrize("given, sent", [("urgent", "urgent"), ("MAX", "max"), (5, "5"),
                                         ("1", "1"), ("min", "min")])
def test_ntfy_priorities(given, sent):
    assert ntfy_priority(given) == sent


@pytest.mark.parametrize("bad", ["critical", 0, 6, "", True])
def test_ntfy_rejects_bad_priority(bad):
    with pytest.raises(ValueError, match="invalid ntfy priority"):
        ntfy_priority(bad)


# --- the Alert value --------------------------------------------------------------------------

def test_alert_is_immutable_and_normalises():
    alert = Alert(title="t", tags="warning, skull,", annotations={"n": 1})
    assert alert.tags == ("warning", "skull")
    assert alert.annotations == {"n": "1"}
    with pytest.raises(TypeError):
        alert.annotations["x"] = "y"  # type: ignore[index]


def test_alert_rejects_naive_and_reversed_times():
    with pytest.raises(ValueError, match="timezone-aware"):
        Alert(title="t", starts_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="before starts_at"):
        Alert(title="t", starts_at=NOW, ends_at=NOW - timedelta(seconds=1))


# --- http helpers -----------------------------------------------------------------------------

def test_endpoint_host_hides_everything_but_host():
    assert http.endpoint_host(WEBHOOK) == "hooks.slack.com"
    assert http.endpoint_host("http://user:pw@127.0.0.1:9093/x?y") == "127.0.0.1:9093"
    assert http.endpoint_host("http://[::1]:80/") == "[::1]:80"


def test_url_secrets_and_redact():
    url = "https://bob:hunter%212@ntfy.example/my%20topic?auth=tok"
    secrets = http.url_secrets(url)
    for part in ("bob", "hunter%212", "hunter!2", "my%20topic", "my topic", "auth=tok"):
        assert part in secrets
    assert http.redact(f"POST {url} failed", secrets) == "POST https://***:***@ntfy.example/***?*** failed"
    assert http.url_secrets("http://127.0.0.1:9093/") == []


def test_request_repr_hides_url_and_headers():
    req = SlackTransport(WEBHOOK).payload(Alert(title="t"))
    assert "s3cr3t" not in repr(req) and "hooks.slack.com" in repr(req)


def test_retry_delay_is_exponential_and_capped():
    assert [http.retry_delay(n, 0.5) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert http.retry_delay(20, 0.5) == http.BACKOFF_CAP
    assert http.retry_delay(1, 0.5, retry_after=7) == 7
    assert http.retry_delay(1, 0.5, retry_after=3600) == http.RETRY_AFTER_CAP


def test_parse_retry_after_seconds_and_date():
    assert http.parse_retry_after("12") == 12.0
    assert http.parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=NOW) == pytest.approx(29.876544)
    assert http.parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=NOW) == 0.0
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after(None) is None


def test_transient_statuses():
    assert [s for s in (400, 401, 404, 408, 410, 429, 500, 502, 503) if http.is_transient_status(s)] \
        == [408, 429, 500, 502, 503]


def test_public_names_are_sorted_and_importable():
    import ooniutils.alerts as alerts

    assert alerts.__all__ == sorted(alerts.__all__)
    for name in alerts.__all__:
        assert getattr(alerts, name) is not None
