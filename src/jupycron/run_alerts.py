"""Alerts on run state and findings: one message per change, never one per tick.

:func:`notify_changes` is called by the scheduler after each run and each tick, by the web
server every minute when ``alert_channels`` is set, and by ``jupycron alerts`` (e.g. from a
systemd timer, so "late" is noticed even when the scheduler is down). Each call:

1. computes every present notebook's conditions from its :class:`jupycron.status.StatusRow`
   (the one status model the dashboard shows; the failing and late messages also name
   the latest finding, when there is one):

   * **failing**: ``consecutive_failures >= alert_after_failures`` (failed, timeout, oom or
     crashed runs since the last success; a RUNNING or interrupted run neither counts nor
     breaks the streak) and the notebook is enabled;
   * **late**: the row's ``late_since`` - its latest slot has not been served and passed
     more than ``late_grace_s`` ago (the scheduler is down, stuck or the queue is full);
   * **finding** (when routed: the notebook's ``"AlertOnFinding"``, else the
     ``alert_on_finding`` setting): the latest finding is ``warning``, ``alarm`` or
     ``no_data``; its level is the episode's state, so ``warning -> alarm`` is told as a
     change and ``alarm -> ok`` as the end. A notebook that never reported has no finding
     episode. ``AlertOnFinding`` as a list picks channels among ``alert_channels``;

2. decides per channel with the one episode state machine (:mod:`jupycron.episodes`) from
   what each channel was last told (the alert state, kept in the run ledger under the key
   ``run_alerts``: :func:`load_state`/:func:`save_state`)
   and sends only what changed: "firing" (new or changed), "resolved", and Alertmanager's
   re-fire once :data:`ALERTMANAGER_REFIRE` has passed. A notebook that was deleted or
   disabled while alerting gets its resolution message.

Delivery goes through the injected senders (:mod:`jupycron.senders`: ``senders=`` or the
ones the entry point installed; the CLI installs ooniutils' Alertmanager/Slack/ntfy
transports), one attempt bounded as a whole by :data:`SEND_TIMEOUT_S`; a call stops sending
after :data:`CHECK_BUDGET_S` (the rest waits for the next call) and at once when its
``cancel`` event is set (SIGTERM). A channel that is down costs one timeout per call (it is
skipped for the rest of that call), its error is logged and kept in the state
(``last_error``, ``error_at``), and the message is tried again at the next call.
Alertmanager alerts (``JupycronRunFailing`` / ``JupycronRunLate`` / ``JupycronFinding``,
labels ``notebook`` and ``job="jupycron"``) are fired for :data:`ALERTMANAGER_DURATION`;
recovery posts them with ``endsAt`` = now.

State (version 2; version 1 files are read and converted)::

    {"version": 2, "notebooks": {"<rel>": {"failing": {
        "active": true, "since": "<ISO>", "title": "...",
        "channels": {"slack": {"told": <jupycron.episodes.Told as JSON, or null>,
                               "last_error": null, "error_at": null}}}}}}

Concurrent callers serialise on ``flock(<output>/.alert-state.lock)``; a caller that
cannot get it within :data:`LOCK_WAIT_S` returns without sending (the holder or the next call
catches up), so a slow channel never stacks up behind the runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safefiles import locks

from . import episodes, senders
from .config import Settings
from .episodes import Action, Told
from .exceptions import ConfigError, DeliveryError
from .ledger import RunStore, open_store
from .models import ALERT_CHANNELS, FindingLevel, Notebook
from .senders import AlertMessage, Sender, SenderFactory
from .status import StatusRow, current_rows, finding_word

log = logging.getLogger(__name__)

__all__ = [
    "ALERTMANAGER_DURATION",
    "CHANNELS",
    "Condition",
    "Delivery",
    "alert_lock_file",
    "conditions",
    "describe_finding_routing",
    "finding_channels",
    "finding_routing",
    "load_state",
    "notify_changes",
    "parse_channels",
    "save_state",
]

CHANNELS = ALERT_CHANNELS
SEND_TIMEOUT_S = 5.0
#: Sending stops after this many seconds in one call; what is left goes at the next call.
CHECK_BUDGET_S = 30.0
LOCK_WAIT_S = 5.0
ALERTMANAGER_DURATION = timedelta(hours=4)
ALERTMANAGER_REFIRE = timedelta(hours=3)
ALERTNAMES = {"failing": "JupycronRunFailing", "late": "JupycronRunLate",
              "finding": "JupycronFinding"}
STATE_VERSION = 2
#: The run ledger's key for this state (:meth:`jupycron.ledger.RunStore.alert_state`).
STATE_KEY = "run_alerts"
#: Finding levels that make a finding episode active (``ok`` ends it).
FINDING_ACTIVE = frozenset({FindingLevel.WARNING, FindingLevel.ALARM, FindingLevel.NO_DATA})


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


@dataclass(frozen=True)
class Condition:
    """One alertable episode of one notebook, as computed now."""

    notebook: str
    kind: str            # "failing", "late" or "finding"
    state: str | None    # None: not active; else its state ("" or the finding level)
    title: str           # firing title (kept in the state for the resolution message)
    text: str
    link: str | None     # the notebook's output page (output_base_url), if configured
    channels: tuple[str, ...] = ()   # where it is told

    @property
    def active(self) -> bool:
        return self.state is not None


@dataclass(frozen=True)
class Delivery:
    """One message attempted by :func:`notify_changes`."""

    notebook: str
    kind: str
    channel: str
    action: str          # "fire", "refresh" (Alertmanager re-fire) or "resolve"
    ok: bool
    error: str | None = None


_VERBS = {Action.NEW: "fire", Action.CHANGED: "fire", Action.REMIND: "refresh",
          Action.RESOLVE: "resolve"}


def _output_link(settings: Settings, row: StatusRow) -> str | None:
    if not settings.output_base_url or not row.output_href:
        return None
    return f"{settings.output_base_url.rstrip('/')}/{row.output_href}"


def finding_channels(settings: Settings, nb: Notebook, configured: Sequence[str]) -> tuple[str, ...]:
    """The channels ``nb``'s finding changes go to: its ``"AlertOnFinding"`` (true: every
    configured channel; a list: those of them it names; false: none), else the
    ``alert_on_finding`` setting."""
    return finding_routing(settings, nb, configured)[0]


_MISROUTED_TOLD: set[tuple[str, tuple[str, ...]]] = set()


def finding_routing(settings: Settings, nb: Notebook | None,
                    configured: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the channels ``nb``'s finding changes go to, the channels it asks for that are not
    in ``alert_channels``): a notebook naming ``ntfy`` on a host that only configured
    Slack is told nowhere on ntfy, which the dashboard and the alert check say. Asking
    for findings (true) with no channel configured at all is ``("any channel",)`` missing."""
    want = nb.spec.alert_on_finding if nb is not None and nb.spec is not None else None
    if want is None:
        want = settings.alert_on_finding
    if want is False:
        return (), ()
    if want is True:
        return tuple(configured), () if configured else ("any channel",)
    return (tuple(c for c in configured if c in want),
            tuple(c for c in want if c not in configured))


