"""Value kinds and the transforms that put them on a scale with roughly constant noise.

Every transform is a total, increasing function of the real line (so a value outside the
range seen in warm-up never produces NaN); its inverse maps predictions back to the
series' own units for charts.

* ``count`` (non-negative event counts): Anscombe's ``2·sqrt(x + 3/8)``, under which
  Poisson noise has a standard deviation of about 1 whatever the rate; continued linearly
  below 0.
* ``log`` (positive values spanning decades, e.g. latencies, small rates 0.0004 … 16):
  ``log(x)`` above a floor ``c`` (the 1 % quantile of the warm-up's positive values),
  continued linearly below it; anomalies are then relative (×2 is the same at 0.001 and 10).
* ``identity`` (fractions, continuous and negative values).
"""

from __future__ import annotations

import math

import numpy as np

from ...exceptions import AnalysisError

KINDS = ("auto", "count", "rate", "fraction", "continuous")
_A = 0.375
_SQA = math.sqrt(_A)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise AnalysisError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def detect_kind(values: np.ndarray) -> str:
    """``count`` when every value is a non-negative integer, ``fraction`` when all lie in
    [0, 1], else ``continuous`` (negative values included)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        raise AnalysisError("the warm-up window holds no finite value: nothing to learn from")
    if (v >= 0).all() and np.all(v == np.round(v)):
        return "count"
    if (v >= 0).all() and (v <= 1).all():
        return "fraction"
    return "continuous"


def check_value(kind: str, explicit: bool, x: float) -> None:
    """Bad input gets a clear error: non-finite values always (NaN means missing and is
    handled before), out-of-range values only when the caller named the kind."""
    if math.isinf(x):
        raise AnalysisError(f"value {x} is infinite; use None/NaN for a missing value")
    if not explicit:
        return
    if kind in ("count", "rate") and x < 0:
        raise AnalysisError(f"kind={kind!r} takes values >= 0; got {x} (use kind='continuous' for "
                            "series that can be negative)")
    if kind == "fraction" and not 0.0 <= x <= 1.0:
        raise AnalysisError(f"kind='fraction' takes values in [0, 1]; got {x}")


class Transform:
    """One of ``identity``, ``count``, ``log`` (see the module docstring)."""

    __slots__ = ("name", "floor", "_logc")

    def __init__(self, name: str, floor: float = 1.0) -> None:
        self.name = name
        self.floor = floor
        self._logc = math.log(floor) if floor > 0 else 0.0

    @classmethod
    def choose(cls, kind: str, values: np.ndarray) -> Transform:
        """The transform for ``kind`` given the warm-up values: counts → ``count``;
        rates and continuous values that are all > 0 and whose 99 % / 1 % quantile ratio
        exceeds 100 → ``log``; everything else → ``identity``."""
        v = values[np.isfinite(values)]
        if kind == "count":
            return cls("count")
        if kind in ("rate", "continuous") and v.size and (v > 0).all():
            lo, hi = np.quantile(v, [0.01, 0.99])
            if hi > 100 * lo:
                return cls("log", float(lo))
        return cls("identity")

    def forward(self, x: float) -> float:
        if self.name == "count":
            return 2.0 * math.sqrt(x + _A) if x >= 0 else 2.0 * _SQA + x / _SQA
        if self.name == "log":
            c = self.floor
            return math.log(x) if x >= c else self._logc + (x - c) / c
        return x

    def inverse(self, y: float) -> float:
        if self.name == "count":
            y0 = 2.0 * _SQA
            return (y / 2.0) ** 2 - _A if y >= y0 else (y - y0) * _SQA
        if self.name == "log":
            c = self.floor
            return math.exp(y) if y >= self._logc else c + (y - self._logc) * c
        return y

    def forward_array(self, x: np.ndarray) -> np.ndarray:
        return np.array([self.forward(float(v)) if math.isfinite(v) else math.nan for v in x])
