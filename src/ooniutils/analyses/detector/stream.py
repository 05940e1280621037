"""The streaming detector: ``update(timestamp, value) -> score``, O(1) per point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...exceptions import AnalysisError
from .build import build_core, choose_season
from .core import Core
from .params import (
    DetectorParams,
    infer_step,
    make_params,
    resample,
    seconds,
    to_seconds,
    to_timestamp,
    to_value,
)
from .season import Season
from .transform import Transform, check_value, detect_kind

MAX_RAW = 4 * 21600
"""Warm-up points kept at most (irregular timestamps denser than the step)."""


@dataclass(frozen=True)
class Point:
    """What :meth:`Detector.update` found for the latest bin."""

    timestamp: pd.Timestamp
    """Start of the bin (UTC, naive)."""
    value: float
    """The bin's value (NaN = missing)."""
    expected: float
    """The model's prediction in the series' units (NaN while warming up or missing)."""
    score: float
    direction: str
    """``spike``, ``drop``, ``missing`` or ``""`` (warming up)."""
    alarm: bool


class Detector:
    """Anomaly detector for one series of any step from 1 minute to 1 day.

    ``update(timestamp, value)`` returns a score in [0, 1]; a score of 0.99 means the
    point is at least as extreme (in the watched ``direction``) as only 1 % of points
    are under the normal behaviour learnt from this series (see :mod:`.core`). Scores are
    0 during the warm-up (:attr:`warming_up`, ``DetectorParams.warmup``).

    Timestamps must not go back. Each is put in the bin ``floor(t / step)``; a second
    value in the same bin is combined with the first (summed for counts, averaged
    otherwise) and the bin is scored again: the model learns from a bin when the next
    one starts. Bins skipped between two updates are missing (0 for counts) and are
    scored as such; :attr:`gap_score` is the highest of those scores. ``value`` None or
    NaN marks the bin as missing (unknown) explicitly, for counts too.

    Memory is constant after the warm-up (:meth:`state_size`).

    Usage::

        det = Detector(direction="drops")
        for ts, v in rows:
            if det.update(ts, v) >= 0.999: ...
    """

    def __init__(self, params: DetectorParams | None = None, **options: Any) -> None:
        self.params = make_params(params, options)
        self.step: float | None = seconds(self.params.step, "step")
        self.kind: str | None = None if self.params.kind == "auto" else self.params.kind
        self._explicit = self.params.kind != "auto"
        self.season: Season | None = None
        self.transform: Transform | None = None
        self.core: Core | None = None
        self._raw_t: list[float] | None = []
        self._raw_v: list[float] | None = []
        self._bin = -1
        self._sum = 0.0
        self._cnt = 0
        self._last_t = -math.inf
        self.gap_score = 0.0
        self.last: Point | None = None
        self._pending: float | None = None
        self._guess: float | None = None
        self._nan_in_bin = False
        self._alarm_score = self.params.threshold

    @property
    def warming_up(self) -> bool:
        return self.core is None

    def state_size(self) -> int:
        """Numbers held by the detector: grows during the warm-up only."""
        if self.core is None:
            return 2 * len(self._raw_t or [])
        return self.core.state_size() + 8

    # --- warm-up -------------------------------------------------------------------------
    def _warm(self, t: float, x: float) -> float:
        assert self._raw_t is not None and self._raw_v is not None
        if self.kind is not None and math.isfinite(x):
            check_value(self.kind, self._explicit, x)
        self._raw_t.append(t)
        self._raw_v.append(x)
        n = len(self._raw_t)
        step = self.step
        if step is None and n >= 16:
            if n & (n - 1) == 0:  # re-inferred at 16, 32, 64 … points: O(1) amortised
                self._guess = infer_step(np.array(self._raw_t))
            step = self._guess
        self.last = Point(to_timestamp(t), x, math.nan, 0.0, "", False)
        if step is not None:
            first_bin = math.floor(self._raw_t[0] / step)
            if math.floor(t / step) - first_bin >= self.params.warmup_points(step) or n >= MAX_RAW:
                # the warm-up bins are complete: learn from them and score the open bin
                self.step = step
                self._finish_warmup()
                return self.score_bin(self._open_value())
        return 0.0

    def _open_value(self) -> float:
        if not self._cnt:  # no value: 0 for a count (nothing happened) unless NaN said unknown
            return 0.0 if self.kind == "count" and not self._nan_in_bin else math.nan
        return self._sum if self.kind == "count" else self._sum / self._cnt

    def _finish_warmup(self) -> None:
        assert self._raw_t is not None and self._raw_v is not None and self.step is not None
        times, vals = np.array(self._raw_t), np.array(self._raw_v)
        self._raw_t = self._raw_v = None
        self.start(times, vals)

    def start(self, times: np.ndarray, values: np.ndarray) -> tuple[int, np.ndarray]:
        """Learn from a warm-up window (epoch seconds, values); returns its bins. The last
        bin stays open (it may still receive values)."""
        assert self.step is not None
        step = self.step
        if self.kind is None:
            self.kind = detect_kind(values)
        for x in values[np.isfinite(values)].tolist():
            check_value(self.kind, self._explicit, x)
        first, grid = resample(times, values, step, self.kind)
        self.transform = Transform.choose(self.kind, grid)
        y = self.transform.forward_array(grid)
        self.season = choose_season(y[:-1], step, self.params.season)
        self.core = build_core(y[:-1], first, self.season, 1.0 - self.params.threshold,
                               self.params.adapt_points(step), self.params.direction)
        self._bin = first + len(grid) - 1
        last = float(grid[-1])
        self._sum, self._cnt = (0.0, 0) if math.isnan(last) else (last, 1)
        self._nan_in_bin = math.isnan(last)
        self._last_t = float(times.max())
        return first, grid

    # --- streaming -----------------------------------------------------------------------
    def update(self, timestamp: Any, value: Any) -> float:
        t = to_seconds(timestamp)
        x = to_value(value)
        if t < self._last_t:
            raise AnalysisError(f"timestamps must not go back: {to_timestamp(t)} after "
                                f"{to_timestamp(self._last_t)}")
        self._last_t = t
        if self.core is None:
            return self._warm(t, x)
        assert self.kind is not None and self.step is not None
        if not math.isnan(x):
            check_value(self.kind, self._explicit, x)
        b = math.floor(t / self.step)
        if b != self._bin:
            self.commit()
            gap = 0.0
            for skipped in range(self._bin + 1, b):
                self._bin = skipped
                s = self.score_bin(0.0 if self.kind == "count" else math.nan)
                gap = s if s > gap else gap
                self.commit()
            self.gap_score = gap
            self._bin = b
            self._sum, self._cnt = 0.0, 0
            self._nan_in_bin = False
        if math.isnan(x):
            self._nan_in_bin = True
        else:
            if self.kind == "count":
                self._sum += x
                self._cnt = 1
            else:
                self._sum += x
                self._cnt += 1
        return self.score_bin(self._open_value())

    def score_bin(self, v: float) -> float:
        """Score value ``v`` of the open bin (not learnt until :meth:`commit`)."""
        core = self.core
        assert core is not None and self.transform is not None
        self._pending = v
        if v != v:
            if not self.params.missing:
                score, direction = 0.0, "missing"
            else:
                score, direction = 1.0 - core.score_missing(), "missing"
            exp = math.nan
        else:
            score = 1.0 - core.score(self.transform.forward(v), self._bin % core.period)
            direction = "spike" if core.e > 0 else "drop"
            exp = self.transform.inverse(core.yhat)
        self.last = Point(to_timestamp(self._bin * self.step), v, exp, score, direction,  # type: ignore[operator]
                          score >= self._alarm_score)
        return score

    def commit(self) -> None:
        """Learn from the open bin (called when the next bin starts)."""
        core = self.core
        assert core is not None
        if self._bin < 0:
            return
        v = self._pending
        if v is None:
            # nothing scored yet in this bin (first bin after warm-up): score it now
            v = self._open_value()
            self.score_bin(v)
        if v != v:
            core.learn_missing()
        else:
            core.learn()
        self._pending = None
