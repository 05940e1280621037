"""100M generated fastpath rows in the embedded store: generation speed, size, query time.

Two phases, each in its own child process so each peak RSS is that phase's own:

1. **generate**: ``generate(store, days, rows)`` into a fresh embedded store (the generator
   works in chunks of ``--chunk-rows``; each becomes a Parquet part);
2. **query**: an hourly count over every fastpath row, and the same count filtered to four
   countries and a time range, through ``click_query_fsn`` and through a bare chDB session
   over ``file('<fastpath>/current/*.parquet')`` with the same structure; runs
   interleaved, median wall and CPU time reported (CPU time is the query process's,
   chDB's threads included: less disturbed by other load), both must count the same rows.

Disk: about 36 bytes a row (zstd Parquet), checked against free space before starting.
The data folder is removed afterwards unless ``--keep``. A run of 100M rows takes about
5 min of CPU for generation on this machine (more wall time when the cores are shared).

    .venv/bin/python bench/store_100m.py [--rows 100000000] [--days 90] [--dir DIR] [--keep]
    .venv/bin/python bench/store_100m.py --dir /tmp/store100m --keep --skip-generate   # re-query
    .venv/bin/python bench/store_100m.py --compact   # as `data generate` leaves it (compacted)

The side-by-side with chDB MergeTree on the same rows is ``bench/query_suite.py --dir DIR``
on a folder kept by ``--keep`` (it adds the ``logs`` rows when the folder has none).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

END = datetime(2025, 3, 10, tzinfo=UTC)
BYTES_PER_ROW = 40  # measured ~36 with zstd; a margin for the temp part being written
ALL = "SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM fastpath GROUP BY hour ORDER BY hour"
FILTERED = ("SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM fastpath "
            "WHERE probe_cc IN %(ccs)s AND measurement_start_time >= %(since)s GROUP BY hour ORDER BY hour")
BARE_FILTERED = ("SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM {src} "
                 "WHERE probe_cc IN ['IT', 'DE', 'US', 'RU'] AND measurement_start_time >= '{since}' "
                 "GROUP BY hour ORDER BY hour")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(data: Path, rows: int, days: int, chunk_rows: int) -> dict:
    from ooniutils.store.embedded import EmbeddedStore
    from ooniutils.store.generator import generate

    store = EmbeddedStore(data)
    t0, c0 = time.perf_counter(), time.process_time()
    last = [t0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  generate: {done}/{total} hours, {time.perf_counter() - t0:.0f}s, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

    truth = generate(store, days=days, rows=rows, seed=0, end=END, progress=progress, chunk_rows=chunk_rows)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    parts = store.parts("fastpath")
    n = truth.rows["fastpath"]
    return {"rows": n, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rows_per_s_wall": round(n / wall),
            "rows_per_s_cpu": round(n / cpu), "parts": len(parts),
            "bytes": sum(p.stat().st_size for p in parts), "peak_rss_mb": round(peak_rss_mb())}


def phase_compact(data: Path) -> dict:
    """What ``data generate`` runs at its end: a full compaction of the generated parts."""
    from ooniutils.store.embedded import EmbeddedStore

    store = EmbeddedStore(data)
    before = len(store.parts("fastpath"))
    t0, c0 = time.perf_counter(), time.process_time()
    store.compact("fastpath")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    parts = store.parts("fastpath")
    return {"parts_before": before, "parts": len(parts), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "bytes": sum(p.stat().st_size for p in parts), "peak_rss_mb": round(peak_rss_mb())}


def phase_query(data: Path, runs: int) -> dict:
    os.environ["OONI_DATA_DIR"] = str(data)
    os.environ.pop("OONI_CLICKHOUSE_URL", None)
    from chdb.session import Session
    from clickhouse_connect.driver.binding import format_str

    from ooniutils.clickhouse import click_query_fsn
    from ooniutils.store import get_store
    from ooniutils.store.params import structure
    from ooniutils.store.schema import FASTPATH

    store = get_store()
    since = datetime(2025, 2, 1)
    src = (f"file({format_str(str(store.current_dir('fastpath') / '*.parquet'))}, Parquet, "
           f"{format_str(structure(FASTPATH))})")
    sess = Session()
    sess.query("SET session_timezone = 'UTC'")
    cases = {
        "all ours": lambda: click_query_fsn(ALL),
        "all bare": lambda: sess.query(ALL.replace("FROM fastpath", f"FROM {src}"), "DataFrame"),
        "filtered ours": lambda: click_query_fsn(FILTERED, ccs=["IT", "DE", "US", "RU"], since=since),
        "filtered bare": lambda: sess.query(BARE_FILTERED.format(src=src, since=since), "DataFrame"),
    }
    counts = {name: int(fn()["n"].sum()) for name, fn in cases.items()}  # warm-up + agreement
    if counts["all ours"] != counts["all bare"] or counts["filtered ours"] != counts["filtered bare"]:
        raise SystemExit(f"click_query_fsn and bare chDB disagree: {counts}")
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    loads = []
    for _ in range(runs):
        loads.append(os.getloadavg()[0])
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)  # chDB's threads run in this process
    med = {name: statistics.median(v) for name, v in times.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    return {"rows_all": counts["all ours"], "rows_filtered": counts["filtered ours"],
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "median_cpu_s": {k: round(v, 3) for k, v in med_cpu.items()},
            "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "ratio_all": round(med["all ours"] / med["all bare"], 3),
            "ratio_filtered": round(med["filtered ours"] / med["filtered bare"], 3),
            "load_during": round(statistics.mean(loads), 2), "peak_rss_mb": round(peak_rss_mb())}


def child(phase: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", phase, *args]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per generated chunk (= per part)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each query")
    ap.add_argument("--dir", type=Path, default=None, help="data folder (default: a temp folder under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--skip-generate", action="store_true", help="query the existing data in --dir")
    ap.add_argument("--compact", action="store_true",
                    help="compact after generating, as `data generate` does (timed in its own process)")
    ap.add_argument("--no-query", action="store_true", help="stop after generating (and compacting)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase, *rest = args.child
        if phase == "generate":
            result = phase_generate(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif phase == "compact":
            result = phase_compact(Path(rest[0]))
        else:
            result = phase_query(Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    data = args.dir or Path(tempfile.mkdtemp(prefix="store100m-", dir="/tmp"))
    data.mkdir(parents=True, exist_ok=True)
    if args.skip_generate and args.dir is None:
        ap.error("--skip-generate needs --dir")
    need, free = args.rows * BYTES_PER_ROW, shutil.disk_usage(data).free
    if not args.skip_generate and need > free * 0.8:
        ap.error(f"{args.rows:,} rows need about {need / 2**30:.1f} GiB; {data} has {free / 2**30:.1f} GiB free")
    print(f"data folder {data}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    try:
        if not args.skip_generate:
            g = child("generate", str(data), str(args.rows), str(args.days), str(args.chunk_rows))
            print(f"generate: {g['rows']:,} rows over {args.days} days in {g['wall_s']}s wall / {g['cpu_s']}s CPU "
                  f"= {g['rows_per_s_wall']:,} rows/s wall, {g['rows_per_s_cpu']:,} rows/s CPU; "
                  f"{g['parts']} parts, {g['bytes'] / 2**30:.2f} GiB ({g['bytes'] / g['rows']:.1f} B/row); "
                  f"peak RSS {g['peak_rss_mb']:,} MB; load after {os.getloadavg()[0]:.2f}", flush=True)
        if args.compact:
            c = child("compact", str(data))
            print(f"compact: {c['parts_before']} -> {c['parts']} parts in {c['wall_s']}s wall / {c['cpu_s']}s CPU; "
                  f"{c['bytes'] / 2**30:.2f} GiB; peak RSS {c['peak_rss_mb']:,} MB; "
                  f"load after {os.getloadavg()[0]:.2f}", flush=True)
        if args.no_query:
            return
        q = child("query", str(data), str(args.runs))
        m = q["median_s"]
        print(f"query over {q['rows_all']:,} rows (filtered: {q['rows_filtered']:,}); "
              f"load during {q['load_during']}; peak RSS {q['peak_rss_mb']:,} MB")
        for shape in ("all", "filtered"):
            rate = q["rows_all"] / m[f"{shape} ours"] / 1e6
            c = q["median_cpu_s"]
            print(f"  {shape:8} click_query_fsn {m[f'{shape} ours']:.3f}s ({rate:.0f}M rows/s)  "
                  f"bare chDB {m[f'{shape} bare']:.3f}s  ratio {q[f'ratio_{shape}']}; CPU "
                  f"{c[f'{shape} ours']:.3f}s vs {c[f'{shape} bare']:.3f}s, "
                  f"ratio {c[f'{shape} ours'] / c[f'{shape} bare']:.3f}")
        print(json.dumps(q["runs_s"]))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
            print(f"removed {data}")


if __name__ == "__main__":
    main()
