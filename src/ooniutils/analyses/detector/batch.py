"""Batch API: a DataFrame (timestamp, value) in, scores and alarm episodes out.

The batch path runs the same code as streaming (a :class:`~.stream.Detector` fed the
resampled grid), so both give the same scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ...exceptions import AnalysisError
from .params import DetectorParams, infer_step, make_params, resample, seconds, to_timestamp
from .season import Season
from .stream import Detector
from .transform import check_value, detect_kind

SCORE_COLUMNS = ["value", "expected", "lower", "upper", "score", "direction", "alarm", "warming_up"]
EPISODE_COLUMNS = ["start", "end", "points", "direction", "peak_score", "expected", "actual"]


@dataclass(frozen=True)
class Anomalies:
    """Result of :func:`detect_anomalies`."""

    scores: pd.DataFrame
    """One row per bin (index ``timestamp``, bin start, UTC): value, expected, lower/upper
    (the band outside which a point alarms), score, direction, alarm, warming_up."""
    episodes: pd.DataFrame
    """One row per alarm episode: start, end (exclusive), points, direction, peak_score,
    expected and actual (means over the episode)."""
    step: float
    """Grid step in seconds."""
    kind: str
    season: Season | None
    """The learnt season (None when the data did not outlast the warm-up)."""
    transform: str

    @property
    def ready(self) -> bool:
        """False when the data is shorter than the warm-up: nothing was scored (a
        notebook must not read that as "no anomaly")."""
        return self.season is not None


def _read(data: Any, time_col: str, value_col: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, pd.Series):
        t, v = data.index, data.to_numpy()
    elif isinstance(data, pd.DataFrame):
        missing = [c for c in (time_col, value_col) if c not in data.columns]
        if missing:
            raise AnalysisError(f"missing column(s) {missing}; the table has {list(data.columns)}")
        t, v = data[time_col], data[value_col].to_numpy()
    else:
        raise AnalysisError(f"expected a DataFrame (timestamp, value) or a Series indexed by time, "
                            f"got {type(data).__name__}")
    try:
        ts = pd.DatetimeIndex(pd.to_datetime(t))
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"cannot read the {time_col!r} column as timestamps") from exc
    if ts.hasnans:
        raise AnalysisError(f"the {time_col!r} column has missing timestamps")
    if ts.tz is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    try:
        vals = pd.to_numeric(pd.Series(v), errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"the {value_col!r} column must be numeric") from exc
    if np.isinf(vals).any():
        raise AnalysisError(f"the {value_col!r} column has infinite values")
    if (np.abs(vals[np.isfinite(vals)]) > 1e100).any():
        raise AnalysisError(f"the {value_col!r} column has values beyond 1e100")
    secs = (ts.asi8 // 1000).astype(float) / 1e6 if ts.unit == "ns" else ts.as_unit("us").asi8 / 1e6
    order = np.argsort(secs, kind="stable")
    return np.asarray(secs)[order], vals[order]


def detect_anomalies(data: Any, time_col: str = "timestamp", value_col: str = "value",
                     params: DetectorParams | None = None, **options: Any) -> Anomalies:
    """Score a whole series and merge alarms into episodes.

    ``data`` is a DataFrame with ``time_col`` and ``value_col`` (or a Series indexed by
    time), in any order, possibly irregular: it is resampled onto the grid (see
    :func:`~.params.resample`). Options are :class:`DetectorParams` fields.

    Usage::

        res = detect_anomalies(df, direction="spikes")
        if not res.ready: ...            # shorter than the warm-up: nothing scored
        res.episodes                      # start, end, points, direction, peak_score, …
    """
    p = make_params(params, options)
    times, values = _read(data, time_col, value_col)
    if times.size == 0:
        raise AnalysisError("the series is empty")
    step = seconds(p.step, "step") or infer_step(times)
    p = replace(p, step=step)
    w = p.warmup_points(step)
    warm = times < (math.floor(times[0] / step) + w) * step
    kind = p.kind if p.kind != "auto" else detect_kind(values[warm])
    if p.kind != "auto":
        for x in values[np.isfinite(values)].tolist():
            check_value(kind, True, x)
    first, grid = resample(times, values, step, kind)
    n = len(grid)
    index = pd.DatetimeIndex([to_timestamp((first + i) * step) for i in range(n)], name="timestamp") \
        if n < 1000 else pd.date_range(to_timestamp(first * step), periods=n,
                                       freq=pd.Timedelta(seconds=step), name="timestamp")
    out = {c: np.full(n, math.nan) for c in ("expected", "lower", "upper")}
    score = np.zeros(n)
    direction = np.full(n, "", dtype=object)
    if n <= w:
        scores = pd.DataFrame({"value": grid, **out, "score": score, "direction": direction,
                               "alarm": np.zeros(n, bool), "warming_up": np.ones(n, bool)}, index=index)
        return Anomalies(scores[SCORE_COLUMNS], empty_episodes(), step, kind, None, "")
    det = Detector(replace(p, kind=kind))
    det.step = step
    det.start((first + np.arange(w + 1)) * step, grid[:w + 1])
    core, tf = det.core, det.transform
    assert core is not None and tf is not None
    side_p = 1.0 - p.threshold if p.direction != "both" else (1.0 - p.threshold) / 2
    up, down = p.direction != "drops", p.direction != "spikes"
    for i in range(w, n):
        if i > w:
            det.commit()
            det._bin = first + i
        v = float(grid[i])
        score[i] = det.score_bin(v)
        last = det.last
        assert last is not None
        direction[i] = last.direction
        if v == v:
            out["expected"][i] = last.expected
            if up:
                out["upper"][i] = tf.inverse(core.bound(side_p, 1))
            if down:
                out["lower"][i] = tf.inverse(core.bound(side_p, -1))
    warming = np.arange(n) < w
    alarm = score >= p.threshold
    scores = pd.DataFrame({"value": grid, **out, "score": score, "direction": direction,
                           "alarm": alarm, "warming_up": warming}, index=index)
    return Anomalies(scores[SCORE_COLUMNS], episodes(scores, step, p.merge_gap), step, kind,
                     det.season, tf.name)


def empty_episodes() -> pd.DataFrame:
    return pd.DataFrame({"start": pd.Series(dtype="datetime64[ns]"), "end": pd.Series(dtype="datetime64[ns]"),
                         "points": pd.Series(dtype=int), "direction": pd.Series(dtype=object),
                         "peak_score": pd.Series(dtype=float), "expected": pd.Series(dtype=float),
                         "actual": pd.Series(dtype=float)})[EPISODE_COLUMNS]


def episodes(scores: pd.DataFrame, step: float, merge_gap: int = 2) -> pd.DataFrame:
    """Merge alarmed rows of ``scores`` (as returned in :attr:`Anomalies.scores`) into
    episodes: alarmed points at most ``merge_gap`` steps apart belong to one episode;
    ``end`` is the end of its last alarmed bin; ``direction`` is the most frequent one."""
    a = scores["alarm"].to_numpy(dtype=bool)
    pos = np.flatnonzero(a)
    if pos.size == 0:
        return empty_episodes()
    breaks = np.flatnonzero(np.diff(pos) > merge_gap + 1)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [pos.size - 1]])
    idx = scores.index
    rows = []
    for s, e in zip(starts, stops, strict=True):
        sel = pos[s:e + 1]
        d = scores["direction"].iloc[sel].value_counts()
        rows.append({"start": idx[sel[0]], "end": idx[sel[-1]] + pd.Timedelta(seconds=step),
                     "points": int(sel.size), "direction": str(d.index[0]),
                     "peak_score": float(scores["score"].iloc[sel].max()),
                     "expected": float(np.nanmean(scores["expected"].iloc[sel])) if
                     scores["expected"].iloc[sel].notna().any() else math.nan,
                     "actual": float(np.nanmean(scores["value"].iloc[sel])) if
                     scores["value"].iloc[sel].notna().any() else math.nan})
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)
