"""Helpers for tests that start real processes on 127.0.0.1.

Policy (DEVELOPERS.md): outside CI a test may skip with a clear message when a component
cannot be installed; with ``CI=true`` nothing may skip, so :func:`require_program` fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_program(name: str, *candidates: str, package: str | None = None) -> str:
    """Path of a program (first found of name + candidates); skip (or fail in CI) if absent."""
    for cand in (name, *candidates):
        found = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if found:
            return found
    msg = (f"{name} is not installed (Debian package {package or name}); "
           f"run `make system-deps` to install it")
    if IN_CI:
        pytest.fail(msg + " — CI=true, so this may not skip")
    pytest.skip(msg)


def require_shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skip when absent outside CI, fail in CI."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing — CI=true, so this may not skip")
        pytest.skip(f"{p} is absent (no ../shared beside this clone)")
    return p


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None,
                  ok=lambda r: r.status_code < 500) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2)
            if ok(r):
                return r
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


@contextlib.contextmanager
def running(cmd: Sequence[str], log: Path, **kw) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in its own process group, logging to ``log``; kill the group on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


START_ATTEMPTS = 3  # a free port can be taken between probing and binding; try another one


@contextlib.contextmanager
def http_service(name: str, command: Callable[[int], Sequence[str]], workdir: Path,
                 ready_path: str = "/-/ready") -> Iterator[str]:
    """Run ``command(port)`` on a free 127.0.0.1 port until ``ready_path`` answers 200;
    yield its base URL; stop its process group afterwards. Retries on another port when
    the first one was taken meanwhile; a failure quotes the end of the service's log."""
    log = workdir / f"{name.lower()}.log"
    last_error: Exception | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with running(command(port), log, cwd=workdir) as proc:
            try:
                wait_for_http(base_url + ready_path, timeout=30, proc=proc,
                              ok=lambda r: r.status_code == 200)
            except (RuntimeError, TimeoutError) as exc:
                last_error = exc
                stop_group(proc)
                continue
            yield base_url
            return
    raise RuntimeError(f"{name} did not start ({last_error}); log:\n"
                       f"{log.read_text(errors='replace')[-2000:]}")


def poll_until(fn: Callable[[], object], timeout: float = 15.0, every: float = 0.1) -> Any:
    """Call ``fn`` until it returns something truthy and return that; fail the test after
    ``timeout`` seconds, quoting the last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last: {result!r})")
        time.sleep(every)
