"""What the jupycron daemon costs while it sleeps between slots: CPU and memory.

Creates a folder of ``--notebooks`` autorun notebooks (a comma-separated list of counts runs
one case per count) whose slots are far away (default ``{"every": "7 day"}``: a notebook
first seen now is not due before the next slot; the script refuses to start when that slot
would fall inside the measurement), optionally with ``--history-runs`` finished scheduled
runs per notebook already in the history (a daemon that has been up for a while: every past
slot served), starts ``python -m jupycron daemon`` on it, waits until its heartbeat is
written (and, with a pool, until the pool's kernels are idle) plus ``--settle`` seconds,
then samples for ``--duration`` seconds (default 120, at least 60):

* CPU: user+system time of the daemon and of every kernel it owns (its descendants and the
  pool's idle kernels from the heartbeat; they may live in a systemd scope, outside the
  process tree), as % of one core;
* memory: RSS of the daemon (first, last, max of one-second samples; growth = median of the
  last 30 samples minus median of the first 30, which must stay near 0 for a daemon that
  rescans every 10 s) and the kernels' total; the daemon's voluntary context switches per
  second (its wake-ups);
* checks: no run started (the history holds no runs), and no kernel process exists unless a
  pool is configured.

Each case runs its own daemon. Cases: ``no pool`` and, with ``--pool N`` (default 2), a pool
of N kernels set through a ``--config`` TOML (``pool_size = N``). With ``--baseline-commit
REV`` every case also runs against that revision (checked out as a temporary ``git
worktree``, put first on the daemon's ``PYTHONPATH``), just before the current code, and a
side-by-side table ends the output. CPU is process time, not wall time, so other load on the
machine barely moves it; the load average is printed anyway.

    .venv/bin/python bench/daemon_idle.py [--notebooks 200,1000] [--duration 120] [--pool 2]
        [--history-runs 0] [--baseline-commit ca65896]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import psutil

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]


def make_notebooks(folder: Path, count: int, spec: str) -> None:
    """``count`` small autorun notebooks in 10 sub-folders, each with a jupycron line."""
    for i in range(count):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# Report {i}"),
                    nbformat.v4.new_code_cell(f"# jupycron: {spec}\nimport os\nprint({i})")]
        sub = folder / f"team{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, sub / f"report-{i:04d}-autorun.ipynb")


def write_history(output: Path, folder: Path, spec_text: str, runs: int, now: datetime) -> int:
    """A history in which every notebook under ``folder`` has ``runs`` finished scheduled
    runs at its latest slots (so none is due); returns the run count. Written as a
    ``.history.json`` (format 1): versions before the run ledger read it, the ledger imports
    it at the daemon's start, so a ``--baseline-commit`` case gets the same history."""
    from jupycron.discovery import parse_spec
    from jupycron.models import Run, RunStatus, Trigger
    from jupycron.schedule import latest_slot, next_slot

    spec = parse_spec(spec_text)
    latest = latest_slot(spec, now)
    assert latest is not None
    slots = [latest]
    while len(slots) < runs:  # walk back: the slot before s is the latest slot before s
        prev = latest_slot(spec, slots[-1] - timedelta(microseconds=1))
        assert prev is not None and next_slot(spec, prev) == slots[-1]
        slots.append(prev)
    data = {}
    for path in sorted(folder.rglob("*autorun*.ipynb")):
        rel = path.relative_to(folder).as_posix()
        data[rel] = {"deleted_at": None, "last_success_output": None,
                     "first_seen": (slots[-1] - timedelta(days=1)).isoformat(), "runs": [
            Run(notebook=rel, run_id=f"{slot:%Y%m%dT%H%M%S}-{i:06x}", started_at=slot,
                status=RunStatus.SUCCESS if i % 7 else RunStatus.FAILED, trigger=Trigger.SCHEDULE,
                slot=slot, finished_at=slot + timedelta(seconds=12), duration_s=12.0,
                peak_mem_mb=180.0, output=path.with_suffix(".html").relative_to(folder).as_posix(),
                host="bench", memory_limit="rlimit",
                error_name=None if i % 7 else "ValueError", error_value=None if i % 7 else "bad input"
                ).to_json()
            for i, slot in enumerate(slots[:runs])]}
    output.mkdir(parents=True, exist_ok=True)
    (output / ".history.json").write_text(json.dumps({"version": 1, "notebooks": data}))
    return runs * len(data)


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _ledger_query(output: Path, sql: str) -> list[tuple] | None:
    """Rows of ``sql`` on the run ledger (read-only), None when there is none (a baseline
    older than the ledger keeps JSON files instead)."""
    path = output / ".jupycron.sqlite"
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def heartbeat(output: Path) -> dict | None:
    rows = _ledger_query(output, "SELECT value FROM state WHERE key = 'heartbeat'")
    try:
        if rows is not None:
            return json.loads(rows[0][0]) if rows else None
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


