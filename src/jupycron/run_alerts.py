"""Alerts on run state: one message per change (failing, late, recovered), never one per tick.

:func:`notify_changes` is called by the scheduler after each run and each tick, by the web
server every minute when ``alert_channels`` is set, and standalone
(``python -m jupycron.run_alerts --notebooks DIR --output DIR``, e.g. from a systemd timer, so
"late" is noticed even when the scheduler is down). Each call:

1. computes every present notebook's conditions from :func:`jupycron.summary.build_rows`
   (the same states the dashboard shows):

   * **failing**: ``consecutive_failures >= alert_after_failures`` (failed, timeout, oom or
     crashed runs since the last success; a RUNNING or interrupted run neither counts nor
     breaks the streak) and the notebook is enabled;
   * **late**: :func:`late_since` - its latest slot has not been served and passed more than
     ``late_grace_s`` ago (the scheduler is down, stuck or the queue is full);

2. compares them with what each channel was last told, kept in the run ledger
   (:meth:`jupycron.ledger.RunStore.alert_state`, key ``run_alerts``),
   and sends a message only where they differ ("firing" vs "resolved"). A notebook that was
   deleted or disabled while alerting gets its resolution message.

Channels (``alert_channels``: comma list of ``alertmanager``, ``slack``, ``ntfy``) use the
ooniutils transports with one attempt bounded as a whole by :data:`SEND_TIMEOUT_S` (an
endpoint that trickles its answer is cut off too); a call stops sending after
:data:`CHECK_BUDGET_S` (the rest waits for the next call) and at once when its ``cancel``
event is set (SIGTERM). A channel that is down costs one timeout per call (it is skipped for
the rest of that call), its error
is logged and kept in the state (``last_error``, ``error_at``), and the message is tried
again at the next call. Alertmanager alerts (``JupycronRunFailing`` / ``JupycronRunLate``,
labels ``notebook`` and ``job="jupycron"``) are fired for :data:`ALERTMANAGER_DURATION` and
re-fired while the condition holds once :data:`ALERTMANAGER_REFIRE` has passed; recovery
posts them with ``endsAt`` = now.

State (version 1)::

    {"version": 1, "notebooks": {"<rel>": {"failing": {
        "active": true, "since": "<ISO>", "title": "...",
        "channels": {"slack": {"told": "firing", "at": "<ISO>",
                               "last_error": null, "error_at": null}}}}}}

Concurrent callers serialise on ``flock(<output>/.alert-state.lock)``; a caller that
cannot get it within :data:`LOCK_WAIT_S` returns without sending (the holder or the next call
catches up), so a slow channel never stacks up behind the runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ooniutils.alerts import (
    Alert,
    AlertError,
    AlertmanagerTransport,
    NtfyTransport,
    RetryPolicy,
    SlackTransport,
    Transport,
)
from ooniutils.exceptions import OoniUtilsError

from .config import Settings
from .discovery import ScanCache, scan
from .exceptions import ConfigError, SpecError
from .ledger import RunStore, open_store
from .models import Notebook
from .schedule import next_slot
from .summary import SummaryRow, build_rows

log = logging.getLogger(__name__)

__all__ = [
    "ALERTMANAGER_DURATION",
    "CHANNELS",
    "Condition",
    "Delivery",
    "alert_lock_file",
    "conditions",
    "current_rows",
    "late_since",
    "notify_changes",
    "parse_channels",
]

CHANNELS = ("alertmanager", "slack", "ntfy")
SEND_TIMEOUT_S = 5.0
#: Sending stops after this many seconds in one call; what is left goes at the next call.
CHECK_BUDGET_S = 30.0
LOCK_WAIT_S = 5.0
ALERTMANAGER_DURATION = timedelta(hours=4)
ALERTMANAGER_REFIRE = timedelta(hours=3)
ALERTNAMES = {"failing": "JupycronRunFailing", "late": "JupycronRunLate"}
STATE_VERSION = 1


def alert_lock_file(output_dir: Path) -> Path:
    """``<output>/.alert-state.lock``: held while one caller checks and sends."""
    return Path(output_dir) / ".alert-state.lock"


def parse_channels(text: str) -> list[str]:
    """``"slack, ntfy"`` -> ``["slack", "ntfy"]``; unknown names raise ConfigError."""
    names = [c.strip().lower() for c in (text or "").split(",") if c.strip()]
    unknown = [c for c in names if c not in CHANNELS]
    if unknown:
        raise ConfigError(f"alert_channels: unknown channel(s) {', '.join(unknown)} "
                          f"(use {', '.join(CHANNELS)})", "alert_channels")
    return list(dict.fromkeys(names))


def current_rows(settings: Settings, now: datetime, cache: ScanCache | None = None, *,
                 history: RunStore | None = None,
                 notebooks: Sequence[Notebook] | None = None) -> list[SummaryRow]:
    """Scan the notebooks folder, load the history and build the dashboard rows.

    ``notebooks`` (a scan the caller just made) skips the scan; ``history`` is loaded
    instead of opening the ledger - pass a long-lived one (the scheduler's) whose view is
    only read again when the ledger changed.
    """
    if notebooks is None:
        notebooks = scan(settings.notebooks, settings.output_dir, cache)
    if history is not None:
        return build_rows(settings, notebooks, history.load(), now)
    store = open_store(settings)
    try:
        return build_rows(settings, notebooks, store.load(), now)
    finally:
        store.close()


def late_since(settings: Settings, row: SummaryRow, now: datetime) -> datetime | None:
    """The unserved slot when ``row``'s notebook is late, else None.

    Late: the latest slot is due (not yet served by a scheduled run, see
    :func:`jupycron.schedule.due_slot`) and the *first* slot missed since the last served
    one passed more than ``late_grace_s`` ago — so an hourly notebook that missed four slots
    is late at every minute of the hour, not only once the newest slot is old enough. A
    running or disabled notebook is never late; a new notebook is not late before its first slot.
    """
    if not row.due_now or row.next_run is None or row.state in ("running", "disabled"):
        return None
    first_missed = row.next_run
    served = row.history.last_scheduled_slot if row.history else None
    if served is not None and row.notebook.spec is not None:
        try:
            first_missed = min(first_missed, next_slot(row.notebook.spec, served))
        except SpecError:  # the row is shown disabled with the reason; not "late"
            return None
    elif served is None and row.history and row.history.first_seen:
        # A new notebook run at once (RunAtOnce) is due from when it was seen, not from
        # its latest slot, which may be older.
        first_missed = max(first_missed, row.history.first_seen)
    return first_missed if (now - first_missed).total_seconds() > settings.late_grace_s else None


@dataclass(frozen=True)
class Condition:
    """One alertable condition of one notebook, as computed now."""

    notebook: str
    kind: str            # "failing" or "late"
    active: bool
    title: str           # firing title (kept in the state for the resolution message)
    text: str
    link: str | None     # the notebook's output page (output_base_url), if configured


@dataclass(frozen=True)
class Delivery:
    """One message attempted by :func:`notify_changes`."""

    notebook: str
    kind: str
    channel: str
    action: str          # "fire", "refresh" (Alertmanager re-fire) or "resolve"
    ok: bool
    error: str | None = None


def _output_link(settings: Settings, row: SummaryRow) -> str | None:
    if not settings.output_base_url or not row.output_href:
        return None
    return f"{settings.output_base_url.rstrip('/')}/{row.output_href}"


def conditions(settings: Settings, rows: Sequence[SummaryRow], now: datetime) -> list[Condition]:
    """Both conditions (failing, late) of every row; pure apart from ``rows``."""
    threshold = max(1, settings.alert_after_failures)
    out: list[Condition] = []
    for row in rows:
        link = _output_link(settings, row)
        last = row.last_run
        kind = f" ({row.kind})" if row.kind else ""
        failing = row.notebook.schedulable and row.consecutive_failures >= threshold
        if last is not None and last.status.is_failure:
            err = f"{last.error_name}: {last.error_value}" if last.error_name else (last.error_value or "")
            detail = (f"{row.consecutive_failures} failed run(s) in a row; latest "
                      f"{last.started_at:%Y-%m-%d %H:%M} UTC: {str(last.status)}"
                      + (f" - {err}" if err else ""))
        else:
            detail = f"{row.consecutive_failures} failed run(s) in a row"
        out.append(Condition(row.path, "failing", failing,
                             f"jupycron: {row.path} is failing{kind}", detail[:1500], link))
        slot = late_since(settings, row, now)
        late_text = ""
        if slot is not None:
            minutes = int((now - slot).total_seconds() // 60)
            late_text = (f"its {slot:%Y-%m-%d %H:%M} UTC slot ({row.schedule}) passed {minutes} min "
                         "ago without a run: is the scheduler running?")
        out.append(Condition(row.path, "late", slot is not None,
                             f"jupycron: {row.path} is late", late_text, link))
    return out


# --- state file --------------------------------------------------------------------------------

def _iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat()


def _parse(v: Any) -> datetime | None:
    try:
        d = datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        return None
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


def _read_state(store: RunStore) -> dict[str, Any]:
    doc = store.alert_state("run_alerts")
    if doc is None:
        return {"version": STATE_VERSION, "notebooks": {}}
    if doc.get("version") == STATE_VERSION and isinstance(doc.get("notebooks"), dict):
        return doc
    log.warning("the run alerts' state has an unexpected shape: starting from an empty one")
    return {"version": STATE_VERSION, "notebooks": {}}


@contextlib.contextmanager
def _locked(path: Path, wait_s: float) -> Iterator[bool]:
    """flock ``path`` (created); yields False when it stayed busy for ``wait_s`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        yield False
                        return
                    raise
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


# --- messages ----------------------------------------------------------------------------------

def _message(channel: str, cond: Condition, entry: Mapping[str, Any], action: str,
             now: datetime, resolution: str) -> Alert:
    """The :class:`Alert` ``channel`` gets for ``action`` on ``cond``.

    Slack gets a mrkdwn link ``<url|output>``, ntfy and Alertmanager the plain URL.
    """
    link = cond.link
    labels = {"notebook": cond.notebook, "job": "jupycron", "instance": socket.gethostname()}
    annotations = {"notebook": cond.notebook, **({"output": link} if link else {})}
    if action == "resolve":
        title = f"jupycron: {cond.notebook} {resolution}"
        text = f"resolved: {entry.get('title') or cond.title}"
        plain = text + (f"\n{link}" if link else "")
        return Alert(title=title, text=f"{text}\n<{link}|output>" if channel == "slack" and link
                     else plain, name=ALERTNAMES[cond.kind], labels=labels,
                     annotations={**annotations, "description": plain}, ends_at=now,
                     color="good", priority="default", tags=("white_check_mark",))
    plain = cond.text + (f"\n{link}" if link else "")
    failing = cond.kind == "failing"
    return Alert(title=cond.title,
                 text=f"{cond.text}\n<{link}|output>" if channel == "slack" and link else plain,
                 name=ALERTNAMES[cond.kind], labels=labels,
                 annotations={**annotations, "description": plain},
                 starts_at=_parse(entry.get("since")) or now, ends_at=now + ALERTMANAGER_DURATION,
                 color="danger" if failing else "warning", priority="high",
                 tags=("rotating_light",) if failing else ("hourglass",))


def _transport(channel: str) -> Transport:
    if channel == "alertmanager":
        return AlertmanagerTransport.from_settings()
    if channel == "slack":
        return SlackTransport.from_settings()
    return NtfyTransport.from_settings()


def notify_changes(settings: Settings, now: datetime | None = None,
                   rows: Sequence[SummaryRow] | None = None, *,
                   history: RunStore | None = None,
                   notebooks: Sequence[Notebook] | None = None,
                   cancel: threading.Event | None = None) -> list[Delivery]:
    """Send one message per changed condition to every configured channel; see module doc.

    ``cancel`` (e.g. the scheduler's stop event) aborts a delivery in flight and skips the
    rest: they stay unsent in the state and go at the next call.

    ``now`` defaults to the current time; ``rows`` (from :func:`current_rows`) avoids a second
    scan when the caller has them; otherwise they are built under the lock from ``history``
    and ``notebooks`` when given (see :func:`current_rows`: the scheduler passes its cached
    view, so a run's check costs a walk over the notebooks, not a parse of the history). Returns the attempted deliveries (empty when nothing
    changed, no channel is configured or another caller holds the lock). Raises ConfigError
    for an unknown channel name; delivery problems never raise.
    """
    channels = parse_channels(settings.alert_channels)
    if not channels:
        return []
    now = (now or datetime.now(UTC)).astimezone(UTC)
    store = history if history is not None else open_store(settings)
    try:
        with _locked(alert_lock_file(settings.output_dir), LOCK_WAIT_S) as got:
            if not got:
                log.info("alert state is locked by another caller: skipping this check")
                return []
            if rows is None:
                rows = current_rows(settings, now, history=store, notebooks=notebooks)
            state = _read_state(store)
            before = json.dumps(state, sort_keys=True)
            deliveries = _apply(settings, state["notebooks"], conditions(settings, rows, now),
                                channels, now, cancel)
            if json.dumps(state, sort_keys=True) != before:
                store.save_alert_state("run_alerts", state)
    finally:
        if history is None:
            store.close()
    return deliveries


def _apply(settings: Settings, notebooks: dict[str, Any], conds: Sequence[Condition],
           channels: Sequence[str], now: datetime,
           cancel: threading.Event | None = None) -> list[Delivery]:
    by_key = {(c.notebook, c.kind): c for c in conds}
    present = {c.notebook for c in conds}
    # Entries of notebooks no longer present (deleted or renamed) resolve too.
    for rel, kinds in notebooks.items():
        for kind in list(kinds):
            if (rel, kind) not in by_key and kind in ALERTNAMES:
                by_key[(rel, kind)] = Condition(rel, kind, False, kinds[kind].get("title", ""), "",
                                                None)
    policy = RetryPolicy(attempts=1, timeout=SEND_TIMEOUT_S, backoff=0, deadline=SEND_TIMEOUT_S,
                         cancel=cancel)
    budget_end = time.monotonic() + CHECK_BUDGET_S
    down: dict[str, str] = {}
    transports: dict[str, Transport] = {}
    deliveries: list[Delivery] = []
    for (rel, kind), cond in sorted(by_key.items()):
        kinds = notebooks.get(rel, {})
        entry = kinds.get(kind)
        if entry is None:
            if not cond.active:
                continue
            entry = {"active": True, "since": _iso(now), "channels": {}}
        if cond.active:
            if not entry.get("active"):
                entry["since"] = _iso(now)
            entry.update(active=True, title=cond.title)
        else:
            entry["active"] = False
        if rel not in present:
            resolution = "was removed"
        else:
            resolution = "recovered" if kind == "failing" else "is on time again"
        want = "firing" if cond.active else "resolved"
        for channel in channels:
            ch = entry["channels"].setdefault(channel, {"told": "resolved"})
            action = None
            if ch.get("told") != want:
                action = "fire" if cond.active else "resolve"
            elif channel == "alertmanager" and cond.active:
                at = _parse(ch.get("at"))
                if at is None or now - at >= ALERTMANAGER_REFIRE:
                    action = "refresh"
            if action is None:
                continue
            if channel in down:
                ch.update(last_error=down[channel], error_at=_iso(now))
                deliveries.append(Delivery(rel, kind, channel, action, False, down[channel]))
                continue
            if (cancel is not None and cancel.is_set()) or time.monotonic() >= budget_end:
                why = "stopping" if cancel is not None and cancel.is_set() \
                    else f"this check used its {CHECK_BUDGET_S:g} s"
                deliveries.append(Delivery(rel, kind, channel, action, False,
                                           f"deferred to the next check ({why})"))
                continue
            alert = _message(channel, cond, entry, action, now, resolution)
            try:
                if channel not in transports:
                    transports[channel] = _transport(channel)
                transports[channel].send(alert, policy)
            except (OoniUtilsError, ValueError) as exc:
                error = str(exc)
                log.warning("alert %s for %s via %s failed (retried at the next check): %s",
                            kind, rel, channel, error)
                ch.update(last_error=error, error_at=_iso(now))
                if not (isinstance(exc, AlertError) and exc.permanent):
                    down[channel] = f"skipped: {channel} failed earlier in this check ({error})"
                else:
                    down[channel] = f"skipped: {error}"
                deliveries.append(Delivery(rel, kind, channel, action, False, error))
                continue
            ch.update(told=want, at=_iso(now), last_error=None, error_at=None)
            deliveries.append(Delivery(rel, kind, channel, action, True))
            log.info("alert %s %s for %s sent via %s", kind, action, rel, channel)
        # Forget resolved entries every configured channel knows about.
        settled = not cond.active and all(
            entry["channels"].get(c, {}).get("told", "resolved") == "resolved" for c in channels)
        if settled:
            kinds.pop(kind, None)
        else:
            kinds[kind] = entry
        if kinds:
            notebooks[rel] = kinds
        else:
            notebooks.pop(rel, None)
    return deliveries


if __name__ == "__main__":  # python -m jupycron.run_alerts --notebooks DIR --output DIR
    from .cli_web import alerts_command

    alerts_command()
