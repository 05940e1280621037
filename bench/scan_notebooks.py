"""Benchmark jupycron discovery: how long a scan of N autorun notebooks takes.

Creates N notebooks (default 10,000) of mixed sizes in a temporary folder, written the way
Jupyter writes them (sorted keys, one-space indent), then times:

* cold-ish: first scan after asking the kernel to drop the files from the page cache
  (``posix_fadvise(DONTNEED)`` after ``sync``; works without root, best effort);
* warm: a scan without ScanCache while the files are in the page cache;
* cached: a re-scan with a filled ScanCache and nothing changed (stat only).

Mix (per notebook, seeded): 80 % small (2-20 KB, text outputs), 14 % medium (one 100-500 KB
PNG output), 5 % large (1-2 MB of PNGs), 1 % huge (~5 MB of PNGs). The jupycron line is in the
first code cell for 85 %, after a cell with image outputs for 10 %, and missing for 5 %.

Usage: python bench/scan_notebooks.py [--n 10000] [--dir PATH] [--keep] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jupycron.discovery import ScanCache, scan  # noqa: E402

LINE = '# jupycron: {"every": "30 minute", "MaxMem": 500}\n'


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
    random.seed(seed)
    blob = base64.b64encode(random.randbytes(4_000_000)).decode()
    total = 0
    for i in range(n):
        d = root / f"team{i % 100:02d}" / ("sub" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        text = make_notebook(blob)
        (d / f"report {i:05d}_autorun.ipynb").write_text(text, encoding="utf-8")
        total += len(text)
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


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, help="where to create the notebooks (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated notebooks")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="jupycron-bench-"))
    try:
        t_gen, (n, total) = timed(lambda: generate(root, args.n, args.seed))
        print(f"generated {n} notebooks, {total / 1e6:.0f} MB, in {t_gen:.1f} s under {root}")
        out = root / "jupycron"
        dropped = drop_page_cache(root)
        t_cold, found = timed(lambda: scan(root, out))
        t_warm, found2 = timed(lambda: scan(root, out))
        cache = ScanCache()
        t_fill, _ = timed(lambda: scan(root, out, cache))
        t_cached, found3 = timed(lambda: scan(root, out, cache))
        assert found == found2 == found3 and len(found) == n
        scheduled = sum(1 for nb in found if nb.schedulable)
        print(f"{scheduled} schedulable, {n - scheduled} without a line\n")
        print(f"{'scan':<38}{'seconds':>9}{'notebooks/s':>14}")
        for label, t in [(f"cold-ish ({'page cache dropped' if dropped else 'no fadvise'})", t_cold),
                         ("warm (no ScanCache)", t_warm),
                         ("filling a ScanCache (warm)", t_fill),
                         ("re-scan with ScanCache, no change", t_cached)]:
            print(f"{label:<38}{t:>9.3f}{n / t:>14,.0f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
