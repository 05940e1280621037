"""easy_msm_count_chart and the flow charts, on the real embedded engine (chDB)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses.flow import detect, predict
from ooniutils.charts import OTHER, easy_msm_count_chart, flow_chart, stacked_counts_chart
from ooniutils.datasets import flow as ds
from ooniutils.exceptions import AnalysisError

NOW = pd.Timestamp("2024-03-20 12:30")


@pytest.fixture
def now(monkeypatch):
    monkeypatch.setattr(ds, "utcnow", lambda: NOW)
    return NOW


@pytest.fixture
def rows(embedded_store, now):
    """2,000 rows over the 10 days before NOW: 8 versions with skewed shares, 4 countries."""
    rng = np.random.default_rng(0)
    n = 2000
    versions = [f"3.{i}.0" for i in range(8)]
    p = np.array([30, 20, 15, 10, 10, 8, 5, 2], dtype=float)
    df = pd.DataFrame({
        "measurement_uid": [f"u{i}" for i in range(n)],
        "measurement_start_time": now - pd.to_timedelta(rng.integers(1, 10 * 24 * 60, n), unit="min"),
        "software_name": rng.choice(["ooniprobe-android", "ooniprobe-cli"], n),
        "software_version": rng.choice(versions, n, p=p / p.sum()),
        "probe_cc": rng.choice(["IT", "DE", "IR", ""], n),
        "probe_asn": rng.choice([3269, 3320, 197207], n),
        "test_name": rng.choice(["web_connectivity", "dnscheck"], n),
    })
    embedded_store.insert("fastpath", df)
    return df


def _in_range(df: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp = NOW) -> pd.DataFrame:
    t = df["measurement_start_time"]
    return df[(t >= since) & (t < until)]


def test_other_band_keeps_the_total(rows):
    chart, df = easy_msm_count_chart(since="7 days", dimension="software_version", dimension_limit=3,
                                     return_data=True)
    assert isinstance(chart, alt.Chart)
    bands = set(df["software_version"])
    assert bands == {"3.0.0", "3.1.0", "3.2.0", OTHER}
    # since is rounded down to its day: the first bucket is whole, not a dip
    expected = _in_range(rows, (NOW - pd.Timedelta(days=7)).floor("D"))
    assert df["n"].sum() == len(expected)
    per_day = expected.groupby(expected["measurement_start_time"].dt.floor("D")).size()
    got = df.groupby("t")["n"].sum()
    assert got[got > 0].to_dict() == per_day.to_dict()
    # zero-filled grid: every (day, band) pair is present
    assert len(df) == df["t"].nunique() * len(bands)


def test_filters_scalar_and_list_are_bound(rows):
    _, one = easy_msm_count_chart(since="10 days", dimension="probe_cc", filter_probe_cc="IT",
                                  granularity="week", return_data=True)
    assert set(one["probe_cc"]) == {"IT"}
    monday = (NOW - pd.Timedelta(days=10)).floor("D") - pd.Timedelta(days=(NOW - pd.Timedelta(days=10)).day_of_week)
    assert one["n"].sum() == len(_in_range(rows[rows.probe_cc == "IT"], monday))
    _, two = easy_msm_count_chart(since="10 days", dimension="probe_cc", filter_probe_cc=["IT", "DE"],
                                  filter_probe_asn=["AS3269", 3320], filter_test_name="dnscheck",
                                  return_data=True)
    sel = rows[rows.probe_cc.isin(["IT", "DE"]) & rows.probe_asn.isin([3269, 3320]) & (rows.test_name == "dnscheck")]
    assert two["n"].sum() == len(_in_range(sel, (NOW - pd.Timedelta(days=10)).floor("D")))
    _, none = easy_msm_count_chart(since="10 days", filter_probe_cc="IT' OR 1=1 --", return_data=True)
    assert none.empty


def test_empty_values_and_hour_granularity(rows):
    chart, df = easy_msm_count_chart(since="2024-03-19 00:00", until="2024-03-19 06:00", granularity="hour",
                                     dimension="probe_cc", dimension_limit=10, return_data=True)
    assert df["t"].nunique() == 6
    assert "(empty)" in set(df["probe_cc"])
    assert chart.title == "Measurements per hour by probe_cc"


def test_no_data_gives_a_chart_saying_so(embedded_store, now):
    chart, df = easy_msm_count_chart(since="3 days", return_data=True)
    assert df.empty and list(df.columns) == ["t", "software_version", "n"]
    assert "no data" in str(chart.to_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dimension": "colour"}, "allowed: software_version"),
    ({"granularity": "fortnight"}, "hour, day, week, month"),
    ({"since": "yesterday-ish"}, "N hour"),
    ({"since": "1 day", "until": "3 days"}, "must be before"),
    ({"dimension_limit": 0}, "positive integer"),
    ({"filter_probe_asn": "ASX"}, "probe_asn"),
    ({"filter_probe_cc": []}, "empty list"),
])
def test_bad_arguments_say_what_is_allowed(embedded_store, now, kwargs, message):
    with pytest.raises(AnalysisError, match=message):
        easy_msm_count_chart(**kwargs)


def test_parse_when():
    assert ds.parse_when("3 months", NOW) == pd.Timestamp("2023-12-20 12:30")
    assert ds.parse_when("2 days ago", NOW) == pd.Timestamp("2024-03-18 12:30")
    assert ds.parse_when("1 year", NOW) == pd.Timestamp("2023-03-20 12:30")
    assert ds.parse_when("2024-01-02", NOW) == pd.Timestamp("2024-01-02")
    assert ds.parse_when(pd.Timestamp("2024-01-02 10:00", tz="Europe/Rome"), NOW) == pd.Timestamp("2024-01-02 09:00")


def test_flow_chart_layers_and_stacked_chart():
    idx = pd.date_range("2024-01-01", periods=24 * 30, freq="h")
    rng = np.random.default_rng(0)
    lam = 300 * (1 + 0.4 * np.sin(np.arange(idx.size) * 2 * np.pi / 24))
    lam[-10:-6] *= 0.3
    s = pd.Series(rng.poisson(lam).astype(float), index=idx)
    alarms = detect(s)
    assert len(alarms) == 1
    chart = flow_chart(predict(s), alarms, title="x")
    spec = chart.to_dict()
    assert len(spec["layer"]) == 4 and spec["layer"][3]["mark"]["type"] == "rect"
    assert "no data" in str(flow_chart(predict(s.iloc[:0]), None, title="y").to_dict())
    df = pd.DataFrame({"t": idx[:3].repeat(2), "k": ["a", OTHER] * 3, "n": [1, 2] * 3})
    spec = stacked_counts_chart(df, key="k").to_dict()
    assert spec["encoding"]["color"]["sort"] == ["a", OTHER]


def test_setup_notebook_renders_svg_and_is_idempotent():
    from ooniutils.display import setup_notebook

    setup_notebook()
    setup_notebook()
    assert alt.renderers.active == "svg"
    bundle = alt.Chart(pd.DataFrame({"a": [1, 2]})).mark_point().encode(x="a")._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert set(bundle) == {"image/svg+xml"}
    assert pd.get_option("display.max_rows") == 200


def test_first_bucket_is_whole_and_a_cut_last_bucket_is_named(rows):
    chart, df = easy_msm_count_chart(since="3 days", return_data=True)  # NOW is 12:30
    first_day = (NOW - pd.Timedelta(days=3)).floor("D")
    assert df["t"].min() == first_day
    whole = _in_range(rows, first_day, first_day + pd.Timedelta(days=1))
    assert df.loc[df["t"] == first_day, "n"].sum() == len(whole) > 0
    spec = chart.to_dict()
    assert spec["title"]["subtitle"] == ("the last day is incomplete: measurements up to "
                                         "2024-03-20 12:30 UTC")
    assert spec["encoding"]["x"]["title"] == "day (UTC)"
    assert spec["encoding"]["color"]["title"] == "software version"
    assert spec["encoding"]["color"]["legend"]["labelLimit"] >= 300  # "ooniprobe-desktop" whole
    aligned = easy_msm_count_chart(since="2024-03-18", until="2024-03-20").to_dict()
    assert aligned["title"] == "Measurements per day by software_version"  # no caveat
