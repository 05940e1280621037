"""Schedule maths: epoch-aligned intervals, calendar months, cron with time zones and DST,
and the due rule (catch-up once, new notebooks wait for their first slot)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupycron.discovery import notebook_from_line
from jupycron.exceptions import SpecError
from jupycron.models import JobSpec
from jupycron.schedule import (
    Months,
    due_slot,
    is_due,
    latest_slot,
    next_slot,
    normalise_every,
    parse_every,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def every(text: str) -> JobSpec:
    return JobSpec(every=normalise_every(text))


@pytest.mark.parametrize("text, expected", [
    ("30 minute", timedelta(minutes=30)),
    ("30 minutes", timedelta(minutes=30)),
    ("5 min", timedelta(minutes=5)),
    ("5 mins", timedelta(minutes=5)),
    ("5mins", timedelta(minutes=5)),
    ("  2   Hours ", timedelta(hours=2)),
    ("1 hour", timedelta(hours=1)),
    ("1.5 hour", timedelta(minutes=90)),
    (".5 day", timedelta(hours=12)),
    ("1 day", timedelta(days=1)),
    ("3 days", timedelta(days=3)),
    ("1 week", timedelta(weeks=1)),
    ("0.5 weeks", timedelta(days=3, hours=12)),
    ("1 month", Months(1)),
    ("3 months", Months(3)),
    ("2.0 month", Months(2)),
])
def test_parse_every_units(text: str, expected: object) -> None:
    assert parse_every(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("30 fortnights", "unknown unit 'fortnights'"),
    ("0 minute", "must be positive"),
    ("0.0 hour", "must be positive"),
    ("-5 minute", "must look like"),
    ("minute", "must look like"),
    ("30", "must look like"),
    ("1.5 month", "months must be whole"),
    ("0.5 minute", "at least 1 minute"),
    ("30 minute 2", "must look like"),
])
def test_parse_every_rejects(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_every(text)


def test_parse_every_rejects_non_string() -> None:
    with pytest.raises(SpecError, match="must be a string"):
        parse_every(30)  # type: ignore[arg-type]


@pytest.mark.parametrize("text, norm", [
    ("30 mins", "30 minute"), ("1.50 Hours", "1.5 hour"), ("2.0 month", "2 month"),
    ("1 week", "1 week"), ("45 min", "45 minute"),
])
def test_normalise_every(text: str, norm: str) -> None:
    assert normalise_every(text) == norm


# --- interval slots ------------------------------------------------------------------------

@pytest.mark.parametrize("text, now, latest, nxt", [
    ("30 minute", utc(2024, 5, 1, 10, 47, 13), utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 11, 0)),
    ("30 minute", utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 11, 0)),
    ("1 minute", utc(2024, 5, 1, 10, 47, 59, 999999), utc(2024, 5, 1, 10, 47), utc(2024, 5, 1, 10, 48)),
    ("1 hour", utc(2024, 5, 1, 10, 59, 59), utc(2024, 5, 1, 10), utc(2024, 5, 1, 11)),
    ("2 hour", utc(2024, 5, 1, 11, 15), utc(2024, 5, 1, 10), utc(2024, 5, 1, 12)),
    ("1 day", utc(2024, 5, 1, 23, 59), utc(2024, 5, 1), utc(2024, 5, 2)),
    # 1.5 h slots counted from the epoch: 2024-05-01 00:00 is 476,256 h = 317,504 * 1.5 h
    ("1.5 hour", utc(2024, 5, 1, 2, 0), utc(2024, 5, 1, 1, 30), utc(2024, 5, 1, 3, 0)),
    ("1.5 hour", utc(2024, 5, 1, 23, 59), utc(2024, 5, 1, 22, 30), utc(2024, 5, 2, 0, 0)),
    # weeks are aligned to the epoch, a Thursday
    ("1 week", utc(2024, 5, 1, 12), utc(2024, 4, 25), utc(2024, 5, 2)),
    ("2 week", utc(2024, 5, 1, 12), utc(2024, 4, 25), utc(2024, 5, 9)),
    # 3 days: day 19844 (2024-05-01) = 3 * 6614 + 2
    ("3 day", utc(2024, 5, 1, 6), utc(2024, 4, 29), utc(2024, 5, 2)),
    ("7 minute", utc(1970, 1, 1, 0, 13), utc(1970, 1, 1, 0, 7), utc(1970, 1, 1, 0, 14)),
])
def test_interval_slots(text: str, now: datetime, latest: datetime, nxt: datetime) -> None:
    spec = every(text)
    assert latest_slot(spec, now) == latest
    assert next_slot(spec, now) == nxt


def test_week_slots_are_thursdays() -> None:
    slot = latest_slot(every("1 week"), utc(2031, 7, 19, 5))
    assert slot is not None and slot.weekday() == 3 and slot.time().isoformat() == "00:00:00"


def test_slots_are_aware_utc_and_accept_other_zones() -> None:
    now = datetime(2024, 5, 1, 12, 47, tzinfo=BERLIN)  # 10:47 UTC
    slot = latest_slot(every("30 minute"), now)
    assert slot == utc(2024, 5, 1, 10, 30) and slot.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        latest_slot(every("1 hour"), datetime(2024, 5, 1, 10))


# --- months ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, now, latest, nxt", [
    ("1 month", utc(2024, 1, 31, 23, 59), utc(2024, 1, 1), utc(2024, 2, 1)),
    ("1 month", utc(2024, 2, 1), utc(2024, 2, 1), utc(2024, 3, 1)),
    ("1 month", utc(2023, 12, 15), utc(2023, 12, 1), utc(2024, 1, 1)),
    # every 3 months counts from 1970-01: Jan, Apr, Jul, Oct
    ("3 month", utc(2024, 5, 20), utc(2024, 4, 1), utc(2024, 7, 1)),
    ("3 month", utc(2024, 12, 31, 12), utc(2024, 10, 1), utc(2025, 1, 1)),
    # every 5 months: month index 653 (2024-06) = 5 * 130 + 3 -> slot at index 650 (2024-03)
    ("5 month", utc(2024, 6, 10), utc(2024, 3, 1), utc(2024, 8, 1)),
])
def test_month_slots(text: str, now: datetime, latest: datetime, nxt: datetime) -> None:
    spec = every(text)
    assert latest_slot(spec, now) == latest
    assert next_slot(spec, now) == nxt


# --- cron ------------------------------------------------------------------------------------

def test_cron_utc_default() -> None:
    spec = JobSpec(cron="15 6 * * 1-5")
    # Wed 2024-05-01 07:00 UTC
    assert latest_slot(spec, utc(2024, 5, 1, 7)) == utc(2024, 5, 1, 6, 15)
    assert latest_slot(spec, utc(2024, 5, 1, 6, 15)) == utc(2024, 5, 1, 6, 15)
    assert next_slot(spec, utc(2024, 5, 1, 6, 15)) == utc(2024, 5, 2, 6, 15)
    # Saturday -> the latest weekday slot was Friday, the next is Monday
    assert latest_slot(spec, utc(2024, 5, 4, 12)) == utc(2024, 5, 3, 6, 15)
    assert next_slot(spec, utc(2024, 5, 4, 12)) == utc(2024, 5, 6, 6, 15)


def test_cron_in_time_zone() -> None:
    spec = JobSpec(cron="0 9 * * *", tz="Europe/Berlin")
    # summer: 09:00 CEST = 07:00 UTC; winter: 09:00 CET = 08:00 UTC
    assert next_slot(spec, utc(2024, 7, 1)) == utc(2024, 7, 1, 7)
    assert next_slot(spec, utc(2024, 12, 1)) == utc(2024, 12, 1, 8)
    assert latest_slot(spec, utc(2024, 12, 1, 7, 59)) == utc(2024, 11, 30, 8)


def test_cron_spring_forward_runs_once_at_gap_end() -> None:
    """2024-03-31: Berlin jumps 02:00 -> 03:00. 02:30 does not exist: croniter fires at 03:00."""
    spec = JobSpec(cron="30 2 * * *", tz="Europe/Berlin")
    day_before = utc(2024, 3, 30, 1, 30)          # 02:30 CET
    on_day = utc(2024, 3, 31, 1, 0)               # 03:00 CEST
    day_after = utc(2024, 4, 1, 0, 30)            # 02:30 CEST
    assert next_slot(spec, day_before) == on_day
    assert next_slot(spec, on_day) == day_after
    assert latest_slot(spec, utc(2024, 3, 31, 1, 30)) == on_day
    assert latest_slot(spec, utc(2024, 3, 31, 0, 59)) == day_before
    slots, t = [], utc(2024, 3, 29)
    while t < utc(2024, 4, 2):
        t = next_slot(spec, t)
        slots.append(t)
    assert slots == [utc(2024, 3, 29, 1, 30), day_before, on_day, day_after, utc(2024, 4, 2, 0, 30)]


def test_cron_fall_back_does_not_run_twice() -> None:
    """2024-10-27: Berlin goes 03:00 CEST -> 02:00 CET; 02:30 happens twice, runs once."""
    spec = JobSpec(cron="30 2 * * *", tz="Europe/Berlin")
    first = utc(2024, 10, 27, 0, 30)   # 02:30 CEST
    second = utc(2024, 10, 27, 1, 30)  # 02:30 CET (the repeat)
    nxt = utc(2024, 10, 28, 1, 30)
    assert next_slot(spec, utc(2024, 10, 26, 12)) == first
    assert next_slot(spec, first) == nxt
    # during and after the repeated hour the latest slot stays the first occurrence
    assert latest_slot(spec, second) == first
    assert latest_slot(spec, utc(2024, 10, 27, 1, 45)) == first
    assert latest_slot(spec, utc(2024, 10, 27, 12)) == first
    assert due_slot(spec, utc(2024, 10, 27, 1, 45), last_slot_run=first) is None
    assert latest_slot(spec, nxt) == nxt


def test_cron_wildcard_hour_keeps_firing_through_repeated_hour() -> None:
    spec = JobSpec(cron="*/30 * * * *", tz="Europe/Berlin")
    t, slots = utc(2024, 10, 26, 23, 45), []
    for _ in range(6):
        t = next_slot(spec, t)
        slots.append(t)
    # every 30 minutes in absolute time, including both passes through 02:xx local
    assert slots == [utc(2024, 10, 27, 0, 0) + timedelta(minutes=30 * i) for i in range(6)]


def test_cron_rare_expression_found() -> None:
    spec = JobSpec(cron="0 0 29 2 *")
    assert latest_slot(spec, utc(2027, 6, 1)) == utc(2024, 2, 29)
    assert next_slot(spec, utc(2024, 3, 1)) == utc(2028, 2, 29)


# --- the due rule ------------------------------------------------------------------------------

def test_due_when_latest_slot_not_run() -> None:
    spec = every("1 hour")
    now = utc(2024, 5, 1, 10, 5)
    assert due_slot(spec, now, last_slot_run=utc(2024, 5, 1, 9)) == utc(2024, 5, 1, 10)
    assert due_slot(spec, now, last_slot_run=utc(2024, 5, 1, 10)) is None


def test_catch_up_after_downtime_is_one_run() -> None:
    spec = every("30 minute")
    last = utc(2024, 5, 1, 0, 0)
    now = utc(2024, 5, 3, 7, 10)  # ~100 missed slots
    slot = due_slot(spec, now, last)
    assert slot == utc(2024, 5, 3, 7, 0)
    # once that slot is recorded nothing else is due until the next slot
    assert not is_due(spec, now, slot)
    assert not is_due(spec, utc(2024, 5, 3, 7, 29, 59), slot)
    assert is_due(spec, utc(2024, 5, 3, 7, 30), slot)


def test_new_notebook_waits_for_first_slot_after_first_seen() -> None:
    spec = every("1 day")
    seen = utc(2024, 5, 1, 15, 0)
    assert due_slot(spec, seen, None, first_seen=seen) is None
    assert due_slot(spec, utc(2024, 5, 1, 23, 59), None, first_seen=seen) is None
    assert due_slot(spec, utc(2024, 5, 2, 0, 0), None, first_seen=seen) == utc(2024, 5, 2)
    # seen exactly at a slot: that slot is not "after" first seen
    assert due_slot(spec, utc(2024, 5, 2), None, first_seen=utc(2024, 5, 2)) is None


def test_without_first_seen_the_latest_slot_is_due() -> None:
    assert due_slot(every("1 day"), utc(2024, 5, 1, 15), None) == utc(2024, 5, 1)


def test_disabled_spec_never_due() -> None:
    spec = JobSpec(every="1 minute", enabled=False)
    assert due_slot(spec, utc(2024, 5, 1, 15), None) is None


def test_spec_changed_to_shorter_interval_is_due() -> None:
    # the last scheduled run served a daily slot; now the notebook says every hour
    assert due_slot(every("1 hour"), utc(2024, 5, 1, 10, 1), utc(2024, 5, 1)) == utc(2024, 5, 1, 10)


# --- schedules that overflow (issue 12 #3) -------------------------------------------------

_NOWS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2400, 1, 1),
                     timezones=st.just(UTC))
_NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(str),
    st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False,
                places=4).map(lambda d: format(d, "f")))
_UNITS = st.sampled_from(["minute", "min", "hour", "hours", "day", "week", "weeks", "month",
                          "months", "year", "sec"])


def _slots_or_spec_error(json_line: str, now: datetime, last: datetime | None) -> None:
    """parse_spec, latest/next/due slot: a result or a SpecError, never anything else."""
    from jupycron.discovery import parse_spec

    try:
        spec = parse_spec(json_line)
    except SpecError:
        return
    for fn in (lambda: latest_slot(spec, now), lambda: next_slot(spec, now),
               lambda: due_slot(spec, now, last, now - timedelta(days=1))):
        try:
            fn()
        except SpecError:
            pass


@pytest.mark.parametrize("text", ["99999 month", "1000000 week", "99999999999999999999 minute",
                                  "1201 month", "36526 day", "5300 week"])
def test_an_overflowing_every_is_a_spec_error(text: str) -> None:
    """Used to raise OverflowError/ValueError out of timedelta or next_slot, crashing
    list, tick, daemon and /metrics for every notebook."""
    with pytest.raises(SpecError, match="at most"):
        parse_every(text)
    nb = notebook_from_line("big_autorun.ipynb", 0.0, 0, json.dumps({"every": text}))
    assert not nb.schedulable and "at most" in (nb.disabled_reason or "")


def test_the_longest_intervals_still_have_slots() -> None:
    for text in ("1200 month", "36525 day"):
        spec = every(text)
        assert next_slot(spec, utc(2026, 12, 6)) > latest_slot(spec, utc(2026, 12, 6))  # type: ignore[operator]


def test_a_slot_beyond_the_year_9999_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="no slot near"):
        next_slot(every("1200 month"), datetime(9990, 1, 1, tzinfo=UTC))
    with pytest.raises(SpecError, match="no slot near"):
        next_slot(JobSpec(cron="0 0 1 1 *"), datetime(9999, 12, 31, 23, 59, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(number=_NUMBERS, unit=_UNITS, now=_NOWS, last=st.none() | _NOWS)
def test_every_values_give_slots_or_a_spec_error(number: str, unit: str, now: datetime,
                                                 last: datetime | None) -> None:
    _slots_or_spec_error(json.dumps({"every": f"{number} {unit}"}), now, last)


_CRON_FIELD = st.one_of(
    st.just("*"), st.integers(min_value=0, max_value=99).map(str),
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 70), st.integers(0, 70)),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["*", "0", "5", "1-20"]),
              st.integers(0, 99)),
    st.lists(st.integers(0, 60).map(str), min_size=2, max_size=3).map(",".join),
    st.sampled_from(["L", "jan", "mon-fri", "sun", "?", "#", "5#2", "W", "1L"]))


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(_CRON_FIELD, min_size=4, max_size=6),
       tz=st.none() | st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe", "Nope/Zone"]),
       now=_NOWS, last=st.none() | _NOWS)
def test_cron_strings_give_slots_or_a_spec_error(fields: list[str], tz: str | None,
                                                 now: datetime, last: datetime | None) -> None:
    spec = {"cron": " ".join(fields), **({"tz": tz} if tz else {})}
    _slots_or_spec_error(json.dumps(spec), now, last)