def describe_finding_routing(settings: Settings, nb: Notebook | None) -> str:
    """One line for the notebook's page: where its finding changes go, and what it asks
    for that does not reach a channel."""
    try:
        configured = parse_channels(settings.alert_channels)
    except ConfigError as exc:
        return f"NOT SENT: {exc}"
    routed, missing = finding_routing(settings, nb, configured)
    text = ", ".join(routed) if routed else "not sent"
    if missing:
        text += (f" — NOT SENT to {', '.join(missing)}: not in alert_channels "
                 f"({settings.alert_channels or 'empty'})")
    return text


def _detail_lines(detail: Any, limit: int = 10) -> list[str]:
    if not isinstance(detail, list):
        return []
    lines = [", ".join(f"{k}: {v}" for k, v in row.items()) if isinstance(row, dict) else str(row)
             for row in detail[:limit]]
    if len(detail) > limit:
        lines.append(f"... {len(detail) - limit} more")
    return lines


def conditions(settings: Settings, rows: Sequence[StatusRow], now: datetime,
               channels: Sequence[str] | None = None) -> list[Condition]:
    """Every row's conditions (failing, late, finding); pure. ``channels``: the configured
    channels (default: ``alert_channels``)."""
    configured = tuple(parse_channels(settings.alert_channels) if channels is None else channels)
    threshold = max(1, settings.alert_after_failures)
    out: list[Condition] = []
    for row in rows:
        link = _output_link(settings, row)
        last = row.last_run
        kind = f" ({row.failure_kind})" if row.failure_kind else ""
        failing = row.notebook.schedulable and row.consecutive_failures >= threshold
        if last is not None and last.status.is_failure:
            err = f"{last.error_name}: {last.error_value}" if last.error_name else (last.error_value or "")
            detail = (f"{row.consecutive_failures} failed run(s) in a row; latest "
                      f"{last.started_at:%Y-%m-%d %H:%M} UTC: {str(last.status)}"
                      + (f" - {err}" if err else ""))
        else:
            detail = f"{row.consecutive_failures} failed run(s) in a row"
        found = ""
        if row.finding is not None:   # what it found last, beside how it ran
            found = (f"\nlatest finding: {finding_word(row.finding.level)}"
                     + (f": {row.finding.summary}" if row.finding.summary else ""))[:300]
        out.append(Condition(row.path, "failing", "" if failing else None,
                             f"jupycron: {row.path} is failing{kind}", detail[:1500] + found,
                             link, configured))
        slot = row.late_since
        late_text = ""
        if slot is not None:
            minutes = int((now - slot).total_seconds() // 60)
            late_text = (f"its {slot:%Y-%m-%d %H:%M} UTC slot ({row.schedule}) passed {minutes} min "
                         "ago without a run: is the scheduler running?" + found)
        out.append(Condition(row.path, "late", "" if slot is not None else None,
                             f"jupycron: {row.path} is late", late_text, link, configured))
        routed, missing = finding_routing(settings, row.notebook, configured)
        if missing and (row.path, missing) not in _MISROUTED_TOLD:
            _MISROUTED_TOLD.add((row.path, missing))  # once per process, not every check
            log.warning("%s asks for its findings on %s, not in alert_channels (%s): not sent "
                        "there", row.path, ", ".join(missing), settings.alert_channels or "empty")
        finding = row.finding
        if routed and finding is not None:
            word = finding_word(finding.level)
            at = row.finding_run.started_at if row.finding_run else None
            text = "\n".join([f"finding {word}"
                               + (f" (run of {at:%Y-%m-%d %H:%M} UTC)" if at else "")
                               + f": {finding.summary}", *_detail_lines(finding.detail)])
            out.append(Condition(row.path, "finding",
                                 str(finding.level) if finding.level in FINDING_ACTIVE else None,
                                 f"jupycron: {row.path} reports {word}: {finding.summary}"[:300],
                                 text[:1500], link, routed))
        elif routed:
            # never reported: no finding episode (but an old one of it still resolves)
            out.append(Condition(row.path, "finding", None, "", "", link, routed))
    return out


# --- state -------------------------------------------------------------------------------------

def _iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat()


def _parse(v: Any) -> datetime | None:
    try:
        d = datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        return None
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


def _from_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept ``{"told": "firing"|"resolved", "at": ISO}`` per channel."""
    for kinds in doc["notebooks"].values():
        for entry in kinds.values():
            since = entry.get("since")
            for ch in entry.get("channels", {}).values():
                at = ch.pop("at", None)
                if ch.get("told") == "firing" and _parse(at) is not None:
                    ch["told"] = Told(first_sent=_parse(since) or _parse(at),  # type: ignore[arg-type]
                                      last_sent=_parse(at), last_seen=_parse(at)).to_json()  # type: ignore[arg-type]
                else:
                    ch["told"] = None
    doc["version"] = STATE_VERSION
    return doc


def load_state(store: RunStore) -> dict[str, Any]:
    """The alert state (``{"version": 2, "notebooks": {...}}``, see the module doc) from the
    run ledger; empty when missing or of an unexpected shape (logged: telling again beats
    never telling). A version 1 state (imported from an old ``.alert-state.json``) is
    converted."""
    doc = store.alert_state(STATE_KEY)
    if doc is None:
        return {"version": STATE_VERSION, "notebooks": {}}
    try:
        if isinstance(doc.get("notebooks"), dict):
            if doc.get("version") == STATE_VERSION:
                return doc
            if doc.get("version") == 1:
                return _from_v1(doc)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        log.warning("the run alerts' state cannot be read (%s): starting from an empty one", exc)
        return {"version": STATE_VERSION, "notebooks": {}}
    log.warning("the run alerts' state has an unexpected shape: starting from an empty one")
    return {"version": STATE_VERSION, "notebooks": {}}


def save_state(store: RunStore, doc: Mapping[str, Any]) -> None:
    """Write the alert state into the run ledger (one transaction)."""
    store.save_alert_state(STATE_KEY, dict(doc))


def _told(ch: Mapping[str, Any]) -> Told | None:
    raw = ch.get("told")
    if raw is None:
        return None
    try:
        return Told.from_json(raw)
    except (TypeError, KeyError, ValueError):
        log.warning("alert state: unreadable record %r; treated as never told", raw)
        return None


@contextlib.contextmanager
def _locked(path: Path, wait_s: float) -> Iterator[bool]:
    """Hold the lock on ``path`` (created); yields False when it stayed busy for ``wait_s``
    seconds (:mod:`safefiles.locks`, the one lock helper)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locks.locked(path, timeout=wait_s))
        except locks.LockTimeout:
            yield False
            return
        yield True


