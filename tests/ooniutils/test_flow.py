"""The hourly flow detector on synthetic series with known drops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses.flow import (
    FlowDetector,
    FlowParams,
    detect,
    detect_many,
    hourly_grid,
    latest_alarms,
    pivot_hourly,
    predict,
    score_frame,
)
from ooniutils.exceptions import AnalysisError

WARM = FlowParams().warmup_hours

START = pd.Timestamp("2024-01-01")  # a Monday


def rate(hours: int, base: float, phase: float = 0.0) -> np.ndarray:
    """Expected hourly rate: a smooth daily cycle (±45 %) times a weekly one (weekend −25 %)."""
    t = np.arange(hours)
    daily = 1 + 0.45 * np.sin(2 * np.pi * (t / 24 + phase))
    weekly = 1 - 0.25 * np.exp(-(((t % 168) - 132) / 30.0) ** 2)
    return base * daily * weekly


def series(days: int = 60, base: float = 200.0, seed: int = 0, drops=(), overdispersion: float = 0.0,
           name: str = "s") -> pd.Series:
    """Poisson (or gamma-Poisson when ``overdispersion`` > 0: the rate varies by that CV)
    counts; ``drops`` = [(start_hour, hours, depth)] multiply the rate by 1 − depth."""
    rng = np.random.default_rng(seed)
    lam = rate(days * 24, base, phase=rng.uniform())
    for start, hours, depth in drops:
        lam[start:start + hours] *= 1 - depth
    if overdispersion > 0:
        k = 1 / overdispersion**2
        lam = lam * rng.gamma(k, 1 / k, lam.size)
    idx = pd.date_range(START, periods=days * 24, freq="h")
    return pd.Series(rng.poisson(lam).astype(float), index=idx, name=name)


def _hits(alarms: pd.DataFrame, s: pd.Series, drops) -> list[bool]:
    out = []
    for start, hours, _ in drops:
        t0, t1 = s.index[start], s.index[start + hours]
        out.append(bool(((alarms["start"] < t1) & (alarms["end"] > t0)).any()))
    return out


def test_drops_are_found_quickly_and_reported_merged():
    drops = [(20 * 24 + 3, 2, 0.5), (27 * 24 + 10, 6, 0.35), (35 * 24 + 15, 4, 0.6), (44 * 24 + 1, 3, 0.4)]
    s = series(56, 2000, seed=3, drops=drops)
    alarms = detect(s)
    assert _hits(alarms, s, drops) == [True] * len(drops)
    assert len(alarms) == len(drops), alarms  # one merged row per drop, nothing else
    for (start, hours, depth), row in zip(drops, alarms.itertuples(), strict=True):
        assert abs((row.start - s.index[start]) / pd.Timedelta(hours=1)) <= 1
        assert row.hours <= hours + 1
        assert row.severity == pytest.approx(depth, abs=0.12)
        assert row.actual < row.expected
    assert list(alarms.columns) == ["series", "start", "end", "hours", "expected", "actual", "severity"]


def test_small_series_pool_several_hours_and_mark_the_whole_run():
    drops = [(20 * 24 + 9, 6, 0.4), (27 * 24 + 14, 5, 0.35)]
    s = series(35, 80, seed=12, drops=drops)
    alarms = detect(s)
    assert _hits(alarms, s, drops) == [True, True], alarms
    for start, hours, _ in drops:
        row = alarms[(alarms["start"] < s.index[start + hours]) & (alarms["end"] > s.index[start])].iloc[0]
        assert row["start"] <= s.index[start + 2]  # earlier hours of the run marked afterwards
    det = FlowDetector()
    for ts, v in s.items():
        det.update(ts, v)
    assert [r.alarm for r in det.results] == predict(s)["alarm"].tolist()


@pytest.mark.parametrize(("base", "od"), [(0.3, 0.0), (5, 0.0), (200, 0.0), (5000, 0.05), (500, 0.15)])
def test_clean_noisy_series_rarely_alarm(base, od):
    frame = pd.concat([series(70, base, seed=seed, overdispersion=od, name=str(seed)) for seed in range(6)], axis=1)
    months = 6 * (70 * 24 - WARM) / 720
    assert len(detect_many(frame)) / months <= 1.0


def test_no_alarm_during_warm_up_even_for_an_outage():
    s = series(40, 1000, seed=1)
    s.iloc[5 * 24: 6 * 24] = 0          # a day of nothing, within the first week
    assert detect(s.iloc[: WARM]).empty
    early = detect(s)
    assert early.empty or early["start"].min() >= s.index[WARM - 1]
    pred = predict(s)
    assert pred["expected"].iloc[: 168 + 24].isna().all()
    assert not pred["alarm"].iloc[: WARM - 1].any()


def test_new_series_appearing_late_has_its_own_warm_up():
    s = series(40, 500, seed=2)
    s.iloc[: 20 * 24] = 0               # brand-new probe type: zeros then traffic
    s.iloc[22 * 24: 22 * 24 + 6] = 0    # an outage 2 days after it appeared: no history yet
    alarms = detect(s)
    assert alarms.empty or alarms["start"].min() >= s.index[20 * 24 + WARM - 1]
    # weeks from before the series began are not used as history (no absurd predictions)
    assert alarms.empty or alarms["severity"].max() < 0.5
    assert detect(s.iloc[: 20 * 24 + WARM]).empty


def test_missing_hours_count_as_zero_where_the_series_is_busy():
    s = series(35, 800, seed=4)
    gap = s.drop(s.index[28 * 24 + 5: 28 * 24 + 9])      # 4 hours with no rows at all
    alarms = detect(gap)
    assert len(alarms) == 1
    assert alarms.iloc[0]["start"] == s.index[28 * 24 + 5]
    assert alarms.iloc[0]["actual"] == 0
    # a trailing silence only shows when the caller says where the series ends
    cut = s.iloc[: 30 * 24]
    assert detect(cut).empty
    tail = detect(cut, end=cut.index[-1] + pd.Timedelta(hours=4))
    assert len(tail) == 1 and tail.iloc[0]["hours"] >= 2


def test_missing_hours_where_the_series_is_normally_empty_do_not_alarm():
    s = series(35, 400, seed=5)
    night = s.index.hour.isin([0, 1, 2, 3])
    s[night] = 0
    assert detect(s[~night]).empty       # rows absent at night: filled with zeros, expected ~0


def test_nan_hours_are_unknown_not_zero():
    s = series(35, 800, seed=6)
    s.iloc[29 * 24: 29 * 24 + 5] = np.nan
    assert detect(s).empty


def test_streaming_and_batch_agree():
    drops = [(19 * 24 + 2, 3, 0.5), (24 * 24, 30, 1.0)]
    s = series(30, 300, seed=7, drops=drops)
    s = s.drop(s.index[26 * 24: 26 * 24 + 3])             # a gap the stream fills with zeros
    det = FlowDetector()
    scores = [det.update(ts, v) for ts, v in s.items()]
    batch = predict(s)
    assert len(det.results) == len(batch)
    stream = pd.DataFrame([r.__dict__ for r in det.results]).set_index("timestamp")
    np.testing.assert_allclose(stream["expected"], batch["expected"], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(stream["score"], batch["score"], rtol=1e-9, atol=1e-12)
    assert (stream["alarm"].to_numpy() == batch["alarm"].to_numpy()).all()
    assert batch["alarm"].sum() >= 5
    assert all(0.0 <= x <= 1.0 for x in scores)
    assert det.last.timestamp == s.index[-1]


def test_streaming_buffer_compaction_keeps_results():
    s = series(64, 300, seed=8, drops=[(60 * 24, 4, 0.6)])  # the buffer holds 58 days
    det = FlowDetector()
    for ts, v in s.items():
        det.update(ts, v)
    batch = predict(s)
    stream = np.array([r.expected for r in det.results])
    np.testing.assert_allclose(stream, batch["expected"].to_numpy(), rtol=1e-7, equal_nan=True)
    assert [r.alarm for r in det.results] == batch["alarm"].tolist()


def test_detect_many_matches_detect_per_column():
    a = series(30, 300, seed=9, drops=[(25 * 24, 4, 0.6)], name="a")
    b = series(30, 50, seed=10, name="b")
    many = detect_many(pd.concat([a, b], axis=1))
    one = detect(a)
    assert list(many["series"]) == ["a"] * len(one)
    pd.testing.assert_frame_equal(many.reset_index(drop=True), one.reset_index(drop=True))
    out = score_frame(pd.concat([a, b], axis=1))
    assert set(out) == {"expected", "score", "alarm"}


def test_pivot_hourly_fills_zeros_and_names_series():
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 00:10", "2024-01-01 03:00", "2024-01-01 03:00"]),
                       "cc": ["IT", "IT", "DE"], "sw": ["x", "x", "y"], "n": [1, 2, 5]})
    wide = pivot_hourly(df, "t", ["cc", "sw"], start="2024-01-01", end="2024-01-01 05:00")
    assert list(wide.columns) == ["DE/y", "IT/x"]
    assert len(wide) == 5 and wide["IT/x"].tolist() == [1, 0, 0, 2, 0]
    with pytest.raises(AnalysisError, match="missing column"):
        pivot_hourly(df, "t", ["nope"])
    empty = pivot_hourly(df.iloc[:0], "t", "cc", start="2024-01-01", end="2024-01-02")
    assert empty.shape == (24, 0)


def test_latest_alarms_and_empty_inputs():
    s = series(30, 500, seed=11, drops=[(30 * 24 - 3, 3, 0.7)])
    alarms = detect(s)
    assert len(latest_alarms(alarms, now=s.index[-1] + pd.Timedelta(hours=1), hours=2)) == 1
    assert latest_alarms(alarms, now=s.index[-1] + pd.Timedelta(hours=30), hours=3).empty
    assert detect(pd.Series([], dtype=float, index=pd.DatetimeIndex([]))).empty
    assert predict(pd.Series([], dtype=float, index=pd.DatetimeIndex([]))).empty
    assert hourly_grid(pd.Series([1.0], index=[pd.Timestamp("2024-01-01 10:30")]), end="2024-01-01 13:00").tolist() == [1, 0, 0]


def test_bad_input_is_reported():
    det = FlowDetector()
    det.update("2024-01-01 10:00", 5)
    with pytest.raises(AnalysisError, match="increase"):
        det.update("2024-01-01 09:00", 5)
    with pytest.raises(AnalysisError, match="timestamp"):
        det.update("not a time", 5)
    with pytest.raises(AnalysisError, match="threshold"):
        FlowDetector(threshold=1.5)
    with pytest.raises(AnalysisError, match="unknown detector option"):
        detect(series(10, 5), thresold=0.5)
    with pytest.raises(AnalysisError, match="Series"):
        detect([1, 2, 3])  # type: ignore[arg-type]
