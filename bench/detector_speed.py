"""Streaming cost per point of ooniutils.analyses.detector.Detector (target <= 50 us).

    .venv/bin/python bench/detector_speed.py [--points 50000] [--repeat 3]

For each case a detector is warmed up first (not timed), then ``update(ts, value)`` is
timed over ``--points`` further points (timestamps as datetime objects, as a notebook
passes them; one case with epoch-second floats). Reported: best-of-``--repeat`` CPU time
per point (CPU time, not wall, because the machine is shared) and wall time.
Baseline side by side: FlowDetector.update (hourly counts), the existing streaming
detector.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timedelta

import numpy as np

from ooniutils.analyses.detector import Detector
from ooniutils.analyses.flow import FlowDetector


def series(kind: str, n: int, step_min: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    per_day = 1440 // step_min
    wave = 1 + 0.4 * np.sin(2 * np.pi * t / per_day)
    if kind == "count":
        return rng.poisson(200 * wave).astype(float)
    if kind == "fraction":
        return np.clip(0.05 * wave + rng.normal(0, 0.005, n), 0, 1)
    return -3 + 2 * wave + rng.normal(0, 0.3, n)  # continuous, negative


def time_case(make, warm: list, rows: list, repeat: int) -> tuple[float, float]:
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        det = make()
        for ts, v in warm:
            det.update(ts, v)
        c0, t0 = time.process_time(), time.perf_counter()
        for ts, v in rows:
            det.update(ts, v)
        best_cpu = min(best_cpu, (time.process_time() - c0) / len(rows))
        best_wall = min(best_wall, (time.perf_counter() - t0) / len(rows))
    return best_cpu * 1e6, best_wall * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    start = datetime(2024, 1, 1)
    cases = [("5 min, counts, daily season (288 steps)", "count", 5, False),
             ("5 min, fraction, daily season", "fraction", 5, False),
             ("1 min, continuous negative, daily season (1440 steps)", "continuous", 1, False),
             ("1 h, counts, daily season", "count", 60, False),
             ("5 min, counts, epoch-second timestamps", "count", 5, True)]
    print("| case | warm-up points | CPU µs/point | wall µs/point |\n|---|---|---|---|")
    for name, kind, step, floats in cases:
        warm_n = Detector(step=f"{step}min").params.warmup_points(step * 60.0)
        vals = series(kind, warm_n + 1 + args.points, step)
        ts = [start + timedelta(minutes=step * i) for i in range(len(vals))]
        if floats:
            ts = [t.timestamp() for t in ts]  # type: ignore[misc]
        rows = list(zip(ts, vals.tolist(), strict=True))
        cpu, wall = time_case(lambda s=step: Detector(step=f"{s}min"), rows[:warm_n + 1], rows[warm_n + 1:],
                              args.repeat)
        print(f"| {name} | {warm_n} | {cpu:.1f} | {wall:.1f} |")
    # baseline: the hourly flow detector's streaming update
    vals = series("count", 24 * 10 + args.points // 10, 60)
    ts = [start + timedelta(hours=i) for i in range(len(vals))]
    rows = list(zip(ts, vals.tolist(), strict=True))
    cpu, wall = time_case(FlowDetector, rows[:240], rows[240:], args.repeat)
    print(f"| baseline: FlowDetector.update, 1 h counts | 240 | {cpu:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
