"""The flow detector's evidence: the count test knows the prediction is itself an estimate,
and a daily upload batch is predicted as the peak it is (issue 14 §3: false alarms on small
series with one week of history; a drop spanning a batch hour missed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from ooniutils.analyses import flow
from ooniutils.analyses.flow import FlowParams, count_cdf, detect, detect_many, poisson_cdf, predict
from ooniutils.exceptions import AnalysisError

START = pd.Timestamp("2024-01-01")  # a Monday


def rate(hours: int, base: float) -> np.ndarray:
    """Expected hourly rate: a daily cycle (±45 %) times a weekly one (weekend −25 %)."""
    t = np.arange(hours)
    return base * (1 + 0.45 * np.sin(2 * np.pi * t / 24)) * (1 - 0.25 * np.exp(-(((t % 168) - 132) / 30.0) ** 2))


def series(days: int, base: float, seed: int, name: str) -> pd.Series:
    rng = np.random.default_rng(seed)
    lam = np.roll(rate(days * 24, base), int(rng.integers(0, 24)))
    return pd.Series(rng.poisson(lam).astype(float), index=pd.date_range(START, periods=days * 24, freq="h"),
                     name=name)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.05, 5000), st.floats(0.0, 1.0), st.floats(0.05, 200))
def test_count_test_is_weaker_than_poisson_and_tends_to_it(lam, frac, history):
    k = np.floor(lam * frac)  # at or below the prediction: where the test is used
    c = float(count_cdf(np.array([k]), np.array([lam]), np.array([history]))[0])
    p = float(poisson_cdf(np.array([k]), np.array([lam]))[0])
    assert 0.0 <= c <= 1.0
    assert c >= p * (1 - 1e-9) - 1e-200         # a noisy prediction is weaker evidence …
    more = float(count_cdf(np.array([k]), np.array([lam]), np.array([history * 4]))[0])
    assert more <= c * (1 + 1e-9) + 1e-200      # … the more history, the stronger …
    exact = float(count_cdf(np.array([k]), np.array([lam]), np.array([1e9]))[0])
    assert exact == pytest.approx(p, rel=1e-3, abs=1e-200)  # … and a known prediction is Poisson


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 60), st.integers(1, 60), st.integers(1, 8))
def test_count_test_is_the_binomial_test_of_two_poisson_rates(k, past, history):
    # `past` measurements in `history` hours of history: the prediction is past / history
    lam = past / history
    expected = binom.cdf(k, k + past, 1 / (1 + history))
    assert float(count_cdf(np.array([k]), np.array([lam]), np.array([float(history)]))[0]) == pytest.approx(
        expected, rel=1e-6, abs=1e-12)


def test_count_test_edges():
    assert count_cdf(np.array([-1.0]), np.array([5.0]), np.array([2.0]))[0] == 0.0
    assert count_cdf(np.array([3.0]), np.array([0.0]), np.array([2.0]))[0] == 1.0
    with pytest.raises(AnalysisError, match="history_hours_per_week"):
        FlowParams(history_hours_per_week=0)


def test_small_series_with_one_week_of_history_do_not_alarm_on_a_noisy_prediction():
    """With one week of history the prediction of a 2.5/h series is one noisy (smoothed) hour;
    trusting it as exact (a huge history_hours_per_week) raised many false alarms."""
    frame = pd.concat([series(17, 2.5, seed=s, name=str(s)) for s in range(150)], axis=1)
    now = detect_many(frame)
    trusting = detect_many(frame, history_hours_per_week=1e6)
    assert len(now) <= 0.1 * frame.shape[1], now       # ~8 scored days per series, alpha 1e-4
    assert len(trusting) >= 3 * max(len(now), 1), (len(trusting), len(now))


def batch_series(days: int = 42, base: float = 50.0, batch: float = 6.0, hour: int = 7, seed: int = 0,
                 drops=()) -> pd.Series:
    """Poisson counts whose hour ``hour`` of every day carries ``batch`` × the usual volume
    (a daily upload batch); ``drops`` = [(start_hour, hours, depth)]."""
    rng = np.random.default_rng(seed)
    lam = rate(days * 24, base)
    t = np.arange(days * 24)
    lam = np.where(t % 24 == hour, lam * batch, lam)
    for start, hours, depth in drops:
        lam[start:start + hours] *= 1 - depth
    return pd.Series(rng.poisson(lam).astype(float), index=pd.date_range(START, periods=days * 24, freq="h"),
                     name="s")


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 23), st.floats(4.0, 12.0), st.floats(30.0, 400.0), st.integers(0, 2**16))
def test_a_daily_batch_hour_is_predicted_as_a_peak_and_does_not_alarm(hour, batch, base, seed):
    # a batch of 4x and more stands out of Poisson noise every week (a weaker one may not be
    # recognised as recurring: it is then smoothed as before)
    s = batch_series(days=35, base=base, batch=batch, hour=hour, seed=seed)
    p = predict(s)
    at = p[p.index.hour == hour].iloc[-7:]   # the last week: 4 weeks of history
    # within Poisson noise and the prediction's own error of what arrived (a smoothed-away batch
    # is predicted at a quarter of it or less); hypothesis found hour=15, batch=4, base=31,
    # seed=76 against a fixed bound of 0.7-1.4 (a batch hour of ~66 drawn 2.7 sigma low)
    assert ((at["expected"] - at["actual"]).abs() <= 4 * np.sqrt(1.25 * at["expected"]) + 0.1 * at["expected"]).all(), at
    # the batch is no drop (a batch hour drawn 2 Poisson sigma low scores ~0.75, one drawn 3 sigma
    # low up to 0.99 -- hour=13, batch=4, base=30, seed=76 --: noise, no alarm)
    assert not at["alarm"].any(), at


def test_a_drop_spanning_the_batch_hour_is_found(monkeypatch):
    drop = [(37 * 24 + 5, 4, 0.45)]            # 05:00-09:00, the batch at 07:00
    found = [not detect(batch_series(seed=seed, drops=drop)).empty for seed in range(3)]
    assert found == [True] * 3
    # the cause, shown: smoothing the batch away (no recurring peak) leaves it far above the
    # prediction, and the drop's run breaks there
    monkeypatch.setattr(flow, "PEAK_WEEKS", 10**6)
    smoothed = predict(batch_series(seed=0))
    at = smoothed[smoothed.index.hour == 7].iloc[-7:]
    assert (at["actual"] > 3 * at["expected"]).all()


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 21), st.floats(30.0, 300.0), st.integers(0, 2**16))
def test_the_hour_between_two_batch_hours_is_predicted_at_its_own_level(hour, base, seed):
    """Two networks batching two hours apart (BR at 05:00 UTC, US at 07:00 UTC): the 3-hour
    median lifted the hour between them to the batch level, a false alarm whenever it came in
    low; a recurring trough is now predicted from its own values, read from what arrived (the
    cleaned history remembers an alarmed hour as its lifted prediction, which hid the trough
    for good once it had alarmed in the first weeks)."""
    rng = np.random.default_rng(seed)
    days = 35
    lam = rate(days * 24, base)
    t = np.arange(days * 24)
    lam = np.where((t % 24 == hour) | (t % 24 == hour + 2), lam * 4, lam)
    s = pd.Series(rng.poisson(lam).astype(float), index=pd.date_range(START, periods=days * 24, freq="h"),
                  name="s")
    p = predict(s)
    between = p[p.index.hour == hour + 1].iloc[-7:]
    truth = pd.Series(lam, index=s.index)[between.index]
    # smoothed, it sat at the batch level (~4x its own); now within the noise of its own values
    assert (between["expected"] / truth).between(0.5, 1.6).all(), between
    assert not between["alarm"].any()


def test_noise_scale_is_unbiased_for_normal_noise_at_every_clip():
    """The learnt noise level is the mean of min(|residual|, clip × σ): rescaled by
    ``noise_scale`` it is σ again for normal residuals (the constant is not a guess)."""
    z = np.random.default_rng(7).standard_normal(2_000_000)
    for clip in (1.0, 2.0, 2.5, 4.0, 10.0):
        p = FlowParams(noise_clip=clip)
        assert np.minimum(np.abs(z), clip).mean() * p.noise_scale == pytest.approx(1.0, abs=2e-3), clip
    assert FlowParams(noise_clip=10.0).noise_scale == pytest.approx(np.sqrt(np.pi / 2), rel=1e-9)
    for bad in (0.5, 11.0):
        with pytest.raises(AnalysisError, match="noise_clip"):
            FlowParams(noise_clip=bad)


def learnt_noise(values: np.ndarray, clip: float) -> float:
    """The noise level (σ of the log residual) a detector has learnt after ``values``."""
    det = flow.FlowDetector(noise_clip=clip)
    for ts, v in zip(pd.date_range(START, periods=len(values), freq="h"), values, strict=True):
        det.update(ts, float(v))
    eng = det._engine
    return float(eng.mad[0] * eng.noise_scale)


def test_a_robust_noise_level_is_less_inflated_by_a_few_odd_hours():
    """One hour in 16 comes in 60 % high (never a drop, so it is learnt as noise): capped at 4 σ
    those hours inflate the noise level of the whole series by 60-85 % (a 30 % drop of a few
    hours then looks like noise), capped at 2 σ by 30-50 %."""
    for seed in (3, 4, 5):
        rng = np.random.default_rng(seed)
        hours = 35 * 24
        lam = np.full(hours, 400.0)
        odd = lam.copy()
        odd[rng.choice(hours, size=hours // 16, replace=False)] *= 1.6
        clean = learnt_noise(rng.poisson(lam).astype(float), 2.0)
        assert 0.04 < clean < 0.08, clean      # Poisson at 400/h and the prediction's error
        values = rng.poisson(odd).astype(float)
        robust, plain = learnt_noise(values, 2.0), learnt_noise(values, 4.0)
        assert robust < 1.6 * clean and plain > 1.5 * clean, (seed, clean, robust, plain)
        assert plain > 1.12 * robust, (seed, robust, plain)


PER_COUNTRY = {"threshold": 0.8, "alpha": 1e-6, "alpha_single": 1e-8, "noise_clip": 2.0}
"""The per-country notebook's evidence bar (its ``parameters`` cell)."""


