"""The seam between jupycron's alerts and whatever delivers them (standard library only).

:mod:`jupycron.run_alerts` decides *what* to tell; a :class:`Sender` per channel delivers
one :class:`AlertMessage`. jupycron ships no sender: the entry points (``jupycron`` CLI,
``jupycron serve``) load a module by name - by default ``ooniutils.jupycron_channels``, the
Alertmanager/Slack/ntfy transports - and :func:`install` its ``SENDERS`` for the process, or
a caller passes ``senders=`` to :func:`jupycron.run_alerts.notify_changes` directly (tests
pass local fakes). So the scheduler never imports the domain library.

A module that provides senders defines ``SENDERS``: ``{channel name: factory}``, each
factory returning a :class:`Sender` (or raising :class:`~jupycron.exceptions.DeliveryError`
when the channel is not configured, e.g. its URL is missing).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from .exceptions import ConfigError

__all__ = ["DEFAULT_MODULE", "AlertMessage", "Sender", "SenderFactory", "install", "installed",
           "load"]

DEFAULT_MODULE = "ooniutils.jupycron_channels"


@dataclass(frozen=True)
class AlertMessage:
    """One message about one episode, the same for every channel.

    ``name`` is the Alertmanager alert name (``JupycronRunFailing``...); ``resolved`` marks
    the end of the episode (Alertmanager: ``endsAt`` = now); ``severity`` is ``danger``,
    ``warning`` or ``good`` (a colour or priority for channels that have one); ``link`` is the
    notebook's output page, if configured (each channel formats it its own way).
    """

    title: str
    text: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    resolved: bool = False
    severity: str = "danger"
    link: str | None = None
    tags: tuple[str, ...] = field(default=())


class Sender(Protocol):
    """Delivers messages to one channel."""

    def send(self, message: AlertMessage, *, timeout_s: float,
             cancel: threading.Event | None) -> None:
        """One attempt bounded as a whole by ``timeout_s``; aborted when ``cancel`` is set.
        Raises :class:`~jupycron.exceptions.DeliveryError` when the channel did not take it."""


SenderFactory = Callable[[], Sender]

_installed: dict[str, SenderFactory] = {}
_lock = threading.Lock()


def load(module: str = DEFAULT_MODULE) -> dict[str, SenderFactory]:
    """The ``SENDERS`` of ``module``; ConfigError naming it when it cannot be imported or
    has no such mapping."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"alert_channels is set but the alert senders module {module!r} cannot "
                          f"be imported ({exc}); install it (ooniutils provides the default)",
                          "alert_channels") from exc
    senders = getattr(mod, "SENDERS", None)
    if not isinstance(senders, Mapping):
        raise ConfigError(f"{module} has no SENDERS mapping of channel name to sender factory",
                          "alert_channels")
    return dict(senders)


def install(senders: Mapping[str, SenderFactory]) -> None:
    """Make ``senders`` this process's default (what :func:`installed` returns)."""
    with _lock:
        _installed.clear()
        _installed.update(senders)


def installed() -> dict[str, SenderFactory]:
    """The senders :func:`install`\\ ed in this process (empty when none were)."""
    with _lock:
        return dict(_installed)
