"""A new notebook at its first slot after discovery (the default) or at once (RunAtOnce /
run_new_at_once): the due rule, the line, the summary, late alerts and a real tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jupycron import discovery, status
from jupycron.exceptions import SpecError
from jupycron.ledger import SqliteRunStore
from jupycron.models import JobSpec
from jupycron.schedule import due_slot
from jupycron.scheduler import tick

T0 = datetime(2024, 5, 1, 10, 20, tzinfo=UTC)
DAILY = JobSpec(every="1 day")


def test_due_rule_default_waits_for_the_first_slot_after_discovery():
    seen = T0 - timedelta(minutes=5)  # today's 00:00 slot is before it was seen
    assert due_slot(DAILY, T0, None, seen) is None
    midnight = datetime(2024, 5, 1, tzinfo=UTC)
    assert due_slot(DAILY, T0, None, seen, run_new=True) == midnight
    at_once = JobSpec(every="1 day", run_at_once=True)
    assert due_slot(at_once, T0, None, seen) == midnight
    held = JobSpec(every="1 day", run_at_once=False)  # the line wins over the setting
    assert due_slot(held, T0, None, seen, run_new=True) is None
    # once served, the usual rule: the next slot
    assert due_slot(at_once, T0, midnight, seen) is None


def test_run_at_once_key_is_parsed_and_checked():
    assert discovery.parse_spec('{"every": "1 day", "RunAtOnce": true}').run_at_once is True
    assert discovery.parse_spec('{"every": "1 day"}').run_at_once is None
    with pytest.raises(SpecError, match='"RunAtOnce" must be true or false'):
        discovery.parse_spec('{"every": "1 day", "RunAtOnce": "yes"}')
    with pytest.raises(SpecError, match="did you mean 'RunAtOnce'"):
        discovery.parse_spec('{"every": "1 day", "runatonce": true}')


@pytest.mark.parametrize("setting, line, runs", [
    (False, '{"every": "1 day"}', False),
    (True, '{"every": "1 day"}', True),
    (False, '{"every": "1 day", "RunAtOnce": true}', True),
    (True, '{"every": "1 day", "RunAtOnce": false}', False),
])
def test_tick_runs_a_new_notebook_at_once_only_when_asked(tmp_path, jc, setting, line, runs):
    settings = jc.make_settings(tmp_path, run_new_at_once=setting)
    rel = jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, line=line)
    now = datetime.now(UTC)
    done = tick(settings, now)
    assert [r.notebook for r in done] == ([rel] if runs else [])
    nb = discovery.read_notebook(settings.notebooks / rel, rel)
    (row,) = status.build_rows(settings, [nb], SqliteRunStore(settings.output_dir).load(), now)
    assert row.state == ("success" if runs else "never"), row.reason
    if not runs:
        assert not row.due_now and row.next_run is not None and row.next_run > now


def test_new_notebook_run_at_once_is_not_late_from_its_old_slot(tmp_path, jc):
    """Seen at 10:15, due at once for the 00:00 slot: late counts from 10:15, not 00:00."""
    settings = jc.make_settings(tmp_path, run_new_at_once=True, late_grace_s=600)
    rel = jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, line='{"every": "1 day"}')
    seen = T0 - timedelta(minutes=5)
    SqliteRunStore(settings.output_dir).mark_deleted([rel], seen)  # records first_seen
    nb = discovery.read_notebook(settings.notebooks / rel, rel)
    for now, late in ((T0, False), (seen + timedelta(minutes=11), True)):
        (row,) = status.build_rows(settings, [nb], SqliteRunStore(settings.output_dir).load(), now)
        assert row.due_now
        assert row.late is late, now