# --- messages ----------------------------------------------------------------------------------

_TAGS = {"failing": ("rotating_light",), "late": ("hourglass",),
         FindingLevel.ALARM: ("rotating_light",), FindingLevel.WARNING: ("warning",),
         FindingLevel.NO_DATA: ("grey_question",)}


def _message(cond: Condition, entry: Mapping[str, Any], action: Action, told: Told | None,
             now: datetime, resolution: str) -> AlertMessage:
    """The message for ``action`` on ``cond`` (the same for every channel)."""
    link = cond.link
    labels = {"notebook": cond.notebook, "job": "jupycron", "instance": socket.gethostname()}
    annotations = {"notebook": cond.notebook, **({"output": link} if link else {})}
    name = ALERTNAMES[cond.kind]
    if action is Action.RESOLVE:
        text = f"resolved: {entry.get('title') or cond.title}"
        return AlertMessage(title=f"jupycron: {cond.notebook} {resolution}", text=text,
                            name=name, labels=labels,
                            annotations={**annotations, "description": text}, starts_at=None,
                            ends_at=now, resolved=True, severity="good", link=link,
                            tags=("white_check_mark",))
    text = cond.text
    if action is Action.CHANGED and told is not None:
        text = f"(was {finding_word(told.state) if told.state else 'firing'}) {text}"
    if cond.kind == "finding":
        severity = "danger" if cond.state == FindingLevel.ALARM else "warning"
        tags = _TAGS[FindingLevel(cond.state or "alarm")]
        annotations["level"] = str(cond.state)
    else:
        severity = "danger" if cond.kind == "failing" else "warning"
        tags = _TAGS[cond.kind]
    return AlertMessage(title=cond.title, text=text, name=name, labels=labels,
                        annotations={**annotations, "description": text},
                        starts_at=_parse(entry.get("since")) or now,
                        ends_at=now + ALERTMANAGER_DURATION, severity=severity, link=link,
                        tags=tags)


