"""The general detector against FlowDetector on the generator's hourly flow series.

    .venv/bin/python bench/detector_flow.py [--days 90] [--seeds 0 1 2]

Same worlds, incidents and scoring as bench/flow_detector.py (the generator's injected
count incidents; hourly series per software_name, probe_cc, probe_cc+probe_asn and
probe_cc+software_name averaging >= 5 measurements per hour; recall, detection delay,
false alarms per series-month). Both detectors are scored on the same incidents: those
starting after 14 days, the general detector's warm-up here (FlowDetector's own is 9).
The general detector runs as a flow notebook would use it: kind="count",
direction="drops", step 1 h, default threshold 0.999 (and a stricter 0.9999 row).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from flow_detector import flow_alarms, score, world_series  # noqa: E402

from ooniutils.analyses.detector import detect_anomalies  # noqa: E402
from ooniutils.analyses.flow import FlowParams  # noqa: E402

WARM_HOURS = 14 * 24


def general_alarms(frame: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, np.ndarray]:
    raised = np.zeros(frame.shape, dtype=bool)
    rows = []
    for j, c in enumerate(frame.columns):
        s = frame.iloc[:, j]
        res = detect_anomalies(s, step="1h", kind="count", direction="drops", warmup="14D", threshold=threshold)
        a = res.scores["alarm"].reindex(frame.index, fill_value=False).to_numpy(dtype=bool)
        raised[:, j] = a
        ep = res.episodes
        if len(ep):
            rows.append(pd.DataFrame({"start": ep["start"], "end": ep["end"], "col": [c] * len(ep)}))
    alarms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["start", "end", "col"])
    return alarms, raised


def line(name: str, rs: list[dict], cpu: float) -> str:
    inc, found = sum(r["incidents"] for r in rs), sum(r["found"] for r in rs)
    fa, sm = sum(r["false_alarms"] for r in rs), sum(r["series_months"] for r in rs)
    delays = [r["delay_mean_h"] for r in rs if r["found"]]
    return (f"| {name} | {found}/{inc} = {found / inc:.1%} | {fa / sm:.2f} | "
            f"{np.mean(delays) if delays else float('nan'):.2f} h | {cpu:.1f} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--min-mean", type=float, default=5.0)
    args = ap.parse_args()
    end = datetime(2025, 6, 2, tzinfo=UTC)
    params = FlowParams()
    results: dict[str, list[dict]] = {"FlowDetector (flow notebooks today)": [], "general, threshold 0.999": [],
                                      "general, threshold 0.9999": []}
    cpu = dict.fromkeys(results, 0.0)
    for seed in args.seeds:
        wide, truth = world_series(args.days, seed, end)
        print(f"seed {seed}: " + ", ".join(f"{k}={v.shape[1]}" for k, v in wide.items()), flush=True)
        runs = {"FlowDetector (flow notebooks today)": lambda f: flow_alarms(f, params),
                "general, threshold 0.999": lambda f: general_alarms(f, 0.999),
                "general, threshold 0.9999": lambda f: general_alarms(f, 0.9999)}
        for name, fn in runs.items():
            c0 = time.process_time()
            r = score(wide, truth, fn, WARM_HOURS, args.min_mean)
            cpu[name] += time.process_time() - c0
            results[name].append(r)
            print(f"  {name}: recall {r['found']}/{r['incidents']}, false alarms {r['false_alarms']} over "
                  f"{r['series_months']} series-months, delay {r['delay_mean_h']:.2f} h; {r['per_set']}", flush=True)
            for m in r["missed"]:
                print("    missed:", m)
    print("\n| detector | recall | false alarms per series-month | mean delay | CPU |\n|---|---|---|---|---|")
    for name, rs in results.items():
        print(line(name, rs, cpu[name]))


if __name__ == "__main__":
    main()
