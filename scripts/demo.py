"""The demo behind `make demo`: build a sample world and run every shipped notebook.

Steps (each one the real command an operator would type):
  1. a notebooks folder under --dir with the shipped notebooks copied in, and
     --dir/jupycron.toml: the one settings file of the demo (relative paths; its [ooniutils]
     table names the data folder, so every run, Run now and kernel reads the demo's data);
  2. the embedded store under --dir/data: `ooniutils data init`, `ooniutils data generate`
     (90 days, injected incidents, ground truth JSON), plus the real samples in
     ../shared/data when they are there (`load-sql`, `load-test-lists`), and a sample
     journal shipped with `ooniutils logs ship`;
  3. `jupycron --config jupycron.toml run-now` for every autorun notebook (--jobs at a
     time), then `jupycron list`; the interactive notebooks (no `autorun` in their name,
     never scheduled) with `jupyter nbconvert --execute`;
  4. prints where to look.

Every command reads its settings from jupycron.toml (ooniutils through
OONI_MONITORING_CONFIG); inherited OONI_* / JUPYCRON_* variables are dropped so the demo
never touches another store. --small generates a smaller world (30 days) for tests.

Exit status is non-zero when any notebook did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


_print_lock = threading.Lock()


HARMLESS = ("[NbConvertApp] WARNING | Alternative text is missing on",)
"""nbconvert's accessibility nag for every chart (an image without a description): it then
writes a generic ``alt`` itself, so there is nothing for an operator to do. Dropped from
the demo's log (jupycron drops the same warning from its own)."""


def run(args: list[str], env: dict[str, str], check: bool = True, cwd: Path | None = None) -> int:
    """Run one command, its output printed as one block after it ends (commands may run in
    parallel) without the :data:`HARMLESS` lines; raise on failure when ``check``."""
    proc = subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = "".join(line for line in proc.stdout.decode("utf-8", "replace").splitlines(keepends=True)
                   if not line.startswith(HARMLESS))
    with _print_lock:
        print("$ " + " ".join(args), flush=True)
        sys.stdout.write(text)
        sys.stdout.flush()
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, args)
    return proc.returncode


