"""Tell each episode once per channel: the one state machine behind every alert.

An *episode* is a condition that starts, may change state, and ends: a notebook failing, a
notebook late, a finding at ``alarm``, an alarm notebook's incident on one country. Whoever
reads the messages wants one when it starts, one when its state changes, one when it is
over, and (for channels like Alertmanager that forget) a reminder now and then - never one
per check. This module holds those rules and nothing else (standard library only, no I/O):
jupycron's run alerts (:mod:`jupycron.run_alerts`) and ooniutils' notebook alarms
(:class:`ooniutils.alerts.sent_log.SentLog`) both decide with :func:`decide` and record with
:func:`after`; each keeps its records where it likes.

Rules, for one episode on one channel (:func:`decide`):

==========================================  =========================  ====================
the channel was told                         the episode now            action
==========================================  =========================  ====================
nothing, or a resolution                     active in state *s*        ``NEW``
an open episode in a state other than *s*    active in state *s*        ``CHANGED``
an open episode in *s*, ``repeat_after``     active in state *s*        ``REMIND``
passed since the last message
an open episode in *s*                       active in state *s*        ``ONGOING``
an open episode                              not active, not seen for   ``RESOLVE``
                                             ``resolve_after``
an open episode                              not active, seen less      ``WAITING``
                                             than ``resolve_after`` ago
nothing, or a resolution                     not active                 ``None``
an open episode                              unknown (could not look)   ``None``
==========================================  =========================  ====================

A record changes only once the message was delivered (:func:`after` with the action), so a
failed delivery is decided again - and retried - at the next check, and a delivered one is
never repeated. ``ONGOING`` and ``WAITING`` send nothing; ``after(.., ONGOING, ..)`` notes
that the episode was seen (the ``resolve_after`` clock restarts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = ["SENDING", "Action", "Told", "after", "decide", "plan"]


class Action(StrEnum):
    """What one check does for one episode on one channel (see the module table)."""

    NEW = "new"            # first message of an episode
    CHANGED = "changed"    # its state differs from the one told
    REMIND = "remind"      # repeat_after passed since the last message
    RESOLVE = "resolve"    # the episode is over
    ONGOING = "ongoing"    # told already: nothing to send
    WAITING = "waiting"    # inactive, but not for resolve_after yet: nothing to send


SENDING = frozenset({Action.NEW, Action.CHANGED, Action.REMIND, Action.RESOLVE})
"""The actions that send a message."""


@dataclass(frozen=True)
class Told:
    """What a channel was told about one episode. Times are aware UTC datetimes.

    ``first_sent``: first message of the current episode; ``last_sent``: latest message;
    ``last_seen``: latest check that saw the episode active; ``state``: the state last
    told; ``note``: the line last told (a resolution message can quote it); ``open``: told
    and not resolved yet; ``resolved``: when the resolution was delivered.
    """

    first_sent: datetime
    last_sent: datetime
    last_seen: datetime
    state: str = ""
    note: str = ""
    open: bool = True
    resolved: datetime | None = None

    @property
    def last_activity(self) -> datetime:
        """The latest of the record's times (what pruning looks at)."""
        return max(t for t in (self.last_sent, self.last_seen, self.resolved) if t is not None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime):
                data[name] = value.isoformat()
        return data

    @classmethod
    def from_json(cls, value: object) -> Told:
        """A record from :meth:`to_json`'s form; TypeError/KeyError/ValueError when malformed."""
        if not isinstance(value, dict):
            raise TypeError(f"record is a {type(value).__name__}, not an object")
        last_sent = _time(value["last_sent"])
        resolved = value.get("resolved")
        return cls(first_sent=_time(value.get("first_sent") or value["last_sent"]),
                   last_sent=last_sent,
                   last_seen=_time(value.get("last_seen") or value["last_sent"]),
                   state=str(value.get("state") or ""), note=str(value.get("note") or ""),
                   open=bool(value.get("open", True)),
                   resolved=_time(resolved) if resolved else None)


def decide(told: Told | None, state: str | None, now: datetime, *,
           repeat_after: timedelta | None = None, resolve_after: timedelta | None = None,
           unknown: bool = False) -> Action | None:
    """The action for one episode on one channel at ``now`` (see the module table).

    ``state``: the episode's state now (``""`` when it has none), None when it is not
    active. ``unknown``: an inactive episode's status could not be determined this time (a
    host that did not answer): it is not resolved (an active one is decided as usual).
    """
    if state is not None:
        if told is None or not told.open:
            return Action.NEW
        if told.state != state:
            return Action.CHANGED
        if repeat_after is not None and now - told.last_sent >= repeat_after:
            return Action.REMIND
        return Action.ONGOING
    if told is None or not told.open or unknown:
        return None
    if resolve_after is not None and now - told.last_seen < resolve_after:
        return Action.WAITING
    return Action.RESOLVE


def after(told: Told | None, action: Action | None, now: datetime, *, state: str = "",
          note: str = "") -> Told | None:
    """The record once ``action`` was delivered (or, for ``ONGOING``, seen) at ``now``.

    A message of a new episode starts it (``first_sent`` = now); one of an open episode keeps
    its start. ``WAITING`` and None change nothing.
    """
    if action in (Action.NEW, Action.CHANGED, Action.REMIND):
        first = told.first_sent if told is not None and told.open else now
        return Told(first_sent=first, last_sent=now, last_seen=now, state=state, note=note)
    if told is None:
        return None
    if action is Action.RESOLVE:
        return replace(told, open=False, resolved=now) if told.open else told
    if action is Action.ONGOING and told.open:
        return replace(told, last_seen=max(told.last_seen, now))
    return told


def plan(told: Mapping[str, Told], active: Mapping[str, str], now: datetime, *,
         repeat_after: timedelta | None = None, resolve_after: timedelta | None = None,
         unknown: Iterable[str] = ()) -> dict[str, Action]:
    """:func:`decide` for every key that is active or has a record; keys without an action
    are left out. ``active``: ``{key: state}`` of the episodes active now."""
    skip = set(unknown)
    out: dict[str, Action] = {}
    for key in sorted(set(told) | set(active)):
        action = decide(told.get(key), active.get(key), now, repeat_after=repeat_after,
                        resolve_after=resolve_after, unknown=key in skip)
        if action is not None:
            out[key] = action
    return out


def _time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"time {text!r} is not a string")
    t = datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
