"""Benchmark: `ooniutils logs ship --from-file` into a fresh embedded store (target ≥ 100k lines/s).

Compares the working tree's ooniutils with a baseline commit's, side by side: each run is
a fresh Python process (as the CLI is) shipping the same journal file into a new embedded
store, and runs alternate baseline / current so both see the same machine load.

What a number includes: the `ship()` call of a process whose Python modules are already
imported (not chDB: its engine starts at the first store query, inside the call), from
opening the file to the last batch committed and its cursor written: reading, JSON
parsing, casting, the duplicate check against the store, the Parquet part writes, the
cursor file writes and (where the variant does it) the compaction `ship()` ends with, which
merges the batches' parts where the variant writes one part per batch (its CPU and wall
time are also shown on their own). Not
included: generating the file, importing modules, and the row-count check done after the
timing. CPU seconds are the process's user + system time over the same span (all threads);
the load average is read before each run; peak RSS is the process's high-water mark at the
end of `ship()`, imports included ("after check": the same after the row-count query, whose
chDB read of the stored parts adds its own memory). The summary gives each variant's
medians and their ratios to the baseline's (the issue's rule: lines/s within 20 %, peak
RSS no higher), then the paired ratios (each run against the baseline run just before it:
less disturbed by a shared machine's swings). ``--query-runs N`` also times the logs query
of ``bench/query_suite.py`` over the shipped rows (medians of N, after the timed span);
``--sample-memory`` the peak of Arrow's allocated bytes during ``ship()`` (sampled every
2 ms: the data's own memory, which the process's RSS buries under chDB's ~470 MB).

    .venv/bin/python bench/logship_speed.py [--lines 300000] [--repeat 3] [--baseline-commit ca65896]
        [--also NAME=SRC_DIR] [--query-runs N] [--sample-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from ooniutils.journal_sample import journal_lines

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "ca658961b57db619706522594ffe99a4157e3fe0"

_WORKER = r"""
import json, resource, sys, threading, time
from pathlib import Path
from ooniutils.logship import ship
from ooniutils.store.embedded import EmbeddedStore

src, data, cursor, expected = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
query_runs, sample_memory = int(sys.argv[5]), sys.argv[6] == "1"
store = EmbeddedStore(data)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

compaction = {"compact_cpu": 0.0, "compact_wall": 0.0}
real_compact = type(store).compact

def timed_compact(self, table=None):  # the merge a variant's ship() may end with
    c, t = cpu(), time.perf_counter()
    try:
        return real_compact(self, table)
    finally:
        compaction["compact_cpu"] += cpu() - c
        compaction["compact_wall"] += time.perf_counter() - t

type(store).compact = timed_compact

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

QUERY = ("SELECT coalesce(_SYSTEMD_UNIT, UNIT, SYSLOG_IDENTIFIER, '') AS unit, count() AS n FROM logs "
         "WHERE __REALTIME_TIMESTAMP >= {lo:Int64} AND __REALTIME_TIMESTAMP < {hi:Int64} AND PRIORITY <= 3 "
         "GROUP BY unit ORDER BY unit")

arrow_peak = [0]
sampling = threading.Event()

def sample_arrow():  # Arrow's own allocations (parsing, batches, writing), every 2 ms
    import pyarrow as pa
    while not sampling.is_set():
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        time.sleep(0.002)

sampler = threading.Thread(target=sample_arrow, daemon=True)
if sample_memory:
    sampler.start()
c0, t0 = cpu(), time.perf_counter()
stats = ship(store, cursor, from_file=src)
wall, used, rss = time.perf_counter() - t0, cpu() - c0, peak_mb()
sampling.set()
df = store.query("SELECT count() AS n, uniqExact(__CURSOR) AS u FROM logs")
n, u = int(df["n"].iloc[0]), int(df["u"].iloc[0])
if stats.inserted != expected or n != expected or u != expected:
    sys.exit(f"expected {expected} rows, inserted {stats.inserted}, stored {n} ({u} distinct cursors)")
rss_check = peak_mb()
times = []  # the logs query of bench/query_suite.py, over every shipped row
for _ in range(query_runs):
    c, t = cpu(), time.perf_counter()
    store.query(QUERY, {"lo": 0, "hi": 2**62})
    times.append((time.perf_counter() - t, cpu() - c))
