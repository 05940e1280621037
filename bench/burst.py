"""A burst: N notebooks (default 50) due in the same minute, run by one ``jupycron tick``.

``--notebook small`` (default): one cell that imports json and writes its start/end time;
``--notebook chart``: the pandas + Altair notebook of ``run_overhead.py`` (realistic cells).
Runs once without the kernel pool and once with it (``pool_size = -1``), concurrency cap
``--concurrency`` (default 2, the cores of the test machine). For each: wall time until all
are done, the notebooks' total cell time (nbclient timestamps) and the target
``1.5 x total cell time / cores + warm-up`` (warm-up: the median time to get a ready fresh
kernel, measured in the same burst), the most runs in progress at once (history start..finish;
must not exceed the cap) and the longest wait from the burst's start to a run's start (no run
starved: runs start in path order). With the pool, the warm-up is the time from the burst's
start until the first kernel was ready (template and first pooled kernel).

CPU: this process (``RUSAGE_SELF``) and its children (``RUSAGE_CHILDREN``: kernels it
started, or the kernel template, whose forked kernels it reaps, stopped before measuring),
per run. ``--fork on|off`` sets ``kernel_forkserver`` (ignored by code without it);
``--preimport pandas,altair`` sets ``pool_preimport``.

    python bench/burst.py [--count 50] [--concurrency 2] [--notebook small|chart] [--fork on|off]
        [--history 100] [--preimport MODULES]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).parent))
from run_overhead import CELLS as CHART_CELLS  # noqa: E402

SMALL = ('# jupycron: {"every": "1 minute"}\nimport os, time\nstart = time.time()\n'
         'import json\nos.makedirs("stamps", exist_ok=True)\n'
         'with open(f"stamps/{os.environ[\'JUPYCRON_RUN_ID\']}.txt", "w") as fh:\n'
         '    fh.write(f"{start} {time.time()}")\nprint(json.dumps({"ok": True}))')


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _fill_history(output_dir: Path, rels: list[str], per_notebook: int) -> None:
    """Give each notebook ``per_notebook`` finished manual runs (a steady-state history;
    manual runs serve no slot, so every notebook is still due)."""
    from jupycron.ledger import NotebookHistory, SqliteRunStore
    from jupycron.models import Run, RunStatus, Trigger

    now = datetime.now(UTC)
    data = SqliteRunStore(output_dir).load()
    for rel in rels:
        entry = data.setdefault(rel, NotebookHistory())
        entry.runs = [Run(notebook=rel, run_id=f"{now - timedelta(hours=i + 1):%Y%m%dT%H%M%S}-{i:06x}",
                          started_at=now - timedelta(hours=i + 1), trigger=Trigger.MANUAL,
                          status=RunStatus.SUCCESS, finished_at=now - timedelta(hours=i + 1),
                          duration_s=1.0, pid=1, host="bench",
                          extra={"timing": {"cells_s": 0.5}, "max_mem_mb": 1000})
                      for i in range(per_notebook)]
    SqliteRunStore(output_dir, keep=max(per_notebook, 1)).replace_entries(data)


def burst(base, cells: list[str], count: int, pool: bool, history: int = 0) -> None:
    from jupycron.ledger import SqliteRunStore
    from jupycron.models import RunStatus
    from jupycron.scheduler import tick

    with tempfile.TemporaryDirectory(prefix="jupycron-burst-") as tmp:
        nbdir = Path(tmp) / "notebooks"
        nbdir.mkdir()
        rels = [f"n{i:03d}_autorun.ipynb" for i in range(count)]
        for rel in rels:
            nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), nbdir / rel)
        settings = replace(base, notebooks=nbdir, output=Path(tmp) / "out",
                           pool_size=-1 if pool else 0)
        SqliteRunStore(settings.output_dir).mark_deleted(rels, datetime.now(UTC) - timedelta(minutes=5))
        if history:
            _fill_history(settings.output_dir, rels, history)
        load = os.getloadavg()[0]
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        runs = tick(settings)
        wall = time.time() - t0
        try:  # reap the kernel template, so its kernels' CPU is counted
            from jupycron.kernels import forkserver
            forkserver.shutdown_all()
        except ImportError:
            pass
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_self = self1.ru_utime - self0.ru_utime + self1.ru_stime - self0.ru_stime
        cpu_child = child1.ru_utime - child0.ru_utime + child1.ru_stime - child0.ru_stime
        ok = sum(r.status is RunStatus.SUCCESS for r in runs)
        cells_s = sum(r.extra["timing"].get("cells_s", 0.0) for r in runs)
        fresh = [r.extra["timing"].get("start_s", 0) + r.extra["timing"].get("ready_s", 0)
                 for r in runs if not r.extra["timing"]["pooled"]]
        warm = statistics.median(fresh) if fresh else 0.0
        if pool:
            first = min(runs, key=lambda r: r.started_at)
            t = first.extra["timing"]
            warm = first.started_at.timestamp() - t0 + t.get("pool_wait_s", 0.0) \
                + t.get("start_s", 0.0) + t.get("ready_s", 0.0)
        forked = sum(bool(r.kernel and r.kernel.forked) for r in runs)
        cores = os.cpu_count() or 1
        target = 1.5 * cells_s / cores + warm
        spans = [(r.started_at.timestamp(), r.finished_at.timestamp()) for r in runs
                 if r.finished_at is not None]
        at_once = max_overlap(spans)
        waits = [r.started_at.timestamp() - t0 for r in runs]
        pooled = sum(bool(r.extra["timing"]["pooled"]) for r in runs)
        print(f"{'pool' if pool else 'no pool':8s} {count} due at once, cap {settings.concurrency}: "
              f"all done in {wall:5.1f} s ({ok} ok, {pooled} on pooled kernels); cell time "
              f"{cells_s:.1f} s; target 1.5 x {cells_s:.1f}/{cores} + {warm:.2f} = {target:.1f} s "
              f"-> {wall / target:.2f} x target; most at once {at_once}; longest wait to start "
              f"{max(waits):.1f} s; per run median {statistics.median(r.duration_s for r in runs):.2f} s; "
              f"load at start {load:.2f}; {forked} forked; CPU per run: this process "
              f"{cpu_self / count:.3f} s + children {cpu_child / count:.3f} s")
        assert ok == count and at_once <= settings.concurrency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--notebook", choices=("small", "chart"), default="small")
    ap.add_argument("--only", choices=("pool", "nopool"), default=None)
    ap.add_argument("--fork", choices=("on", "off"), default="on")
    ap.add_argument("--history", type=int, default=0,
                    help="finished runs per notebook already in the history (steady state: 100)")
    ap.add_argument("--preimport", default="", help="pool_preimport (e.g. pandas,altair)")
    args = ap.parse_args()

    from dataclasses import fields

    from jupycron import limits
    from jupycron.config import Settings

    base = Settings(concurrency=args.concurrency, pool_preimport=args.preimport)
    if "kernel_forkserver" in {f.name for f in fields(Settings)}:
        base = replace(base, kernel_forkserver=args.fork == "on")
    cells = CHART_CELLS if args.notebook == "chart" else [SMALL]
    if args.notebook == "chart":
        cells = [cells[0].replace('"1 day"', '"1 minute"'), *cells[1:]]
    for pool in (False, True):
        if args.only and (args.only == "pool") != pool:
            continue
        burst(base, cells, args.count, pool, args.history)
    print(f"memory caps via {limits.describe_method()}")


if __name__ == "__main__":
    main()
