"""A new kernel per run: started (or forked from the kernel template) under its memory cap.

:func:`start_kernel` starts a kernel in its own session (process group) with in-memory
IPython history and its sockets in a private folder, then attaches the cap to it;
:class:`FreshKernels` is the :class:`~jupycron.kernels.base.KernelProvider` that does so
for each run (the fork server only for the configured kernel, when ``kernel_forkserver``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.manager import AsyncKernelManager

from .. import limits
from ..config import Settings
from .base import KernelHandle, KernelProvider, KernelRequest, KernelStartError, discard
from .env import kernel_env
from .forkserver import ForkProvisioner

log = logging.getLogger(__name__)

__all__ = ["FreshKernels", "start_kernel"]

MAX_ERROR_CHARS = 2000


class _CappedKernelManager(AsyncKernelManager):
    """A kernel manager whose command goes through the memory cap (systemd-run wraps it),
    launched through the fork server when ``fork`` is set (see :mod:`jupycron.kernels.forkserver`)."""

    cap: limits.MemoryCap | None = None
    fork: bool = False
    preload: tuple[str, ...] = ()  # modules the fork server's template imports (pool_preimport)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return self.cap.wrap_command(cmd) if self.cap is not None else cmd

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        if self.fork and self.provisioner is None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
            self.provisioner = ForkProvisioner(kernel_id=self.kernel_id,
                                               kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)


async def start_kernel(kernel_name: str, cwd: Path, env: dict[str, str], run_id: str,
                       cap: limits.MemoryCap | None, *, fork: bool = False,
                       preload: Sequence[str] = ()) -> KernelHandle:
    """Start a kernel in its own session (process group) and attach ``cap`` to it.

    jupyter_client starts kernels with ``start_new_session=True`` and sets JPY_PARENT_PID,
    so ipykernel exits by itself if this process dies. The command is an argv list: no shell.
    ``fork``: fork it from the kernel template (:mod:`jupycron.kernels.forkserver`: the
    child calls setsid, the template is its parent and exits with us), falling back to a
    normal start; ``preload``: fork it from a template that has also imported these modules.
    """
    # Unix sockets in a private folder instead of TCP ports on localhost: other local users
    # cannot connect to the kernel, and no port can collide.
    sockets = tempfile.mkdtemp(prefix="jupycron-kernel-")
    # The kernel's own temp folder, removed with the sockets when the run ends (or by the
    # orphan clean-up after a crash): what a killed notebook or library leaves in $TMPDIR
    # (chDB's session folder, a spill file) does not pile up, one per run, in /tmp.
    private_tmp = os.path.join(sockets, "tmp")
    os.mkdir(private_tmp, 0o700)
    env = {**env, "TMPDIR": private_tmp}
    km = _CappedKernelManager(kernel_name=kernel_name, transport="ipc",
                              ip=os.path.join(sockets, "k"),
                              connection_file=os.path.join(sockets, "kernel.json"))
    km.cap = cap
    km.fork = fork
    km.preload = tuple(preload)
    # IPython history in memory: nothing written under $HOME (read-only under systemd).
    try:
        await km.start_kernel(cwd=str(cwd), env=env,
                              extra_arguments=["--HistoryManager.hist_file=:memory:"])
    except BaseException:
        shutil.rmtree(sockets, ignore_errors=True)
        raise
    proc = km.provisioner.process  # type: ignore[union-attr]
    pid = proc.pid
    try:
        pgid = os.getpgid(pid)
        create_time = psutil.Process(pid).create_time()
    except (OSError, psutil.Error):
        pgid, create_time = pid, time.time()
    handle = KernelHandle(km=km, pid=pid, pgid=pgid, create_time=create_time, run_id=run_id,
                          cap=cap, sockets=Path(sockets),
                          forked=bool(getattr(km.provisioner, "forked", False)))
    if cap is not None:
        try:
            cap.attach(pid)
        except OSError:
            # Never run a notebook without its cap.
            await discard(handle)
            raise
    return handle


class FreshKernels(KernelProvider):
    """A new kernel for each run, capped at the run's ``MaxMem``, cwd the notebooks folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def acquire(self, request: KernelRequest) -> KernelHandle:
        s = self.settings
        t0 = time.monotonic()
        cap = limits.create_cap(request.mem_mb, request.run_id,
                                instance=limits.instance_key(s.output_dir))
        # The fork server's template is the configured kernel's interpreter only.
        fork = s.kernel_forkserver and request.kernel_name == s.kernel_name
        try:
            handle = await start_kernel(request.kernel_name, s.notebooks,
                                        kernel_env(request.run_id, request.notebook, s.output_dir),
                                        request.run_id, cap, fork=fork)
        except Exception as exc:
            log.error("run %s of %s: cannot start kernel %r: %s", request.run_id,
                      request.notebook, request.kernel_name, exc)
            cap.close()
            raise KernelStartError(f"cannot start kernel: {exc}"[:MAX_ERROR_CHARS]) from exc
        handle.start_s = time.monotonic() - t0
        return handle
