"""ntfy push notifications: ``POST <topic URL>`` with the message as the body.

Following ntfy's publishing documentation, the body is the message (UTF-8 text) and the
options travel in headers: ``Title``, ``Priority`` (``max``/``urgent``, ``high``, ``default``,
``low``, ``min`` or 5..1) and ``Tags`` (comma-separated; names of emojis such as ``warning``
are shown as emojis). HTTP header values are Latin-1 on the wire, so any header value that is
not plain ASCII (an emoji or accented title) is sent as an RFC 2047 encoded word
``=?utf-8?b?...?=``, which the ntfy server decodes; ASCII values are sent verbatim.

The topic URL (``OONI_NTFY_URL``) is treated as a secret, since on a public server the topic
name is the password; with ``OONI_NTFY_TOKEN`` set the request carries
``Authorization: Bearer <token>``. Bodies above 4096 bytes are turned into attachments by ntfy.
"""

from __future__ import annotations

import base64
import re

from .. import config
from . import http
from .base import Alert, Transport, required_setting, split_tags

PRIORITIES = ("max", "urgent", "high", "default", "low", "min")
"""Priority names ntfy accepts (``max`` and ``urgent`` are both 5); 1..5 are accepted too."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def ntfy_priority(priority: str | int) -> str:
    """Validated priority as sent: a lower-case name or a digit 1..5."""
    if isinstance(priority, bool):
        raise ValueError(f"invalid ntfy priority {priority!r}")
    text = str(priority).strip().lower()
    if text in PRIORITIES or text in ("1", "2", "3", "4", "5"):
        return text
    raise ValueError(f"invalid ntfy priority {priority!r}: use one of "
                     f"{', '.join(PRIORITIES)} or a number from 1 (min) to 5 (max)")


def header_value(text: str) -> str:
    """``text`` made safe for an HTTP header: one line, RFC 2047-encoded unless plain ASCII.

    Line breaks and control characters become a space (they would end the header). A value
    that is ASCII but contains ``=?`` is encoded too, so ntfy cannot mistake it for an
    encoded word.
    """
    one_line = _CONTROL.sub(" ", text).strip()
    if one_line.isascii() and "=?" not in one_line:
        return one_line
    return "=?utf-8?b?" + base64.b64encode(one_line.encode("utf-8")).decode("ascii") + "?="


class NtfyTransport(Transport):
    """Publishes to the ntfy topic at ``topic_url`` (``OONI_NTFY_URL``)."""

    channel = "ntfy"

    def __init__(self, topic_url: str, token: str | None = None) -> None:
        self.topic_url = topic_url
        self.token = token or None

    @classmethod
    def from_settings(cls) -> NtfyTransport:
        return cls(required_setting("OONI_NTFY_URL"), config.get("OONI_NTFY_TOKEN"))

    def payload(self, alert: Alert) -> http.HttpRequest:
        headers = {"Content-Type": "text/plain; charset=utf-8",
                   "Priority": ntfy_priority(alert.priority)}
        if alert.title:
            headers["Title"] = header_value(alert.title)
        if alert.tags:
            headers["Tags"] = header_value(",".join(alert.tags))
        secrets: tuple[str, ...] = ()
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
            secrets = (self.token,)
        return http.HttpRequest("POST", self.topic_url, headers=headers,
                                content=alert.text.encode("utf-8"), secrets=secrets)


def send_alert_through_ntfy(title: str, msg: str, priority: str | int = "urgent",
                            tags: str | list[str] | tuple[str, ...] = "warning") -> None:
    """Push ``msg`` titled ``title`` to the ntfy topic ``OONI_NTFY_URL``.

    ``priority``: ``max``/``urgent``, ``high``, ``default``, ``low``, ``min`` or 1..5.
    ``tags``: ``"warning,skull"`` or a list; emoji short codes render as emojis.
    Uses ``OONI_NTFY_TOKEN`` as a Bearer token when set. Raises ConfigError when the URL is
    unset, ValueError for a bad priority and AlertError when ntfy cannot be reached or refuses.

    Example::

        send_alert_through_ntfy("Disk almost full ⚠️", "/var is 95% full", priority="high",
                                tags="warning,floppy_disk")
    """
    alert = Alert(title=title, text=msg, priority=ntfy_priority(priority),
                  tags=split_tags(tags))
    NtfyTransport.from_settings().send(alert)
