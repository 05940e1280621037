"""Incoming-measurement flow: predict the next hour from weekly history, alarm on drops.

The model is a **robust seasonal baseline** (chosen over the historical scikit-learn linear
regression by ``bench/flow_detector.py``, see BENCHMARKS.md). For hour ``t`` and each of
the previous ``weeks`` weeks ``k`` that are available::

    e_k = smooth(t - 168k) * level(t) / level_k(t - 168k)

``smooth`` is the median of the three hours centred on the same hour of the week ``k``
weeks earlier (daily and weekly cycles come for free, noise is damped, and the edge of a
daily silence stays at zero); ``level`` is the mean of the last ``level_hours`` hours, so
the seasonal sample is scaled by how the recent level compares with the level at the same
time ``k`` weeks earlier. The prediction is the
median of the ``e_k`` (robust to one bad week).

An hour is *below the line* when ``actual < threshold * expected`` (the drop is large
enough to matter). Alarms need evidence that the shortfall is not noise, measured as the
larger of two probabilities of seeing that few measurements when the prediction is right:
a count test (so tiny series do not flap) and a normal model of the series' own log-residual
noise (an exponentially weighted mean absolute residual, each hour capped at ``noise_clip``
× the noise level so a few odd hours cannot inflate it, so over-dispersed series do not
flap either). The count test is Poisson with the prediction's own error accounted for
(:func:`count_cdf`: a prediction learnt from ``w`` weeks is worth ``w ×
history_hours_per_week`` hours of history), so a small series with one week of history
does not alarm on a prediction that was one noisy hour. With ``peak_noise`` (the per-country
notebook) a strong recurring peak (a daily upload batch) has a noise level of its own, and a run
spanning it weighs each hour's noise by its expected count:

* one hour below the line alarms alone when that probability is below ``alpha_single``
  (an outage is flagged as soon as its first hour is complete);
* a run of 2 … ``window_hours`` consecutive hours whose first and last hours are below the
  line, and whose summed counts are too, alarms as a whole when the probability of the
  summed shortfall is below ``alpha`` (pooling hours finds 30 % drops on small series).
  Earlier hours of such a run become alarmed retroactively (``results``/batch output).

The history the model learns from is *cleaned*: an alarmed hour is remembered as its
prediction, so an outage does not teach the model that zero is normal. After
``adapt_after_hours`` consecutive alarmed hours the real values are used again (the new
level becomes normal and the alarm ends by itself about ``level_hours`` later).

Warm-up: no prediction before ``168 + level_hours`` hours of history exist for the series,
then ``calibration_hours`` scored hours to learn its noise level: no alarm in the first
``FlowParams.warmup_hours`` (216 h = 9 days) after a series' first non-zero hour — a
brand-new probe type or country is never alarmed on for lack of history.
Missing hours inside the grid count as 0 (so a silent series alarms if it is normally
busy at that hour, and does not when it is normally empty); NaN means "unknown": it is
neither scored nor learnt from.

Usage::

    det = FlowDetector()
    for ts, n in hourly_counts.items():
        score = det.update(ts, n)      # 0 (normal) … 1 (certain drop)
        if det.last.alarm: ...
    alarms = detect(hourly_counts)      # DataFrame: start, end, expected, actual, severity
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import betainc, gammaincc, ndtr

from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

WEEK = 168
PEAK_WEEKS = 3
"""Weeks in a row an hour must stand on the same side of its 3-hour median to be predicted
from its own values (a recurring peak or trough, see ``_Engine.seasonal``)."""
PEAK_FACTOR = 1.5
"""A recurring hour whose own prediction differs from the smoothed one by at least this factor
(either way) is a *strong* peak or trough (a daily upload batch, the hour between two batches):
with ``FlowParams.peak_noise`` it has a noise level of its own."""
PEAK_CALIBRATION = 3
"""Strong-peak hours learnt before their own noise level is used (until then a peak hour is
judged with, and teaches, the series' own level, as without ``peak_noise``)."""
ALARM_COLUMNS = ["series", "start", "end", "hours", "expected", "actual", "severity"]


@dataclass(frozen=True)
class FlowParams:
    """Detector settings. Defaults were picked with ``bench/flow_detector.py``."""

    threshold: float = 0.8
    """Alarm only when actual < threshold × expected (0 < threshold < 1)."""
    alpha: float = 1e-4
    """A run of 2 to ``window_hours`` consecutive hours (its first and last hour below the
    line) alarms together when the probability of its summed shortfall being noise
    (Poisson and the series' own noise level) is below alpha."""
    window_hours: int = 6
    """Longest run of hours whose evidence is pooled (small series need several hours)."""
    alpha_single: float = 1e-6
    """A single hour alarms on its own when that probability is below alpha_single (an
    outage is flagged in its first hour; ordinary noise almost never is)."""
    weeks: int = 4
    """Weeks of history the prediction takes the median over (at least 1 is needed)."""
    level_hours: int = 24
    """Hours in the recent-level window used to scale last weeks' values."""
    adapt_after_hours: int = 72
    """After this many consecutive alarmed hours, learn the new level again."""
    calibration_hours: int = 24
    """Scored hours used to learn the series' noise level before it may alarm."""
    noise_hours: int = 168
    """Memory (EWMA span, hours) of the noise level estimate."""
    noise_clip: float = 4.0
    """Robustness of the noise level estimate: once calibrated, each hour's absolute
    log-residual is capped at ``noise_clip`` × the current noise level before it is learnt
    (winsorised), so a few odd hours (a holiday, a daily batch hour) cannot inflate the noise
    of the whole series; the estimate is rescaled to stay unbiased for normal noise."""
    peak_noise: bool = False
    """Give strong recurring peaks and troughs (``PEAK_FACTOR``: a daily upload batch) a noise
    level of their own, learnt from those hours only, so the batch hour's occasional large miss
    does not inflate the noise level of the series' other hours; a run of hours spanning a
    peak weighs each hour's noise by its expected count (the batch hour's uncertainty counts
    for its share of the run, not for the whole run)."""
    history_hours_per_week: float = 1.0
    """How precise the prediction is: a prediction built from ``w`` past weeks counts as the
    mean of ``w × history_hours_per_week`` observed hours, so the count test compares two
    Poisson rates (the new hours against that much history) instead of trusting the prediction
    as exact. Measured on the generator's worlds (``bench/flow_notebooks_quality.py``): with 4
    weeks the prediction's error is that of 3.6-4.9 averaged hours on series of 2-32
    measurements per hour. It matters on small series with little history (one week of
    history: the prediction is a single noisy hour, and trusting it raised false alarms)."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise AnalysisError(f"threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        for name in ("alpha", "alpha_single"):
            if not 0 < getattr(self, name) < 1:
                raise AnalysisError(f"{name} must be between 0 and 1 (exclusive), got {getattr(self, name)}")
        if not 2 <= self.window_hours <= 24:
            raise AnalysisError(f"window_hours must be between 2 and 24, got {self.window_hours}")
        if self.weeks < 1:
            raise AnalysisError(f"weeks must be at least 1, got {self.weeks}")
        if not 1 <= self.level_hours <= WEEK:
            raise AnalysisError(f"level_hours must be between 1 and {WEEK}, got {self.level_hours}")
        if self.adapt_after_hours < 1:
            raise AnalysisError(f"adapt_after_hours must be at least 1, got {self.adapt_after_hours}")
        if not 1.0 <= self.noise_clip <= 10.0:
            raise AnalysisError(f"noise_clip must be between 1 and 10, got {self.noise_clip}")
        if not 0 < self.history_hours_per_week <= 1e6:
            raise AnalysisError(f"history_hours_per_week must be in (0, 1e6], got {self.history_hours_per_week}")

    @property
    def noise_scale(self) -> float:
        """σ per unit of the learnt (winsorised) mean absolute residual: 1 / E[min(|Z|, c)] for
        a standard normal Z and c = ``noise_clip`` (√(π/2) ≈ 1.2533 without the cap)."""
        c = self.noise_clip
        return 1.0 / (2.0 * (_PHI0 - _phi(c)) + 2.0 * c * (1.0 - float(ndtr(c))))

    @property
    def warmup_hours(self) -> int:
        """Hours from a series' first non-zero value to the first hour that may alarm."""
        return WEEK + self.level_hours + self.calibration_hours


_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(x: float) -> float:
    return _PHI0 * math.exp(-0.5 * x * x)


def _params(params: FlowParams | None, overrides: Mapping[str, Any]) -> FlowParams:
    base = params or FlowParams()
    if not overrides:
        return base
    allowed = set(FlowParams.__dataclass_fields__)
    unknown = set(overrides) - allowed
    if unknown:
        raise AnalysisError(f"unknown detector option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return FlowParams(**{**base.__dict__, **overrides})


def poisson_cdf(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """P(X <= k) for X ~ Poisson(lam), vectorised (regularised upper incomplete gamma)."""
    k = np.floor(np.asarray(k, dtype=float))
    lam = np.asarray(lam, dtype=float)
    with np.errstate(invalid="ignore"):
        out = gammaincc(k + 1.0, lam)
    return np.where(k < 0, 0.0, out)


def count_cdf(k: np.ndarray, lam: np.ndarray, history: np.ndarray) -> np.ndarray:
    """P(X <= k) for X measurements whose expected number ``lam`` was itself estimated from
    ``history`` times as many hours (the prediction's own error accounted for).

    The exact conditional test of two Poisson rates: given the new count ``k`` and the
    history's count ``history × lam``, the new share of the total is Binomial with p =
    1 / (1 + history) under "no change"; the continuous form is the regularised incomplete
    beta function. Tends to :func:`poisson_cdf` as ``history`` grows (a prediction known
    exactly); always at least as large (a noisy prediction is weaker evidence).
    """
    k = np.floor(np.asarray(k, dtype=float))
    lam = np.asarray(lam, dtype=float)
    h = np.asarray(history, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = betainc(np.maximum(h * lam, 1e-300), k + 1.0, h / (1.0 + h))
    out = np.where(lam <= 0, 1.0, out)
    return np.where(k < 0, 0.0, out)


def _nanmedian0(a: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are NaN); fast for a short axis 0."""
    srt = np.sort(np.moveaxis(a, 0, -1), axis=-1)  # NaN sort last; contiguous last axis
    c = (~np.isnan(srt)).sum(axis=-1)
    lo = np.clip((c - 1) // 2, 0, None)[..., None]
    hi = np.clip(c // 2, 0, a.shape[0] - 1)[..., None]
    med = (np.take_along_axis(srt, lo, -1)[..., 0] + np.take_along_axis(srt, hi, -1)[..., 0]) / 2.0
    return np.where(c > 0, med, np.nan)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Element-wise median of three arrays without sorting (a NaN is skipped)."""
    return np.fmax(np.fmin(a, b), np.fmin(np.fmax(a, b), c))


class _Engine:
    """The model over ``n`` series at once, stepping one hour at a time.

    Arrays are indexed by hour; ``cs``/``cnt`` are running sums of the cleaned history and
    of its non-NaN count, so every window mean is O(1). The week-ago part of the prediction
    (``M`` below) only reads history at least 165 hours old, so :meth:`seasonal` computes it
    for up to 144 future hours at once; the per-hour loop then does a handful of array
    operations. Streaming use keeps a bounded buffer (old rows dropped when it fills).
    """

    BLOCK = 144

    def __init__(self, n: int, params: FlowParams, capacity: int | None = None) -> None:
        self.p = params
        self.n = n
        self.keep = params.weeks * WEEK + params.level_hours + 2
        self.noise_scale = params.noise_scale
        self.cap = max(capacity or 0, 2 * self.keep)
        self._mc: np.ndarray | None = None
        self._mw = np.zeros((0, n))
        self._mp = np.zeros((0, n), dtype=bool)
        self._mc_start = 0
        self.clean = np.full((self.cap, n), np.nan)
        self.raw = np.full((self.cap, n), np.nan)  # what arrived (recurring peaks are read here)
        self.cs = np.zeros((self.cap + 1, n))   # cs[i] = sum of clean[:i] (NaN as 0)
        self.cnt = np.zeros((self.cap + 1, n))  # cnt[i] = non-NaN count in clean[:i]
        self.pos = 0          # rows used in the buffer
        self.seen = 0         # hours seen in total
        self.first = np.full(n, -1, dtype=np.int64)  # hour of the first non-zero value
        self.run = np.zeros(n, dtype=np.int64)       # consecutive alarmed hours
        self.mad = np.zeros(n)                       # mean |log residual| (noise level)
        self.nres = np.zeros(n, dtype=np.int64)      # residuals seen (noise calibration)
        self.mad_peak = np.zeros(n)                  # the same, strong recurring peaks only
        self.nres_peak = np.zeros(n, dtype=np.int64)
        # the previous hours, newest first (at most window_hours - 1): value, expected,
        # scorable-and-calibrated, below the line, alarmed, noise level (σ), judged as a peak
        self.h_v: list[np.ndarray] = []
        self.h_e: list[np.ndarray] = []
        self.h_ready: list[np.ndarray] = []
        self.h_low: list[np.ndarray] = []
        self.h_alarm: list[np.ndarray] = []
        self.h_sd: list[np.ndarray] = []
        self.h_pk: list[np.ndarray] = []

    def compact(self) -> None:
        drop = self.pos - self.keep
        self.clean[: self.keep] = self.clean[drop: self.pos]
        self.clean[self.keep:] = np.nan
        self.raw[: self.keep] = self.raw[drop: self.pos]
        self.raw[self.keep:] = np.nan
        self.cs[: self.keep + 1] = self.cs[drop: self.pos + 1] - self.cs[drop]
        self.cnt[: self.keep + 1] = self.cnt[drop: self.pos + 1] - self.cnt[drop]
        self.pos = self.keep

    def _mean(self, a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
        """Mean of clean[a:b] per series, ignoring NaN (NaN when nothing is known)."""
        c = self.cnt[b] - self.cnt[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, (self.cs[b] - self.cs[a]) / np.maximum(c, 1), np.nan)

    def seasonal(self, hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``M`` for the next ``hours`` hours (shape hours × n): the median over past weeks k
        of smooth(t − 168k) / level(t − 168k), where smooth is the median of the 3 hours
        around it (a median, so the edge of a daily silence stays at zero). Weeks whose
        level window starts before the series' first non-zero hour are not used.
        The prediction is ``M × recent level``. Also returns how many weeks each value of
        ``M`` was learnt from (0 where it is NaN), and where it is a *strong* recurring peak or
        trough (its own median differs from the smoothed one by :data:`PEAK_FACTOR` or more).

        A *recurring peak or trough* keeps its shape: where the hour itself stood above its
        3-hour median in every one of at least :data:`PEAK_WEEKS` past weeks (or below it in
        every one), the median of the hour's own values is used instead. Both are read from
        the values as they arrived, not from the cleaned history (where an alarmed hour is
        its prediction: one false alarm at a trough would otherwise hide the trough for good,
        and alarm again every week). A daily upload batch
        from a few big probes is such a peak, and an hour between two batch hours such a
        trough: smoothing the batch away put it far above the prediction (inflating the noise
        estimate and breaking the run of a drop spanning it), and lifted the hour between two
        batches above its real level (a false alarm there). By chance an hour is the highest
        (or lowest) of its three in every one of 3 weeks with probability 1/27 each: there the
        hour's own median is merely a little noisier."""
        lh = self.p.level_hours
        t = self.pos + np.arange(hours)
        offset = self.seen - self.pos  # absolute hour of buffer row 0
        first_row = np.where(self.first >= 0, self.first - offset, np.iinfo(np.int64).max)
        ratios, raws, peaks = [], [], []
        for k in range(1, self.p.weeks + 1):
            i = t - WEEK * k
            ok = i - lh >= 0
            if not ok.any():
                break
            i = np.where(ok, i, lh)
            sample = _median3(self.clean[i - 1], self.clean[i], self.clean[i + 1])
            past = self._mean(i - lh, i)
            valid = ok[:, None] & ((i - lh)[:, None] >= first_row[None, :]) & (past > 0)
            # the shape is read from what arrived, not from the cleaned history: an alarm at a
            # trough hour is remembered as its (lifted) prediction, which would hide the trough
            raw = self.raw[i]
            raw_med = _median3(self.raw[i - 1], raw, self.raw[i + 1])
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios.append(np.where(valid, sample / np.where(past > 0, past, 1.0), np.nan))
                raws.append(np.where(valid & ~np.isnan(raw), raw / np.where(past > 0, past, 1.0), np.nan))
                peaks.append(np.where(valid & ~np.isnan(raw - raw_med), np.sign(raw - raw_med), 0.0))
        none = np.zeros((hours, self.n), dtype=bool)
        if not ratios:
            return np.full((hours, self.n), np.nan), np.zeros((hours, self.n)), none
        used = np.sum([~np.isnan(r) for r in ratios], axis=0).astype(float)
        if len(ratios) == 1:
            return ratios[0], used, none
        m = _nanmedian0(np.stack(ratios))
        side = np.sum(peaks, axis=0)  # +used: above its neighbours every week; -used: below
        recurring = (np.abs(side) == used) & (used >= PEAK_WEEKS)
        strong = none
        if recurring.any():
            own = _nanmedian0(np.stack(raws))
            with np.errstate(invalid="ignore"):
                strong = recurring & ((own > PEAK_FACTOR * m) | (own * PEAK_FACTOR < m))
            m = np.where(recurring, own, m)
        return m, used, strong

    def _pvalue(self, v: np.ndarray, e: np.ndarray, ready: np.ndarray, sigma: np.ndarray,
                hist: np.ndarray) -> np.ndarray:
        """max(count test, empirical-noise) probability of ``v`` or fewer when ``e`` is normal
        (1 where not ``ready``); ``hist``: the prediction's history, see :func:`count_cdf`."""
        pval = np.ones_like(v)
        idx = np.flatnonzero(ready)
        if idx.size:
            vi, ei = v[idx], e[idx]
            pe = ndtr(np.log((vi + 1.0) / (ei + 1.0)) / sigma[idx])
            # the count test is costly: only where the hours are below the alarm line
            below = vi < self.p.threshold * ei
            if below.any():
                pe[below] = np.maximum(count_cdf(vi[below], ei[below], hist[idx][below]), pe[below])
            pval[idx] = pe
        return pval

    def step(self, values: np.ndarray, m: np.ndarray, weeks: np.ndarray | None = None,
             peak: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Score one hour for every series (``m``, ``weeks`` and ``peak`` from :meth:`seasonal`;
        ``weeks`` None = ``FlowParams.weeks``, ``peak`` None = no strong peak) and learn from it.

        Returns expected, score, alarm (this hour) and ``alarm_back`` (window_hours − 1
        rows, newest first): previous hours that became alarmed now that this hour
        completes a significant run.
        """
        p = self.p
        values = np.asarray(values, dtype=float)
        known = ~np.isnan(values)
        v = np.where(known, values, 0.0)
        self.first[(self.first < 0) & (v > 0)] = self.seen
        mature = (self.first >= 0) & (self.seen - self.first >= WEEK + p.level_hours)
        if self.pos >= p.level_hours:
            c = self.cnt[self.pos] - self.cnt[self.pos - p.level_hours]
            tot = self.cs[self.pos] - self.cs[self.pos - p.level_hours]
            recent = np.where(c > 0, tot / np.maximum(c, 1.0), np.nan)
            exp = np.where(mature, recent * m, np.nan)
        else:
            exp = np.full(self.n, np.nan)
        scorable = known & (exp > 0)           # False for NaN
        e = np.where(scorable, exp, 1.0)
        ratio = v / e
        calibrated = self.nres >= p.calibration_hours
        sigma = np.maximum(self.mad * self.noise_scale, 1e-3)
        ready = scorable & calibrated
        resid = np.log((v + 1.0) / (e + 1.0))
        # hours of history the prediction is worth (see count_cdf)
        hist = np.maximum(p.weeks if weeks is None else weeks, 1.0) * p.history_hours_per_week
        hist = np.broadcast_to(hist, v.shape)
        # strong recurring peaks (a daily batch): their own noise level once it is learnt, never
        # below the log-noise of Poisson counts and of the prediction's own error (a level
        # learnt from a few peaks can come out far too small by chance)
        mixed = p.peak_noise and peak is not None
        if mixed:
            pk = scorable & peak
            sig_peak = np.maximum(self.mad_peak * self.noise_scale, np.sqrt((1.0 + 1.0 / hist) / (e + 1.0)))
            sep = pk & (self.nres_peak >= PEAK_CALIBRATION)
            sig_h = np.where(sep, sig_peak, sigma)
        else:  # one noise level, as without peak_noise
            pk = sep = np.zeros(self.n, dtype=bool)
            sig_peak = sig_h = sigma
        pval = ndtr(resid / sig_h)              # the series' own noise …
        low = ready & (ratio < p.threshold)
        below = np.flatnonzero(low)             # … and the count test, where it can matter (costly)
        if below.size:
            pval[below] = np.maximum(count_cdf(v[below], e[below], hist[below]), pval[below])
        pval[~ready] = 1.0
        single = low & (pval < p.alpha_single)
        # runs of w = 2 … window_hours hours ending now, first and last hour below the line
        nback = np.zeros(self.n, dtype=np.int64)
        pwin = np.ones(self.n)
        cand = np.flatnonzero(low)  # only series below the line now can complete a run
        if cand.size:
            cum_v, cum_e, sig, hc = v[cand], e[cand], sigma[cand], hist[cand]
            # a run spanning a strong peak: the log of its summed ratio has the variance
            # (Σ e_i σ_i)² / (Σ e_i)² summed as independent parts, the ordinary hours together
            # keeping the series' σ / √hours (so a run without a peak is judged as before)
            sp = sep[cand]
            e_np = np.where(sp, 0.0, cum_e)
            n_np = np.where(sp, 0.0, 1.0)
            var_pk = np.where(sp, (cum_e * sig_h[cand]) ** 2, 0.0) if mixed else np.zeros(cand.size)
            chain = np.ones(cand.size, dtype=bool)
            nb, pw_min = np.zeros(cand.size, dtype=np.int64), np.ones(cand.size)
            for j in range(len(self.h_v)):
                chain &= self.h_ready[j][cand]
                if not chain.any():
                    break
                he = self.h_e[j][cand]
                cum_v = cum_v + self.h_v[j][cand]
                cum_e = cum_e + he
                if mixed:
                    hp = self.h_pk[j][cand]
                    e_np = e_np + np.where(hp, 0.0, he)
                    n_np = n_np + ~hp
                    var_pk = var_pk + np.where(hp, (he * self.h_sd[j][cand]) ** 2, 0.0)
                cond = chain & self.h_low[j][cand] & (cum_v < p.threshold * cum_e)
                if cond.any():
                    sd_run = sig / np.sqrt(j + 2.0)
                    if mixed:
                        with np.errstate(invalid="ignore", divide="ignore"):
                            sd_run = np.where(var_pk > 0, np.sqrt((e_np * sig) ** 2 / np.maximum(n_np, 1.0)
                                                                  + var_pk) / np.maximum(cum_e, 1e-12), sd_run)
                    pw = self._pvalue(cum_v, cum_e, cond, sd_run, hc)
                    nb = np.where(cond & (pw < p.alpha), j + 1, nb)
                    pw_min = np.minimum(pw_min, pw)
            nback[cand], pwin[cand] = nb, pw_min
        alarm = single | (nback > 0)
        back = np.zeros((p.window_hours - 1, self.n), dtype=bool)
        any_back = bool(nback.any())
        if any_back:
            for j in range(len(self.h_v)):
                back[j] = (nback > j) & ~self.h_alarm[j]
        # score: confidence × size of the shortfall, with score >= 1 - alpha <=> alarm
        sf = np.clip((1.0 - ratio) / (1.0 - p.threshold), 0.0, 1.0)
        score = np.where(ready, (1.0 - np.minimum(pval, pwin)) * sf, 0.0)
        score = np.where(alarm, np.maximum(score, 1.0 - p.alpha), np.minimum(score, 1.0 - p.alpha - 1e-9))
        self.run = np.where(alarm, self.run + 1 + (back.sum(axis=0) if any_back else 0), 0)
        # learn the noise level from normal hours (winsorised so one burst cannot blow it up)
        learn = scorable & ~alarm
        dev = np.abs(resid)
        if mixed:  # a strong peak's residual teaches its own level (and, until that is
            # learnt, the series' level too, as without peak_noise)
            pcal = self.nres_peak >= PEAK_CALIBRATION
            lp = learn & pk
            dp = np.where(pcal, np.minimum(dev, p.noise_clip * sig_peak), dev)
            wp = 1.0 / np.minimum(self.nres_peak + 1.0, max(1, p.noise_hours // 12))
            self.mad_peak = np.where(lp, self.mad_peak + wp * (dp - self.mad_peak), self.mad_peak)
            self.nres_peak += lp
            learn = learn & ~sep
        dev = np.where(calibrated, np.minimum(dev, p.noise_clip * sigma), dev)
        w = np.where(calibrated, 1.0 / p.noise_hours, 1.0 / (self.nres + 1.0))
        self.mad = np.where(learn, self.mad + w * (dev - self.mad), self.mad)
        self.nres += learn
        # what the model remembers: the prediction for alarmed hours (until adapting);
        # previous hours alarmed now are rewritten too
        adapting = self.run > p.adapt_after_hours
        for j in range(len(self.h_v) if any_back else 0):
            fix = back[j] & ~adapting
            if fix.any() and self.pos - 1 - j >= 0:
                row = self.pos - 1 - j
                delta = np.where(fix, self.h_e[j] - self.h_v[j], 0.0)
                self.clean[row] = np.where(fix, self.h_e[j], self.clean[row])
                self.cs[row + 1: self.pos + 1] += delta
            self.h_alarm[j] = self.h_alarm[j] | back[j]
        remember = np.where(alarm & ~adapting, exp, values)
        rk = ~np.isnan(remember)
        self.clean[self.pos] = remember
        self.raw[self.pos] = values
        self.cs[self.pos + 1] = self.cs[self.pos] + np.where(rk, remember, 0.0)
        self.cnt[self.pos + 1] = self.cnt[self.pos] + rk
        self.pos += 1
        self.seen += 1
        keep = p.window_hours - 1
        for hist, new in ((self.h_v, v), (self.h_e, e), (self.h_ready, ready), (self.h_low, low),
                          (self.h_alarm, alarm), (self.h_sd, sig_h), (self.h_pk, sep)):
            hist.insert(0, new)
            del hist[keep:]
        return {"expected": exp, "score": score, "alarm": alarm, "alarm_back": back}

    def _m_row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``M``, its weeks and the strong-peak mask for the current hour, from a cache filled
        BLOCK hours at a time (valid: it reads only history at least 165 hours old, which later
        hours never change)."""
        if self._mc is None or not 0 <= self.seen - self._mc_start < len(self._mc):
            (self._mc, self._mw, self._mp), self._mc_start = self.seasonal(self.BLOCK), self.seen
        i = self.seen - self._mc_start
        return self._mc[i], self._mw[i], self._mp[i]

    def run_block(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Score consecutive hours (rows of ``values``)."""
        t = values.shape[0]
        exp = np.full((t, self.n), np.nan)
        score = np.zeros((t, self.n))
        alarm = np.zeros((t, self.n), dtype=bool)
        self.alarm_before = np.zeros((self.p.window_hours - 1, self.n), dtype=bool)
        """Hours before this call (row j = j + 1 hours before it) that became alarmed."""
        floor = 1.0 - self.p.alpha
        for i in range(t):
            if self.pos + 1 > self.cap:
                self.compact()
            out = self.step(values[i], *self._m_row())
            exp[i], score[i], alarm[i] = out["expected"], out["score"], out["alarm"]
            for j, marked in enumerate(out["alarm_back"]):
                if not marked.any():
                    continue
                k = i - 1 - j
                if k >= 0:
                    alarm[k] |= marked
                    score[k] = np.where(marked, np.maximum(score[k], floor), score[k])
                else:
                    self.alarm_before[-k - 1] |= marked
        return {"expected": exp, "score": score, "alarm": alarm}


@dataclass(frozen=True)
class HourResult:
    """What :meth:`FlowDetector.update` found for one hour."""

    timestamp: pd.Timestamp
    actual: float
    expected: float
    """NaN while warming up."""
    score: float
    alarm: bool
    warming_up: bool


class FlowDetector:
    """Streaming detector for one hourly series.

    ``update(ts, value)`` takes hours in increasing order; a gap is filled with zeros (a
    missing hour had no measurements), each filled hour being scored too (see ``results``).
    Returns the anomaly score of ``ts`` in [0, 1]; ``last`` holds the details.
    """

    def __init__(self, params: FlowParams | None = None, **options: Any) -> None:
        self.params = _params(params, options)
        self._engine = _Engine(1, self.params)
        self._last_ts: pd.Timestamp | None = None
        self.last: HourResult | None = None
        self.results: list[HourResult] = []
        """Every hour scored (including gap-filled ones); trim it if you stream forever."""

    def _one(self, ts: pd.Timestamp, value: float) -> HourResult:
        eng = self._engine
        out = eng.run_block(np.array([[value]], dtype=float))
        exp = float(out["expected"][0, 0])
        for j, marked in enumerate(eng.alarm_before[:, 0]):  # earlier hours this one confirms
            if marked and len(self.results) > j:
                prev = self.results[-1 - j]
                self.results[-1 - j] = HourResult(prev.timestamp, prev.actual, prev.expected,
                                                  max(prev.score, 1.0 - self.params.alpha), True, prev.warming_up)
        warm = bool(eng.nres[0] < self.params.calibration_hours) or math.isnan(exp)
        res = HourResult(ts, float(value), exp, float(out["score"][0, 0]), bool(out["alarm"][0, 0]), warm)
        self.results.append(res)
        self.last = res
        return res

    def update(self, timestamp: Any, value: float | None) -> float:
        """Score the hour starting at ``timestamp`` (floored to the hour) with ``value``
        measurements (None/NaN = unknown). Raises AnalysisError on a non-increasing hour."""
        ts = _utc_hour(timestamp)
        if self._last_ts is not None:
            gap = int((ts - self._last_ts) / pd.Timedelta(hours=1))
            if gap < 1:
                raise AnalysisError(f"timestamps must increase hour by hour: {ts} after {self._last_ts}")
            for i in range(1, gap):
                self._one(self._last_ts + pd.Timedelta(hours=i), 0.0)
        self._last_ts = ts
        v = float("nan") if value is None else float(value)
        return self._one(ts, v).score


def _utc_hour(value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"cannot read {value!r} as a timestamp") from exc
    if ts is pd.NaT:
        raise AnalysisError("timestamp is NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.floor("h")


def hourly_grid(series: pd.Series, end: Any = None, start: Any = None) -> pd.Series:
    """Put ``series`` (indexed by timestamps) on a complete hourly grid.

    Values in the same hour are summed; hours without a row become 0 (no measurements);
    NaN values stay NaN (unknown). ``end`` (exclusive hour) extends the grid so that a
    series that went silent is seen as zeros up to ``end``; ``start`` likewise.
    """
    if not isinstance(series, pd.Series):
        raise AnalysisError(f"expected a pandas Series indexed by time, got {type(series).__name__}")
    s = series.copy()
    try:
        idx = pd.DatetimeIndex(s.index)
    except (TypeError, ValueError) as exc:
        raise AnalysisError("the series must be indexed by timestamps") from exc
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    s.index = idx.floor("h")
    s = pd.to_numeric(s, errors="coerce").astype(float)
    s = s.groupby(level=0).sum(min_count=1)
    lo = s.index.min() if len(s) else None
    hi = s.index.max() if len(s) else None
    if start is not None:
        lo = _utc_hour(start)
    if end is not None:
        hi = _utc_hour(end) - pd.Timedelta(hours=1)
    if lo is None or hi is None or hi < lo:
        return pd.Series([], index=pd.DatetimeIndex([], name="hour"), dtype=float)
    grid = pd.date_range(lo, hi, freq="h", name="hour")
    return s.reindex(grid, fill_value=0.0).astype(float)


def score_frame(frame: pd.DataFrame, params: FlowParams | None = None, **options: Any) -> dict[str, pd.DataFrame]:
    """Score many hourly series at once (columns = series, index = a complete hourly grid).

    Returns a dict of DataFrames shaped like ``frame``: ``expected``, ``score``, ``alarm``.
    This is the vectorised core used by :func:`detect` and :func:`detect_many`; it gives
    the same numbers as feeding each column to a :class:`FlowDetector`.
    """
    p = _params(params, options)
    values = frame.to_numpy(dtype=float)
    t, n = values.shape
    out = _Engine(n, p, capacity=t + 1).run_block(values)
    exp, score, alarm = out["expected"], out["score"], out["alarm"]

    def mk(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(a, index=frame.index, columns=frame.columns)

    return {"expected": mk(exp), "score": mk(score), "alarm": mk(alarm)}


def merge_alarms(actual: pd.Series, expected: pd.Series, alarm: pd.Series, series: str = "") -> pd.DataFrame:
    """Merge consecutive alarmed hours into one row each.

    ``start`` is the first alarmed hour, ``end`` the hour after the last one (exclusive);
    ``expected``/``actual`` are sums over the alarm; ``severity`` = 1 − actual/expected,
    the fraction of measurements missing.
    """
    a = alarm.fillna(False).astype(bool).to_numpy()
    if not a.any():
        return pd.DataFrame(columns=ALARM_COLUMNS).astype({"hours": int, "expected": float,
                                                          "actual": float, "severity": float})
    idx = alarm.index
    edges = np.diff(np.concatenate([[0], a.astype(int), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    rows = []
    for s, e in zip(starts, stops, strict=True):
        ex = float(np.nansum(expected.to_numpy()[s:e]))
        ac = float(np.nansum(actual.to_numpy()[s:e]))
        rows.append({"series": series, "start": idx[s], "end": idx[e - 1] + pd.Timedelta(hours=1),
                     "hours": int(e - s), "expected": round(ex, 1), "actual": ac,
                     "severity": round(1 - ac / ex, 3) if ex > 0 else 0.0})
    return pd.DataFrame(rows, columns=ALARM_COLUMNS)


def predict(series: pd.Series, end: Any = None, params: FlowParams | None = None,
            **options: Any) -> pd.DataFrame:
    """Hour-by-hour model output for one series: columns actual, expected, lower (the
    alarm line, threshold × expected), score, alarm; indexed by hour on a complete grid."""
    p = _params(params, options)
    grid = hourly_grid(series, end=end)
    if grid.empty:
        return pd.DataFrame(columns=["actual", "expected", "lower", "score", "alarm"],
                            index=pd.DatetimeIndex([], name="hour"))
    out = score_frame(grid.to_frame("v"), p)
    df = pd.DataFrame({"actual": grid, "expected": out["expected"]["v"]})
    df["lower"] = df["expected"] * p.threshold
    df["score"] = out["score"]["v"]
    df["alarm"] = out["alarm"]["v"]
    return df


def predict_many(frame: pd.DataFrame, params: FlowParams | None = None,
                 **options: Any) -> dict[str, pd.DataFrame]:
    """:func:`predict` for every column of ``frame`` (a complete hourly grid, see
    :func:`pivot_hourly`), computed in one vectorised pass. Keys are the column names."""
    p = _params(params, options)
    if frame.shape[1] == 0:
        return {}
    out = score_frame(frame, p)
    preds = {}
    for c in frame.columns:
        df = pd.DataFrame({"actual": frame[c].astype(float), "expected": out["expected"][c]})
        df["lower"] = df["expected"] * p.threshold
        df["score"] = out["score"][c]
        df["alarm"] = out["alarm"][c]
        df.index.name = "hour"
        preds[str(c)] = df
    return preds


def alarms_from_predictions(preds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Merged alarms (as :func:`detect_many`) from the output of :func:`predict_many`."""
    parts = [merge_alarms(p["actual"], p["expected"], p["alarm"], series=name)
             for name, p in preds.items() if p["alarm"].any()]
    if not parts:
        return merge_alarms(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=bool))
    return pd.concat(parts, ignore_index=True).sort_values(["start", "series"], ignore_index=True)


def detect(series: pd.Series, end: Any = None, params: FlowParams | None = None,
           **options: Any) -> pd.DataFrame:
    """Alarms of one hourly series: DataFrame with columns start, end, hours, expected,
    actual, severity (plus ``series`` = the series' name), one row per run of consecutive
    alarmed hours. ``end`` extends the series with zero hours up to that (exclusive) hour.
    The first ``FlowParams.warmup_hours`` hours never alarm (no history to compare with)."""
    pred = predict(series, end=end, params=params, **options)
    name = "" if series.name is None else str(series.name)
    return merge_alarms(pred["actual"], pred["expected"], pred["alarm"], series=name)


def detect_many(frame: pd.DataFrame, params: FlowParams | None = None,
                **options: Any) -> pd.DataFrame:
    """Alarms of every column of ``frame`` (index: complete hourly grid; use
    :func:`pivot_hourly` to build it). Columns as :func:`detect`, ``series`` = column name."""
    if frame.empty:
        return merge_alarms(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=bool))
    out = score_frame(frame, params, **options)
    parts = [merge_alarms(frame[c], out["expected"][c], out["alarm"][c], series=str(c))
             for c in frame.columns if out["alarm"][c].any()]
    if not parts:
        return merge_alarms(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=bool))
    return pd.concat(parts, ignore_index=True).sort_values(["start", "series"], ignore_index=True)


def pivot_hourly(df: pd.DataFrame, time_col: str, keys: list[str] | str, value_col: str = "n",
                 start: Any = None, end: Any = None) -> pd.DataFrame:
    """Long table (time, key columns, count) → wide hourly grid, one column per series.

    Series are named by their key values joined with "/" (e.g. ``"IT/ooniprobe-android"``).
    Missing hours become 0; ``start``/``end`` (exclusive) fix the grid's range.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    missing = [c for c in [time_col, value_col, *keys] if c not in df.columns]
    if missing:
        raise AnalysisError(f"missing column(s) {missing}; the table has {list(df.columns)}")
    lo = _utc_hour(start) if start is not None else None
    hi = _utc_hour(end) - pd.Timedelta(hours=1) if end is not None else None
    if df.empty:
        if lo is None or hi is None:
            return pd.DataFrame(index=pd.DatetimeIndex([], name="hour"))
        return pd.DataFrame(index=pd.date_range(lo, hi, freq="h", name="hour"))
    d = df.copy()
    d["_t"] = pd.to_datetime(d[time_col])
    if d["_t"].dt.tz is not None:
        d["_t"] = d["_t"].dt.tz_convert("UTC").dt.tz_localize(None)
    d["_t"] = d["_t"].dt.floor("h")
    d["_k"] = d[keys].astype(str).agg("/".join, axis=1)
    wide = d.pivot_table(index="_t", columns="_k", values=value_col, aggfunc="sum")
    lo = lo if lo is not None else wide.index.min()
    hi = hi if hi is not None else wide.index.max()
    grid = pd.date_range(lo, hi, freq="h", name="hour")
    wide = wide.reindex(grid).fillna(0.0).astype(float)
    wide.columns.name = None
    return wide


def latest_alarms(alarms: pd.DataFrame, now: Any, hours: int = 3) -> pd.DataFrame:
    """Alarms still open within the last ``hours`` complete hours before ``now``."""
    if alarms.empty:
        return alarms
    cutoff = _utc_hour(now) - pd.Timedelta(hours=hours)
    return alarms[pd.to_datetime(alarms["end"]) > cutoff].reset_index(drop=True)


_UNITS = {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1)}


@dataclass(frozen=True)
class TotalOutage:
    """No measurement at all in the recent window while the history had some: the most
    severe flow alarm (every probe type, every country: the pipeline itself is down).

    ``since``: start of the silence (the hour or day after the last measurement seen, or the
    start of the history window); ``until``: end of the window checked (exclusive);
    ``last_seen``: the last bucket with measurements; ``expected``: the mean measurements
    per bucket from the first to the last bucket with measurements (what is missing per bucket).
    """

    since: pd.Timestamp
    until: pd.Timestamp
    last_seen: pd.Timestamp
    expected: float
    unit: str = "hour"

    @property
    def buckets(self) -> int:
        """Buckets (hours or days) without any measurement up to ``until``."""
        return int((self.until - self.since) / _UNITS[self.unit])

    def describe(self, what: str = "measurements") -> str:
        """One line: ``TOTAL OUTAGE: no <what> at all since …``."""
        return (f"TOTAL OUTAGE: no {what} at all since {self.since:%Y-%m-%d %H:%M} UTC "
                f"({self.buckets} {self.unit}s up to {self.until:%Y-%m-%d %H:%M}; last "
                f"measurements in the {self.unit} of {self.last_seen:%Y-%m-%d %H:%M}, usually "
                f"{self.expected:,.0f} per {self.unit})")


def total_outage(counts: pd.DataFrame, recent_from: Any, until: Any, time_col: str = "t",
                 value_col: str = "n", unit: str = "hour") -> TotalOutage | None:
    """Whether every series went silent: ``counts`` (long table: time, keys, count) holds
    measurements before ``recent_from`` but none in ``[recent_from, until)``.

    Returns a :class:`TotalOutage` then, else None. An empty ``counts`` (no history at all)
    is not an outage but a data-path error: check it first with
    :func:`ooniutils.datasets.source.require_rows`; here it raises :class:`AnalysisError`.
    """
    if unit not in _UNITS:
        raise AnalysisError(f"unit must be 'hour' or 'day', got {unit!r}")
    missing = [c for c in (time_col, value_col) if c not in counts.columns]
    if missing:
        raise AnalysisError(f"missing column(s) {missing}; the table has {list(counts.columns)}")
    start, stop = _utc_hour(recent_from), _utc_hour(until)
    if start >= stop:
        raise AnalysisError(f"recent_from ({start}) must be before until ({stop})")
    t = pd.to_datetime(counts[time_col])
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    n = pd.to_numeric(counts[value_col], errors="coerce").fillna(0)
    seen = t[(n > 0).to_numpy() & (t < stop).to_numpy()]
    if seen.empty:
        raise AnalysisError("no measurements at all in the history: not an outage but a data "
                            "path error (use ooniutils.datasets.source.require_rows first)")
    if bool(((t >= start) & (t < stop) & (n > 0)).any()):
        return None
    step = _UNITS[unit]
    first, last = seen.min().floor(step), seen.max().floor(step)
    flowing = int((last - first) / step) + 1  # buckets from the first to the last measurement
    return TotalOutage(since=last + step, until=stop, last_seen=last,
                       expected=float(n[(t < stop).to_numpy()].sum()) / flowing, unit=unit)