def test_strong_peaks_are_the_batch_hour_only():
    s = batch_series(base=20, batch=10, seed=3)
    eng = flow._Engine(1, FlowParams(peak_noise=True), capacity=len(s) + 1)
    marks = []
    for v in s.to_numpy():
        _, _, peak = eng._m_row()
        marks.append(bool(peak[0]))
        eng.step(np.array([v]), *eng._m_row())
    marks_s = pd.Series(marks, index=s.index)
    last = marks_s[s.index >= s.index[-1] - pd.Timedelta(days=14)]   # 4+ weeks of history
    assert last[last.index.hour == 7].all()
    assert last[last.index.hour != 7].mean() < 0.02


def test_a_drop_in_the_batch_hour_is_found_with_the_peaks_own_noise_level():
    """US/cli on the tuning world 21: a -38 % drop over 4 h starting at the daily batch hour,
    whose summed shortfall is mostly the batch's. Judged with the series' noise level over
    √hours (as if the hours weighed the same), the run is not significant; with the batch hour's
    own (much smaller, relative) noise level weighted by its share of the run, it is."""
    drop = [(37 * 24 + 7, 4, 0.38)]
    start, end = START + pd.Timedelta(hours=37 * 24 + 7), START + pd.Timedelta(hours=37 * 24 + 11)
    found, found_before = [], []
    for seed in range(8):
        s = batch_series(base=20, batch=10, seed=seed, drops=drop)
        a = detect(s, **PER_COUNTRY, peak_noise=True)
        found.append(bool(((a["start"] < end) & (a["end"] > start)).any()))
        found_before.append(not detect(s, **PER_COUNTRY).empty)
    assert sum(found) >= 5, found
    assert not any(found_before), found_before


@pytest.mark.parametrize("seed", range(6))
def test_the_peaks_own_noise_level_raises_no_alarm_on_normal_batches(seed):
    # a batch hour drawn low by Poisson noise is no drop; nor are the hours around it
    assert detect(batch_series(days=56, base=20, batch=10, seed=seed), **PER_COUNTRY, peak_noise=True).empty
    assert detect(batch_series(days=56, base=50, batch=4, hour=13, seed=seed), peak_noise=True).empty


def test_the_peaks_noise_level_is_never_below_poisson():
    """A level learnt from a few batch hours can come out far too small by chance (seed 21's
    US/cli learnt 0.03 from its first four): it is floored at the log-noise of Poisson counts
    and of the prediction's own error, so a batch hour drawn 3 sigma low does not alarm."""
    s = batch_series(days=35, base=20, batch=10, seed=1)
    t = s.index[-1].normalize() + pd.Timedelta(hours=7)
    p = predict(s, **PER_COUNTRY, peak_noise=True)
    e = p.loc[t, "expected"]
    s[t] = np.floor(e - 3 * np.sqrt(e * 1.25))
    assert not predict(s, **PER_COUNTRY, peak_noise=True).loc[t, "alarm"]
