"""The global run slots: ``<output>/.locks/slot-<K>.lock`` for K < the concurrency cap.

A run holds one slot (an exclusive :mod:`safefiles.locks` lock) while its kernel lives, so
the cap holds across processes (tick, daemon, run-now); the OS drops the lock when a
process dies, so a killed runner never keeps a slot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from safefiles import locks

__all__ = ["acquire_slot", "release", "slot_lock", "try_lock"]

_SLOT_POLL_S = 0.2


def try_lock(path: Path) -> int | None:
    """An exclusive non-blocking flock on ``path`` (created): the fd, or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        locks.lock_fd(fd, timeout=0, path=str(path))
    except locks.LockTimeout:
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def slot_lock(output_dir: Path, k: int) -> Path:
    """``<output>/.locks/slot-<k>.lock`` (cannot clash with ``<rel>.ipynb.lock``)."""
    return Path(output_dir) / ".locks" / f"slot-{k}.lock"


def acquire_slot(output_dir: Path, size: int, stop_event: threading.Event | None) -> int | None:
    """Wait for one of ``size`` global run slots; None if ``stop_event`` is set first."""
    while stop_event is None or not stop_event.is_set():
        for k in range(size):
            fd = try_lock(slot_lock(output_dir, k))
            if fd is not None:
                return fd
        if stop_event is not None:
            stop_event.wait(_SLOT_POLL_S)
        else:
            time.sleep(_SLOT_POLL_S)
    return None