def _resolution(cond: Condition, present: bool) -> str:
    if not present:
        return "was removed"
    return {"failing": "recovered", "late": "is on time again"}.get(cond.kind, "finding is ok again")


def notify_changes(settings: Settings, now: datetime | None = None,
                   rows: Sequence[StatusRow] | None = None, *,
                   history: RunStore | None = None,
                   notebooks: Sequence[Notebook] | None = None,
                   cancel: threading.Event | None = None,
                   senders: Mapping[str, SenderFactory] | None = None) -> list[Delivery]:
    """Send one message per changed condition to its channels; see the module doc.

    ``senders``: channel name -> sender factory (:mod:`jupycron.senders`); default: the ones
    installed for this process by the entry point. ``cancel`` (e.g. the scheduler's stop
    event) aborts a delivery in flight and skips the rest: they stay unsent in the state and
    go at the next call.

    ``now`` defaults to the current time; ``rows`` (from
    :func:`jupycron.status.current_rows`) avoids a second scan when the caller has them;
    otherwise they are built under the lock from ``history`` and ``notebooks`` when given
    (the scheduler passes its cached view, so a run's check costs a walk over the notebooks,
    not a parse of the history). Returns the attempted deliveries (empty when nothing
    changed, no channel is configured or another caller holds the lock). Raises ConfigError
    for an unknown channel name; delivery problems never raise.
    """
    channels = parse_channels(settings.alert_channels)
    if not channels:
        return []
    factories = dict(senders if senders is not None else _installed())
    now = (now or datetime.now(UTC)).astimezone(UTC)
    store = history if history is not None else open_store(settings)
    try:
        with _locked(alert_lock_file(settings.output_dir), LOCK_WAIT_S) as got:
            if not got:
                log.info("alert state is locked by another caller: skipping this check")
                return []
            if rows is None:
                rows = current_rows(settings, now, history=store, notebooks=notebooks)
            state = load_state(store)
            before = json.dumps(state, sort_keys=True)
            deliveries = _apply(state["notebooks"], conditions(settings, rows, now, channels),
                                factories, now, cancel)
            if json.dumps(state, sort_keys=True) != before:
                save_state(store, state)
    finally:
        if history is None:
            store.close()
    return deliveries


