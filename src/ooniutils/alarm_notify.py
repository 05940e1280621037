"""Alarm notebooks' notifications: Alertmanager on every run, Slack/ntfy once per episode.

An alarm notebook computes what is wrong *now* (its active :class:`Episode` list) and calls
:func:`notify_episodes` (or one of the per-analysis helpers below). What goes out:

* **Alertmanager** (``OONI_ALERTMANAGER_URL``): every active episode with an ``alertname``
  is fired on every run for ``duration_min`` minutes. Same labels = same alert, so a re-fire
  only pushes ``endsAt`` forward; when the notebook stops firing it, Alertmanager resolves
  it by itself once ``endsAt`` passes (and sends its own "resolved" notification).
* **Slack** (``OONI_SLACK_WEBHOOK_URL``) and **ntfy** (``OONI_NTFY_URL``): one message
  listing the episodes not announced before (or whose ``state`` changed, or whose reminder
  ``repeat_after`` is due), and one "recovered" message listing the announced episodes that
  are over. Each channel has its own :class:`~ooniutils.alerts.sent_log.SentLog`
  (``<state dir>/<name>.<channel>.json``) updated only after that channel accepted the
  message: a failed send is retried on the next run, a delivered one is not repeated, and
  one channel failing does not re-send the other.

Nothing is sent when ``send`` is false (a notebook run by hand, ``AUTORUN`` unset), and a
channel whose setting is missing is skipped with a note; the demo has no endpoints. A
configured channel that fails is reported in the returned :class:`NotifyReport`, whose
:meth:`~NotifyReport.raise_for_errors` raises the first :class:`AlertError` after every
channel was tried, so the run fails and jupycron shows it. Library code does not print:
notebooks print the report.

The helpers :func:`send_flow_alerts`, :func:`send_decline_alerts`, :func:`send_helper_alerts`
and :func:`send_tls_alerts` turn each analysis' table into episodes; their docstrings say
what an episode is and when it is over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from .alerts.alertmanager import AlertmanagerTransport, firing_alert
from .alerts.base import Alert, Transport, utcnow
from .alerts.ntfy import NtfyTransport
from .alerts.sent_log import Entry, SentLog, episode_key, state_path
from .alerts.slack import SlackTransport, plain_text
from .exceptions import AlertError

if TYPE_CHECKING:  # the adapters only call DataFrame methods: importing stays light
    import pandas as pd

    from .analyses.flow import TotalOutage

log = logging.getLogger(__name__)

MESSAGE_CHANNELS: dict[str, tuple[str, type[Transport]]] = {
    "slack": ("OONI_SLACK_WEBHOOK_URL", SlackTransport),
    "ntfy": ("OONI_NTFY_URL", NtfyTransport),
}
"""Channels that get one message per episode: name -> (setting, transport)."""

_COLOR_RANK = {"danger": 0, "warning": 1}


@dataclass(frozen=True)
class Episode:
    """One thing alarming now, identified across runs by ``key``.

    ``summary``: the line announced (Slack mrkdwn allowed; also the Alertmanager summary).
    ``subject``: a short name for the "recovered" message (default: the key).
    ``state``: announced again when it changes (e.g. ``expiring`` -> ``expired``).
    ``alertname`` (empty: not sent to Alertmanager), ``job``, ``instance``, ``labels``,
    ``annotations`` and ``duration_min`` make the Alertmanager alert. ``color``: Slack colour
    of the message (the most severe of the announced episodes wins).
    """

    key: str
    summary: str
    subject: str = ""
    state: str = ""
    alertname: str = ""
    job: str = "jupycron"
    instance: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    duration_min: float = 90
    color: str = "danger"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"an episode needs a non-empty string key, got {self.key!r}")
        if not isinstance(self.summary, str) or not self.summary:
            raise ValueError(f"episode {self.key!r} needs a non-empty summary")


@dataclass
class ChannelReport:
    """What one message channel did in this run (keys sorted)."""

    channel: str
    announced: list[str] = field(default_factory=list)
    ongoing: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    error: AlertError | None = None


@dataclass
class NotifyReport:
    """The outcome of :func:`notify_episodes`; ``str(report)`` is a readable summary."""

    name: str
    active: list[Episode]
    sent: bool
    fired: list[str] = field(default_factory=list)
    channels: list[ChannelReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[AlertError] = field(default_factory=list)

    def channel(self, name: str) -> ChannelReport | None:
        """The report of channel ``name`` (``None`` when it was not configured)."""
        return next((c for c in self.channels if c.channel == name), None)

    def lines(self) -> list[str]:
        out = [f"alert: {e.summary}" for e in self.active]
        if not self.active:
            out.append("no current alarm")
        if self.fired:
            out.append(f"Alertmanager: fired {len(self.fired)} alert(s)")
        for c in self.channels:
            parts = [f"{len(c.announced)} announced"]
            if c.ongoing:
                parts.append(f"{len(c.ongoing)} already announced (not repeated)")
            if c.resolved:
                parts.append(f"{len(c.resolved)} recovered")
            if c.waiting:
                parts.append(f"{len(c.waiting)} quiet, not yet recovered")
            if c.error:
                parts.append(f"FAILED: {c.error}")
            out.append(f"{c.channel}: " + ", ".join(parts))
        out += self.notes
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def raise_for_errors(self) -> None:
        """Raise the first delivery error, if any (after every channel was tried)."""
        if self.errors:
            raise self.errors[0]


def notify_episodes(name: str, episodes: Sequence[Episode], *, title: str,
                    resolved_title: str | None = None, resolved_text: str = "is back to normal",
                    link: str = "", send: bool = True, now: datetime | None = None,
                    repeat_after: timedelta | None = None,
                    resolve_after: timedelta | None = None, unknown: Iterable[str] = (),
                    state_dir: str | Path | None = None, max_lines: int = 30) -> NotifyReport:
    """Fire Alertmanager for every active episode; announce new/changed/over ones once.

    ``name``: the sent logs' file stem (the notebook name). ``title``: title of the "new"
    message; ``resolved_title`` (default ``"Recovered: <title>"``) and ``resolved_text``
    make the "recovered" one (``• <subject> <resolved_text> (announced <time> UTC)``).
    ``link``: added to messages (``details``) and as an Alertmanager ``link`` annotation.
    ``send``: false lists what would be sent and touches nothing (``send=autorun``).
    ``repeat_after``: remind of an ongoing episode this long after its last message
    (default: never). ``resolve_after``: an episode is over once it has not been active for
    this long (default: the first run without it). ``unknown``: keys whose status this run
    could not tell (kept as they are). ``now``: the clock (aware), default the current time.

    Example::

        report = notify_episodes("my_alarm", [Episode("disk|/var", "/var is 95% full")],
                                 title="Disk almost full", send=autorun)
        print(report)
        report.raise_for_errors()
    """
    now = now or utcnow()
    episodes = list(episodes)
    keys = [e.key for e in episodes]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"episode keys must be unique in one run, repeated: {dup}")
    report = NotifyReport(name=name, active=episodes, sent=send)
    if not send:
        if episodes:
            report.notes.append(f"{len(episodes)} current alarm(s); not running under jupycron "
                                "(AUTORUN unset): alerts not sent")
        return report
    _fire_alertmanager(report, episodes, link, now)
    for channel, (setting, transport) in MESSAGE_CHANNELS.items():
        if not config.get(setting):
            if episodes:
                report.notes.append(f"not sent to {channel}: {setting} not configured")
            continue
        sent_log = SentLog(state_path(f"{name}.{channel}", state_dir))
        result = ChannelReport(channel)
        report.channels.append(result)
        try:
            _notify_channel(sent_log, transport.from_settings(), result, episodes, title=title,
                            resolved_title=resolved_title or f"Recovered: {title}",
                            resolved_text=resolved_text, link=link, now=now,
                            repeat_after=repeat_after, resolve_after=resolve_after,
                            unknown=unknown, max_lines=max_lines)
        except AlertError as exc:
            log.error("%s: %s failed: %s", name, channel, exc)
            result.error = exc
            report.errors.append(exc)
    return report


def _fire_alertmanager(report: NotifyReport, episodes: list[Episode], link: str,
                       now: datetime) -> None:
    to_fire = [e for e in episodes if e.alertname]
    if not to_fire:
        return
    if not config.get("OONI_ALERTMANAGER_URL"):
        report.notes.append("not sent to Alertmanager: OONI_ALERTMANAGER_URL not configured")
        return
    transport = AlertmanagerTransport.from_settings()
    for e in to_fire:
        annotations = dict(e.annotations)
        if link:
            annotations.setdefault("link", link)
        alert = firing_alert(plain_text(e.summary), e.alertname, e.job, e.instance, annotations,
                             e.duration_min, e.labels, now=now)
        try:
            transport.send(alert)
        except AlertError as exc:
            report.errors.append(exc)
            report.notes.append(f"Alertmanager FAILED for {e.key}: {exc}")
        else:
            report.fired.append(e.key)


def _notify_channel(sent_log: SentLog, transport: Transport, result: ChannelReport,
                    episodes: list[Episode], *, title: str, resolved_title: str,
                    resolved_text: str, link: str, now: datetime,
                    repeat_after: timedelta | None, resolve_after: timedelta | None,
                    unknown: Iterable[str], max_lines: int) -> None:
    plan = sent_log.plan({e.key: e.state for e in episodes}, now, repeat_after=repeat_after,
                         resolve_after=resolve_after, unknown=unknown)
    result.ongoing, result.waiting = plan.ongoing, plan.waiting
    if plan.announce:
        announce = set(plan.announce)
        new = [e for e in episodes if e.key in announce]  # the caller's order: worst first
        lines = [f"• {e.summary}" for e in new]
        colors = sorted((e.color for e in new), key=lambda c: _COLOR_RANK.get(c, 2))
        count = f" ({len(new)})" if len(new) > 1 else ""
        transport.send(_message(transport, f"{title}{count}", lines, link, colors[0], max_lines,
                                resolved=False))
        sent_log.record(plan.announce, now, states={e.key: e.state for e in new},
                        notes={e.key: e.subject or e.key for e in new})
        result.announced = plan.announce
    if plan.resolved:
        entries = sent_log.entries()
        lines = [_resolved_line(k, entries.get(k), resolved_text) for k in plan.resolved]
        transport.send(_message(transport, resolved_title, lines, link, "good", max_lines,
                                resolved=True))
        sent_log.record_resolved(plan.resolved, now)
        result.resolved = plan.resolved
    sent_log.touch(plan.ongoing, now)


def _resolved_line(key: str, entry: Entry | None, resolved_text: str) -> str:
    if entry is None:
        return f"• {key} {resolved_text}"
    return (f"• {entry.note or key} {resolved_text} "
            f"(announced {entry.first_sent:%Y-%m-%d %H:%M} UTC)")


def _message(transport: Transport, title: str, lines: list[str], link: str, color: str,
             max_lines: int, resolved: bool) -> Alert:
    shown = lines[:max_lines]
    if len(lines) > max_lines:
        shown.append(f"… and {len(lines) - max_lines} more (see the notebook output)")
    if link:
        shown.append(f"<{link}|details>")
    text = "\n".join(shown)
    if isinstance(transport, NtfyTransport):  # ntfy shows text as is: no Slack markup
        text = plain_text(text)
    return Alert(title=title, text=text, color=color,
                 priority="default" if resolved else "high",
                 tags=("white_check_mark",) if resolved else ("warning",))


def output_link(notebook_html: str) -> str:
    """``OONI_OUTPUT_BASE_URL`` + ``notebook_html`` (just the file name when the base is unset)."""
    base = config.get("OONI_OUTPUT_BASE_URL") or ""
    return f"{base.rstrip('/')}/{notebook_html}" if base else notebook_html


def _stem(notebook_html: str) -> str:
    return Path(notebook_html).stem


# --- the measurement-flow alarms -------------------------------------------------------------


OUTAGE_ALERTNAME = "IncomingMeasurementsTotalOutage"


def outage_episode(outage: TotalOutage | None, duration_min: float) -> list[Episode]:
    """The total-outage episode (none when ``outage`` is None): key
    ``IncomingMeasurementsTotalOutage|all``, Alertmanager ``severity=critical``, listed first."""
    if outage is None:
        return []
    return [Episode(episode_key(OUTAGE_ALERTNAME, "all"), f"*{outage.describe()}*",
                    subject="the measurement flow (all probe types)", alertname=OUTAGE_ALERTNAME,
                    instance="all", labels={"severity": "critical"},
                    annotations={"since": f"{outage.since:%Y-%m-%d %H:%M}",
                                 "expected_per_" + outage.unit: f"{outage.expected:.0f}"},
                    duration_min=duration_min, color="danger")]


def send_flow_alerts(current: pd.DataFrame, what: str, notebook_html: str, alertname: str, *,
                     send: bool, now: datetime | None = None, duration_min: float = 90,
                     state_dir: str | Path | None = None,
                     outage: TotalOutage | None = None) -> NotifyReport:
    """Alerts for the hourly measurement-flow notebooks.

    ``current``: alarms still open in the last complete hours (``latest_alarms`` rows:
    series, start, end, actual, expected, severity), or the episodes of
    :func:`~ooniutils.analyses.flow_episodes.fold_episodes` (``series`` = the country, its
    ``probe_types`` listed in the message). One episode per series (key
    ``<alertname>|<series>``; of several alarms of one series the latest is described): it
    starts when the series first appears in ``current`` and is over, with a "recovered"
    message, once it has dropped out — i.e. no alarmed hour in the notebook's
    ``ALERT_HOURS`` window, which is the hysteresis. Alertmanager gets ``alertname`` with
    ``instance=<series>`` and the actual/expected counts on every run.

    ``outage`` (:func:`~ooniutils.analyses.flow.total_outage`): no measurement at all in the
    recent window while the history had some — announced first, as its own episode (see
    :func:`outage_episode`), on top of the per-series drops.
    """
    link = output_link(notebook_html)
    episodes = outage_episode(outage, duration_min)
    if len(current):
        latest = current.sort_values("end").drop_duplicates("series", keep="last")
        for row in latest.sort_values("series").itertuples():
            text = (f"{what} {row.series}: {row.actual:,.0f} measurements from "
                    f"{row.start:%Y-%m-%d %H:%M} to {row.end:%H:%M} UTC, {row.expected:,.0f} "
                    f"expected ({row.severity:.0%} missing)")
            types = str(getattr(row, "probe_types", "") or "")
            if types:
                text += f"; probe types: {types}"
            episodes.append(Episode(
                episode_key(alertname, row.series), text, subject=f"{what} {row.series}",
                alertname=alertname, instance=str(row.series),
                annotations={"actual": f"{row.actual:.0f}", "expected": f"{row.expected:.0f}"},
                duration_min=duration_min))
    return notify_episodes(_stem(notebook_html), episodes,
                           title="Measurement outage" if outage else "Measurement drop",
                           resolved_title="Measurements recovered",
                           resolved_text="is back to the expected volume", link=link,
                           send=send, now=now, state_dir=state_dir)


def send_decline_alerts(declining: pd.DataFrame, weeks: int, notebook_html: str, *, send: bool,
                        now: datetime | None = None,
                        state_dir: str | Path | None = None,
                        outage: TotalOutage | None = None) -> NotifyReport:
    """Alerts for the daily long-term decline notebook.

    ``declining``: ``decline_table`` rows with ``alarm`` true (series, decline, level,
    p_value). One episode per probe type (key ``IncomingMeasurementsDecline|<series>``),
    over when the probe type is no longer declining significantly. Alertmanager gets
    ``IncomingMeasurementsDecline`` for 26 hours on every (daily) run. ``outage``: no
    measurement at all on the latest complete day(s), announced first (:func:`outage_episode`).
    """
    link = output_link(notebook_html)
    episodes = outage_episode(outage, 60 * 26) + [
        Episode(episode_key("IncomingMeasurementsDecline", row.series),
                f"probe type {row.series}: measurements declining {row.decline:.0%} over {weeks} "
                f"weeks (level {row.level:,.0f}/day, p={row.p_value:.1e})",
                subject=f"probe type {row.series}", alertname="IncomingMeasurementsDecline",
                instance=str(row.series), annotations={"decline": f"{row.decline:.3f}"},
                duration_min=60 * 26, color="warning")
        for row in (declining.sort_values("series").itertuples() if len(declining) else ())]
    return notify_episodes(_stem(notebook_html), episodes,
                           title="Measurement outage" if outage else "Measurement decline",
                           resolved_title="Measurement decline over",
                           resolved_text="is no longer declining", link=link, send=send,
                           now=now, state_dir=state_dir)


# --- the test helper alarm -------------------------------------------------------------------

HELPER_MEASUREMENTS = "web_connectivity measurements with a test helper"


def send_helper_alerts(current: pd.DataFrame, inventory: pd.DataFrame | None,
                       notebook_html: str, *, send: bool, now: datetime | None = None,
                       resolve_after: timedelta = timedelta(minutes=90),
                       state_dir: str | Path | None = None,
                       silence: TotalOutage | None = None) -> NotifyReport:
    """Alerts for the hourly test helper failure-rate notebook.

    ``current``: :func:`~ooniutils.analyses.test_helpers.helper_alarms` rows of the hour
    evaluated; helpers with ``alarm`` true are the episodes (key ``TestHelperFailing|<host>``).
    A helper's episode is over once it has not alarmed for ``resolve_after`` (default 90
    minutes: two hourly runs in a row without the alarm), so a rate hovering at the
    threshold does not post start/recovered pairs every hour. Alertmanager gets
    ``TestHelperFailing`` with ``instance=<host>`` on every alarmed run.

    ``silence`` (:func:`~ooniutils.analyses.flow.total_outage` over the helper counts): no
    web_connectivity measurement with a test helper in the recent hours while the history had
    some — nothing can be judged, which is an alarm of its own (key
    ``TestHelperNoMeasurements|all``, Alertmanager severity critical), announced first.
    """
    from .analyses.test_helpers import alarm_lines

    lines = alarm_lines(current, inventory) if len(current) else {}
    episodes = [] if silence is None else [Episode(
        episode_key("TestHelperNoMeasurements", "all"),
        f"*{silence.describe(HELPER_MEASUREMENTS)}: helper failures cannot be judged*",
        subject="web_connectivity measurements with a test helper",
        alertname="TestHelperNoMeasurements", instance="all", labels={"severity": "critical"},
        color="danger")]
    episodes += [Episode(episode_key("TestHelperFailing", helper), text,
                        subject=f"test helper {helper}", alertname="TestHelperFailing",
                        instance=str(helper))
                for helper, text in sorted(lines.items())]
    return notify_episodes(_stem(notebook_html), episodes,
                           title="Test helper failing for all probes",
                           resolved_title="Test helper recovered",
                           resolved_text="no longer fails more than its baseline",
                           link=output_link(notebook_html), send=send, now=now,
                           resolve_after=resolve_after, state_dir=state_dir)


# --- TLS certificates --------------------------------------------------------------------------


def send_tls_alerts(certs: pd.DataFrame, notebook_html: str, *, send: bool,
                    reminder_days: Sequence[int] = (7, 1), now: datetime | None = None,
                    state_dir: str | Path | None = None,
                    expected_offline: str | Iterable[str] = ()) -> NotifyReport:
    """Alerts for the daily TLS certificate notebook (``check_tls_certs`` output).

    One episode per host:port with a certificate problem (expiring, expired, or invalid for
    another reason; key ``TLSCertExpiry|<host>:<port>``). Its state is the status, with the
    expiring ones split by ``reminder_days`` (see :func:`~ooniutils.tls.cert_alert_state`),
    so Slack hears once when a certificate enters the warning window, once more when fewer
    than 7 and 1 days are left, once when it expires, and once ("fixed") when it is valid
    again — not daily. Alertmanager gets ``TLSCertExpiry`` (job ``tls-cert-expiry``,
    ``severity`` critical when expired) for 25 hours on every daily run.

    A host whose certificate could not be fetched is announced with the reason (same key,
    state ``unreachable``; Alertmanager ``TLSHostUnreachable``): a check that cannot see is
    not "no alarm". Hosts listed in ``expected_offline`` (``OONI_TLS_EXPECTED_OFFLINE``:
    ``host[:port]`` items) are the exception: when unreachable they are unknown this run,
    neither alerted nor resolved.
    """
    from .tls import (
        cert_alert_state,
        cert_problems,
        describe_cert_problem,
        describe_unreachable,
        expected_offline_targets,
    )

    offline = expected_offline_targets(expected_offline)
    problems, unreachable = cert_problems(certs)
    episodes = []
    for row in problems.itertuples():
        target = f"{row.host}:{row.port}"
        expired = row.status == "expired"
        episodes.append(Episode(
            episode_key("TLSCertExpiry", target), describe_cert_problem(row),
            subject=f"{target} certificate", state=cert_alert_state(row, reminder_days),
            alertname="TLSCertExpiry", job="tls-cert-expiry", instance=target,
            labels={"severity": "critical" if expired else "warning"}, duration_min=25 * 60,
            color="danger" if expired else "warning"))
    unknown = []
    for r in unreachable.itertuples():
        target = f"{r.host}:{r.port}"
        if (r.host, int(r.port)) in offline:
            unknown.append(episode_key("TLSCertExpiry", target))
            continue
        episodes.append(Episode(
            episode_key("TLSCertExpiry", target), describe_unreachable(r),
            subject=f"{target} certificate", state="unreachable", alertname="TLSHostUnreachable",
            job="tls-cert-expiry", instance=target, labels={"severity": "warning"},
            annotations={"error": str(r.error)}, duration_min=25 * 60, color="danger"))
    return notify_episodes(_stem(notebook_html), episodes, title="TLS certificates need attention",
                           resolved_title="TLS certificates fixed",
                           resolved_text="is valid again", link=output_link(notebook_html),
                           send=send, now=now, unknown=unknown, state_dir=state_dir)
