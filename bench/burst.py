"""A burst: N notebooks (default 50) due in the same minute, run by one ``jupycron tick``.

Each notebook is small (imports json, writes its start/end time); what is measured is the
scheduler: kernel start-up, execution, HTML, history, under the global concurrency cap
(default 2, the cores of the test machine). Prints the wall time until all are done, the
per-run median, and the highest number of runs in progress at once (from the history's
start/finish times: a run holds a global slot for longer than that), which must not exceed
the cap; the notebooks' own timestamps are printed too.

    python bench/burst.py [--count 50] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CELL = ('# jupycron: {"every": "1 minute"}\nimport os, time\nstart = time.time()\n'
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    from jupycron import limits
    from jupycron.config import Settings
    from jupycron.history import History
    from jupycron.models import RunStatus
    from jupycron.scheduler import tick

    with tempfile.TemporaryDirectory(prefix="jupycron-burst-") as tmp:
        nbdir = Path(tmp) / "notebooks"
        nbdir.mkdir()
        rels = [f"n{i:03d}_autorun.ipynb" for i in range(args.count)]
        for rel in rels:
            nbformat.write(new_notebook(cells=[new_code_cell(CELL)]), nbdir / rel)
        settings = Settings(notebooks=nbdir, output=Path(tmp) / "out", concurrency=args.concurrency)
        History(settings.output_dir).mark_deleted(rels, datetime.now(UTC) - timedelta(minutes=5))

        t0 = time.perf_counter()
        runs = tick(settings)
        wall = time.perf_counter() - t0

        ok = sum(r.status is RunStatus.SUCCESS for r in runs)
        stamps = [tuple(map(float, p.read_text().split())) for p in (nbdir / "stamps").iterdir()]
        durations = [r.duration_s for r in runs if r.duration_s is not None]
        print(f"{args.count} notebooks due at once, concurrency {args.concurrency}: "
              f"all done in {wall:.1f} s ({ok} succeeded)")
        print(f"per run: median {statistics.median(durations):.2f} s, "
              f"throughput {len(runs) / wall * 60:.0f} runs/min")
        spans = [(r.started_at.timestamp(), r.finished_at.timestamp()) for r in runs
                 if r.finished_at is not None]
        at_once = max_overlap(spans)
        print(f"most runs at once (history start..finish, kernel to HTML): {at_once} "
              f"(cap {args.concurrency}); most cells at once (notebook timestamps): "
              f"{max_overlap(stamps)}")  # type: ignore[arg-type]
        print(f"memory caps via {limits.describe_method()}")
        assert ok == args.count and at_once <= args.concurrency


if __name__ == "__main__":
    main()
