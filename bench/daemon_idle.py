"""What the jupycron daemon costs while it sleeps between slots: CPU and memory.

Creates a folder of ``--notebooks`` autorun notebooks whose slots are far away (default
``{"every": "1 day"}``: a notebook first seen now is not due before the next 00:00 UTC; the
script refuses to start when that slot would fall inside the measurement), starts
``python -m jupycron daemon`` on it, waits until its heartbeat is written (and, with a pool,
until the pool's kernels are idle) plus ``--settle`` seconds, then samples for
``--duration`` seconds (≥ 60):

* CPU: user+system time of the daemon and of every kernel it owns (its descendants and the
  pool's idle kernels from the heartbeat; they may live in a systemd scope, outside the
  process tree), as % of one core;
* memory: RSS of the daemon (first, last, max of one-second samples) and the kernels'
  total; the daemon's voluntary context switches per second (its wake-ups);
* checks: no run started (the history holds no runs), and no kernel process exists unless a
  pool is configured.

Each case runs its own daemon. Cases: ``no pool`` and, with ``--pool N`` (default 2), a pool
of N kernels set through a ``--config`` TOML (``pool_size = N``).

    .venv/bin/python bench/daemon_idle.py [--notebooks 200] [--duration 60] [--pool 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import psutil

MB = 1024 * 1024


def make_notebooks(folder: Path, count: int, spec: str) -> None:
    """``count`` small autorun notebooks in 10 sub-folders, each with a jupycron line."""
    for i in range(count):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# Report {i}"),
                    nbformat.v4.new_code_cell(f"# jupycron: {spec}\nimport os\nprint({i})")]
        sub = folder / f"team{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, sub / f"report-{i:04d}-autorun.ipynb")


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def heartbeat(output: Path) -> dict | None:
    try:
        return json.loads((output / ".scheduler.json").read_text())
    except (OSError, ValueError):
        return None


def kernels(daemon: psutil.Process, output: Path) -> dict[int, psutil.Process]:
    """The daemon's descendants and the pool's idle kernels named by the heartbeat."""
    found = {p.pid: p for p in daemon.children(recursive=True)}
    hb = heartbeat(output) or {}
    for pid in (hb.get("pool") or {}).get("idle_pids", []):
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            continue
        for p in (root, *root.children(recursive=True)):
            found.setdefault(p.pid, p)
    return found


def wait_ready(daemon: psutil.Process, output: Path, pool: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE:
            raise SystemExit("the daemon exited during start-up (see its log)")
        hb = heartbeat(output)
        if hb and hb.get("pid") == daemon.pid and (pool == 0 or (hb.get("pool") or {}).get("idle", 0) >= pool):
            return
        time.sleep(0.5)
    raise SystemExit(f"the daemon was not ready after {timeout:.0f}s (heartbeat: {heartbeat(output)})")


def measure(args: argparse.Namespace, pool: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="daemon-idle-") as tmp:
        root = Path(tmp)
        notebooks, output = root / "notebooks", root / "out"
        make_notebooks(notebooks, args.notebooks, args.spec)
        cmd = [sys.executable, "-m", "jupycron", "--notebooks", str(notebooks), "--output", str(output)]
        if pool:
            (root / "jupycron.toml").write_text(f"pool_size = {pool}\n")
            cmd += ["--config", str(root / "jupycron.toml")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYCRON_")}
        log = (root / "daemon.log").open("w")
        proc = subprocess.Popen([*cmd, "daemon"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            daemon = psutil.Process(proc.pid)
            t_start = time.monotonic()
            wait_ready(daemon, output, pool)
            ready_s = time.monotonic() - t_start
            time.sleep(args.settle)
            ks = kernels(daemon, output)
            load0 = os.getloadavg()[0]
            c0 = cpu_s(daemon)
            k0 = {pid: cpu_s(p) for pid, p in ks.items()}
            ctx0 = daemon.num_ctx_switches().voluntary
            t0 = time.monotonic()
            rss, krss, loads = [], [], []
            while time.monotonic() - t0 < args.duration:
                rss.append(daemon.memory_info().rss / MB)
                krss.append(sum(p.memory_info().rss for p in ks.values() if p.is_running()) / MB)
                loads.append(os.getloadavg()[0])
                time.sleep(1.0)
            elapsed = time.monotonic() - t0
            d_cpu = cpu_s(daemon) - c0
            k_cpu = sum(cpu_s(p) - k0[pid] for pid, p in ks.items() if p.is_running())
            ctx = daemon.num_ctx_switches().voluntary - ctx0
            after = kernels(daemon, output)
            threads = daemon.num_threads()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
        history = output / ".history.json"
        runs = 0
        if history.exists():
            data = json.loads(history.read_text())
            entries = data.get("notebooks", data) if isinstance(data, dict) else {}
            runs = sum(len(e.get("runs", [])) for e in entries.values() if isinstance(e, dict))
        return {"pool": pool, "ready_s": round(ready_s, 1), "elapsed_s": round(elapsed, 1),
                "daemon_cpu_pct": round(100 * d_cpu / elapsed, 3),
                "kernels_cpu_pct": round(100 * k_cpu / elapsed, 3), "kernels": len(ks),
                "kernels_after": len(after), "rss_first_mb": round(rss[0], 1), "rss_last_mb": round(rss[-1], 1),
                "rss_max_mb": round(max(rss), 1), "kernels_rss_mb": round(statistics.median(krss), 1),
                "wakeups_per_s": round(ctx / elapsed, 1), "threads": threads, "runs": runs,
                "load_before": round(load0, 2), "load_during": round(statistics.mean(loads), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", type=int, default=200)
    ap.add_argument("--duration", type=float, default=60.0, help="sampling window (s), at least 60")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after readiness before sampling")
    ap.add_argument("--pool", type=int, default=2, help="pool size of the second case (0: skip it)")
    ap.add_argument("--spec", default='{"every": "1 day"}', help="the notebooks' jupycron line")
    args = ap.parse_args()
    if args.duration < 60:
        ap.error("--duration must be at least 60 s")
    from jupycron.discovery import parse_spec
    from jupycron.schedule import next_slot

    now = datetime.now(UTC)
    window = timedelta(seconds=(120 + args.settle + args.duration) * (2 if args.pool else 1) + 60)
    first = next_slot(parse_spec(args.spec), now)
    if first - now < window:
        ap.error(f"the next slot of {args.spec} is {first:%H:%M} UTC, inside the measurement; "
                 'pass another --spec (e.g. \'{"every": "7 day"}\')')
    print(f"{args.notebooks} notebooks, spec {args.spec} (next slot {first:%Y-%m-%d %H:%M} UTC), "
          f"{os.cpu_count()} cores", flush=True)
    failed = False
    for pool in [0, args.pool] if args.pool else [0]:
        r = measure(args, pool)
        name = f"pool {pool}" if pool else "no pool"
        print(f"{name:8} daemon CPU {r['daemon_cpu_pct']:.2f} % of a core, kernels CPU {r['kernels_cpu_pct']:.2f} % "
              f"({r['kernels']} kernel processes); daemon RSS {r['rss_first_mb']:.0f} → {r['rss_last_mb']:.0f} MB "
              f"(max {r['rss_max_mb']:.0f}), kernels RSS {r['kernels_rss_mb']:.0f} MB; {r['wakeups_per_s']} wake-ups/s, "
              f"{r['threads']} threads; ready after {r['ready_s']}s; runs started {r['runs']}; "
              f"load {r['load_before']} → {r['load_during']} over {r['elapsed_s']}s", flush=True)
        if r["runs"]:
            print(f"  FAIL: {r['runs']} run(s) started; the notebooks were meant to be idle")
            failed = True
        if pool == 0 and (r["kernels"] or r["kernels_after"]):
            print(f"  FAIL: {max(r['kernels'], r['kernels_after'])} kernel process(es) without a pool")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
