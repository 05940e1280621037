"""What an alarm notebook already announced, so each episode is announced once.

Alarm notebooks run every hour and see the same incident on every run while it lasts.
Alertmanager wants to hear about it on every run (same labels = same alert, ``endsAt``
pushed forward), but people reading Slack or ntfy want one message when it starts, one when
it changes and one when it is over. A :class:`SentLog` remembers, per episode key, when it
was announced, in which state, whether it is still open, and the line that announced it
(reused by the "recovered" message).

The log is a small JSON file, by default ``<state dir>/<name>.json`` where the state dir is
``$JUPYCRON_STATE_DIR`` or ``$XDG_STATE_HOME/ooni-monitoring`` (``~/.local/state/...``)::

    {"version": 2,
     "sent": {"IncomingMeasurementsDrop|ooniprobe-android":
              {"first_sent": "2024-05-01T10:00:00+00:00", "last_sent": "...", "last_seen": "...",
               "state": "", "note": "probe type ooniprobe-android: ...", "open": true,
               "resolved": null}}}

Rules (see :meth:`SentLog.plan`; they are :mod:`jupycron.episodes`, the one state machine
run alerts use too): an active key is announced when it has no open entry
(first time, or a new episode after a resolved one), when its ``state`` differs from the
announced one, or when ``repeat_after`` has passed since the last message. An open entry
whose key is no longer active (and not ``unknown`` this run) is resolved, once it has been
inactive for ``resolve_after``. Callers record a key only *after* the channel accepted the
message, so a failed send is retried on the next run and a delivered one is never repeated.

Every change is a read-modify-write under an exclusive ``fcntl`` lock on the state folder
and replaces the file atomically (:mod:`safefiles.atomic`), so two runs of one notebook
(a scheduled run and a manual "run now") cannot lose each other's records. A file that
cannot be read is moved aside (``<name>.corrupt-<unix time>``) and treated as empty:
announcing again beats failing the hourly job forever. Entries whose last activity is older
than ``keep_days`` are dropped on every write. The older format of the event notebook,
``{"sent": {key: iso_time}}``, is read as open entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jupycron import episodes
from jupycron.episodes import Action, Told
from safefiles.atomic import atomic_write_text
from safefiles.locks import locked

from ..jupycron_plugin import STATE_DIR_ENV, jupycron_state_dir

log = logging.getLogger(__name__)

STATE_ENV = STATE_DIR_ENV  # jupycron's kernel-environment contract (ooniutils.jupycron_plugin)
FORMAT_VERSION = 2
KEY_SEPARATOR = "|"
_ANNOUNCE = frozenset({Action.NEW, Action.CHANGED, Action.REMIND})


def default_state_dir() -> Path:
    """``$JUPYCRON_STATE_DIR``, else ``$XDG_STATE_HOME/ooni-monitoring`` (XDG default
    ``~/.local/state``). Nothing is created here; writers create the folder when needed."""
    given = jupycron_state_dir()
    if given is not None:
        return given
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "ooni-monitoring"


def state_path(name: str, state_dir: str | Path | None = None) -> Path:
    """``<state_dir>/<name>.json`` (default state dir: :func:`default_state_dir`).

    ``name`` is a file stem such as ``"autorun_tls_cert_expiry.slack"``; path separators
    and a leading dot are refused (the log must stay inside the state folder).
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name \
            or name.startswith("."):
        raise ValueError(f"invalid sent-log name {name!r}: use a plain file stem like "
                         "'autorun_tls_cert_expiry.slack'")
    folder = Path(state_dir) if state_dir is not None else default_state_dir()
    return folder / f"{name}.json"


def episode_key(*parts: object) -> str:
    """A stable key from the parts that identify an episode, joined with ``|``.

    Datetimes (and pandas Timestamps) become ISO 8601 in UTC to the second, so the same
    instant gives the same key whatever its type or time zone; naive ones are taken as UTC.
    Empty parts, and parts containing ``|`` or a line break, are refused: they would make
    two different episodes share a key.

    >>> episode_key("IncomingMeasurementsDrop", "IR/ooniprobe-android")
    'IncomingMeasurementsDrop|IR/ooniprobe-android'
    """
    if not parts:
        raise ValueError("an episode key needs at least one part")
    texts = []
    for part in parts:
        if isinstance(part, datetime):  # pandas.Timestamp is a datetime subclass
            t = part if part.tzinfo else part.replace(tzinfo=UTC)
            text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            text = str(part)
        if not text or KEY_SEPARATOR in text or "\n" in text or "\r" in text:
            raise ValueError(f"episode key part {part!r} is empty or contains '|' or a line break")
        texts.append(text)
    return KEY_SEPARATOR.join(texts)


