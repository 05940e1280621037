"""jupycron's alert senders, made from ooniutils' transports (Alertmanager, Slack, ntfy).

jupycron does not import ooniutils: its entry points load this module by name
(:data:`jupycron.senders.DEFAULT_MODULE`) and install :data:`SENDERS` for the process. Each
factory reads its endpoint from the ooniutils settings (``OONI_ALERTMANAGER_URL``,
``OONI_SLACK_WEBHOOK_URL``, ``OONI_NTFY_URL``...), and each sender turns a
:class:`jupycron.senders.AlertMessage` into an :class:`~ooniutils.alerts.Alert` for its
channel (Slack gets a mrkdwn ``<url|output>`` link, ntfy and Alertmanager the plain URL)
and maps ooniutils errors to :class:`jupycron.exceptions.DeliveryError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from jupycron.exceptions import DeliveryError
from jupycron.senders import AlertMessage, Sender, SenderFactory

from .alerts import (
    Alert,
    AlertError,
    AlertmanagerTransport,
    NtfyTransport,
    RetryPolicy,
    SlackTransport,
    Transport,
)
from .alerts.slack import escape_mrkdwn
from .exceptions import OoniUtilsError

__all__ = ["SENDERS", "to_alert"]


def to_alert(channel: str, message: AlertMessage) -> Alert:
    """``message`` as ``channel`` shows it (jupycron's texts are plain: Slack gets them
    escaped, with the output link as its one piece of markup)."""
    link = message.link
    plain = message.text + (f"\n{link}" if link else "")
    title = message.title
    if channel == "slack":
        title = escape_mrkdwn(title)
        text = escape_mrkdwn(message.text) + (f"\n<{link}|output>" if link else "")
    else:
        text = plain
    annotations = dict(message.annotations)
    if "description" in annotations:
        annotations["description"] = plain
    return Alert(title=title, text=text, name=message.name, labels=dict(message.labels),
                 annotations=annotations, starts_at=message.starts_at,
                 ends_at=message.ends_at, color=message.severity,
                 priority="default" if message.resolved else "high", tags=message.tags)


class _ChannelSender:
    def __init__(self, channel: str, transport: Transport) -> None:
        self.channel = channel
        self.transport = transport

    def send(self, message: AlertMessage, *, timeout_s: float,
             cancel: threading.Event | None) -> None:
        policy = RetryPolicy(attempts=1, timeout=timeout_s, backoff=0, deadline=timeout_s,
                             cancel=cancel)
        try:
            self.transport.send(to_alert(self.channel, message), policy)
        except AlertError as exc:
            raise DeliveryError(str(exc), self.channel, permanent=exc.permanent) from exc
        except (OoniUtilsError, ValueError) as exc:
            raise DeliveryError(str(exc), self.channel) from exc


def _factory(channel: str, make: Callable[[], Transport]) -> SenderFactory:
    def build() -> Sender:
        try:
            return _ChannelSender(channel, make())
        except (OoniUtilsError, ValueError) as exc:  # e.g. the channel's URL is not set
            raise DeliveryError(str(exc), channel) from exc
    return build


SENDERS: dict[str, SenderFactory] = {
    "alertmanager": _factory("alertmanager", AlertmanagerTransport.from_settings),
    "slack": _factory("slack", SlackTransport.from_settings),
    "ntfy": _factory("ntfy", NtfyTransport.from_settings),
}
"""Channel name -> sender factory, as :func:`jupycron.senders.load` expects."""
