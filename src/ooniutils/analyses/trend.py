"""Slow declines over weeks, which the hourly flow detector absorbs into its baseline.

The test is the **seasonal Mann-Kendall** test (Hirsch, Slack & Smith 1982) on daily totals,
with the day of the week as the season: each weekday is compared only with the same weekday
in other weeks, so the weekly cycle neither hides nor fakes a trend, and no distribution is
assumed. The size of the trend is the **seasonal Theil-Sen slope** (median of the
within-weekday pairwise slopes), reported as the fraction of the level lost over the window.

A series alarms when the decrease is significant (one-sided p < ``alpha``) *and* large
(``decline ≥ min_decline`` over the window): significance alone would flag a 2 % drift on a
big series. Fewer than ``min_weeks`` weeks of data → no verdict (never alarm on absence of
history).

Usage::

    res = detect_decline(daily_counts)          # pd.Series indexed by day
    if res.alarm: print(res.decline, res.p_value)
    table = decline_table(wide_daily_frame)     # one row per column
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from ..exceptions import AnalysisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrendResult:
    """Outcome of :func:`detect_decline` for one series."""

    series: str
    days: int
    """Days with data in the window."""
    level: float
    """Median daily total over the window."""
    slope_per_day: float
    """Seasonal Theil-Sen slope, measurements/day (negative = decreasing)."""
    decline: float
    """Fraction of the level lost over the window according to the slope (0.3 = −30 %)."""
    change_vs_start: float
    """Mean of the last 14 days / mean of the first 14 days − 1 (a plain cross-check)."""
    z: float
    p_value: float
    """One-sided p-value of a decreasing trend."""
    alarm: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seasonal_mann_kendall(values: np.ndarray, period: int = 7) -> tuple[float, float, float]:
    """Seasonal Mann-Kendall on equally spaced ``values`` (NaN = missing).

    Returns ``(S, var_S, z)``; z < 0 means decreasing. Ties are corrected for in var_S.
    """
    x = np.asarray(values, dtype=float)
    s_total, var_total = 0.0, 0.0
    for season in range(period):
        xs = x[season::period]
        xs = xs[~np.isnan(xs)]
        n = xs.size
        if n < 2:
            continue
        diff = xs[None, :] - xs[:, None]
        s_total += float(np.sign(diff[np.triu_indices(n, 1)]).sum())
        _, counts = np.unique(xs, return_counts=True)
        ties = counts[counts > 1]
        var_total += (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    if var_total <= 0:
        return s_total, var_total, 0.0
    if s_total > 0:
        z = (s_total - 1) / math.sqrt(var_total)
    elif s_total < 0:
        z = (s_total + 1) / math.sqrt(var_total)
    else:
        z = 0.0
    return s_total, var_total, z


def seasonal_sen_slope(values: np.ndarray, period: int = 7) -> float:
    """Median of all pairwise slopes between values of the same season (per index step)."""
    x = np.asarray(values, dtype=float)
    slopes = []
    for season in range(period):
        idx = np.arange(season, x.size, period)
        xs = x[idx]
        ok = ~np.isnan(xs)
        xs, ts = xs[ok], idx[ok]
        if xs.size < 2:
            continue
        i, j = np.triu_indices(xs.size, 1)
        slopes.append((xs[j] - xs[i]) / (ts[j] - ts[i]))
    if not slopes:
        return float("nan")
    return float(np.median(np.concatenate(slopes)))


def _daily(series: pd.Series) -> pd.Series:
    if not isinstance(series, pd.Series):
        raise AnalysisError(f"expected a pandas Series indexed by day, got {type(series).__name__}")
    try:
        idx = pd.DatetimeIndex(series.index)
    except (TypeError, ValueError) as exc:
        raise AnalysisError("the series must be indexed by dates") from exc
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    s = pd.Series(pd.to_numeric(series.to_numpy(), errors="coerce"), index=idx.floor("D"), dtype=float)
    s = s.groupby(level=0).sum(min_count=1)
    if s.empty:
        return s
    return s.reindex(pd.date_range(s.index.min(), s.index.max(), freq="D"))


def detect_decline(series: pd.Series, weeks: int = 8, alpha: float = 0.01, min_decline: float = 0.15,
                   min_weeks: int = 4, end: Any = None) -> TrendResult:
    """Is there a significant, sustained decrease over the last ``weeks`` weeks?

    ``series``: daily totals indexed by day (days without a row are missing, not 0: a
    full-day outage is the hourly detector's job). ``end`` (exclusive day) closes the window;
    default: the day after the last one in the series.
    """
    if weeks < 2 or min_weeks < 2:
        raise AnalysisError(f"weeks and min_weeks must be at least 2 (got {weeks}, {min_weeks})")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    name = "" if series.name is None else str(series.name)
    daily = _daily(series)
    if end is not None:
        stop = pd.Timestamp(end).floor("D") - pd.Timedelta(days=1)
        daily = daily[daily.index <= stop]
    daily = daily.iloc[-weeks * 7:]
    if daily.notna().any():  # days before the series' first one are not part of it
        daily = daily.loc[daily.first_valid_index():]
    n_days = int(daily.notna().sum())
    level = float(daily.median()) if n_days else float("nan")
    nan = float("nan")
    if n_days < min_weeks * 7 or not level > 0:
        return TrendResult(name, n_days, level, nan, nan, nan, nan, nan, False,
                           note=f"too little history: {n_days} days with data, need {min_weeks * 7}")
    x = daily.to_numpy()
    _, _, z = seasonal_mann_kendall(x)
    p_value = float(ndtr(z))
    slope = seasonal_sen_slope(x)
    decline = -slope * len(x) / level
    head, tail = np.nanmean(x[:14]), np.nanmean(x[-14:])
    change = float(tail / head - 1) if head > 0 else nan
    alarm = bool(p_value < alpha and decline >= min_decline)
    note = "significant sustained decrease" if alarm else ""
    return TrendResult(name, n_days, round(level, 1), round(slope, 3), round(float(decline), 4),
                       round(change, 4), round(float(z), 3), p_value, alarm, note)


def decline_table(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`detect_decline` on every column of ``frame`` (index: days), one row each,
    alarms first, then by decline."""
    cols = list(TrendResult.__dataclass_fields__)
    rows = [detect_decline(frame[c].rename(str(c)), **options).as_dict() for c in frame.columns]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["alarm", "decline"], ascending=[False, False], na_position="last",
                           ignore_index=True)
