"""Pure schedule maths: when is a notebook's slot, and is it due.

Nothing here reads the clock; every function takes the time as an argument and returns
timezone-aware UTC datetimes. A *slot* is the instant a run is scheduled for.

``every`` schedules ("N unit", N may be fractional except for months):

* minutes, hours, days and weeks are fixed-length intervals whose slots are aligned to the
  Unix epoch (1970-01-01 00:00 UTC): ``30 minute`` fires at :00 and :30, ``1 hour`` at the top
  of each hour, ``1 day`` at 00:00 UTC, ``1.5 hour`` at 00:00, 01:30, 03:00 ... UTC (counted
  from the epoch, so also across midnight). ``1 week`` fires on **Thursdays** at 00:00 UTC,
  because the epoch was a Thursday.
* months are calendar months: ``N month`` fires at 00:00 UTC on the 1st of every N-th month,
  counting months since 1970-01 (``3 month`` fires on Jan/Apr/Jul/Oct 1st).

``cron`` schedules use :mod:`croniter` in the spec's ``tz`` (default UTC). Daylight saving:

* spring forward: a wall time that does not exist (``30 2 * * *`` in Europe/Berlin on the
  last Sunday of March) fires once at the first valid instant after the gap (03:00 local),
  which is croniter's behaviour.
* fall back: a wall time that happens twice fires only at its first occurrence, unless the
  hour field is ``*`` (an "every N minutes" style expression keeps firing through the
  repeated hour, like Vixie cron's handling of wildcard jobs).

Due rule (:func:`due_slot`): a notebook is due when its latest slot ``<= now`` exists and no
scheduled run has served that slot yet. After downtime only the latest slot is considered,
so a notebook catches up with *one* run, not one per missed slot. A notebook that has never
had a scheduled run becomes due only at the first slot strictly after it was first seen
(see :meth:`jupycron.ledger.NotebookHistory.first_seen`), so a new notebook shows "never
run" until its first slot instead of running the moment it is saved - unless it runs new
notebooks at once (``"RunAtOnce": true`` in its line, or the ``run_new_at_once`` setting
when the line says nothing): then its latest slot is due as soon as it is seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from .exceptions import SpecError
from .models import JobSpec

__all__ = [
    "EPOCH",
    "MAX_INTERVAL",
    "MAX_MONTHS",
    "MIN_INTERVAL",
    "Months",
    "due_slot",
    "is_due",
    "latest_slot",
    "next_slot",
    "normalise_every",
    "parse_every",
    "validate_cron",
    "validate_tz",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Shortest accepted ``every`` interval: the scheduler ticks once a minute.
MIN_INTERVAL = timedelta(minutes=1)
#: Longest accepted ``every`` interval (100 years): longer ones are typing mistakes, and
#: slots that far out leave the range of ``datetime`` (year 9999).
MAX_INTERVAL = timedelta(days=36525)
MAX_MONTHS = 1200

_UNITS: dict[str, str] = {
    "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute",
    "hour": "hour", "hours": "hour",
    "day": "day", "days": "day",
    "week": "week", "weeks": "week",
    "month": "month", "months": "month",
}
_UNIT_LENGTH = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_EVERY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]+)\s*$")
_US = timedelta(microseconds=1)
# How far back latest_slot looks for a cron slot before giving up (a cron expression that
# fires at least once a year, e.g. "0 0 29 2 *" every 4 years, is still found).
_CRON_SEARCH_STEPS = 8


@dataclass(frozen=True)
class Months:
    """A calendar-month interval (``every: "N month"``); ``count`` is a whole number >= 1."""

    count: int


def _parse_every_parts(text: str) -> tuple[Decimal, str]:
    if not isinstance(text, str):
        raise SpecError(f'"every" must be a string like "30 minute", got {type(text).__name__}')
    m = _EVERY_RE.match(text)
    if not m:
        raise SpecError(f'"every" must look like "30 minute" or "1.5 hour", got {text!r}')
    try:
        amount = Decimal(m.group(1))
    except InvalidOperation:  # pragma: no cover - the regex only lets decimals through
        raise SpecError(f'"every": {m.group(1)!r} is not a number') from None
    unit = _UNITS.get(m.group(2).lower())
    if unit is None:
        raise SpecError(f'"every": unknown unit {m.group(2)!r} '
                        "(use minute(s)/min(s), hour(s), day(s), week(s) or month(s))")
    if amount <= 0:
        raise SpecError(f'"every": the interval must be positive, got {text!r}')
    return amount, unit


def parse_every(text: str) -> timedelta | Months:
    """Parse an ``every`` value such as ``"30 minute"``, ``"2 mins"``, ``"1.5 hour"``, ``"1 month"``.

    Returns a :class:`~datetime.timedelta` for minutes..weeks (rounded to whole microseconds)
    or :class:`Months`. Raises :class:`SpecError` naming the problem for unknown units,
    non-positive or sub-minute intervals and fractional months.
    """
    amount, unit = _parse_every_parts(text)
    if unit == "month":
        if amount != amount.to_integral_value():
            raise SpecError(f'"every": months must be whole, got {text!r} '
                            '(use e.g. "4 week" or "30 day" for shorter periods)')
        if amount > MAX_MONTHS:
            raise SpecError(f'"every": the interval must be at most {MAX_MONTHS} months '
                            f"(100 years), got {text!r}")
        return Months(int(amount))
    unit_us = _UNIT_LENGTH[unit] // _US
    micros = amount * unit_us
    # Compared as decimals first: timedelta itself overflows (OverflowError) far beyond.
    if micros > MAX_INTERVAL // _US:
        raise SpecError(f'"every": the interval must be at most {MAX_INTERVAL.days} days '
                        f"(100 years), got {text!r}")
    interval = timedelta(microseconds=int(micros.to_integral_value()))
    if interval < MIN_INTERVAL:
        raise SpecError(f'"every": the interval must be at least 1 minute, got {text!r}')
    return interval


def normalise_every(text: str) -> str:
    """The canonical form of an ``every`` value: ``" 30  mins"`` -> ``"30 minute"``, ``"1.50 hour"`` -> ``"1.5 hour"``.

    Validates like :func:`parse_every`.
    """
    parse_every(text)
    amount, unit = _parse_every_parts(text)
    number = format(amount.normalize(), "f")
    return f"{number} {unit}"


def validate_tz(name: object) -> ZoneInfo:
    """Return the :class:`ZoneInfo` for an IANA zone name, or raise :class:`SpecError`."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f'"tz" must be an IANA time zone name like "Europe/Berlin", got {name!r}')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SpecError(f'"tz": unknown time zone {name!r}') from exc


