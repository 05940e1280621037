"""Campaign investigation: growth and coverage per country and network, on synthetic daily
counts with a known campaign, and the queries on the real embedded store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses.campaign import CampaignWindow, campaign_report
from ooniutils.exceptions import AnalysisError

TARGETS = [f"https://t{i}.example/" for i in range(10)]


def _counts() -> pd.DataFrame:
    """14 days before a 7-day campaign starting 2026-03-15. BR AS1 triples and tests all ten
    target URLs during the campaign (three before, 30 measurements a URL a day); BR AS2 is steady; AS3 appears only
    during the campaign; IT is flat."""
    rows = []
    for day in pd.date_range("2026-03-01", "2026-03-21", freq="D"):
        during = day >= pd.Timestamp("2026-03-15")
        urls = TARGETS if during else TARGETS[:3]
        for u in urls:
            rows.append((day, "BR", 1, u, 30))
        rows.append((day, "BR", 2, TARGETS[0], 10))
        if during:
            rows.append((day, "BR", 3, TARGETS[1], 10))
        rows.append((day, "IT", 4, "https://other.example/", 10))
    return pd.DataFrame(rows, columns=["day", "probe_cc", "probe_asn", "input", "n"])


def test_campaign_growth_coverage_and_new_networks():
    w = CampaignWindow.of("2026-03-15", "2026-03-22", baseline_days=7)
    rep = campaign_report(_counts(), w, TARGETS)
    br = rep["countries"].set_index("probe_cc").loc["BR"]
    # before: per day 3 URLs x 30 + 10 (AS2) = 100; during: 10 x 30 + 10 + 10 = 320
    assert br.per_day_before == pytest.approx(100)
    assert br.per_day_during == pytest.approx(320)
    assert br.growth == pytest.approx(3.2)
    assert (br.coverage_before, br.coverage_during) == (0.3, 1.0)
    it = rep["countries"].set_index("probe_cc").loc["IT"]
    assert it.growth == pytest.approx(1.0) and it.coverage_during == 0
    nets = rep["networks"].set_index(["probe_cc", "probe_asn"])
    assert bool(nets.loc[("BR", 3), "new"]) and math.isinf(nets.loc[("BR", 3), "growth"])
    assert not bool(nets.loc[("BR", 2), "new"]) and nets.loc[("BR", 2), "growth"] == pytest.approx(1.0)
    assert rep["untested"].empty
    daily = rep["daily"]
    assert daily.day.min() == pd.Timestamp("2026-03-08") and daily.day.max() == pd.Timestamp("2026-03-21")


def test_untested_targets_and_default_baseline_length():
    w = CampaignWindow.of("2026-03-18", "2026-03-22")  # 4 days, baseline 4 days before
    assert (w.days, w.baseline_days, w.baseline_start) == (4, 4, pd.Timestamp("2026-03-14"))
    rep = campaign_report(_counts(), w, [*TARGETS, "https://never.example/"])
    assert rep["untested"].url.tolist() == ["https://never.example/"]


@pytest.mark.parametrize(("start", "end", "baseline", "message"), [
    ("2026-03-15", "2026-03-15", None, "must be after"),
    ("2026-03-15", "2026-03-10", None, "must be after"),
    ("2026-03-15", "2026-03-20", 0, "at least 1"),
    ("not a date", "2026-03-20", None, "must be dates"),
])
def test_bad_windows_are_refused(start, end, baseline, message):
    with pytest.raises(AnalysisError, match=message):
        CampaignWindow.of(start, end, baseline)


def test_nothing_measured_is_an_error_not_an_empty_report():
    w = CampaignWindow.of("2025-01-10", "2025-01-12")
    with pytest.raises(AnalysisError, match="no measurement at all"):
        campaign_report(_counts(), w, TARGETS)
    with pytest.raises(AnalysisError, match="lack column"):
        campaign_report(_counts().drop(columns="probe_asn"), w)


def test_campaign_queries_on_the_store(store):
    from ooniutils.datasets.campaign import campaign_target_urls, fetch_campaign_counts

    day0 = pd.Timestamp("2026-03-01")
    n = 40
    store.insert("fastpath", pd.DataFrame({
        "measurement_uid": [f"m{i}" for i in range(n)], "report_id": "r", "probe_cc": ["BR", "RU"] * (n // 2),
        "probe_asn": np.uint32(7), "test_name": ["web_connectivity"] * (n - 4) + ["ndt"] * 4,
        "input": [TARGETS[i % 3] for i in range(n)],
        "software_name": ["ooniprobe-android", "ooniprobe-cli"] * (n // 2),
        "measurement_start_time": [day0 + pd.Timedelta(hours=12 * i) for i in range(n)],
    }))
    store.insert("citizenlab", pd.DataFrame({"domain": ["t0.example", "t1.example"], "url": TARGETS[:2],
                                             "cc": ["br", "ZZ"], "category_code": ["NEWS", "HUMR"]}))
    assert campaign_target_urls(["BR"], categories=["news"]) == [TARGETS[0]]
    assert campaign_target_urls(["BR"], urls=[TARGETS[5], TARGETS[5]]) == [TARGETS[5]]
    assert campaign_target_urls(["BR"]) == []
    with pytest.raises(AnalysisError, match="no test-list URL"):
        campaign_target_urls(["BR"], categories=["GMB"])
    with pytest.raises(AnalysisError, match="empty list"):
        campaign_target_urls(["BR"], urls=[])
    w = CampaignWindow.of("2026-03-08", "2026-03-15")
    got = fetch_campaign_counts(w, ["br"], [TARGETS[0], TARGETS[1]], ["ooniprobe-android"])
    assert set(got.probe_cc) == {"BR"} and set(got.input) <= {TARGETS[0], TARGETS[1]}
    assert got.day.min() >= pd.Timestamp("2026-03-01") and got.day.max() < pd.Timestamp("2026-03-15")
    everything = fetch_campaign_counts(w, ["BR", "RU"])
    assert int(everything.n.sum()) == 28  # two rows a day from 1 to 14 March (the ndt rows come later)
