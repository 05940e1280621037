"""Untidy normal traffic in the generator plan (ooniutils.store.generator.normal): recorded
in the ground truth, deterministic per seed, clear of the incidents, and really in the volumes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ooniutils.store.generator import make_plan, world
from ooniutils.store.generator.truth import GroundTruth, parse_iso

END = datetime(2025, 6, 2, tzinfo=UTC)
SW = [s.name for s in world.SOFTWARE]


@pytest.fixture(scope="module")
def plan():
    return make_plan(90, None, 1, END)


def _col(plan, cc, asn, sw):
    i = next(k for k, n in enumerate(plan.nets) if (n.cc, n.asn) == (cc, asn))
    return i * len(SW) + SW.index(sw)


def test_every_kind_is_recorded_and_the_plan_is_deterministic(plan):
    kinds = Counter(e["kind"] for e in plan.truth.normal_traffic)
    assert set(kinds) == {"local_weekend", "growth", "holiday", "probe_away", "upload_batch", "ingestion_lag"}
    assert kinds["holiday"] >= len(world.COUNTRIES) * 2 and kinds["ingestion_lag"] >= 5
    again = make_plan(90, None, 1, END)
    assert again.truth.normal_traffic == plan.truth.normal_traffic and np.array_equal(again.lam, plan.lam)
    other = make_plan(90, None, 2, END)
    assert other.truth.normal_traffic != plan.truth.normal_traffic
    back = GroundTruth.from_dict(plan.truth.to_dict())
    assert back.normal_traffic == plan.truth.normal_traffic


def test_normal_events_keep_clear_of_the_step_incidents(plan):
    steps = [i for i in plan.truth.incidents if i.metric == "measurement_count" and i.details["shape"] == "step"]
    for e in plan.truth.normal_traffic:
        if e["kind"] in ("holiday", "probe_away", "ingestion_lag"):
            s, t = parse_iso(e["start"]), parse_iso(e["end"])
            assert all(t <= i.start or s >= i.end for i in steps), e


def test_probes_away_are_silent_and_small_within_their_series(plan):
    away = [e for e in plan.truth.normal_traffic if e["kind"] == "probe_away"]
    assert away
    for e in away:
        k = e["keys"]
        col = _col(plan, k["probe_cc"], k["probe_asn"], k["software_name"])
        rows = (plan.hours >= parse_iso(e["start"]).timestamp()) & (plan.hours < parse_iso(e["end"]).timestamp())
        assert plan.lam[rows, col].sum() == 0
        series = [_col(plan, n.cc, n.asn, k["software_name"]) for n in plan.nets if n.cc == k["probe_cc"]]
        assert plan.lam[rows][:, series].sum() > 0  # the rest of the (country, probe type) series goes on


def test_upload_batches_and_local_weekends_shape_the_volumes(plan):
    batch = next(e for e in plan.truth.normal_traffic if e["kind"] == "upload_batch")
    k = batch["keys"]
    col = _col(plan, k["probe_cc"], k["probe_asn"], "ooniprobe-cli")
    off = next(c.utc_offset for c in world.COUNTRIES if c.cc == k["probe_cc"])
    local_hour = ((plan.hours + off * 3600) % 86400) // 3600
    per_hour = pd.Series(plan.lam[:, col]).groupby(local_hour).mean()
    assert per_hour[2] > 5 * per_hour.drop(2).max()
    # IR rests on Thursday-Friday: desktop volume on its Fridays is below its Mondays
    desk = [_col(plan, n.cc, n.asn, "ooniprobe-desktop") for n in plan.nets if n.cc == "IR"]
    dow = pd.to_datetime(plan.hours + int(3.5 * 3600), unit="s").day_of_week
    first_weeks = plan.hours < plan.hours[0] + 21 * 86400
    vol = plan.lam[:, desk].sum(axis=1)
    assert vol[first_weeks & (dow == 4)].sum() < 0.85 * vol[first_weeks & (dow == 0)].sum()
    assert vol[first_weeks & (dow == 5)].sum() > 0.9 * vol[first_weeks & (dow == 0)].sum()


def test_holidays_are_whole_local_days_whatever_the_end_hour():
    odd = make_plan(30, None, 3, datetime(2025, 6, 2, 13, tzinfo=UTC))
    offsets = {c.cc: c.utc_offset for c in world.COUNTRIES}
    holidays = [e for e in odd.truth.normal_traffic if e["kind"] == "holiday"]
    assert holidays
    for e in holidays:
        local = parse_iso(e["start"]).timestamp() + offsets[e["keys"]["probe_cc"]] * 3600
        assert local % 86400 in (0, 86400 - 1800), e  # local midnight (23:30 in :30 zones: hour grid)
        assert (parse_iso(e["end"]) - parse_iso(e["start"])).total_seconds() == 86400
