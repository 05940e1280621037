"""The sample journal: exact for its arguments, varied over time, one documented incident."""

from __future__ import annotations

import json
from collections import Counter

from ooniutils.journal_sample import INCIDENT_AT, UNITS, journal_lines

HOUR_US = 3_600_000_000
START = 1_765_000_800_000_000  # a whole hour (2025-12-06 06:00 UTC)


def _entries(**kw):
    return [json.loads(line) for line in journal_lines(**kw)]


def test_exact_for_its_arguments():
    assert journal_lines(300, start_us=START, seed=3, span_s=86400) == \
        journal_lines(300, start_us=START, seed=3, span_s=86400)
    assert journal_lines(300, start_us=START, seed=3, span_s=86400) != \
        journal_lines(300, start_us=START, seed=4, span_s=86400)


def test_dense_mode_keeps_one_line_per_millisecond():
    ts = [int(e["__REALTIME_TIMESTAMP"]) for e in _entries(n=50, start_us=START)]
    assert ts == [START + i * 1000 for i in range(50)]


def test_spread_over_the_day_with_varied_units_messages_and_an_incident():
    entries = _entries(n=20000, start_us=START, seed=1, span_s=86400)
    ts = [int(e["__REALTIME_TIMESTAMP"]) for e in entries]
    assert ts == sorted(ts) and START <= ts[0] and ts[-1] < START + 24 * HOUR_US
    per_hour = Counter((t - START) // HOUR_US for t in ts)
    assert len(per_hour) == 24                       # every hour has lines: not one bar
    incident = int(INCIDENT_AT * 24)
    quiet = [per_hour[h] for h in range(24) if h != incident]
    assert max(quiet) > 1.8 * min(quiet)             # busier by day than by night
    errors = Counter((int(e["__REALTIME_TIMESTAMP"]) - START) // HOUR_US
                     for e in entries if e["PRIORITY"] == "3")
    normal = [errors[h] for h in range(24) if h != incident]
    assert errors[incident] > 5 * max(normal)        # the incident hour is a spike of errors
    assert sum(normal) / (len(entries) - per_hour[incident]) < 0.05
    crit = [e for e in entries if int(e["PRIORITY"]) <= 2]
    assert len(crit) == 1 and crit[0]["_SYSTEMD_UNIT"] == "clickhouse-server.service"
    assert {e["_SYSTEMD_UNIT"] for e in entries} == set(UNITS)
    messages = {e["MESSAGE"] for e in entries}
    assert len(messages) > 10000                     # not 20,000 near-identical lines
    assert any("upstream timed out" in m for m in messages)


def test_no_incident_in_a_short_span():
    entries = _entries(n=500, start_us=START, seed=1, span_s=3600)
    assert not any(int(e["PRIORITY"]) <= 2 for e in entries)
