"""Per-run overhead of jupycron against ``jupyter nbconvert --execute --to html``.

The notebook imports pandas and draws one Altair chart rendered as static SVG through
vl-convert (no CDN). Overhead = wall time from "due" to "HTML written" minus the notebook's
own cell time (nbclient's per-cell execute_input -> execute_reply timestamps, kept by the
runner in ``run.extra["timing"]["cells_s"]``). Each configuration runs ``--runs`` times
(default 5), median reported:

* ``nbconvert --execute``  - ``python -m nbconvert --execute --to html`` in a new process
  (its wall time; its overhead uses the fresh-kernel cell time of the same notebook);
* ``jupycron, no pool``    - what the daemon does at a slot: read the history, compute what is
  due, then :meth:`jupycron.scheduler.Scheduler.run_job` (locks, history rows, memory cgroup,
  a fresh kernel, all cells, offline HTML). "Due" is the start of that;
* ``jupycron, pool``       - the same with the daemon's kernel pool (``pool_size = -1``),
  waited until full before each run, as between two slots;
* ``jupycron, pool + preimport`` - the pool with ``pool_preimport = "pandas,altair"``: the
  imports move out of the notebook's cell time into the pool's warm-up.

The machine may be shared: the load average is printed before and after.

    python bench/run_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CELLS = [
    '# jupycron: {"every": "1 day"}\nimport altair as alt\nimport numpy as np\nimport pandas as pd\n'
    'alt.renderers.enable("svg")',
    'df = pd.DataFrame({"day": pd.date_range("2024-01-01", periods=60),\n'
    '                   "count": np.random.default_rng(1).integers(100, 200, 60)})\n'
    'alt.Chart(df).mark_line().encode(x="day:T", y="count:Q")',
]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from jupycron import discovery, limits
    from jupycron.config import Settings
    from jupycron.models import RunStatus, Trigger
    from jupycron.scheduler import Scheduler, due_runs

    print(f"load average before: {_load()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="jupycron-bench-") as tmp:
        root = Path(tmp)
        nbdir, out = root / "notebooks", root / "out"
        nbdir.mkdir()
        rel = "chart_autorun.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS],
                                    metadata={"kernelspec": {"name": "python3", "language": "python",
                                                             "display_name": "Python 3"}}),
                       nbdir / rel)
        base = Settings(notebooks=nbdir, output=out, concurrency=2)
        nb = discovery.read_notebook(nbdir / rel, rel)

        def jupycron(settings: Settings) -> list[tuple[float, float, float, dict]]:
            sched = Scheduler(settings, "daemon")
            sched.start_pool()
            from jupycron.export import warm_exporters
            warm_exporters(1)
            rows = []
            try:
                for _ in range(args.runs + 1):  # the first run warms the file cache
                    if sched.pool is not None:
                        while sched.pool.stats()["idle"] < sched.pool.size:
                            time.sleep(0.05)
                    t_due = time.time()
                    due_runs([nb], sched.history.load(), datetime.now(UTC))  # the slot's work
                    run = sched.run_job(nb, Trigger.MANUAL, None)
                    assert run is not None and run.status is RunStatus.SUCCESS, run
                    written = datetime.fromisoformat(run.extra["html_written_at"]).timestamp()
                    t = run.extra["timing"]
                    rows.append((written - t_due, t.get("cells_s", 0.0), written - t_due - t.get("cells_s", 0.0), t))
            finally:
                sched.close()
            return rows[1:]

        def nbconvert() -> float:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nbconvert", "--execute", "--to", "html",
                            "--output-dir", str(root / "nbconvert"), str(nbdir / rel)],
                           check=True, capture_output=True)
            return time.perf_counter() - t

        results: dict[str, tuple[float, float, float]] = {}
        configs = [("jupycron, no pool", base),
                   ("jupycron, pool", replace(base, pool_size=-1)),
                   ("jupycron, pool + preimport", replace(base, pool_size=-1,
                                                          pool_preimport="pandas,altair"))]
        nbconvert()
        walls = [nbconvert() for _ in range(args.runs)]
        for name, settings in configs:
            rows = jupycron(settings)
            med = tuple(statistics.median(r[i] for r in rows) for i in range(3))
            results[name] = med  # type: ignore[assignment]
            parts = {k: statistics.median(r[3].get(k, 0.0) for r in rows)
                     for k in ("pool_wait_s", "start_s", "ready_s", "cells_s", "export_s")}
            print(f"{name:28s} due->HTML {med[0]:5.2f} s  cells {med[1]:5.2f} s  overhead "
                  f"{med[2]:5.3f} s  (min {min(r[2] for r in rows):.3f}, max "
                  f"{max(r[2] for r in rows):.3f}, n={len(rows)})  parts "
                  + " ".join(f"{k}={v:.3f}" for k, v in parts.items()))
        nbc = statistics.median(walls)
        fresh_cells = results["jupycron, no pool"][1]
        print(f"{'nbconvert --execute':28s} wall     {nbc:5.2f} s  (min {min(walls):.2f}, max "
              f"{max(walls):.2f}, n={len(walls)}); overhead ~{nbc - fresh_cells:.2f} s "
              "(wall minus the fresh-kernel cell time)")
        for name, (wall, _cells, overhead) in results.items():
            print(f"ratio {name}: overhead / nbconvert wall = {overhead / nbc:.3f}; "
                  f"overhead / nbconvert overhead = {overhead / (nbc - fresh_cells):.3f}; "
                  f"due->HTML / nbconvert wall = {wall / nbc:.2f}")
        print(f"memory caps via {limits.describe_method()}; load average after: {_load()}")


if __name__ == "__main__":
    main()