Entry = Told
"""One announced key: :class:`jupycron.episodes.Told` (first_sent, last_sent, last_seen,
state, note, open, resolved)."""


def _entry(value: object) -> Entry:
    """An entry from its JSON form, or from a bare ISO time (the version 1 format)."""
    if isinstance(value, str):
        t = _parse_time(value)
        return Entry(first_sent=t, last_sent=t, last_seen=t)
    return Entry.from_json(value)


@dataclass(frozen=True)
class Plan:
    """What one run should do (see :meth:`SentLog.plan`); each list is sorted.

    ``announce``: active keys to send now (new, state changed, or reminder due);
    ``ongoing``: active keys already announced (nothing to send);
    ``resolved``: open keys no longer active (send "recovered", then :meth:`record_resolved`);
    ``waiting``: open keys inactive for less than ``resolve_after`` (nothing yet).
    """

    announce: list[str]
    ongoing: list[str]
    resolved: list[str]
    waiting: list[str]


class SentLog:
    """The keyed log of sent messages in the JSON file ``path`` (see the module doc).

    ``keep_days``: entries whose last activity is older are pruned on each write.

    Example (one run of an hourly alarm)::

        log = SentLog(state_path("my_alarm.slack"))
        plan = log.plan({"helper-3": ""}, now)
        if plan.announce:
            send_slack_msg("Helper failing", "...")
            log.record(plan.announce, now, notes={"helper-3": "helper-3 fails"})
        if plan.resolved:
            send_slack_msg("Recovered", "...")
            log.record_resolved(plan.resolved, now)
        log.touch(plan.ongoing, now)
    """

    def __init__(self, path: str | Path, keep_days: float = 30) -> None:
        if not keep_days > 0:
            raise ValueError(f"keep_days must be > 0, got {keep_days!r}")
        self.path = Path(path)
        self.keep = timedelta(days=keep_days)

    # reading

    def entries(self) -> dict[str, Entry]:
        """Every entry by key; ``{}`` when the file is missing or unreadable (moved aside)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return self._corrupt(exc)
        try:
            data = json.loads(text)
            sent = data["sent"]
            if not isinstance(sent, dict):
                raise TypeError("'sent' is not an object")
            return {str(k): _entry(v) for k, v in sent.items()}
        except (ValueError, KeyError, TypeError) as exc:
            return self._corrupt(exc)

    def load(self) -> dict[str, str]:
        """``{key: last sent time (ISO)}`` of every entry, open or resolved."""
        return {k: e.last_sent.isoformat() for k, e in self.entries().items()}

    def should_send(self, key: str, now: datetime | None = None, *, state: str = "",
                    repeat_after: timedelta | None = None) -> bool:
        """Whether an active ``key`` in ``state`` must be announced at ``now``: no open entry,
        another state announced, or ``repeat_after`` elapsed since the last message."""
        action = episodes.decide(self.entries().get(key), state, _now(now),
                                 repeat_after=repeat_after)
        return action in episodes.SENDING

    def plan(self, active: Mapping[str, str] | Iterable[str], now: datetime | None = None, *,
             repeat_after: timedelta | None = None, resolve_after: timedelta | None = None,
             unknown: Iterable[str] = ()) -> Plan:
        """Split this run's keys into announce / ongoing / resolved / waiting (no write).

        ``active``: the keys alarming now, as ``{key: state}`` or an iterable (state ``""``).
        ``unknown``: keys whose status could not be determined this run (a host that did not
        answer): neither announced nor resolved. ``resolve_after``: an open key is resolved
        only once it has not been seen active for that long (hysteresis against flapping;
        ``None`` resolves on the first run without it).
        """
        now = _now(now)
        states = dict(active) if isinstance(active, Mapping) else dict.fromkeys(active, "")
        actions = episodes.plan(self.entries(), {k: str(v or "") for k, v in states.items()},
                                now, repeat_after=repeat_after, resolve_after=resolve_after,
                                unknown=unknown)
        announce = [k for k, a in actions.items() if a in _ANNOUNCE]
        ongoing = [k for k, a in actions.items() if a is Action.ONGOING]
        resolved = [k for k, a in actions.items() if a is Action.RESOLVE]
        waiting = [k for k, a in actions.items() if a is Action.WAITING]
        return Plan(sorted(announce), sorted(ongoing), sorted(resolved), sorted(waiting))

    # writing (each a locked read-modify-write, then an atomic replace)

    def record(self, keys: Iterable[str], now: datetime | None = None, *,
               states: Mapping[str, str] | None = None,
               notes: Mapping[str, str] | None = None) -> None:
        """Record that ``keys`` were announced at ``now`` (call after the send succeeded).

        A key without an open entry starts a new episode (``first_sent`` = now); an open
        one keeps its ``first_sent``. ``states``/``notes`` give each key's announced state
        and line (default ``""``).
        """
        now = _now(now)
        keys = list(keys)
        states, notes = states or {}, notes or {}

        def change(entries: dict[str, Entry]) -> None:
            for key in keys:
                old = entries.get(key)
                state = str(states.get(key, ""))
                # a message about a key is a new episode, a change or a reminder: all record
                # the same way (see jupycron.episodes.after)
                new = episodes.after(old, Action.NEW if old is None or not old.open
                                     else Action.REMIND, now, state=state,
                                     note=str(notes.get(key, "")))
                assert new is not None
                entries[key] = new

        self._update(change, now)

    def record_resolved(self, keys: Iterable[str], now: datetime | None = None) -> None:
        """Mark the open entries of ``keys`` resolved at ``now`` (after the message went out).
        Unknown or already resolved keys are ignored."""
        now = _now(now)
        keys = list(keys)

        def change(entries: dict[str, Entry]) -> None:
            for key in keys:
                new = episodes.after(entries.get(key), Action.RESOLVE, now)
                if new is not None:
                    entries[key] = new

        self._update(change, now)

    def touch(self, keys: Iterable[str], now: datetime | None = None) -> None:
        """Note that the open entries of ``keys`` were seen active at ``now`` (no message
        sent): the clock of ``resolve_after`` restarts. No write when nothing changes."""
        now = _now(now)
        keys = set(keys)
        if not keys:
            return

        def change(entries: dict[str, Entry]) -> None:
            for key in keys:
                new = episodes.after(entries.get(key), Action.ONGOING, now)
                if new is not None:
                    entries[key] = new

        self._update(change, now)

    def prune(self, now: datetime | None = None) -> list[str]:
        """Drop entries whose last activity is older than ``keep_days``; returns their keys."""
        now = _now(now)
        dropped: list[str] = []
        self._update(lambda entries: None, now, dropped=dropped)
        return dropped

    # internals

    def _update(self, change: Callable[[dict[str, Entry]], None], now: datetime,
                dropped: list[str] | None = None) -> None:
        with self._locked():
            entries = self.entries()
            before = {k: e.to_json() for k, e in entries.items()}
            change(entries)
            cutoff = now - self.keep
            old = [k for k, e in entries.items() if e.last_activity < cutoff]
            for key in old:
                del entries[key]
            if dropped is not None:
                dropped.extend(sorted(old))
            after = {k: e.to_json() for k, e in entries.items()}
            if after == before:
                return  # nothing changed: no write (and no file created for nothing)
            data = {"version": FORMAT_VERSION, "sent": dict(sorted(after.items()))}
            atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The file itself is replaced on every write, so its inode cannot carry the lock;
        # the folder's can, and leaves no lock file behind. Writes take milliseconds, so
        # serialising every log of the folder costs nothing.
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder):
            yield

    def _corrupt(self, exc: BaseException) -> dict[str, Entry]:
        stamp = int(datetime.now(UTC).timestamp())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        log.warning("sent log %s is unreadable (%s); moving it to %s and starting empty",
                    self.path, exc, aside)
        with contextlib.suppress(OSError):
            self.path.replace(aside)
        return {}


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"time {text!r} is not a string")
    t = datetime.fromisoformat(text)  # ValueError on garbage: the file is corrupt
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
