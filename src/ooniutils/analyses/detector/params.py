"""Detector settings, time steps and the resampling rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ...exceptions import AnalysisError
from .transform import check_kind

DIRECTIONS = ("both", "spikes", "drops")
MIN_STEP = 60.0
MAX_STEP = 86400.0
NICE_STEPS = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)
DEFAULT_WARMUP = 15 * 86400.0
MIN_WARMUP_POINTS = 60
MAX_WARMUP_POINTS = 21600
_EPOCH = datetime(1970, 1, 1)


def seconds(value: Any, what: str) -> float | None:
    """A duration (``"5min"``, a timedelta, or seconds) in seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        s = float(value)
    else:
        try:
            s = pd.Timedelta(value).total_seconds()
        except (TypeError, ValueError) as exc:
            raise AnalysisError(f"{what} must be a duration like '5min' or '1h'; got {value!r}") from exc
    if not math.isfinite(s) or s <= 0:
        raise AnalysisError(f"{what} must be a positive duration; got {value!r}")
    return s


@dataclass(frozen=True)
class DetectorParams:
    """Settings of :class:`~ooniutils.analyses.detector.Detector`.

    Durations accept ``"5min"``, ``"1h"``, a ``timedelta`` or seconds.
    """

    direction: str = "both"
    """``both`` (default), ``spikes`` (values too high) or ``drops`` (too low)."""
    kind: str = "auto"
    """``auto`` (from the warm-up values: non-negative integers → count, all in [0, 1] →
    fraction, else continuous), ``count``, ``rate``, ``fraction`` or ``continuous``.
    An explicit kind is enforced: a value outside its range raises AnalysisError."""
    step: Any = None
    """Grid step (1 min … 1 day). None: the median spacing of the warm-up timestamps,
    rounded to a nearby usual step (1, 2, 5, 10, 15, 20, 30 min, 1, 2, 3, 4, 6, 12 h, 1 d)."""
    season: Any = "auto"
    """``auto`` (learnt, see :mod:`.season`), ``none``, ``daily``, ``weekly`` or a number
    of steps."""
    warmup: Any = None
    """Duration of history needed before scoring: default 15 days (two weeks to see a
    weekly season), but at least 60 and at most 21,600 steps."""
    threshold: float = 0.999
    """Alarm when the score reaches this (a point this extreme has probability
    1 − threshold under the learnt normal model)."""
    adapt_after: Any = "1D"
    """After alarming this long without a break, the current level becomes normal."""
    merge_gap: int = 2
    """Alarmed points separated by at most this many non-alarmed points form one episode."""
    missing: bool = True
    """Score missing points of non-count series (a count series' missing bins are 0)."""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise AnalysisError(f"direction must be one of {', '.join(DIRECTIONS)}; got {self.direction!r}")
        check_kind(self.kind)
        if not 0.5 < self.threshold < 1:
            raise AnalysisError(f"threshold must be between 0.5 and 1 (exclusive); got {self.threshold}")
        step = seconds(self.step, "step")
        if step is not None and not MIN_STEP <= step <= MAX_STEP:
            raise AnalysisError(f"step must be between 1 minute and 1 day; got {self.step!r}")
        seconds(self.warmup, "warmup")
        seconds(self.adapt_after, "adapt_after")
        if not (self.season in ("auto", "none", "daily", "weekly")
                or (isinstance(self.season, int) and not isinstance(self.season, bool) and self.season >= 1)):
            raise AnalysisError("season must be 'auto', 'none', 'daily', 'weekly' or a number of "
                                f"steps >= 1; got {self.season!r}")
        if self.merge_gap < 0:
            raise AnalysisError(f"merge_gap must be >= 0; got {self.merge_gap}")

    def warmup_points(self, step: float) -> int:
        w = seconds(self.warmup, "warmup") or DEFAULT_WARMUP
        return int(min(max(math.ceil(w / step), MIN_WARMUP_POINTS), MAX_WARMUP_POINTS))

    def adapt_points(self, step: float) -> int:
        return max(3, math.ceil((seconds(self.adapt_after, "adapt_after") or 86400.0) / step))


def make_params(params: DetectorParams | None, options: dict[str, Any]) -> DetectorParams:
    if params is not None and options:
        raise AnalysisError("pass either params or keyword options, not both")
    if params is not None:
        return params
    try:
        return DetectorParams(**options)
    except TypeError as exc:
        raise AnalysisError(f"unknown detector option: {exc}") from exc


def to_seconds(ts: Any) -> float:
    """A timestamp as seconds since the epoch (naive = UTC). Fast for datetime and floats."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            return (ts - _EPOCH).total_seconds()
        return ts.timestamp()
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        if not math.isfinite(ts):
            raise AnalysisError(f"timestamp {ts!r} is not finite")
        return float(ts)
    if isinstance(ts, np.datetime64):
        if np.isnat(ts):
            raise AnalysisError("timestamp is NaT")
        return float(ts.astype("datetime64[us]").astype(np.int64)) / 1e6
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"cannot read {ts!r} as a timestamp") from exc
    if t is pd.NaT:
        raise AnalysisError("timestamp is NaT")
    return to_seconds(t.to_pydatetime())


def to_timestamp(sec: float) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromtimestamp(sec, UTC).replace(tzinfo=None))


def to_value(value: Any) -> float:
    """A value as float; None and NaN mean missing. Anything else non-numeric raises."""
    if value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"value {value!r} is not a number") from exc
    if math.isinf(x):
        raise AnalysisError(f"value {x} is infinite; use None/NaN for a missing value")
    if abs(x) > 1e100:
        raise AnalysisError(f"value {x} is too large to score (limit 1e100)")
    return x


def infer_step(times: np.ndarray) -> float:
    """The median spacing of sorted epoch seconds, snapped to a usual step within 10 %."""
    d = np.diff(np.unique(times))
    if d.size == 0:
        raise AnalysisError("cannot infer the step from fewer than two distinct timestamps; pass step=")
    s = float(np.median(d))
    for nice in NICE_STEPS:
        if abs(s - nice) <= 0.1 * nice:
            s = float(nice)
            break
    else:
        s = float(round(s))
    if not MIN_STEP <= s <= MAX_STEP:
        raise AnalysisError(f"the timestamps are {s:g} s apart (median); the detector takes steps from "
                            "1 minute to 1 day: pass step= to resample onto such a grid")
    return s


def resample(times: np.ndarray, values: np.ndarray, step: float, kind: str) -> tuple[int, np.ndarray]:
    """The resampling rule: each value goes to the bin ``floor(t / step)`` (bins aligned to
    the Unix epoch, so 5-minute bins start at :00, :05 …, daily bins at 00:00 UTC); values
    in one bin are summed for counts and averaged otherwise (NaN values ignored); a bin
    with no value is missing (NaN), except for counts where a bin with no row is 0
    (nothing happened) and one with only NaN rows is missing (unknown).
    Returns the first bin's number and one value per bin."""
    bins = np.floor(times / step).astype(np.int64)
    first = int(bins.min())
    n = int(bins.max()) - first + 1
    idx = bins - first
    ok = np.isfinite(values)
    total = np.bincount(idx[ok], weights=values[ok], minlength=n)
    count = np.bincount(idx[ok], minlength=n)
    if kind == "count":
        unknown = (np.bincount(idx[~ok], minlength=n) > 0) & (count == 0)
        return first, np.where(unknown, np.nan, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return first, out
