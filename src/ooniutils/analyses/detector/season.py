"""Seasonality learned from the warm-up window, in units of the series' step.

The autocorrelation function (ACF) of the linearly detrended warm-up values is computed
with an FFT; a lag ``P`` is a season when ``acf[P] >= max(MIN_ACF, 3 / sqrt(n − P))``
(above what white noise reaches by chance over the ``n − P`` pairs) *and* it stands out:
``acf[P] - min(acf[1..P]) >= MIN_PROMINENCE`` (a trend or a random walk has a high but
monotonically falling ACF, which has no such peak). At most half the window is searched
(two full cycles are needed). Candidates, in order of preference:

1. weekly (``7 days / step``) when it qualifies and beats the daily lag by ``WEEK_MARGIN``
   (a weekly pattern adds information on top of a daily one);
2. daily (``1 day / step``) when it qualifies, unless a shorter period that divides it
   does as well (a 12-hour cycle is reported as such, not as daily);
3. another period: the first ACF peak (lag 2 … n/3, three cycles seen) that qualifies and
   reaches 90 % of the highest qualifying peak (the fundamental, not a harmonic);
4. none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_ACF = 0.3
MIN_PROMINENCE = 0.3
WEEK_MARGIN = 0.05
DAY = 86400.0


@dataclass(frozen=True)
class Season:
    """A learned season: ``period`` steps (1 = none) and what it was recognised as."""

    period: int
    name: str
    """``none``, ``daily``, ``weekly`` or ``other``."""
    acf: float
    """The ACF at ``period`` (0 for none)."""


NONE = Season(1, "none", 0.0)


def acf(y: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of ``y`` (NaN = missing, filled with the trend line)."""
    n = len(y)
    t = np.arange(n, dtype=float)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return np.zeros(n)
    slope, icpt = np.polyfit(t[ok], y[ok], 1)
    x = np.where(ok, y - (slope * t + icpt), 0.0)
    var = float(np.mean(x[ok] ** 2))
    if var <= 0:
        return np.zeros(n)
    f = np.fft.rfft(x, 2 * n)
    raw = np.fft.irfft(f * np.conj(f))[:n]
    m = ok.astype(float)
    fm = np.fft.rfft(m, 2 * n)
    pairs = np.maximum(np.round(np.fft.irfft(fm * np.conj(fm))[:n]), 1.0)
    return np.asarray(raw / pairs / var)


def _qualifies(a: np.ndarray, lag: int) -> bool:
    # 3 / sqrt(pairs): an ACF that white noise reaches by chance (short windows, e.g.
    # 60 daily points) does not count as a season
    need = max(MIN_ACF, 3.0 / np.sqrt(len(a) - lag))
    return bool(a[lag] >= need and a[lag] - a[1:lag + 1].min() >= MIN_PROMINENCE)


def detect_season(y: np.ndarray, step_seconds: float) -> Season:
    """The season of the (transformed) warm-up values ``y`` sampled every ``step_seconds``."""
    n = len(y)
    if n < 8:
        return NONE
    a = acf(y)
    half = n // 2
    day = int(round(DAY / step_seconds))
    week = 7 * day
    third = n // 3
    peaks = [k for k in range(2, min(third, day)) if a[k] > a[k - 1] and a[k] >= a[k + 1] and _qualifies(a, k)]
    fund = None
    if peaks:
        best = max(a[k] for k in peaks)
        fund = next(k for k in peaks if a[k] >= 0.9 * best)
    ok_day = 2 <= day <= half and _qualifies(a, day)
    if 2 <= week <= half and _qualifies(a, week) and a[week] >= (a[day] if ok_day else 0) + WEEK_MARGIN:
        return Season(week, "weekly", float(a[week]))
    if ok_day and not (fund is not None and day % fund == 0 and a[fund] >= a[day] - WEEK_MARGIN):
        return Season(day, "daily", float(a[day]))
    if fund is not None:
        return Season(fund, "other", float(a[fund]))
    peaks = [k for k in range(max(2, day), third) if a[k] > a[k - 1] and a[k] >= a[k + 1] and _qualifies(a, k)]
    if peaks:
        best = max(a[k] for k in peaks)
        k = next(k for k in peaks if a[k] >= 0.9 * best)
        return Season(k, "other", float(a[k]))
    return NONE
