"""Slack incoming webhooks: one message with one coloured attachment.

Payload (Slack's documented legacy "secondary attachment" format for incoming webhooks)::

    {"attachments": [{"fallback": "<title>: <text without markup>",
                      "color": "#3AA3E3",
                      "title": "<title>",
                      "text": "<text, Slack mrkdwn>",
                      "mrkdwn_in": ["text"]}]}

``text`` is passed through untouched, so Slack links ``<https://url|label>``, ``*bold*`` and
``_italic_`` work; ``fallback`` (shown in notifications and clients without formatting) is the
same text with links rewritten as ``label (url)`` and the three escaped characters restored.
The webhook URL is the credential: it comes from ``OONI_SLACK_WEBHOOK_URL`` and errors show its
host only.
"""

from __future__ import annotations

import html
import re

from . import http
from .base import Alert, Transport, required_setting

_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
_NAMED_COLORS = ("good", "warning", "danger")
_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>|<([^<>|]+)>")


def slack_color(color: str) -> str:
    """``"3AA3E3"``/``"#3aa3e3"`` -> ``"#3AA3E3"``; ``good``/``warning``/``danger`` kept."""
    if not isinstance(color, str):
        raise ValueError(f"Slack colour must be a string, got {color!r}")
    if color.lower() in _NAMED_COLORS:
        return color.lower()
    match = _HEX.match(color.strip())
    if not match:
        raise ValueError(f"invalid Slack colour {color!r}: use a hex code like '3AA3E3' or "
                         f"one of {', '.join(_NAMED_COLORS)}")
    return "#" + match.group(1).upper()


def escape_mrkdwn(text: str) -> str:
    """``text`` as literal Slack mrkdwn: ``&``, ``<`` and ``>`` escaped, as Slack's
    formatting guide asks, so text taken from data (a URL with ``&``, ``<!channel>``,
    ``<https://x|click>``) is shown as written, never as a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(mrkdwn: str) -> str:
    """Slack mrkdwn -> plain text for ``fallback``: ``<url|label>`` -> ``label (url)``."""

    def link(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            # a bare <url>, or a mention such as <!here>/<@U123>: keep the visible part
            return m.group(3).lstrip("!@#")
        return f"{m.group(2)} ({m.group(1)})"

    return html.unescape(_LINK.sub(link, mrkdwn))


class SlackTransport(Transport):
    """Posts to a Slack incoming webhook (``OONI_SLACK_WEBHOOK_URL``)."""

    channel = "slack"

    def __init__(self, webhook_url: str) -> None:
        self.webhook_url = webhook_url

    @classmethod
    def from_settings(cls) -> SlackTransport:
        return cls(required_setting("OONI_SLACK_WEBHOOK_URL"))

    def payload(self, alert: Alert) -> http.HttpRequest:
        fallback = plain_text(f"{alert.title}: {alert.text}" if alert.text else alert.title)
        attachment = {
            "fallback": fallback,
            "color": slack_color(alert.color),
            "title": alert.title,
            "text": alert.text,
            "mrkdwn_in": ["text"],
        }
        return http.HttpRequest("POST", self.webhook_url, json={"attachments": [attachment]})


def send_slack_msg(title: str, msg: str, color: str = "3AA3E3") -> None:
    """Post ``msg`` to Slack as one attachment titled ``title`` with a ``color`` side bar.

    ``msg`` is Slack mrkdwn: links written ``<https://example.org|label>`` stay clickable.
    ``color`` is a hex code (with or without ``#``) or ``good``/``warning``/``danger``.
    Needs ``OONI_SLACK_WEBHOOK_URL``. Raises ConfigError when it is unset, ValueError for a
    bad colour and AlertError when Slack cannot be reached or refuses the message.

    Example::

        send_slack_msg("Fastpath lag", "3h behind, see <https://grafana.example/d/x|Grafana>",
                       color="danger")
    """
    alert = Alert(title=title, text=msg, color=slack_color(color))
    SlackTransport.from_settings().send(alert)
