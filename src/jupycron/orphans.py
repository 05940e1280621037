"""Orphans: RUNNING rows whose runner died (kill -9, a crash, a reboot).

:func:`reap_orphans` kills what such a runner left — the kernel's process group (checked by
its start time, so a reused pid is never hit), processes marked with its run id, its memory
cgroup, its socket folder (only a folder shaped like the runner makes it) — and marks the row
``interrupted``; also rows of this process for runs it no longer owns
(:mod:`jupycron.recording`). Every pass of the scheduler calls it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import psutil

from . import limits, recording
from .kernels import kill_marked
from .ledger import RunStore, runner_alive
from .models import Run

log = logging.getLogger(__name__)

__all__ = ["reap_orphans", "still_running"]


def _kill_orphan(run: Run) -> None:
    """Kill what a dead runner left: the kernel's group, marked processes, the cgroup."""
    kernel = run.kernel  # rows written before it existed: mapped on load (Run.from_json)
    if kernel is not None and kernel.pid and kernel.pgid and kernel.create_time:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if abs(psutil.Process(kernel.pid).create_time() - kernel.create_time) < 0.01:
                os.killpg(kernel.pgid, signal.SIGKILL)
    kill_marked(run.run_id)
    if kernel is None:
        return
    if kernel.marker:  # a pooled kernel carries its pool marker
        kill_marked(kernel.marker)
    if kernel.cgroup:
        cap = limits.cap_for_path(kernel.cgroup, run.memory_limit or "")
        if cap is not None:
            cap.close()
    sockets = kernel.sockets
    if isinstance(sockets, str) and _is_kernel_sockets(sockets):
        shutil.rmtree(sockets, ignore_errors=True)
    elif sockets:
        log.warning("run %s: not removing %r: not a kernel socket folder", run.run_id, sockets)


def _is_kernel_sockets(path: str) -> bool:
    """A kernel's private socket folder as the runner makes it (``<tmp>/jupycron-kernel-*``),
    so a damaged history row can never make the orphan clean-up delete anything else."""
    p = Path(path)
    return p.is_absolute() and ".." not in p.parts and p.name.startswith("jupycron-kernel-") \
        and p.parent == Path(tempfile.gettempdir())


def _abandoned(run: Run) -> bool:
    """A RUNNING row written by this process for a run it no longer owns: the run ended
    but its outcome could not be written and the retries gave up (:mod:`jupycron.recording`).
    Its kernel was killed when the run ended."""
    return (run.pid == os.getpid() and run.host in (None, socket.gethostname())
            and not recording.owned_here(run.run_id))


def still_running(run: Run) -> bool:
    return runner_alive(run) and not _abandoned(run)


def reap_orphans(history: RunStore) -> list[Run]:
    """Mark RUNNING rows whose runner process is gone ``interrupted``, after killing the
    kernel and children they left behind and removing their cgroup; and rows of this
    process whose run it no longer owns (:func:`_abandoned`)."""
    orphans = [r for r in history.running_runs() if not still_running(r)]
    for r in orphans:
        if _abandoned(r):
            log.warning("run %s of %s: its outcome was never written; marking it interrupted",
                        r.run_id, r.notebook)
            continue
        log.warning("run %s of %s: runner %s is gone; killing what it left", r.run_id,
                    r.notebook, r.pid)
        _kill_orphan(r)
    reaped = history.reap_orphans(run_alive=still_running) if orphans else []
    live = frozenset(r.run_id for r in history.running_runs())
    if history.output_dir is not None:
        with contextlib.suppress(OSError):
            limits.sweep_stale_cgroups(keep=live,
                                       instance=limits.instance_key(history.output_dir))
    return reaped
