"""The demo behind `make demo`: build a sample world and run every shipped notebook.

Steps (each one the real command an operator would type):
  1. a notebooks folder under --dir with the shipped notebooks copied in;
  2. the embedded store under --dir/data: `ooniutils data init`, `ooniutils data generate`
     (90 days, injected incidents, ground truth JSON), plus the real samples in
     ../shared/data when they are there (`load-sql`, `load-test-lists`);
  3. `jupycron run-now` for every autorun notebook, then `jupycron list`; the interactive
     notebooks (no `autorun` in their name, never scheduled) with `jupyter nbconvert --execute`;
  4. prints where to look.

Exit status is non-zero when any notebook did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(args: list[str], env: dict[str, str], check: bool = True, cwd: Path | None = None) -> int:
    print("$ " + " ".join(args), flush=True)
    return subprocess.run(args, env=env, check=check, cwd=cwd).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=REPO / "demo", help="demo folder (default ./demo)")
    ap.add_argument("--days", type=int, default=90, help="days of generated measurements")
    ap.add_argument("--rows", type=int, default=None, help="generated fastpath rows (default: generator's)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    demo = args.dir.resolve()
    notebooks = demo / "notebooks"
    output = notebooks / "jupycron"
    data = demo / "data"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "OONI_DATA_DIR": str(data), "JUPYCRON_NOTEBOOKS": str(notebooks),
           "JUPYCRON_OUTPUT": str(output),
           "OONI_OUTPUT_BASE_URL": output.as_uri(),
           "JUPYCRON_STATE_DIR": str(demo / "state"),
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    ooniutils = [str(bindir / "ooniutils")]
    jupycron = [str(bindir / "jupycron")]

    step(f"Fresh demo folder {demo}")
    if demo.exists():
        shutil.rmtree(demo)
    notebooks.mkdir(parents=True)
    shipped = sorted(p for p in (REPO / "notebooks").glob("*.ipynb"))
    for nb in shipped:
        shutil.copy2(nb, notebooks / nb.name)
    print(f"copied {len(shipped)} notebooks into {notebooks}")
    (demo / "jupycron.toml").write_text(
        f"# jupycron settings for the demo (see docs/CONFIGURATION.md)\n"
        f"notebooks = {json.dumps(str(notebooks))}\n"
        f"output = {json.dumps(str(output))}\n")

    step("Measurement store (embedded chDB over Parquet parts)")
    t0 = time.monotonic()
    run(ooniutils + ["data", "init"], env)
    gen = ooniutils + ["data", "generate", "--days", str(args.days), "--seed", str(args.seed),
                       "--truth", str(demo / "ground_truth.json")]
    if args.rows:
        gen += ["--rows", str(args.rows)]
    run(gen, env)
    if SHARED.exists():
        run(ooniutils + ["data", "load-sql", str(SHARED / "ooni-fastpath-sample.sql")], env)
        run(ooniutils + ["data", "load-test-lists", str(SHARED / "test-lists-sample")], env)
    else:
        print(f"({SHARED} is absent: only generated data is used)")
    journal = demo / "journal.json"
    run(ooniutils + ["logs", "sample", str(journal), "--lines", "20000"], env)
    run(ooniutils + ["logs", "ship", "--from-file", str(journal),
                     "--cursor-file", str(demo / "state" / "logship.cursor")], env)
    run(ooniutils + ["data", "info"], env)
    print(f"store ready in {time.monotonic() - t0:.1f}s")

    step("Running every autorun notebook with jupycron")
    failed = []
    autorun = [nb for nb in shipped if "autorun" in nb.name]
    for nb in autorun:
        code = run(jupycron + ["run-now", nb.name], env, check=False)
        if code != 0:
            failed.append(nb.name)
    run(jupycron + ["list"], env, check=False)

    step("Executing the interactive notebooks (not scheduled) as an operator would")
    interactive = demo / "interactive"
    for nb in shipped:
        if nb in autorun:
            continue
        code = run([str(bindir / "jupyter"), "nbconvert", "--execute", "--to", "html",
                    "--output-dir", str(interactive), str(notebooks / nb.name)],
                   {**env, "PWD": str(notebooks)}, check=False, cwd=notebooks)
        if code != 0:
            failed.append(nb.name)

    step("Where to look")
    truth = json.loads((demo / "ground_truth.json").read_text())
    incidents = truth.get("incidents", truth if isinstance(truth, list) else [])
    print(f"summary page      {output / 'summary.html'}")
    print(f"notebook outputs  {output}/*.html")
    print(f"interactive ones  {interactive}/*.html")
    print(f"run history       {output / '.history.json'}")
    print(f"ground truth      {demo / 'ground_truth.json'} ({len(incidents)} injected incidents)")
    print(f"dashboard         {' '.join(jupycron)} --config {demo / 'jupycron.toml'} passwd admin")
    print(f"                  {' '.join(jupycron)} --config {demo / 'jupycron.toml'} serve"
          "   # http://127.0.0.1:8080")
    if failed:
        print(f"\n{len(failed)} notebook(s) did not succeed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(shipped)} notebooks succeeded ({len(autorun)} autorun through jupycron, "
          f"{len(shipped) - len(autorun)} interactive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
