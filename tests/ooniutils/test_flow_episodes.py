"""Per-country alarm episodes: one per country outage, probe types listed, ranked by severity."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ooniutils.analyses.flow_episodes import EPISODE_COLUMNS, episode_series, fold_episodes
from ooniutils.exceptions import AnalysisError

T = pd.Timestamp("2024-05-01 00:00")
H = pd.Timedelta(hours=1)


def alarm(series, start_h, end_h, expected=100.0, actual=10.0):
    return {"series": series, "start": T + start_h * H, "end": T + end_h * H, "hours": end_h - start_h,
            "expected": expected, "actual": actual, "severity": 1 - actual / expected}


def test_a_country_outage_on_five_probe_types_is_one_episode_listing_them():
    alarms = pd.DataFrame([alarm(f"IR/{sw}", 10 + i % 2, 18, 100.0 * (i + 1), 3.0 * (i + 1))
                           for i, sw in enumerate(["ooniprobe-android", "ooniprobe-ios", "ooniprobe-cli",
                                                   "miniooni", "ooniprobe-desktop"])])
    ep = fold_episodes(alarms)
    assert list(ep.columns) == EPISODE_COLUMNS and len(ep) == 1
    row = ep.iloc[0]
    assert row["series"] == "IR" and row["alarms"] == 5
    assert row["start"] == T + 10 * H and row["end"] == T + 18 * H and row["hours"] == 8
    assert row["probe_types"] == "miniooni, ooniprobe-android, ooniprobe-cli, ooniprobe-desktop, ooniprobe-ios"
    assert row["expected"] == 1500.0 and row["actual"] == 45.0 and row["severity"] == pytest.approx(0.97)
    assert len(episode_series(ep)) == 5


def test_episodes_are_split_by_country_and_by_time_and_ranked_by_missing_measurements():
    alarms = pd.DataFrame([
        alarm("BR/ooniprobe-android", 0, 3, 50, 20),      # small
        alarm("IR/ooniprobe-android", 10, 14, 1000, 30),  # big outage
        alarm("IR/ooniprobe-ios", 12, 16, 200, 10),       # overlaps the IR one: same episode
        alarm("IR/ooniprobe-ios", 40, 42, 100, 50),       # a day later: another episode
        alarm("BR/ooniprobe-cli", 3, 5, 80, 40),          # touches BR's first alarm: same episode
    ])
    ep = fold_episodes(alarms)
    assert list(ep["series"]) == ["IR", "BR", "IR"]
    assert list(ep["missing"]) == [1160.0, 70.0, 50.0]
    assert ep.iloc[0]["probe_types"] == "ooniprobe-android, ooniprobe-ios"
    assert ep.iloc[1]["members"] == "BR/ooniprobe-android, BR/ooniprobe-cli"
    assert list(ep["alarms"]) == [2, 2, 1]
    # with a 24 h gap allowed, IR's two episodes become one
    assert len(fold_episodes(alarms, gap_hours=24)) == 2


def test_empty_and_bad_input():
    empty = fold_episodes(pd.DataFrame(columns=["series", "start", "end", "expected", "actual"]))
    assert empty.empty and list(empty.columns) == EPISODE_COLUMNS and episode_series(empty) == []
    with pytest.raises(AnalysisError, match="missing column"):
        fold_episodes(pd.DataFrame({"series": ["IR/x"]}))
    with pytest.raises(AnalysisError, match="gap_hours"):
        fold_episodes(pd.DataFrame([alarm("IR/x", 0, 1)]), gap_hours=-1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["IR", "BR", "US"]), st.sampled_from(["a", "b", "c"]),
                          st.integers(0, 60), st.integers(1, 8)), min_size=1, max_size=25))
def test_episodes_partition_the_alarms_and_never_overlap_within_a_country(spec):
    alarms = pd.DataFrame([alarm(f"{cc}/{sw}", s, s + d, 10.0 + s, float(d)) for cc, sw, s, d in spec])
    ep = fold_episodes(alarms)
    assert ep["alarms"].sum() == len(alarms)
    assert ep["expected"].sum() == pytest.approx(alarms["expected"].sum(), abs=0.1 * len(ep))
    assert list(ep["missing"]) == sorted(ep["missing"], reverse=True)
    for cc, part in ep.groupby("series"):
        part = part.sort_values("start")
        assert (part["start"].iloc[1:].to_numpy() > part["end"].iloc[:-1].to_numpy()).all(), cc
        # every alarm lies inside exactly one episode of its country
    for a in alarms.itertuples():
        cc = a.series.split("/")[0]
        inside = ep[(ep["series"] == cc) & (ep["start"] <= a.start) & (ep["end"] >= a.end)]
        assert len(inside) == 1


def test_country_totals_sum_every_probe_type_and_fold_into_the_country_episode():
    from ooniutils.analyses.flow import pivot_hourly
    from ooniutils.analyses.flow_episodes import with_country_totals

    counts = pd.DataFrame({"t": [T, T, T + H, T], "probe_cc": ["IR", "IR", "IR", "BR"],
                           "software_name": ["a", "tiny", "a", "a"], "n": [5, 1, 7, 3]})
    wide = pivot_hourly(counts, "t", ["probe_cc", "software_name"], start=T, end=T + 2 * H)
    checked = with_country_totals(wide[["IR/a"]], counts, T, T + 2 * H)
    assert list(checked.columns) == ["IR/a", "IR/*"]  # BR has no checked series: no total
    assert list(checked["IR/*"]) == [6.0, 7.0]        # the skipped tiny probe type counts too
    ep = fold_episodes(pd.DataFrame([alarm("IR/*", 0, 4, 500, 20), alarm("IR/a", 1, 3, 100, 5)]))
    assert len(ep) == 1 and ep.iloc[0]["probe_types"] == "a" and ep.iloc[0]["members"] == "IR/*, IR/a"