query = {"query_ms": sorted(w for w, _ in times)[len(times) // 2] * 1e3,
         "query_cpu_ms": sorted(c for _, c in times)[len(times) // 2] * 1e3} if times else {}
memory = {"arrow_peak": arrow_peak[0] / 2**20} if sample_memory else {}
print(json.dumps({"wall": wall, "cpu": used, "rss": rss, "rss_check": rss_check, **compaction, **query, **memory}))
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _export(commit: str, dest: Path) -> Path:
    """The ``src`` folder of ``commit`` under ``dest`` (git archive, no worktree needed)."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _run(src_dir: Path, journal: Path, work: Path, lines: int, query_runs: int,
         sample_memory: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src_dir)}
    out = subprocess.run([sys.executable, "-c", _WORKER, str(journal), str(work / "data"),
                          str(work / "cursor"), str(lines), str(query_runs), str(int(sample_memory))],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"run with {src_dir} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-commit", default=DEFAULT_BASELINE)
    ap.add_argument("--query-runs", type=int, default=0, metavar="N",
                    help="after each ship, time bench/query_suite.py's logs query (errors by unit) "
                         "N times over the stored rows: what the variant's part layout costs readers")
    ap.add_argument("--sample-memory", action="store_true",
                    help="sample Arrow's allocated bytes every 2 ms during ship() and report the peak "
                         "(the data's own memory, without chDB's engine; the sampling thread costs a little CPU)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=SRC_DIR",
                    help="another variant to run in the rotation (a folder holding ooniutils/)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        journal = tmp / "journal.json"
        journal.write_bytes(b"\n".join(journal_lines(args.lines)) + b"\n")
        variants = {"baseline": _export(args.baseline_commit, tmp / "baseline"), "current": REPO / "src"}
        for spec in args.also:
            name, sep, folder = spec.partition("=")
            if not sep or not (Path(folder) / "ooniutils").is_dir():
                ap.error(f"--also wants NAME=SRC_DIR with SRC_DIR/ooniutils, got {spec!r}")
            variants[name] = Path(folder).resolve()
        results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        print(f"lines: {args.lines:,} ({journal.stat().st_size / 1e6:.0f} MB)  repeats: {args.repeat}  "
              f"cores: {os.cpu_count()}  baseline: {args.baseline_commit[:9]}")
        for i in range(args.repeat):
            for name, src_dir in variants.items():
                load = _load()
                r = _run(src_dir, journal, tmp / f"{name}-{i}", args.lines, args.query_runs, args.sample_memory)
                results[name].append(r)
                query = (f"  query {r['query_ms']:.1f} ms (cpu {r['query_cpu_ms']:.1f})"
                         if args.query_runs else "")
                query += f"  Arrow peak {r['arrow_peak']:.0f} MB" if args.sample_memory else ""
                print(f"  run {i + 1} {name:8s} {args.lines / r['wall']:9,.0f} lines/s  wall {r['wall']:.2f}s  "
                      f"cpu {r['cpu']:.2f}s (compaction {r['compact_cpu']:.2f}s, wall {r['compact_wall']:.2f}s)  "
                      f"peak RSS {r['rss']:.0f} MB (after check {r['rss_check']:.0f})  "
                      f"load before {load}{query}")
        medians = {name: {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "rss", "rss_check")}
                   for name, runs in results.items()}
        # paired: each run against the baseline run just before it (the same machine load)
        paired = {name: {k: statistics.median(b[k] / r[k] if k == "wall" else r[k] / b[k]
                                              for b, r in zip(results["baseline"], runs, strict=True))
                         for k in ("wall", "cpu", "rss")}
                  for name, runs in results.items() if name != "baseline"}
        base = medians["baseline"]
        for name, m in medians.items():
            print(f"{name:8s} median {args.lines / m['wall']:9,.0f} lines/s  wall {m['wall']:.2f}s  "
                  f"cpu {m['cpu']:.2f}s  peak RSS {m['rss']:.0f} MB (after check {m['rss_check']:.0f})   vs baseline: "
                  f"lines/s {base['wall'] / m['wall']:.2f}x  cpu {m['cpu'] / base['cpu'] - 1:+.1%}  "
                  f"RSS {m['rss'] / base['rss'] - 1:+.1%} (after check {m['rss_check'] / base['rss_check'] - 1:+.1%})")
        if args.sample_memory:
            for name, runs in results.items():
                print(f"{name:8s} Arrow peak median {statistics.median(r['arrow_peak'] for r in runs):.0f} MB "
                      f"({min(r['arrow_peak'] for r in runs):.0f}-{max(r['arrow_peak'] for r in runs):.0f})")
        if args.query_runs:
            for name, runs in results.items():
                print(f"{name:8s} logs query median {statistics.median(r['query_ms'] for r in runs):.1f} ms  "
                      f"cpu {statistics.median(r['query_cpu_ms'] for r in runs):.1f} ms")
        for name, p in paired.items():
            print(f"{name:8s} paired medians vs baseline: lines/s x{p['wall']:.2f}  cpu x{p['cpu']:.3f}  "
                  f"peak RSS x{p['rss']:.3f}")
        print(f"load now: {_load()}")


if __name__ == "__main__":
    main()
