"""The one episode state machine (jupycron.episodes): its rules as properties.

Run alerts (jupycron.run_alerts) and notebook alarms (ooniutils.alerts.sent_log) both use it;
their own tests cover the records they keep, these cover the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as hs

from jupycron.episodes import SENDING, Action, Told, after, decide, plan

T0 = datetime(2024, 5, 1, tzinfo=UTC)
states = hs.one_of(hs.none(), hs.sampled_from(["", "warning", "alarm", "no_data"]))
steps = hs.lists(hs.tuples(states, hs.integers(1, 600)), max_size=40)   # (state, minutes later)


def simulate(observations, *, delivered=None, repeat_after=None, resolve_after=None):
    """Decide and record like a caller does; return the sent (minute, action, state)."""
    told: Told | None = None
    now = T0
    sent = []
    for i, (state, minutes) in enumerate(observations):
        now += timedelta(minutes=minutes)
        action = decide(told, state, now, repeat_after=repeat_after, resolve_after=resolve_after)
        if action in SENDING:
            if delivered is not None and not delivered[i % len(delivered)]:
                continue   # the channel did not take it: nothing recorded
            sent.append((now, action, state))
        told = after(told, action, now, state=state or "")
    return told, sent


@given(steps)
def test_each_change_is_told_exactly_once(observations) -> None:
    """Without reminders or hysteresis, the messages are exactly the changes of the
    observed state: start (NEW), another state (CHANGED), end (RESOLVE)."""
    _, sent = simulate(observations)
    expected = []
    prev = None
    now = T0
    for state, minutes in observations:
        now += timedelta(minutes=minutes)
        if state != prev:
            if prev is None:
                expected.append((now, Action.NEW, state))
            elif state is None:
                expected.append((now, Action.RESOLVE, None))
            else:
                expected.append((now, Action.CHANGED, state))
        prev = state
    assert sent == expected


@given(steps, hs.lists(hs.booleans(), min_size=1, max_size=7))
def test_an_undelivered_message_is_decided_again_and_nothing_is_told_twice(observations,
                                                                           delivered) -> None:
    """Deliveries that fail leave the record as it was: the next check decides again. The
    told state never repeats itself: consecutive delivered messages always differ."""
    told, sent = simulate(observations, delivered=delivered)
    said = [(a is not Action.RESOLVE, s or "") for _, a, s in sent]
    assert all(x != y for x, y in zip(said, said[1:], strict=False))
    # what the channel knows is what it was last told
    if sent:
        assert told is not None and told.open == (sent[-1][1] is not Action.RESOLVE)
    else:
        assert told is None


@given(steps, hs.integers(1, 24 * 60))
def test_reminders_come_only_after_repeat_after(observations, repeat_min) -> None:
    repeat = timedelta(minutes=repeat_min)
    _, sent = simulate(observations, repeat_after=repeat)
    last_by_episode: datetime | None = None
    for at, action, _ in sent:
        if action is Action.REMIND:
            assert last_by_episode is not None and at - last_by_episode >= repeat
        last_by_episode = None if action is Action.RESOLVE else at


@given(steps, hs.integers(1, 600))
def test_resolution_waits_for_resolve_after(observations, wait_min) -> None:
    """An episode ends only once it was not seen active for resolve_after; meanwhile it is
    WAITING, and coming back before that is not a new episode."""
    wait = timedelta(minutes=wait_min)
    told: Told | None = None
    now = T0
    for state, minutes in observations:
        now += timedelta(minutes=minutes)
        action = decide(told, state, now, resolve_after=wait)
        if action is Action.RESOLVE:
            assert told is not None and now - told.last_seen >= wait
        if action is Action.WAITING:
            assert told is not None and now - told.last_seen < wait
        if action is Action.NEW:
            assert told is None or not told.open
        told = after(told, action, now, state=state or "")


@given(states)
def test_the_rule_table(state) -> None:
    open_alarm = Told(T0, T0, T0, state="alarm")
    closed = Told(T0, T0, T0, state="alarm", open=False, resolved=T0)
    later = T0 + timedelta(hours=1)
    if state is None:
        assert decide(None, None, later) is None and decide(closed, None, later) is None
        assert decide(open_alarm, None, later) is Action.RESOLVE
        assert decide(open_alarm, None, later, unknown=True) is None   # could not look
        assert decide(open_alarm, None, later, resolve_after=timedelta(hours=2)) is Action.WAITING
    else:
        assert decide(None, state, later) is Action.NEW
        assert decide(closed, state, later) is Action.NEW
        assert decide(open_alarm, state, later) is (Action.ONGOING if state == "alarm"
                                                    else Action.CHANGED)
        assert decide(open_alarm, state, later, unknown=True) is decide(open_alarm, state, later)


def test_records_keep_the_episode_start_and_round_trip() -> None:
    first = after(None, Action.NEW, T0, state="warning", note="n")
    assert first == Told(T0, T0, T0, "warning", "n")
    t1 = T0 + timedelta(hours=1)
    changed = after(first, Action.CHANGED, t1, state="alarm")
    assert changed is not None and (changed.first_sent, changed.last_sent) == (T0, t1)
    seen = after(changed, Action.ONGOING, t1 + timedelta(hours=1))
    assert seen is not None and seen.last_seen == t1 + timedelta(hours=1) and seen.last_sent == t1
    done = after(seen, Action.RESOLVE, t1 + timedelta(hours=2))
    assert done is not None and not done.open and done.resolved == t1 + timedelta(hours=2)
    again = after(done, Action.NEW, t1 + timedelta(hours=3), state="alarm")
    assert again is not None and again.first_sent == t1 + timedelta(hours=3)
    for record in (first, changed, seen, done, again):
        assert Told.from_json(record.to_json()) == record


def test_plan_covers_active_and_recorded_keys() -> None:
    told = {"gone": Told(T0, T0, T0), "same": Told(T0, T0, T0, "x"), "old": Told(T0, T0, T0, open=False)}
    got = plan(told, {"same": "x", "new": ""}, T0 + timedelta(hours=1), unknown=["nothing"])
    assert got == {"gone": Action.RESOLVE, "same": Action.ONGOING, "new": Action.NEW}
