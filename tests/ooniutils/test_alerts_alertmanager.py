"""Firing and resolving alerts against a real Prometheus Alertmanager on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ooniutils.alerts import AlertError, alertmanager_fire_alert, alertmanager_resolve_alert
from tests.support.alertmanager import alertmanager_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def am_url(tmp_path_factory):
    with alertmanager_server(tmp_path_factory.mktemp("am")) as url:
        yield url


@pytest.fixture
def am(am_url, monkeypatch):
    monkeypatch.setenv("OONI_ALERTMANAGER_URL", am_url)
    monkeypatch.setenv("OONI_HTTP_BACKOFF", "0.01")
    return am_url


def _alerts(base: str, name: str, **params: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v2/alerts", params={"filter": f'alertname="{name}"', **params})
    r.raise_for_status()
    return r.json()


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_fire_then_read_back(am):
    before = datetime.now(UTC)
    alertmanager_fire_alert("Fastpath is 3h behind ⚠", "TestFastpathLag", job="fastpath",
                            instance="backend-fsn", annotations={"runbook": "https://wiki/x"},
                            duration_min=30)
    after = datetime.now(UTC)
    [alert] = _alerts(am, "TestFastpathLag", active="true")
    assert alert["labels"] == {"alertname": "TestFastpathLag", "job": "fastpath",
                               "instance": "backend-fsn"}
    assert alert["annotations"] == {"summary": "Fastpath is 3h behind ⚠",
                                    "runbook": "https://wiki/x"}
    assert alert["status"]["state"] == "active"
    slack = timedelta(seconds=1)  # Alertmanager prints milliseconds
    assert before - slack <= _parse(alert["startsAt"]) <= after + slack
    assert before + timedelta(minutes=30) - slack <= _parse(alert["endsAt"]) \
        <= after + timedelta(minutes=30) + slack


def test_empty_job_and_instance_are_left_out(am):
    alertmanager_fire_alert("no job", "TestNoJob")
    [alert] = _alerts(am, "TestNoJob")
    assert alert["labels"] == {"alertname": "TestNoJob"}


def test_resolve_makes_it_inactive(am):
    alertmanager_fire_alert("x", "TestResolve", job="j", duration_min=60)
    alertmanager_fire_alert("y", "TestResolve", job="other", duration_min=60)
    assert len(_alerts(am, "TestResolve")) == 2
    alertmanager_resolve_alert("TestResolve", job="j")
    # Alertmanager's GET /api/v2/alerts lists only unresolved alerts (endsAt in the future),
    # whatever the active/silenced/inhibited flags; resolving one leaves the other firing.
    remaining = _alerts(am, "TestResolve", active="true", silenced="true", inhibited="true",
                        unprocessed="true")
    assert [a["labels"]["job"] for a in remaining] == ["other"]


def test_refire_keeps_start_and_extends_end(am):
    alertmanager_fire_alert("x", "TestRefire", duration_min=1)
    [first] = _alerts(am, "TestRefire")
    alertmanager_fire_alert("x again", "TestRefire", duration_min=10)
    [second] = _alerts(am, "TestRefire")
    assert second["fingerprint"] == first["fingerprint"]
    assert second["startsAt"] == first["startsAt"]
    assert _parse(second["endsAt"]) > _parse(first["endsAt"]) + timedelta(minutes=8)
    assert second["annotations"]["summary"] == "x again"


def test_unreachable_alertmanager_is_a_transient_alert_error(monkeypatch):
    from tests.support.services import free_port

    monkeypatch.setenv("OONI_ALERTMANAGER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OONI_HTTP_BACKOFF", "0")
    with pytest.raises(AlertError) as info:
        alertmanager_fire_alert("s", "TestDown")
    assert info.value.channel == "alertmanager" and info.value.permanent is False
