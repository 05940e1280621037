"""From the warm-up window to a ready :class:`~.core.Core`.

1. the season is learnt from the transformed values (:mod:`.season`) unless given;
2. the seasonal profile starts as the bucket means of the first half of the window (at
   least one full period), the level as the mean of the first period;
3. the level smoothing ``alpha`` is chosen from :data:`ALPHAS` by the smallest mean
   absolute one-step error over the second half (a random-walk-like series gets a fast
   level, a stable seasonal one a slow one);
4. the whole window is replayed through the chosen model, which learns the scale, the
   tails and the missing rate on the way.
"""

from __future__ import annotations

import math

import numpy as np

from .core import M0, U0, Core
from .season import NONE, Season, detect_season

ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)


def choose_season(y: np.ndarray, step: float, season: object) -> Season:
    day = int(round(86400 / step))
    if season == "auto":
        return detect_season(y, step)
    if season == "none":
        return NONE
    if season == "daily":
        return Season(max(day, 1), "daily", 0.0)
    if season == "weekly":
        return Season(max(7 * day, 1), "weekly", 0.0)
    assert isinstance(season, int)
    return Season(season, "other" if season > 1 else "none", 0.0)


def _fresh(y: np.ndarray, phases: np.ndarray, period: int, alpha: float, floor: float,
           alarm_p: float, adapt_after: int, direction: str) -> Core:
    core = Core(period, alpha, floor, alarm_p, adapt_after, direction)
    n = len(y)
    first = y[:max(period, 1)]
    ok = np.isfinite(first)
    core.L = float(np.mean(first[ok])) if ok.any() else float(np.nanmean(y))
    if period > 1:
        h = min(n, max(period, n // 2))
        part, ph = y[:h], phases[:h]
        ok = np.isfinite(part)
        buckets = (ph[ok] * core.kp).astype(np.int64)
        sums = np.bincount(buckets, weights=part[ok], minlength=core.nb)
        cnt = np.bincount(buckets, minlength=core.nb)
        mean = float(np.mean(part[ok]))
        core.S = [float(s / c - mean) if c else 0.0 for s, c in zip(sums, cnt, strict=True)]
        core.L = mean
    d = np.diff(y[np.isfinite(y)])
    core.mad = float(np.mean(np.abs(d))) / math.sqrt(2) if d.size else 0.0
    return core


def replay(core: Core, y: np.ndarray, phases: np.ndarray, err_from: int) -> float:
    """Run ``core`` over ``y``; the mean |one-step error| from index ``err_from`` on."""
    tot, cnt = 0.0, 0
    for i, (v, ph) in enumerate(zip(y.tolist(), phases.tolist(), strict=True)):
        if v != v:
            core.learn_missing()
            continue
        core.score(v, ph)
        if i >= err_from:
            tot += abs(core.e)
            cnt += 1
        core.learn()
    return tot / cnt if cnt else 0.0


def build_core(y: np.ndarray, first_bin: int, season: Season, alarm_p: float, adapt_after: int,
               direction: str) -> Core:
    """A model learnt from the transformed warm-up values ``y`` (NaN = missing) whose
    first value is bin number ``first_bin`` (phases are ``bin % period``)."""
    period = season.period
    phases = (np.arange(len(y), dtype=np.int64) + first_bin) % period
    ok = np.isfinite(y)
    scale = float(np.median(np.abs(y[ok]))) if ok.any() else 1.0
    floor = 1e-9 * max(scale, 1e-12) + 1e-300
    args = (floor, alarm_p, adapt_after, direction)
    half = len(y) // 2
    errs = [replay(_fresh(y, phases, period, a, *args), y, phases, half) for a in ALPHAS]
    best = ALPHAS[int(np.argmin(errs))]
    core = _fresh(y, phases, period, best, *args)
    # the first half is in-sample for the seasonal profile: its residuals are too small
    # to teach the scale and the tails, which restart from their priors after it
    h = min(len(y), max(period, half)) if period > 1 else 0
    replay(core, y[:h], phases[:h], h)
    core.n = 0
    if h and h < len(y):
        # out-of-sample scale: the second half against the profile learnt on the first
        rest, ph = y[h:], phases[h:]
        ok2 = np.isfinite(rest)
        if ok2.any():
            prof = np.asarray(core.S)[(ph[ok2] * core.kp).astype(np.int64)]
            core.mad = float(np.mean(np.abs(rest[ok2] - core.L - prof)))
    core.u_up = core.u_dn = U0
    core.m_up = core.m_dn = M0
    core.n_up = core.n_dn = 0
    g = core.g  # the second half counts as much as the first in the starting profile
    core.g = 1.0 - 0.5 ** (core.nb / period) if period > 1 else 0.0
    replay(core, y[h:], phases[h:], len(y))
    core.g = g
    core.q = (float((~ok).sum()) + 0.5) / (len(y) + 1)
    core.miss_run = 0
    return core