def measure(args: argparse.Namespace, count: int, pool: int, src: Path) -> dict[str, Any]:
    """One case: a daemon (code from ``src``) on ``count`` idle notebooks."""
    with tempfile.TemporaryDirectory(prefix="daemon-idle-") as tmp:
        root = Path(tmp)
        notebooks, output = root / "notebooks", root / "out"
        make_notebooks(notebooks, count, args.spec)
        seeded = (write_history(output, notebooks, args.spec, args.history_runs, datetime.now(UTC))
                  if args.history_runs else 0)
        cmd = [sys.executable, "-m", "jupycron", "--notebooks", str(notebooks), "--output", str(output)]
        # always explicit: pool_size defaults to -1 (one kernel per concurrent run) since 27ae212
        (root / "jupycron.toml").write_text(f"pool_size = {pool}\n")
        cmd += ["--config", str(root / "jupycron.toml")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYCRON_")}
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
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
        counted = _ledger_query(output, "SELECT count(*) FROM runs")
        if counted is not None:
            runs = counted[0][0] if counted else 0
        elif history.exists():
            data = json.loads(history.read_text())
            entries = data.get("notebooks", data) if isinstance(data, dict) else {}
            runs = sum(len(e.get("runs", [])) for e in entries.values() if isinstance(e, dict))
        runs -= seeded
        head, tail = rss[:30], rss[-30:]
        return {"pool": pool, "notebooks": count, "ready_s": round(ready_s, 1), "elapsed_s": round(elapsed, 1),
                "rss_growth_mb": round(statistics.median(tail) - statistics.median(head), 2),
                "rss_per_min": [round(statistics.median(rss[i:i + 60]), 1) for i in range(0, len(rss), 60)],
                "daemon_cpu_pct": round(100 * d_cpu / elapsed, 3),
                "kernels_cpu_pct": round(100 * k_cpu / elapsed, 3), "kernels": len(ks),
                "kernels_after": len(after), "rss_first_mb": round(rss[0], 1), "rss_last_mb": round(rss[-1], 1),
                "rss_max_mb": round(max(rss), 1), "kernels_rss_mb": round(statistics.median(krss), 1),
                "wakeups_per_s": round(ctx / elapsed, 1), "threads": threads, "runs": runs,
                "load_before": round(load0, 2), "load_during": round(statistics.mean(loads), 2)}


@contextlib.contextmanager
def baseline_src(commit: str) -> Iterator[Path]:
    """``<worktree>/src`` of ``commit``, checked out in a temporary git worktree."""
    with tempfile.TemporaryDirectory(prefix="daemon-idle-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), commit],
                       check=True)
        try:
            yield tree / "src"
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def report(name: str, r: dict[str, Any]) -> list[str]:
    """The case's lines (results, RSS per minute), then a FAIL line per broken expectation."""
    lines = [f"{name:24} daemon CPU {r['daemon_cpu_pct']:.2f} % of a core, kernels CPU {r['kernels_cpu_pct']:.2f} % "
             f"({r['kernels']} kernel processes); daemon RSS {r['rss_first_mb']:.0f} → {r['rss_last_mb']:.0f} MB "
             f"(max {r['rss_max_mb']:.0f}, growth {r['rss_growth_mb']:+.1f}), kernels RSS {r['kernels_rss_mb']:.0f} MB; "
             f"{r['wakeups_per_s']} wake-ups/s, {r['threads']} threads; ready after {r['ready_s']}s; "
             f"runs started {r['runs']}; load {r['load_before']} → {r['load_during']} over {r['elapsed_s']}s",
             f"  daemon RSS median per minute (MB): {', '.join(map(str, r['rss_per_min']))}"]
    if r["runs"]:
        lines.append(f"  FAIL: {r['runs']} run(s) started; the notebooks were meant to be idle")
    if r["pool"] == 0 and (r["kernels"] or r["kernels_after"]):
        lines.append(f"  FAIL: {max(r['kernels'], r['kernels_after'])} kernel process(es) without a pool")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", default="200", help="notebook count(s), comma-separated (e.g. 200,1000)")
    ap.add_argument("--duration", type=float, default=120.0, help="sampling window (s), at least 60")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after readiness before sampling")
    ap.add_argument("--pool", type=int, default=2, help="pool size of the second case (0: skip it)")
    ap.add_argument("--spec", default='{"every": "7 day"}', help="the notebooks' jupycron line")
    ap.add_argument("--history-runs", type=int, default=0,
                    help="finished scheduled runs per notebook already in the history")
    ap.add_argument("--baseline-commit", metavar="REV",
                    help="also run every case against this git revision, side by side")
    args = ap.parse_args()
    if args.duration < 60:
        ap.error("--duration must be at least 60 s")
    try:
        counts = [int(c) for c in args.notebooks.split(",")]
    except ValueError:
        ap.error(f"--notebooks: expected counts like 200,1000, got {args.notebooks!r}")
    sys.path.insert(0, str(REPO / "src"))
    from jupycron.discovery import parse_spec
    from jupycron.schedule import next_slot

    pools = [0, args.pool] if args.pool else [0]
    versions = 2 if args.baseline_commit else 1
    now = datetime.now(UTC)
    window = timedelta(seconds=(60 + args.settle + args.duration) * len(pools) * len(counts) * versions + 60)
    first = next_slot(parse_spec(args.spec), now)
    if first - now < window:
        ap.error(f"the next slot of {args.spec} is {first:%H:%M} UTC, inside the measurement; "
                 'pass another --spec (e.g. \'{"every": "30 day"}\')')
    print(f"{','.join(map(str, counts))} notebooks, spec {args.spec} (next slot {first:%Y-%m-%d %H:%M} UTC), "
          f"{args.history_runs} past runs each in the history, {os.cpu_count()} cores", flush=True)
    failed = False
    table: list[tuple[str, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        srcs = [("current", REPO / "src")]
        if args.baseline_commit:
            srcs.insert(0, (f"base {args.baseline_commit[:8]}", stack.enter_context(baseline_src(args.baseline_commit))))
        for count in counts:
            for pool in pools:
                for label, src in srcs:
                    r = measure(args, count, pool, src)
                    name = f"{label} {count} nb {f'pool {pool}' if pool else 'no pool'}"
                    lines = report(name, r)
                    print("\n".join(lines), flush=True)
                    failed = failed or any(line.startswith("  FAIL") for line in lines)
                    table.append((name, r))
    print(f"\n{'case':32} {'CPU % core':>10} {'RSS MB':>7} {'growth MB':>9} {'wake/s':>6} {'load':>5}")
    for name, r in table:
        print(f"{name:32} {r['daemon_cpu_pct']:10.2f} {r['rss_last_mb']:7.0f} {r['rss_growth_mb']:+9.1f} "
              f"{r['wakeups_per_s']:6.1f} {r['load_during']:5.2f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