def _installed() -> dict[str, SenderFactory]:
    return senders.installed()


def _apply(notebooks: dict[str, Any], conds: Sequence[Condition],
           factories: Mapping[str, SenderFactory], now: datetime,
           cancel: threading.Event | None = None) -> list[Delivery]:
    by_key = {(c.notebook, c.kind): c for c in conds}
    present = {c.notebook for c in conds}
    # Entries of notebooks no longer present (deleted or renamed) resolve too.
    for rel, kinds in notebooks.items():
        for kind in list(kinds):
            if (rel, kind) not in by_key and kind in ALERTNAMES:
                by_key[(rel, kind)] = Condition(rel, kind, None, kinds[kind].get("title", ""), "",
                                                None, tuple(kinds[kind].get("channels", {})))
    budget_end = time.monotonic() + CHECK_BUDGET_S
    down: dict[str, str] = {}
    made: dict[str, Sender] = {}
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
        resolution = _resolution(cond, rel in present)
        for channel in cond.channels:
            ch = entry["channels"].setdefault(channel, {"told": None})
            told = _told(ch)
            action = episodes.decide(told, cond.state, now, repeat_after=(
                ALERTMANAGER_REFIRE if channel == "alertmanager" else None))
            if action not in episodes.SENDING:
                continue
            assert action is not None
            verb = _VERBS[action]
            if channel in down:
                ch.update(last_error=down[channel], error_at=_iso(now))
                deliveries.append(Delivery(rel, kind, channel, verb, False, down[channel]))
                continue
            if (cancel is not None and cancel.is_set()) or time.monotonic() >= budget_end:
                why = "stopping" if cancel is not None and cancel.is_set() \
                    else f"this check used its {CHECK_BUDGET_S:g} s"
                deliveries.append(Delivery(rel, kind, channel, verb, False,
                                           f"deferred to the next check ({why})"))
                continue
            message = _message(cond, entry, action, told, now, resolution)
            try:
                if channel not in made:
                    factory = factories.get(channel)
                    if factory is None:
                        raise DeliveryError(f"no sender for channel {channel!r} is installed "
                                            "(the jupycron CLI installs ooniutils' senders)",
                                            channel, permanent=True)
                    made[channel] = factory()
                made[channel].send(message, timeout_s=SEND_TIMEOUT_S, cancel=cancel)
            except DeliveryError as exc:
                error = str(exc)
                log.warning("alert %s for %s via %s failed (retried at the next check): %s",
                            kind, rel, channel, error)
                ch.update(last_error=error, error_at=_iso(now))
                down[channel] = (f"skipped: {error}" if exc.permanent else
                                 f"skipped: {channel} failed earlier in this check ({error})")
                deliveries.append(Delivery(rel, kind, channel, verb, False, error))
                continue
            new = episodes.after(told, action, now, state=cond.state or "", note=cond.title)
            ch.update(told=new.to_json() if new is not None else None, last_error=None,
                      error_at=None)
            deliveries.append(Delivery(rel, kind, channel, verb, True))
            log.info("alert %s %s for %s sent via %s", kind, verb, rel, channel)
        # Forget an inactive entry no channel has open any more.
        settled = not cond.active and not any(
            (t := _told(c)) is not None and t.open for name, c in entry["channels"].items()
            if name in cond.channels and isinstance(c, dict))
        if settled:
            kinds.pop(kind, None)
        else:
            kinds[kind] = entry
        if kinds:
            notebooks[rel] = kinds
        else:
            notebooks.pop(rel, None)
    return deliveries
