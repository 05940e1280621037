"""What every alert channel shares: the :class:`Alert` value and the :class:`Transport` shape.

A transport turns an alert into an :class:`~ooniutils.alerts.http.HttpRequest` in the pure
:meth:`Transport.payload` (tested without a network) and delivers it in :meth:`Transport.send`
through the single seam :func:`ooniutils.alerts.http.send`. Endpoints and tokens are read from
the settings by each transport's ``from_settings()``, never written in code.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import ClassVar

from .. import config
from . import http

log = logging.getLogger(__name__)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _sendable(text: str) -> str:
    """``text`` with lone surrogates (text decoded with ``surrogateescape``: a log line, a
    file name) as U+FFFD: UTF-8 cannot encode them, and the alert would not go out."""
    return _SURROGATE.sub("\ufffd", text)


def _frozen(mapping: Mapping[str, object] | None, what: str) -> Mapping[str, str]:
    items: dict[str, str] = {}
    for key, value in (mapping or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what} names must be non-empty strings, got {key!r}")
        items[_sendable(key)] = _sendable(value if isinstance(value, str) else str(value))
    return MappingProxyType(items)


@dataclass(frozen=True)
class Alert:
    """One notification, independent of the channel that carries it.

    ``title``: one line (Alertmanager ``summary`` annotation, Slack attachment title, ntfy
    Title). ``text``: the body (Slack mrkdwn allowed; ntfy shows it as is). ``name``: the
    Alertmanager ``alertname``. ``labels`` identify an Alertmanager alert (same labels = same
    alert) and ``annotations`` describe it. ``starts_at``/``ends_at`` are aware datetimes
    (naive ones are rejected: they are ambiguous). ``color``, ``priority`` and ``tags`` are
    presentation hints used by Slack and ntfy respectively and ignored elsewhere.
    """

    title: str
    text: str = ""
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    color: str = "3AA3E3"
    priority: str | int = "default"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise TypeError(f"alert title must be a string, got {type(self.title).__name__}")
        if not isinstance(self.text, str):
            raise TypeError(f"alert text must be a string, got {type(self.text).__name__}")
        for attr in ("title", "text", "name"):
            object.__setattr__(self, attr, _sendable(getattr(self, attr)))
        object.__setattr__(self, "labels", _frozen(self.labels, "label"))
        object.__setattr__(self, "annotations", _frozen(self.annotations, "annotation"))
        for attr in ("starts_at", "ends_at"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValueError(f"alert {attr} must be a timezone-aware datetime, got {value!r}")
        if self.starts_at and self.ends_at and self.ends_at < self.starts_at:
            raise ValueError(f"alert ends_at {self.ends_at.isoformat()} is before starts_at "
                             f"{self.starts_at.isoformat()}")
        if isinstance(self.tags, str):
            object.__setattr__(self, "tags", tuple(_sendable(t) for t in split_tags(self.tags)))
        else:
            object.__setattr__(self, "tags", tuple(_sendable(str(t)) for t in self.tags))


def split_tags(tags: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"warning,skull"`` or ``["warning", "skull"]`` -> ``("warning", "skull")``."""
    items = tags.split(",") if isinstance(tags, str) else [str(t) for t in tags]
    return tuple(t.strip() for t in items if t.strip())


def utcnow() -> datetime:
    """The current time, aware, in UTC (the one clock the senders read)."""
    return datetime.now(UTC)


class Transport(ABC):
    """A channel: ``payload()`` builds the request (pure), ``send()`` delivers it (I/O).

    Subclasses set :attr:`channel` (used in errors and logs) and implement
    :meth:`payload` and :meth:`from_settings`.
    """

    channel: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_settings(cls) -> Transport:
        """Build the transport from ``ooniutils.config`` (raises ConfigError when unset)."""

    @abstractmethod
    def payload(self, alert: Alert) -> http.HttpRequest:
        """The HTTP request that delivers ``alert``; no I/O, no clock reads beyond the alert."""

    def send(self, alert: Alert, policy: http.RetryPolicy | None = None) -> None:
        """Deliver ``alert``; raises :class:`~ooniutils.exceptions.AlertError` on failure."""
        request = self.payload(alert)
        http.send(self.channel, request, policy)
        log.info("%s alert %r sent to %s", self.channel, alert.title, request.host)


def required_setting(name: str) -> str:
    """The value of a required setting (ConfigError naming it when missing)."""
    value = config.get(name, required=True)
    assert value is not None  # required=True raised otherwise
    return value
