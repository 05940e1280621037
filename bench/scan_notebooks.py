"""Benchmark jupycron discovery: how long a scan of N autorun notebooks takes.

Creates N notebooks (default 10,000) of mixed sizes in a folder, written the way Jupyter
writes them (sorted keys, one-space indent), then times, for the current
``jupycron.discovery`` and for a baseline revision of it (``--baseline``, loaded from git):

* cold-ish: first scan after asking the kernel to drop the files from the page cache
  (``posix_fadvise(DONTNEED)`` after ``sync``; works without root, best effort);
* warm: a scan without ScanCache while the files are in the page cache;
* filling a ScanCache (warm), then a re-scan with it and nothing changed (stat only);
* tick, first: a scan with the persisted cache (``ScanCache.for_output``) and no cache file;
* tick, cache on disk: a fresh ``python`` process (what ``jupycron tick`` is every minute)
  loading ``<output>/.scan-cache.json`` and scanning; timed inside the process (load +
  scan) and as the whole process (interpreter start and imports included).
  The baseline had no persisted cache, so its tick is a warm scan without a cache.

Each timing is the median of ``--repeat`` runs (cold-ish: one run); wall time is reported,
with the CPU time of the process next to it because the 2-core machine is shared. The load
average is printed before and after.

Mix (per notebook, seeded): 80 % small (2-20 KB, text outputs), 14 % medium (one 100-500 KB
PNG output), 5 % large (1-2 MB of PNGs), 1 % huge (~5 MB of PNGs). The jupycron line is in the
first code cell for 85 %, after a cell with image outputs for 10 %, and missing for 5 %.

Usage: python bench/scan_notebooks.py [--n 10000] [--dir PATH] [--keep] [--seed 1]
                                      [--repeat 5] [--baseline REV | --no-baseline]
With ``--dir``, notebooks generated there before (same ``--n`` and ``--seed``) are reused.
"""

from __future__ import annotations

import argparse
import base64
import functools
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from jupycron import discovery  # noqa: E402

LINE = '# jupycron: {"every": "30 minute", "MaxMem": 500}\n'
#: the byte-unaware reader (head decode, then a str search) this work replaced
DEFAULT_BASELINE = "dead41e"
STAMP = ".bench-stamp.json"


