"""Alert senders notebooks and jupycron call: Alertmanager, Slack and ntfy.

Each channel lives in its own module (``alertmanager``, ``slack``, ``ntfy``) with a transport
whose pure ``payload()`` builds the request and whose ``send()`` goes through the one network
seam :mod:`ooniutils.alerts.http` (timeouts, bounded retries of transient errors, errors that
name the endpoint host but never a secret). Endpoints and tokens come from the settings
(``OONI_ALERTMANAGER_URL``, ``OONI_SLACK_WEBHOOK_URL``, ``OONI_NTFY_URL``, ``OONI_NTFY_TOKEN``);
a missing one raises :class:`~ooniutils.exceptions.ConfigError` naming it, a failed delivery
raises :class:`~ooniutils.exceptions.AlertError` (``channel``, ``host``, ``permanent``).
:mod:`~ooniutils.alerts.sent_log` remembers what an alarm notebook already announced, so
Slack/ntfy hear once per episode (:mod:`ooniutils.alarm_notify` builds on it).
Importing this package only needs httpx.
"""

from __future__ import annotations

from ..exceptions import AlertError
from .alertmanager import AlertmanagerTransport, alertmanager_fire_alert, alertmanager_resolve_alert
from .base import Alert, Transport
from .http import HttpRequest, RetryPolicy
from .ntfy import NtfyTransport, send_alert_through_ntfy
from .sent_log import SentLog, default_state_dir, episode_key, state_path
from .slack import SlackTransport, send_slack_msg

__all__ = [
    "Alert",
    "AlertError",
    "AlertmanagerTransport",
    "HttpRequest",
    "NtfyTransport",
    "RetryPolicy",
    "SentLog",
    "SlackTransport",
    "Transport",
    "alertmanager_fire_alert",
    "alertmanager_resolve_alert",
    "default_state_dir",
    "episode_key",
    "send_alert_through_ntfy",
    "send_slack_msg",
    "state_path",
]
