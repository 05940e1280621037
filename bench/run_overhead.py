"""Per-run cost of jupycron against the old tool, ``jupyter nbconvert --execute --to html``.

The notebook imports pandas and draws one Altair chart rendered as static SVG through
vl-convert (no CDN). Each tool runs it ``--runs`` times (default 5) in a fresh kernel:

* ``jupycron (in process)``  - :func:`jupycron.runner.run_notebook` as the daemon calls it:
  history rows, memory cgroup, kernel start, all cells, offline HTML;
* ``jupycron run-now (CLI)`` - the same through ``python -m jupycron run-now`` (adds the
  Python start-up and imports of a new process, like a tick from a timer);
* ``nbconvert --execute``    - ``python -m nbconvert --execute --to html`` in a new process.

Prints the median wall time of each and the ratios to nbconvert. The machine may be shared:
run it on a quiet one for numbers to compare.

    python bench/run_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
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


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from jupycron import discovery, limits
    from jupycron.config import Settings
    from jupycron.models import RunStatus
    from jupycron.runner import run_notebook

    with tempfile.TemporaryDirectory(prefix="jupycron-bench-") as tmp:
        root = Path(tmp)
        nbdir, out = root / "notebooks", root / "out"
        nbdir.mkdir()
        rel = "chart_autorun.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS],
                                    metadata={"kernelspec": {"name": "python3", "language": "python",
                                                             "display_name": "Python 3"}}),
                       nbdir / rel)
        settings = Settings(notebooks=nbdir, output=out, concurrency=1)
        nb = discovery.read_notebook(nbdir / rel, rel)

        def in_process() -> None:
            run = run_notebook(settings, nb)
            assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)

        def cli() -> None:
            subprocess.run([sys.executable, "-m", "jupycron", "--notebooks", str(nbdir), "--output",
                            str(out), "run-now", rel], check=True, capture_output=True)

        def nbconvert() -> None:
            subprocess.run([sys.executable, "-m", "nbconvert", "--execute", "--to", "html",
                            "--output-dir", str(root / "nbconvert"), str(nbdir / rel)],
                           check=True, capture_output=True)

        in_process()  # warm the file cache and check the notebook works
        html = (out / "chart_autorun.html").read_text()
        assert 'data-mime-type="image/svg+xml"' in html, "the chart was not rendered as SVG"
        results = {}
        for name, fn in (("jupycron (in process)", in_process), ("jupycron run-now (CLI)", cli),
                         ("nbconvert --execute", nbconvert)):
            times = [_time(fn) for _ in range(args.runs)]
            results[name] = statistics.median(times)
            print(f"{name:26s} median {results[name]:6.2f} s  "
                  f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)})")
        base = results["nbconvert --execute"]
        for name in ("jupycron (in process)", "jupycron run-now (CLI)"):
            print(f"ratio {name} / nbconvert: {results[name] / base:.2f}")
        print(f"memory caps via {limits.describe_method()}; HTML {len(html) // 1024} KB, "
              f"nbconvert HTML {(root / 'nbconvert' / 'chart_autorun.html').stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