def _cell(source: str, outputs: list | None = None, kind: str = "code") -> dict:
    cell: dict = {"cell_type": kind, "id": f"{random.getrandbits(32):08x}", "metadata": {},
                  "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=1, outputs=outputs or [])
    return cell


def _png(blob: str, n: int) -> dict:
    start = random.randrange(0, len(blob) - n)
    return {"data": {"image/png": blob[start:start + n], "text/plain": ["<Figure>"]},
            "metadata": {}, "output_type": "display_data"}


def _text_output(n: int) -> dict:
    return {"name": "stdout", "output_type": "stream",
            "text": [f"line {i} of some printed result\n" for i in range(n // 30)]}


def make_notebook(blob: str) -> str:
    r = random.random()
    if r < 0.80:
        images = []
    elif r < 0.94:
        images = [random.randint(100_000, 500_000)]
    elif r < 0.99:
        images = [random.randint(300_000, 700_000) for _ in range(3)]
    else:
        images = [1_250_000] * 4
    placement = random.random()
    code = "import pandas as pd\nfrom ooniutils import click_query_fsn\n"
    cells = [_cell("# Report\nSome words about this notebook.", kind="markdown")]
    img_cell = _cell("chart()\n", [_png(blob, n) for n in images] or [_text_output(500)])
    body = [_cell(f"df = query_{i}()\nprint(df)\n", [_text_output(random.randint(1_000, 15_000))])
            for i in range(random.randint(2, 8))]
    if placement < 0.85:
        cells += [_cell(LINE + code), img_cell, *body]
    elif placement < 0.95:
        cells += [img_cell, _cell(LINE + code), *body]
    else:
        cells += [_cell(code), img_cell, *body]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(root: Path, n: int, seed: int) -> tuple[int, int]:
    """Write the notebooks (or reuse the ones a previous run left with the same n and seed)."""
    stamp = root / STAMP
    want = {"n": n, "seed": seed}
    if stamp.is_file():
        got = json.loads(stamp.read_text())
        if {k: got.get(k) for k in want} == want:
            return n, int(got["bytes"])
    random.seed(seed)
    blob = base64.b64encode(random.randbytes(4_000_000)).decode()
    total = 0
    for i in range(n):
        d = root / f"team{i % 100:02d}" / ("sub" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        text = make_notebook(blob)
        (d / f"report {i:05d}_autorun.ipynb").write_text(text, encoding="utf-8")
        total += len(text)
    stamp.write_text(json.dumps({**want, "bytes": total}))
    return n, total


def drop_page_cache(root: Path) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    os.sync()
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def load_baseline(rev: str, tmp: Path) -> ModuleType:
    """``src/jupycron/discovery.py`` as of git revision ``rev``, imported next to the real one."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/jupycron/discovery.py"],
                            check=True, capture_output=True, text=True).stdout
    path = tmp / "baseline_discovery.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("jupycron._bench_baseline_discovery", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # relative imports resolve inside the jupycron package
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def median_of(repeat: int, fn: Callable[[], Any],
              before: Callable[[], Any] | None = None) -> tuple[float, float, Any]:
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        runs.append(timed(fn))
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            runs[-1][2])


def interleaved(repeat: int, fns: dict[str, Callable[[], Any]],
                before: Callable[[str], Any] | None = None) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) per implementation, running them in turn ``repeat`` times."""
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            if before is not None:
                before(k)
            w, c, _ = timed(fn)
            runs[k].append((w, c))
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
            for k, v in runs.items()}


TICK = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {src!r})
from jupycron.discovery import ScanCache, scan
t1 = time.perf_counter(); c1 = time.process_time()
found = scan({root!r}, {out!r}, cache := ScanCache.for_output({out!r}))
print(json.dumps({{"import": t1 - t0, "scan": time.perf_counter() - t1,
                  "cpu": time.process_time() - c1, "n": len(found), "hits": cache.hits}}))
"""


def tick_process(root: Path, out: Path, repeat: int) -> tuple[float, float, float, int]:
    """Median (in-process load + scan, its CPU, whole process wall) of ``repeat`` fresh processes."""
    code = TICK.format(src=str(REPO / "src"), root=str(root), out=str(out))
    scans, cpus, walls, hits = [], [], [], 0
    for _ in range(repeat):
        w = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - w)
        doc = json.loads(res.stdout)
        scans.append(doc["scan"])
        cpus.append(doc["cpu"])
        hits = doc["hits"]
    return statistics.median(scans), statistics.median(cpus), statistics.median(walls), hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, help="where to create the notebooks (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated notebooks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing (median reported)")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE,
                    help=f"git revision of discovery.py to compare with (default {DEFAULT_BASELINE})")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="jupycron-bench-"))
    tmp = Path(tempfile.mkdtemp(prefix="jupycron-bench-baseline-"))
    try:
        t_gen, _, (n, total) = timed(lambda: generate(root, args.n, args.seed))
        print(f"{n} notebooks, {total / 1e6:.0f} MB under {root} (ready in {t_gen:.1f} s)")
        out = root / "jupycron"
        out.mkdir(exist_ok=True)
        # ScanCache does not trust files changed in the last 2 s (see its docstring)
        time.sleep(max(0.0, 2.1 - (time.time() - (root / STAMP).stat().st_ctime)))
        cache_file = out / discovery.SCAN_CACHE_FILE
        impls: dict[str, ModuleType] = {"new": discovery}
        if not args.no_baseline:
            impls = {"baseline": load_baseline(args.baseline, tmp), **impls}
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        rows: dict[str, dict[str, tuple[float, float]]] = {}
        results: dict[str, Any] = {}
        dropped = False
        caches = {k: m.ScanCache() for k, m in impls.items()}

        def plain(k: str) -> Any:
            return impls[k].scan(root, out)

        def cached(k: str) -> Any:
            return impls[k].scan(root, out, caches[k])

        def fresh_cache(k: str) -> None:
            caches[k] = impls[k].ScanCache()

        for name in impls:
            dropped = drop_page_cache(root)
            w, c, results[name] = timed(functools.partial(plain, name))
            rows.setdefault("cold-ish", {})[name] = (w, c)
        rows[f"cold-ish ({'page cache dropped' if dropped else 'no fadvise'}, 1 run)"] = rows.pop("cold-ish")
        # the implementations take turns, so a change in the machine's load hits both alike
        rows["warm (no ScanCache)"] = interleaved(
            args.repeat, {k: functools.partial(plain, k) for k in impls})
        rows["filling a ScanCache (warm)"] = interleaved(
            args.repeat, {k: functools.partial(cached, k) for k in impls}, before=fresh_cache)
        rows["re-scan with ScanCache, no change"] = interleaved(
            args.repeat, {k: functools.partial(cached, k) for k in impls})
        for k in impls:
            assert cached(k) == results[k]
        found = results["new"]
        assert len(found) == n
        if "baseline" in results:
            diff = [(a, b) for a, b in zip(results["baseline"], found, strict=True) if a != b]
            print(f"WARNING: {len(diff)} notebooks differ, e.g. {diff[:2]}" if diff
                  else "baseline and new agree on every notebook")
        scheduled = sum(1 for nb in found if nb.schedulable)
        print(f"{scheduled} schedulable, {n - scheduled} not\n")

        # the persisted cache (new only): a first tick writes it, later ticks load it
        def first_tick() -> Any:
            return discovery.scan(root, out, discovery.ScanCache.for_output(out))
        w, c, _ = median_of(args.repeat, first_tick, before=lambda: cache_file.unlink(missing_ok=True))
        rows["tick, first (writes .scan-cache.json)"] = {"new": (w, c)}
        scan_s, cpu_s, proc_s, hits = tick_process(root, out, args.repeat)
        assert hits == n, f"the tick process hit only {hits} of {n} cache entries"
        warm_base = rows["warm (no ScanCache)"].get("baseline")
        rows["tick, cache on disk: load + scan"] = {"new": (scan_s, cpu_s)}
        rows["tick, cache on disk: whole process"] = {"new": (proc_s, float("nan"))}
        if warm_base:
            for label in ("tick, first (writes .scan-cache.json)", "tick, cache on disk: load + scan"):
                rows[label]["baseline"] = warm_base  # the baseline's tick was a plain scan

        head = (f"{'scan':<40}{'baseline s':>11}{'(cpu)':>8}{'new s':>8}{'(cpu)':>8}"
                f"{'speed-up':>9}{'(cpu)':>7}{'nb/s new':>10}")
        print(head)
        print("-" * len(head))
        for label, r in rows.items():
            b = r.get("baseline")
            w, c = r["new"]
            cols = [f"{label:<40}"]
            cols += [f"{b[0]:>11.3f}", f"{b[1]:>8.3f}"] if b else [f"{'-':>11}", f"{'-':>8}"]
            cols += [f"{w:>8.3f}", f"{c:>8.3f}" if c == c else f"{'-':>8}"]
            cols += [f"{b[0] / w:>8.1f}x", f"{b[1] / c:>6.1f}x" if c == c else f"{'-':>7}"] if b \
                else [f"{'-':>9}", f"{'-':>7}"]
            cols.append(f"{n / w:>10,.0f}")
            print("".join(cols))
        print(f"\ncache file: {cache_file.stat().st_size / 1e6:.1f} MB; load average after: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
