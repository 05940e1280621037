"""Speed and memory of the synthetic data generator.

Each case runs in a fresh child process so its peak RSS is its own:

* ``frames``: ``generate_frames`` only (building the DataFrames), rows/s wall and CPU;
* ``store``: ``generate`` into a fresh embedded store (chDB over Parquet) in a temp dir.

Usage::

    .venv/bin/python bench/generator_speed.py                       # 5M and 20M frames, 5M store
    .venv/bin/python bench/generator_speed.py --frames 1000000 --store 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

END = datetime(2025, 3, 10, tzinfo=UTC)


def run_case(kind: str, rows: int, days: int) -> dict:
    from ooniutils.store.generator import generate, generate_frames, make_plan

    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "frames":
        plan = make_plan(days=days, rows=rows, seed=0, end=END)
        n = sum(len(df) for table, df in generate_frames(plan=plan) if table == "fastpath")
    else:
        with tempfile.TemporaryDirectory(prefix="genbench-") as tmp:
            os.environ["OONI_DATA_DIR"] = tmp
            from ooniutils.store import get_store

            store = get_store(create=True)
            store.init()
            n = generate(store, days=days, rows=rows, seed=0, end=END).rows["fastpath"]
            store.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "rows": n, "days": days, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "rows_per_s_wall": round(n / wall), "rows_per_s_cpu": round(n / cpu), "peak_rss_mb": round(peak_mb)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="*", default=[5_000_000, 20_000_000], help="row counts for frames-only cases")
    ap.add_argument("--store", type=int, nargs="*", default=[5_000_000], help="row counts for embedded-store cases (0 = none)")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], int(args.child[1]), args.days)))
        return
    cases = [("frames", r) for r in args.frames] + [("store", r) for r in args.store if r]
    print(f"{'case':7} {'rows':>11} {'wall s':>8} {'cpu s':>8} {'rows/s wall':>12} {'rows/s cpu':>11} {'peak RSS MB':>12}")
    for kind, rows in cases:
        out = subprocess.run([sys.executable, __file__, "--days", str(args.days), "--child", kind, str(rows)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{kind:7} {r['rows']:>11,} {r['wall_s']:>8} {r['cpu_s']:>8} {r['rows_per_s_wall']:>12,} "
              f"{r['rows_per_s_cpu']:>11,} {r['peak_rss_mb']:>12,}", flush=True)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work inflates wall time)")


if __name__ == "__main__":
    main()
