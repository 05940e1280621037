"""A kernel for one run, and the interface every way of getting one implements.

A run asks a :class:`KernelProvider` for a kernel (:meth:`~KernelProvider.ready` for one
that is up right now, else :meth:`~KernelProvider.acquire`, which waits or starts one),
executes its notebook on the :class:`KernelHandle` it got, and gives it back
(:meth:`~KernelProvider.release`), which kills its whole process tree and removes its
memory cap: one kernel, one run, whatever the provider. The providers:

* :class:`jupycron.kernels.fresh.FreshKernels` - a new kernel per run (started, or forked
  from the kernel template, :mod:`jupycron.kernels.forkserver`);
* :class:`jupycron.kernels.pooled.KernelPool` - kernels started ahead of need, falling
  back to a fresh one when it has none ready or its kernel does not fit the run's cap.

Nothing is left running: a kernel starts in its own session (process group) with the
marker ``JUPYCRON_RUN_ID`` in its environment; :func:`kill_tree` SIGKILLs the group, every
descendant, every process inside the run's cgroup and (without a cgroup) every process
carrying the marker. :meth:`KernelHandle.info` is what a RUNNING history row keeps so that
a scheduler finding the run orphaned can do the same (:class:`jupycron.models.KernelInfo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.manager import AsyncKernelManager

from .. import limits
from ..models import KernelInfo

__all__ = ["KERNEL_START_TIMEOUT_S", "RUN_ID_ENV", "KernelHandle", "KernelProvider",
           "KernelRequest", "KernelStartError", "discard", "kill_marked", "kill_tree",
           "wait_connected"]

RUN_ID_ENV = "JUPYCRON_RUN_ID"
KERNEL_START_TIMEOUT_S = 60


class KernelStartError(RuntimeError):
    """No kernel could be had for a run (the message says why; the run is ``crashed``)."""


@dataclass(frozen=True)
class KernelRequest:
    """What a run needs: a kernel of ``kernel_name`` capped at ``mem_mb``, marked ``run_id``."""

    run_id: str
    notebook: str       # path relative to the notebooks folder
    kernel_name: str
    mem_mb: int


@dataclass
class KernelHandle:
    """A started kernel: its manager, process ids and the cap it runs under."""

    km: AsyncKernelManager
    pid: int
    pgid: int
    create_time: float
    run_id: str          # the JUPYCRON_RUN_ID the kernel process was started with
    cap: limits.MemoryCap | None = None
    sockets: Path | None = None   # private folder of the connection file and ipc sockets
    language_info: dict[str, Any] | None = None  # from a pooled kernel's warm-up kernel_info
    serving: str | None = None    # the run a pooled kernel serves (its children carry that id)
    forked: bool = False          # forked from the kernel template
    pooled: bool = False          # started ahead of need by a pool
    start_s: float | None = None  # how long starting it took (a fresh kernel)
    #: Set in the kernel's ``os.environ`` before the first cell (a pooled kernel learns its run).
    env_update: dict[str, str] | None = None

    def info(self) -> KernelInfo:
        """The kernel's identity as a history row keeps it."""
        return KernelInfo(
            pid=self.pid, pgid=self.pgid, create_time=self.create_time,
            sockets=str(self.sockets) if self.sockets is not None else None,
            marker=self.run_id if self.serving is not None else None,
            cgroup=str(path) if self.cap is not None and (path := self.cap.cgroup_path) else None,
            forked=self.forked)

    def alive(self) -> bool:
        """Whether the kernel process still runs (not exited, not a zombie, same process)."""
        proc = getattr(self.km.provisioner, "process", None)
        if proc is not None and proc.poll() is not None:
            return False
        try:
            p = psutil.Process(self.pid)
            return abs(p.create_time() - self.create_time) <= 0.01 \
                and p.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.Error:
            return False

    def descendants(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            if abs(root.create_time() - self.create_time) > 0.01:
                return []
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def exit_code(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        if proc is None:
            return None
        with contextlib.suppress(Exception):
            proc.wait(timeout=2)
        return proc.returncode


class KernelProvider(ABC):
    """Where a run gets its kernel. Thread-safe: runs call it from their own threads."""

    def ready(self, request: KernelRequest) -> KernelHandle | None:
        """A kernel that is up right now (no waiting), or None. The caller owns it."""
        return None

    @abstractmethod
    async def acquire(self, request: KernelRequest) -> KernelHandle:
        """A kernel for ``request``, waiting or starting one; raises KernelStartError."""

    async def release(self, handle: KernelHandle) -> None:
        """The run is over: kill the kernel's tree, reap it, remove its cap and sockets."""
        await discard(handle)

    def close(self) -> None:  # noqa: B027 - a provider without resources of its own
        """Kill kernels held for future runs (not those handed out)."""


def kill_tree(handle: KernelHandle, wait: bool = True) -> None:
    """SIGKILL the kernel, its process group, its descendants and everything in its cap.

    ``wait=False`` sends the signals once without waiting for the cap to empty (the run's
    critical path; :func:`discard` then waits)."""
    procs = handle.descendants()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(handle.pgid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if handle.cap is not None:
        handle.cap.kill_all(wait=wait)
    if handle.cap is None or handle.cap.cgroup_path is None:
        kill_marked(handle.run_id, *([handle.serving] if handle.serving else []))


def kill_marked(run_id: str, *more: str) -> int:
    """SIGKILL every process whose environment carries ``JUPYCRON_RUN_ID=run_id`` (or one of
    ``more``): children that left the process group with setsid. Returns how many were killed."""
    n = 0
    me = os.getpid()
    ids = {run_id, *more}
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(RUN_ID_ENV) in ids and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                n += 1
        except psutil.Error:
            continue
    return n


async def discard(handle: KernelHandle) -> None:
    """Kill the kernel's whole process tree and release its manager's resources."""
    kill_tree(handle)
    km = handle.km
    with contextlib.suppress(Exception):
        await km.shutdown_kernel(now=True)
    with contextlib.suppress(Exception):
        await km.cleanup_resources()
    handle.exit_code()  # reap the kernel process
    if handle.cap is not None:
        handle.cap.close()
    if handle.sockets is not None:
        shutil.rmtree(handle.sockets, ignore_errors=True)


async def wait_connected(kc: Any, timeout: float, shell_wait: float = 1.0) -> dict[str, Any]:
    """Wait until a new client's shell and IOPub channels both work; returns the
    kernel_info reply.

    jupyter_client's ``wait_for_ready`` waits 0.2 s for an IOPub message after each
    kernel_info reply; on a kernel that is already up the reply comes back in a millisecond,
    before the IOPub subscription has joined, so those 0.2 s are lost on every run. Here
    kernel_info is repeated with a short IOPub wait until a status message arrives. On a
    kernel that is still starting (the pool's warm-up), ``shell_wait`` bounds each wait
    for the reply, so a request sent before the kernel was listening is simply repeated.
    """
    deadline = time.monotonic() + timeout
    while True:
        msg_id = kc.kernel_info()
        with contextlib.suppress(queue.Empty):
            while True:
                reply: dict[str, Any] = await kc.shell_channel.get_msg(timeout=shell_wait)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            with contextlib.suppress(queue.Empty):
                while True:  # this request's busy/idle status proves IOPub is subscribed
                    msg = await kc.iopub_channel.get_msg(timeout=0.02)
                    if msg["parent_header"].get("msg_id") == msg_id:
                        return reply
        if not await kc.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")


async def maybe_await(v: Any) -> Any:
    """``v``, awaited when it is a coroutine or future (jupyter_client's sync/async API)."""
    return await v if asyncio.iscoroutine(v) or isinstance(v, asyncio.Future) else v
