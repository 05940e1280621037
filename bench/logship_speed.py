"""Benchmark: journald JSON lines shipped into the embedded store (target ≥ 100k lines/s).

Baseline, run side by side: the naive way — `json.loads` per line and `pandas.DataFrame`
from the list of dicts — for the same lines (parsing only, no insert), to show what the
batch pyarrow path buys.

    .venv/bin/python bench/logship_speed.py [--lines 500000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from ooniutils.journal_sample import journal_lines
from ooniutils.logship import ship
from ooniutils.store import get_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lines = journal_lines(args.lines)
    ours, naive = [], []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "journal.json"
        src.write_bytes(b"\n".join(lines) + b"\n")
        for i in range(args.repeat):
            os.environ["OONI_DATA_DIR"] = f"{tmp}/data{i}"
            store = get_store()
            store.init()
            t = time.perf_counter()
            stats = ship(store, Path(tmp) / f"cursor{i}", from_file=str(src))
            ours.append(time.perf_counter() - t)
            assert stats.inserted == args.lines, stats
            n = int(store.query("SELECT count() AS n FROM logs")["n"][0])
            assert n == args.lines, n
            store.close()
            t = time.perf_counter()
            pd.DataFrame([json.loads(x) for x in lines])
            naive.append(time.perf_counter() - t)
    o, b = statistics.median(ours), statistics.median(naive)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"lines: {args.lines:,}  repeats: {args.repeat}  cores: {os.cpu_count()}")
    print(f"ooniutils logs ship (parse + insert + cursor): {o:.2f}s  -> {args.lines / o:,.0f} lines/s")
    print(f"baseline json.loads + DataFrame (parse only): {b:.2f}s  -> {args.lines / b:,.0f} lines/s")
    print(f"ratio baseline/ours: {b / o:.2f}x   peak RSS: {rss:,.0f} MB")


if __name__ == "__main__":
    main()