def write_config(demo: Path) -> Path:
    """demo/jupycron.toml, paths relative to it (the folder can be moved)."""
    cfg = demo / "jupycron.toml"
    cfg.write_text(
        "# jupycron settings for the demo (docs/CONFIGURATION.md); relative paths are\n"
        "# relative to this file's folder.\n"
        'notebooks = "notebooks"\n'
        'output = "notebooks/jupycron"\n'
        f"output_base_url = {json.dumps((demo / 'notebooks' / 'jupycron').as_uri())}\n"
        "\n"
        "# The run environment: what every notebook run (tick, daemon, run-now, the dashboard's\n"
        "# Run now), the run-state alerts and, through OONI_MONITORING_CONFIG, ooniutils\n"
        "# commands and interactive kernels read.\n"
        "[ooniutils]\n"
        'data_dir = "data"\n')
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=REPO / "demo", help="demo folder (default ./demo)")
    ap.add_argument("--days", type=int, default=None, help="days of generated measurements (default 90)")
    ap.add_argument("--rows", type=int, default=None, help="generated fastpath rows (default: generator's)")
    ap.add_argument("--small", action="store_true",
                    help="a smaller world for tests: 30 days, 200,000 rows, a 2,000-line journal")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="notebooks run at once (default: CPU count)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    days = args.days or (30 if args.small else 90)
    rows = args.rows or (200_000 if args.small else None)
    journal_lines = 2000 if args.small else 20000

    demo = args.dir.resolve()
    notebooks = demo / "notebooks"
    output = notebooks / "jupycron"
    bindir = Path(sys.executable).parent
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("OONI_", "JUPYCRON_")) and k != "AUTORUN"}
    base_env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    ooniutils = [str(bindir / "ooniutils")]

    step(f"Fresh demo folder {demo}")
    if demo.exists():
        shutil.rmtree(demo)
    notebooks.mkdir(parents=True)
    shipped = sorted(p for p in (REPO / "notebooks").glob("*.ipynb"))
    for nb in shipped:
        shutil.copy2(nb, notebooks / nb.name)
    print(f"copied {len(shipped)} notebooks into {notebooks}")
    cfg = write_config(demo)
    print(f"settings: {cfg}")
    env = {**base_env, "OONI_MONITORING_CONFIG": str(cfg)}  # ooniutils reads [ooniutils] there
    jupycron = [str(bindir / "jupycron"), "--config", str(cfg)]

    step("Measurement store (embedded chDB over Parquet parts)")
    t0 = time.monotonic()
    run(ooniutils + ["data", "init"], env)
    gen = ooniutils + ["data", "generate", "--days", str(days), "--seed", str(args.seed),
                       "--truth", str(demo / "ground_truth.json")]
    if rows:
        gen += ["--rows", str(rows)]
    run(gen, env)
    if SHARED.exists():
        run(ooniutils + ["data", "load-sql", str(SHARED / "ooni-fastpath-sample.sql")], env)
        run(ooniutils + ["data", "load-test-lists", str(SHARED / "test-lists-sample")], env)
    else:
        print(f"({SHARED} is absent: only generated data is used)")
    journal = demo / "journal.json"
    run(ooniutils + ["logs", "sample", str(journal), "--lines", str(journal_lines)], env)
    run(ooniutils + ["logs", "ship", "--from-file", str(journal),
                     "--cursor-file", str(demo / "state" / "logship.cursor")], env)
    run(ooniutils + ["data", "info"], env, cwd=demo)
    print(f"store ready in {time.monotonic() - t0:.1f}s")

    step(f"Running every autorun notebook with jupycron ({args.jobs} at a time)")
    autorun = [nb for nb in shipped if "autorun" in nb.name]
    interactive_nbs = [nb for nb in shipped if nb not in autorun]
    interactive = demo / "interactive"

    def run_autorun(nb: Path) -> int:
        return run(jupycron + ["run-now", nb.name], base_env, check=False)

    ipc = Path(tempfile.mkdtemp(prefix="demo-ipc-"))  # short: Unix socket paths are limited

    def run_interactive(nb: Path) -> int:
        # IPC: the kernel talks over Unix sockets (one prefix per notebook, as they run in
        # parallel), not plain-text loopback TCP, which ipykernel warns about;
        # --log-level WARN keeps nbconvert's warnings but not its progress lines.
        return run([str(bindir / "jupyter"), "nbconvert", "--execute", "--to", "html",
                    "--KernelManager.transport=ipc", f"--KernelManager.ip={ipc / nb.stem}",
                    "--log-level=WARN", "--output-dir", str(interactive), str(notebooks / nb.name)],
                   {**env, "PWD": str(notebooks)}, check=False, cwd=notebooks)

    t1 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = dict(zip(autorun, pool.map(run_autorun, autorun), strict=True))
    run(jupycron + ["list"], base_env, check=False)
    step("Executing the interactive notebooks (not scheduled) as an operator would")
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            codes |= dict(zip(interactive_nbs, pool.map(run_interactive, interactive_nbs), strict=True))
    finally:
        shutil.rmtree(ipc, ignore_errors=True)
    failed = [nb.name for nb, code in codes.items() if code != 0]
    print(f"notebooks ran in {time.monotonic() - t1:.1f}s")

    step("Where to look")
    truth = json.loads((demo / "ground_truth.json").read_text())
    incidents = truth.get("incidents", truth if isinstance(truth, list) else [])
    rel_cfg = os.path.relpath(cfg)
    rel_cfg = cfg if rel_cfg.startswith("..") else rel_cfg  # as the README writes it, from the clone
    print(f"settings          {cfg}")
    print(f"summary page      {output / 'summary.html'}")
    print(f"notebook outputs  {output}/*.html")
    print(f"interactive ones  {interactive}/*.html")
    print(f"run ledger        {output / '.jupycron.sqlite'}  (sqlite3 -readonly ...)")
    print(f"ground truth      {demo / 'ground_truth.json'} ({len(incidents)} injected incidents)")
    print(f"dashboard         {bindir / 'jupycron'} --config {rel_cfg} passwd admin")
    print(f"                  {bindir / 'jupycron'} --config {rel_cfg} serve"
          "   # http://127.0.0.1:8080")
    if failed:
        print(f"\n{len(failed)} notebook(s) did not succeed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(shipped)} notebooks succeeded ({len(autorun)} autorun through jupycron, "
          f"{len(shipped) - len(autorun)} interactive)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
