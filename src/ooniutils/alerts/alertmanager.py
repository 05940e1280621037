"""Prometheus Alertmanager: fire and resolve alerts through ``POST /api/v2/alerts``.

Alertmanager identifies an alert by its label set: firing the same ``alertname``/``job``/
``instance`` again refreshes it, and posting it with ``endsAt`` = now resolves it. Empty label
values are left out, because Alertmanager (like Prometheus) treats an empty label as an absent
one; ``job=""`` and no ``job`` therefore name the same alert.

An alert fired with ``duration_min=N`` resolves by itself N minutes later unless fired again,
which suits notebooks that check something on a schedule: re-fire on every failing run with a
duration longer than the run interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from . import http
from .base import Alert, Transport, required_setting, utcnow

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def rfc3339(when: datetime) -> str:
    """``2024-05-01T12:00:00.000Z``: UTC, millisecond precision, as Alertmanager prints it."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_labels(alertname: str, job: str = "", instance: str = "",
                 labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The identifying label set; empty values dropped, names checked against Prometheus rules."""
    if not isinstance(alertname, str) or not alertname.strip():
        raise ValueError("alertname must be a non-empty string")
    merged: dict[str, str] = {**(labels or {}), "alertname": alertname}
    if job:
        merged["job"] = str(job)
    if instance:
        merged["instance"] = str(instance)
    for name in merged:
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise ValueError(f"invalid Alertmanager label name {name!r}: "
                             "use letters, digits and _ (not starting with a digit)")
    return {k: str(v) for k, v in sorted(merged.items()) if v is not None and str(v) != ""}


class AlertmanagerTransport(Transport):
    """Posts alerts to the Alertmanager at ``base_url`` (``OONI_ALERTMANAGER_URL``)."""

    channel = "alertmanager"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls) -> AlertmanagerTransport:
        return cls(required_setting("OONI_ALERTMANAGER_URL"))

    def payload(self, alert: Alert) -> http.HttpRequest:
        """``POST <base>/api/v2/alerts`` with a one-alert list (postableAlerts).

        ``startsAt`` is omitted when the alert has none (Alertmanager then keeps the start of
        the alert it already knows, or uses ``endsAt``), ``endsAt`` likewise (Alertmanager then
        applies its ``resolve_timeout``).
        """
        if not alert.name:
            raise ValueError("an Alertmanager alert needs a name (alertname)")
        labels = alert_labels(alert.name, labels=alert.labels)
        annotations = dict(alert.annotations)
        if alert.title:
            annotations["summary"] = alert.title
        if alert.text:
            annotations.setdefault("description", alert.text)
        body: dict[str, Any] = {"labels": labels, "annotations": annotations}
        if alert.starts_at is not None:
            body["startsAt"] = rfc3339(alert.starts_at)
        if alert.ends_at is not None:
            body["endsAt"] = rfc3339(alert.ends_at)
        return http.HttpRequest("POST", f"{self.base_url}/api/v2/alerts", json=[body],
                                headers={"Accept": "application/json"})


def firing_alert(summary: str, alertname: str, job: str = "", instance: str = "",
                 annotations: Mapping[str, str] | None = None, duration_min: float = 1,
                 labels: Mapping[str, str] | None = None, now: datetime | None = None) -> Alert:
    """The :class:`Alert` that :func:`alertmanager_fire_alert` posts (pure; ``now`` injectable)."""
    if isinstance(duration_min, bool) or not isinstance(duration_min, int | float) \
            or not duration_min > 0:
        raise ValueError(f"duration_min must be a number of minutes > 0, got {duration_min!r}")
    now = now or utcnow()
    return Alert(title=summary, name=alertname,
                 labels=alert_labels(alertname, job, instance, labels),
                 annotations=dict(annotations or {}),
                 starts_at=now, ends_at=now + timedelta(minutes=duration_min))


def resolved_alert(alertname: str, job: str = "", instance: str = "",
                   labels: Mapping[str, str] | None = None, summary: str = "",
                   annotations: Mapping[str, str] | None = None,
                   now: datetime | None = None) -> Alert:
    """The :class:`Alert` that :func:`alertmanager_resolve_alert` posts (``endsAt`` = now)."""
    return Alert(title=summary, name=alertname,
                 labels=alert_labels(alertname, job, instance, labels),
                 annotations=dict(annotations or {}), ends_at=now or utcnow())


def alertmanager_fire_alert(summary: str, alertname: str, job: str = "", instance: str = "",
                            annotations: Mapping[str, str] | None = None,
                            duration_min: float = 1,
                            labels: Mapping[str, str] | None = None) -> None:
    """Fire (or refresh) an alert in Alertmanager for ``duration_min`` minutes from now.

    The alert carries labels ``alertname``, ``job`` and ``instance`` (empty ones omitted) plus
    ``labels``, and annotations ``annotations`` with ``summary`` set to ``summary`` (the
    argument wins over an annotation of that name). Needs ``OONI_ALERTMANAGER_URL``.

    Raises ConfigError when the URL is not set, ValueError for bad arguments and AlertError
    when Alertmanager cannot be reached or rejects the alert.

    Example::

        alertmanager_fire_alert("Fastpath is 3h behind", "FastpathLag", job="fastpath",
                                annotations={"dashboard": "https://..."}, duration_min=90)
    """
    alert = firing_alert(summary, alertname, job, instance, annotations, duration_min, labels)
    AlertmanagerTransport.from_settings().send(alert)


def alertmanager_resolve_alert(alertname: str, job: str = "", instance: str = "",
                               labels: Mapping[str, str] | None = None, summary: str = "",
                               annotations: Mapping[str, str] | None = None) -> None:
    """Resolve the alert with these labels now (posts it with ``endsAt`` = now).

    The labels must match the fired alert exactly (same ``alertname``, ``job``, ``instance``
    and extra ``labels``); resolving an alert Alertmanager does not know is harmless.
    Alertmanager keeps the annotations of the latest post, so pass ``summary``/``annotations``
    if the "resolved" notification should still show them.
    """
    alert = resolved_alert(alertname, job, instance, labels, summary, annotations)
    AlertmanagerTransport.from_settings().send(alert)