def validate_cron(expr: object, tz: str | None = None) -> str:
    """Check a 5-field cron expression (and that it ever fires); return it with spaces normalised."""
    if not isinstance(expr, str):
        raise SpecError(f'"cron" must be a string like "30 2 * * *", got {type(expr).__name__}')
    fields = expr.split()
    if len(fields) != 5:
        raise SpecError(f'"cron" must have 5 fields (minute hour day month weekday), '
                        f"got {len(fields)} in {expr!r}")
    norm = " ".join(fields)
    if not croniter.is_valid(norm):
        raise SpecError(f'"cron": invalid expression {expr!r}')
    zone = validate_tz(tz) if tz is not None else UTC
    try:
        croniter(norm, datetime(2000, 1, 1, tzinfo=zone)).get_next(datetime)
    except (CroniterBadDateError, CroniterBadCronError, CroniterError, ValueError) as exc:
        raise SpecError(f'"cron": expression {expr!r} never fires') from exc
    return norm


def _require_aware(t: datetime, name: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {t!r}")
    return t.astimezone(UTC)


def _month_index(t: datetime) -> int:
    return (t.year - 1970) * 12 + (t.month - 1)


def _month_start(index: int) -> datetime:
    year, month0 = divmod(index, 12)
    return datetime(1970 + year, month0 + 1, 1, tzinfo=UTC)


def _cron_zone(spec: JobSpec) -> ZoneInfo | timezone:
    return ZoneInfo(spec.tz) if spec.tz else UTC


def _is_repeated_wall_time(slot: datetime, zone: ZoneInfo | timezone, hour_field: str) -> bool:
    """True for the second occurrence of an ambiguous wall time (fall back), when it is skipped."""
    if hour_field == "*":
        return False
    local = slot.astimezone(zone)
    if not local.fold:
        return False
    # fold=1 only matters when the wall time really is ambiguous (offsets differ).
    return local.replace(fold=0).utcoffset() != local.utcoffset()


def _cron_prev(spec: JobSpec, now: datetime) -> datetime | None:
    assert spec.cron is not None
    zone = _cron_zone(spec)
    hour_field = spec.cron.split()[1]
    # croniter's get_prev is strict and works on whole seconds: start one second later so a
    # slot exactly at `now` counts.
    start = now.replace(microsecond=0) + timedelta(seconds=1)
    it = croniter(spec.cron, start.astimezone(zone))
    for _ in range(_CRON_SEARCH_STEPS):
        try:
            cand = it.get_prev(datetime).astimezone(UTC)
        except (CroniterBadDateError, CroniterError):
            return None
        if not _is_repeated_wall_time(cand, zone, hour_field):
            return cand
    return None


def _cron_next(spec: JobSpec, after: datetime) -> datetime:
    assert spec.cron is not None
    zone = _cron_zone(spec)
    hour_field = spec.cron.split()[1]
    it = croniter(spec.cron, after.astimezone(zone))
    for _ in range(_CRON_SEARCH_STEPS):
        cand = it.get_next(datetime).astimezone(UTC)
        if cand > after and not _is_repeated_wall_time(cand, zone, hour_field):
            return cand
    raise SpecError(f"cron expression {spec.cron!r} has no next slot after {after.isoformat()}")


def latest_slot(spec: JobSpec, now: datetime) -> datetime | None:
    """The most recent slot ``<= now`` (UTC), or None when the schedule has none.

    ``now`` must be timezone-aware. Example::

        >>> latest_slot(JobSpec(every="30 minute"), datetime(2024, 5, 1, 10, 47, tzinfo=timezone.utc))
        datetime.datetime(2024, 5, 1, 10, 30, tzinfo=datetime.timezone.utc)
    """
    now = _require_aware(now, "now")
    try:
        return _latest_slot(spec, now)
    except (OverflowError, ValueError, CroniterError) as exc:
        raise _out_of_range(spec, now, exc) from exc


def _out_of_range(spec: JobSpec, at: datetime, exc: BaseException) -> SpecError:
    """Date maths that left ``datetime``'s range (or croniter's): the spec's fault."""
    what = f'"cron": {spec.cron!r}' if spec.cron else f'"every": {spec.every!r}'
    return SpecError(f"{what} has no slot near {at:%Y-%m-%d %H:%M} UTC ({exc})")


def _latest_slot(spec: JobSpec, now: datetime) -> datetime | None:
    if spec.cron:
        return _cron_prev(spec, now)
    if not spec.every:
        return None
    interval = parse_every(spec.every)
    if isinstance(interval, Months):
        index = _month_index(now)
        return _month_start(index - index % interval.count)
    step = interval // _US
    elapsed = (now - EPOCH) // _US
    return EPOCH + timedelta(microseconds=elapsed - elapsed % step)


def next_slot(spec: JobSpec, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (UTC). Raises SpecError for a spec with no schedule."""
    after = _require_aware(after, "after")
    if not spec.cron and not spec.every:
        raise SpecError("the spec has neither every nor cron")
    try:
        return _next_slot(spec, after)
    except (OverflowError, ValueError, CroniterError) as exc:
        raise _out_of_range(spec, after, exc) from exc


def _next_slot(spec: JobSpec, after: datetime) -> datetime:
    if spec.cron:
        return _cron_next(spec, after)
    assert spec.every is not None
    interval = parse_every(spec.every)
    latest = _latest_slot(spec, after)
    assert latest is not None
    if isinstance(interval, Months):
        return _month_start(_month_index(latest) + interval.count)
    return latest + interval


def due_slot(spec: JobSpec, now: datetime, last_slot_run: datetime | None,
             first_seen: datetime | None = None, run_new: bool = False) -> datetime | None:
    """The slot to run now, or None when nothing is due.

    ``last_slot_run`` is the slot of the most recent *scheduled* run in the history (any
    outcome: a slot is served once, failures are not retried until the next slot).
    ``first_seen`` is when the notebook was first discovered; it only matters while
    ``last_slot_run`` is None: then only a slot strictly after ``first_seen`` is due. With
    both None the latest slot is due (catch-up). ``run_new`` (the ``run_new_at_once``
    setting; the spec's ``RunAtOnce`` wins when given): ``first_seen`` does not hold a new
    notebook back. A disabled spec is never due.
    """
    if not spec.enabled:
        return None
    slot = latest_slot(spec, now)
    if slot is None:
        return None
    if last_slot_run is not None:
        return slot if slot > _require_aware(last_slot_run, "last_slot_run") else None
    at_once = spec.run_at_once if spec.run_at_once is not None else run_new
    if not at_once and first_seen is not None and slot <= _require_aware(first_seen, "first_seen"):
        return None
    return slot


def is_due(spec: JobSpec, now: datetime, last_slot_run: datetime | None,
           first_seen: datetime | None = None, run_new: bool = False) -> bool:
    """Whether :func:`due_slot` has a slot to run now."""
    return due_slot(spec, now, last_slot_run, first_seen, run_new) is not None
