"""Benchmark of the hourly flow detector (ooniutils.analyses.flow).

    .venv/bin/python bench/flow_detector.py [--days 90] [--seeds 0 1 2] [--skip-baseline]

1. Quality on the generator's injected count incidents (country outage, probe-type drop,
   short 30-60 % drops of 2-6 h; ooniutils.store.generator, no store needed): hourly series
   per software_name, per probe_cc, per (probe_cc, probe_asn) and per (probe_cc,
   software_name) are built from the generated rows; an incident counts as found when an
   alarm on a series it affects overlaps its window. Incidents inside the detector's
   warm-up (first 9 days) are not scored. Reported: recall, detection delay (hours from
   the end of the first affected hour to the end of the hour whose data raised the alarm;
   0 = raised as soon as the first bad hour was complete), false alarms per series-month
   (alarms overlapping no incident of a compatible series; the slow decline counts as no
   incident: an hourly alarm there is a false one).
2. The same for the previous practice (baseline): scikit-learn LinearRegression on
   hour-of-day + day-of-week one-hot features fitted on the previous 28 days, refitted
   daily, alarm when actual < 0.7 x prediction.
3. Speed: 1,000 Poisson series x 90 days scored by score_frame (best of 3).

Targets: recall >= 95 % for drops >= 30 % lasting >= 2 h on series big enough to see them,
detected within 1 h, <= 1 false alarm per series-month, 1,000 series in < 2 s.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ooniutils.analyses.flow import FlowParams, _Engine, merge_alarms
from ooniutils.store.generator import generate_frames, make_plan

SETS = {"software_name": ["software_name"], "probe_cc": ["probe_cc"],
        "probe_cc+probe_asn": ["probe_cc", "probe_asn"], "probe_cc+software_name": ["probe_cc", "software_name"]}
COUNT_TYPES = ("country_outage", "probe_type_drop", "short_drop")


def world_series(days: int, seed: int, end: datetime):
    """Hourly count grids (one DataFrame per series set) and the ground truth."""
    plan = make_plan(days, None, seed, end)
    acc: dict[str, list[pd.DataFrame]] = {k: [] for k in SETS}
    for table, df in generate_frames(plan=plan):
        if table != "fastpath":
            continue
        df = df.assign(hour=pd.to_datetime(df["measurement_start_time"]).dt.floor("h"))
        for name, cols in SETS.items():
            acc[name].append(df.groupby(["hour", *cols], observed=True).size().rename("n").reset_index())
    grid = pd.date_range(plan.truth.start.replace(tzinfo=None), plan.truth.end.replace(tzinfo=None),
                         freq="h", inclusive="left")
    wide = {}
    for name, cols in SETS.items():
        long = pd.concat(acc[name]).groupby(["hour", *cols])["n"].sum().reset_index()
        w = long.pivot_table(index="hour", columns=cols, values="n", aggfunc="sum")
        wide[name] = w.reindex(grid).fillna(0.0)
    return wide, plan.truth


def _keys_of(name: str, col) -> dict:
    vals = col if isinstance(col, tuple) else (col,)
    return {c: (int(v) if c == "probe_asn" else v) for c, v in zip(SETS[name], vals, strict=True)}


def _compatible(series_keys: dict, incident_keys: dict) -> bool:
    return all(series_keys.get(k, v) == v for k, v in incident_keys.items())


def _affected(series_keys: dict, incident_keys: dict) -> bool:
    """The series is (part of) what the incident hits: every key the incident names is
    either fixed by the series to the same value, or absent from the series (aggregated)."""
    return _compatible(series_keys, incident_keys)


def flow_alarms(frame: pd.DataFrame, params: FlowParams) -> tuple[pd.DataFrame, np.ndarray]:
    """Alarms per column and, per hour and column, whether an alarm was *raised* then."""
    eng = _Engine(frame.shape[1], params, capacity=len(frame) + 1)
    values = frame.to_numpy(dtype=float)
    exp = np.full(values.shape, np.nan)
    alarm = np.zeros(values.shape, dtype=bool)
    raised = np.zeros(values.shape, dtype=bool)
    for i in range(len(frame)):
        out = eng.step(values[i], *eng._m_row())
        exp[i], alarm[i] = out["expected"], out["alarm"]
        raised[i] = out["alarm"]
        for j, marked in enumerate(out["alarm_back"]):
            if i - 1 - j >= 0:
                alarm[i - 1 - j] |= marked
    rows = []
    for j, c in enumerate(frame.columns):
        if alarm[:, j].any():
            a = merge_alarms(frame.iloc[:, j], pd.Series(exp[:, j], index=frame.index),
                             pd.Series(alarm[:, j], index=frame.index))
            a["col"] = [c] * len(a)
            rows.append(a)
    alarms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["start", "end", "col"])
    return alarms, raised


def baseline_alarms(frame: pd.DataFrame, warm_hours: int, threshold: float = 0.7) -> tuple[pd.DataFrame, np.ndarray]:
    """The linear-regression practice: refit every 24 h on the previous 28 days."""
    from sklearn.linear_model import LinearRegression

    idx = frame.index
    feats = pd.get_dummies(pd.DataFrame({"h": idx.hour.astype(str), "d": idx.day_of_week.astype(str)})).to_numpy(float)
    pred = np.full(frame.shape, np.nan)
    y = frame.to_numpy(float)
    for start in range(warm_hours, len(idx), 24):
        lo = max(0, start - 28 * 24)
        model = LinearRegression().fit(feats[lo:start], y[lo:start])
        pred[start:start + 24] = model.predict(feats[start:start + 24])
    alarm = (y < threshold * pred) & (pred > 0)
    rows = []
    for j, c in enumerate(frame.columns):
        if alarm[:, j].any():
            a = merge_alarms(frame.iloc[:, j], pd.Series(pred[:, j], index=idx), pd.Series(alarm[:, j], index=idx))
            a["col"] = [c] * len(a)
            rows.append(a)
    alarms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["start", "end", "col"])
    return alarms, alarm


def score(wide: dict[str, pd.DataFrame], truth, detector, warm_hours: int, min_mean: float) -> dict:
    incidents = [i for i in truth.incidents if i.type in COUNT_TYPES and i.metric == "measurement_count"]
    t0 = pd.Timestamp(truth.start.replace(tzinfo=None)) + pd.Timedelta(hours=warm_hours)
    found, delays, missed, scored = 0, [], [], 0
    fa, series_months = 0, 0.0
    per_set = {}
    for name, frame in wide.items():
        frame = frame.loc[:, frame.mean() >= min_mean]
        if frame.shape[1] == 0:
            continue
        alarms, raised = detector(frame)
        keys = [_keys_of(name, c) for c in frame.columns]
        months = (len(frame) - warm_hours) / 720
        series_months += frame.shape[1] * months
        set_fa = 0
        for a in alarms.itertuples():
            k = _keys_of(name, a.col)
            if not any(_compatible(k, i.keys) and a.start < pd.Timestamp(i.end.replace(tzinfo=None))
                       and a.end > pd.Timestamp(i.start.replace(tzinfo=None)) for i in incidents):
                set_fa += 1
        fa += set_fa
        per_set[name] = {"series": frame.shape[1], "false_alarms": set_fa}
        for inc in incidents:
            s, e = pd.Timestamp(inc.start.replace(tzinfo=None)), pd.Timestamp(inc.end.replace(tzinfo=None))
            if s < t0:
                continue
            # score each incident on the series that *is* it (same key set), when present
            cols = [j for j, k in enumerate(keys) if set(k) == set(inc.keys) and _affected(k, inc.keys)]
            for j in cols:
                scored += 1
                win = (frame.index >= s) & (frame.index < e + pd.Timedelta(hours=1))
                hit = raised[win, j]
                if hit.any():
                    found += 1
                    first = frame.index[win][hit.argmax()]
                    delays.append((first - s) / pd.Timedelta(hours=1))
                else:
                    missed.append(f"{inc.id} {inc.keys} {inc.magnitude:+.0%} {(e - s) / pd.Timedelta(hours=1):.0f}h "
                                  f"(series mean {frame.iloc[:, j].mean():.0f}/h)")
    return {"incidents": scored, "found": found, "recall": found / scored if scored else float("nan"),
            "delay_mean_h": float(np.mean(delays)) if delays else float("nan"),
            "delay_max_h": float(np.max(delays)) if delays else float("nan"),
            "false_alarms": fa, "series_months": round(series_months, 1),
            "false_per_series_month": fa / series_months if series_months else float("nan"),
            "missed": missed, "per_set": per_set}


def speed(n_series: int = 1000, days: int = 90, repeat: int = 3) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (CPU time is what counts on a shared machine)."""
    from ooniutils.analyses.flow import score_frame

    rng = np.random.default_rng(0)
    hours = days * 24
    t = np.arange(hours)
    base = (1 + 0.4 * np.sin(2 * np.pi * t / 24))[:, None] * rng.uniform(1, 2000, n_series)[None, :]
    frame = pd.DataFrame(rng.poisson(base).astype(float), index=pd.date_range("2024-01-01", periods=hours, freq="h"))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        score_frame(frame)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return best, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--min-mean", type=float, default=5.0, help="skip series averaging fewer per hour")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--alpha", type=float, default=FlowParams.alpha)
    ap.add_argument("--threshold", type=float, default=FlowParams.threshold)
    args = ap.parse_args()
    params = FlowParams(alpha=args.alpha, threshold=args.threshold)
    print(f"flow detector: {params}")
    warm = params.warmup_hours
    end = datetime(2025, 6, 2, tzinfo=UTC)
    totals: dict[str, list[dict]] = {"flow": [], "baseline": []}
    for seed in args.seeds:
        t0 = time.perf_counter()
        wide, truth = world_series(args.days, seed, end)
        print(f"seed {seed}: world built in {time.perf_counter() - t0:.1f}s; series: "
              + ", ".join(f"{k}={v.shape[1]}" for k, v in wide.items()))
        res = score(wide, truth, lambda f: flow_alarms(f, params), warm, args.min_mean)
        totals["flow"].append(res)
        print(f"  flow detector : recall {res['found']}/{res['incidents']} = {res['recall']:.1%}, delay mean "
              f"{res['delay_mean_h']:.2f} h max {res['delay_max_h']:.0f} h, false alarms {res['false_alarms']} "
              f"= {res['false_per_series_month']:.3f}/series-month  {res['per_set']}")
        for m in res["missed"]:
            print("    missed:", m)
        if not args.skip_baseline:
            res = score(wide, truth, lambda f: baseline_alarms(f, warm), warm, args.min_mean)
            totals["baseline"].append(res)
            print(f"  linear regr.  : recall {res['found']}/{res['incidents']} = {res['recall']:.1%}, delay mean "
                  f"{res['delay_mean_h']:.2f} h, false alarms {res['false_alarms']} = "
                  f"{res['false_per_series_month']:.3f}/series-month  {res['per_set']}")
    for name, rs in totals.items():
        if not rs:
            continue
        inc, found = sum(r["incidents"] for r in rs), sum(r["found"] for r in rs)
        fa, sm = sum(r["false_alarms"] for r in rs), sum(r["series_months"] for r in rs)
        print(f"TOTAL {name}: recall {found}/{inc} = {found / inc:.1%}, false alarms {fa} over {sm:.0f} "
              f"series-months = {fa / sm:.3f}/series-month")
    wall, cpu = speed()
    print(f"speed: 1,000 hourly series x 90 days scored in {wall:.2f} s wall, {cpu:.2f} s CPU (best of 3)")


if __name__ == "__main__":
    main()
