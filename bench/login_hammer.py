"""Benchmark: /healthz latency of `jupycron serve` while wrong passwords hammer it (issue 12 #6).

Each round starts a fresh `python -m jupycron serve` (the working tree's code, or a baseline
commit's `src/` exported from git and put first on PYTHONPATH), measures `/healthz` alone
(20 sequential requests), then sends N concurrent requests with a wrong password (one
connection each) while probing `/healthz` every 20 ms until the last of them is answered.
Reported: the median `/healthz` latency alone, the median and worst latency under the
hammer, how long the hammer took and what it was answered (401 / 429). Rounds alternate
baseline / current so both see the same machine load.

    .venv/bin/python bench/login_hammer.py [--baseline-commit f96e027] [--concurrency 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _export(commit: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _round(src: Path, work: Path, n: int) -> dict[str, object]:
    cfg = work / "jupycron.toml"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-m", "jupycron", "passwd", "alice", "--config", str(cfg),
                    "--password-stdin"], input=b"right pw\n", env=env, check=True, capture_output=True)
    (work / "nb").mkdir(exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "jupycron", "--config", str(cfg), "serve",
                             "--notebooks", str(work / "nb"), "--output", str(work / "out"),
                             "--port", str(port), "--no-alerts"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not start")
            time.sleep(0.1)
        alone = []
        for _ in range(20):
            t = time.perf_counter()
            httpx.get(url + "/healthz", timeout=60)
            alone.append(time.perf_counter() - t)
        done = threading.Event()
        under: list[float] = []

        def probe() -> None:
            while not done.is_set():
                t = time.perf_counter()
                httpx.get(url + "/healthz", timeout=60)
                under.append(time.perf_counter() - t)
                time.sleep(0.02)

        prober = threading.Thread(target=probe)
        started = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            prober.start()
            codes = list(pool.map(lambda i: httpx.get(url + "/", auth=("alice", f"wrong {i}"),
                                                      timeout=120).status_code, range(n)))
        hammer_s = time.perf_counter() - started
        done.set()
        prober.join()
        return {"alone_ms": statistics.median(alone) * 1000,
                "under_median_ms": statistics.median(under) * 1000 if under else float("nan"),
                "under_max_ms": max(under) * 1000 if under else float("nan"),
                "hammer_s": hammer_s, "codes": dict(collections.Counter(codes))}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-commit", default="f96e027")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="login-hammer-") as tmp:
        base_src = _export(args.baseline_commit, Path(tmp) / "baseline")
        variants = {"baseline": base_src, "current": REPO / "src"}
        results: dict[str, list[dict[str, object]]] = {k: [] for k in variants}
        for i in range(args.repeat):
            for name, src in variants.items():
                work = Path(tmp) / f"{name}-{i}"
                work.mkdir()
                r = _round(src, work, args.concurrency)
                results[name].append(r)
                print(f"{name:8s} load {os.getloadavg()[0]:.1f}  {r}", flush=True)
    print(f"\n| variant | /healthz alone (median) | under {args.concurrency} wrong passwords: "
          "median / worst | hammer took | answers |")
    print("|---|---|---|---|---|")
    def med(rs: list[dict[str, object]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rs)  # type: ignore[arg-type]

    for name, rs in results.items():
        print(f"| {name} | {med(rs, 'alone_ms'):.1f} ms | {med(rs, 'under_median_ms'):.1f} / "
              f"{med(rs, 'under_max_ms'):.0f} ms | {med(rs, 'hammer_s'):.2f} s | {rs[-1]['codes']} |")


if __name__ == "__main__":
    main()
