"""A small pool of kernels started ahead of need, each used for exactly one run.

Starting a kernel (a new Python, ipykernel's imports, the ZeroMQ handshake) is most of what a
short run costs, so the scheduler keeps up to ``size`` kernels started and ready. A run takes
one (:meth:`KernelPool.acquire`), executes its notebook on it and discards it, exactly like a
fresh kernel; the pool starts a replacement at once. Isolation is that of a fresh kernel:

* each kernel starts with the run environment (``AUTORUN=1``, cwd = the notebooks folder,
  in-memory IPython history, its own session and private socket folder) and its own memory
  cap at the configured maximum (``settings.max_mem_mb``); the cap is named
  ``pool-<owner pid>-<hex>``, which is also the kernel's ``JUPYCRON_RUN_ID`` marker until a
  run sets its own id in the kernel's ``os.environ``;
* at hand-out the cap is lowered to the notebook's ``MaxMem`` on the live process (cgroup
  limit files, ``prlimit`` for the rlimit fallback) and its peak/OOM accounting restarts. A
  kernel already using more than that cap is refused (discarded) and the run starts a fresh
  kernel instead;
* a kernel that died while idle is noticed (checked at hand-out and every
  :data:`CHECK_INTERVAL_S`) and replaced, never handed out;
* ``preimport`` modules (``settings.pool_preimport``, off by default) are imported during
  warm-up with ``__import__`` (no name is bound in the notebook's namespace, nothing enters
  the history or the execution count). This is global: a notebook that needs a clean
  interpreter (e.g. to set an environment variable before importing numpy) should not be
  run with it. A failing import turns preimport off for the pool (logged). With the fork
  server on, the modules are imported once in a template of their own
  (:mod:`jupycron.kernels.forkserver`, ``extra`` preloads) and each pooled kernel is forked with
  them loaded, so a pooled kernel's warm-up no longer pays for the imports (numpy's global
  generator is reseeded in each kernel); the ``__import__`` step then just confirms them.

Memory bound: ``size`` is at most the concurrency cap; a kernel is only started while the
machine has at least :func:`min_available_mb` free (room for one run at ``max_mem_mb`` plus
a reserve), idle kernels are discarded when free memory drops below ``max_mem_mb``, and idle
kernels older than :data:`MAX_IDLE_S` are recycled (a package upgraded on disk is picked up).
:meth:`KernelPool.stats` reports the idle kernels' memory (the scheduler's heartbeat carries
it; measured sizes are in BENCHMARKS.md). The stats give both ``idle_rss_mb`` (which
counts the pages kernels share with their template in every one of them) and ``idle_pss_mb`` (a shared page split between its users), and the
fork-server templates' PSS as ``templates_pss_mb``: the two PSS figures add up to what the
idle kernels and their templates really hold (measured every :data:`PSS_MAX_AGE_S`, or
:data:`PSS_MIN_AGE_S` after the idle kernels changed).

The pool runs its own asyncio loop in a daemon thread; kernels started there are used from
the runs' threads (each with its own loop), which only create their own ZeroMQ client for
them. ``budget`` bounds how many kernels the pool ever starts: a one-minute ``jupycron tick``
passes the number of due notebooks, so it never starts kernels nobody will use.

As a :class:`~jupycron.kernels.base.KernelProvider`, the pool hands a run a ready kernel
(:meth:`KernelPool.ready`), else waits for one it is starting (:meth:`KernelPool.acquire`),
else starts a fresh one (:class:`~jupycron.kernels.fresh.FreshKernels`): the pool never
fails a run. It serves the configured kernel only; a notebook naming another kernel gets a
fresh one. A handed-out kernel learns its run in ``env_update`` (``JUPYCRON_RUN_ID``,
``JUPYCRON_NOTEBOOK``), set in its ``os.environ`` before the first cell.

Example::

    pool = KernelPool(settings, size=2, preimport=("pandas",))
    pool.start()
    run = run_notebook(settings, notebook, kernels=pool)
    pool.close()   # kills idle and starting kernels
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from .. import limits
from ..config import Settings
from . import forkserver
from .base import (
    KERNEL_START_TIMEOUT_S,
    RUN_ID_ENV,
    KernelHandle,
    KernelProvider,
    KernelRequest,
    discard,
    kill_tree,
    wait_connected,
)
from .env import kernel_env
from .fresh import FreshKernels, start_kernel

log = logging.getLogger(__name__)

__all__ = ["CHECK_INTERVAL_S", "MAX_IDLE_S", "KernelPool", "memory_mb", "min_available_mb",
           "pool_size", "preimport_modules"]

#: How often idle kernels are checked (alive, age, free memory).
CHECK_INTERVAL_S = 2.0
#: Idle kernels older than this are replaced by fresh ones.
MAX_IDLE_S = 900.0
#: Free memory kept besides one run at the maximum cap before a pool kernel is started.
RESERVE_MB = 256
#: How long :meth:`KernelPool.stats` reuses its PSS figures (their cost is the page-table
#: walk, so a heartbeat written at every run start in a burst must not pay it each time);
#: once the idle kernels changed, they are measured again after PSS_MIN_AGE_S.
PSS_MAX_AGE_S = 60.0
PSS_MIN_AGE_S = 5.0
#: After a failed start, wait this long before trying again (grows to 60 s).
RETRY_S = 2.0
MB = 1024 * 1024


def pool_size(settings: Settings) -> int:
    """The pool size the settings ask for: 0 off, -1 the concurrency cap; never above it."""
    cap = settings.effective_concurrency
    if settings.pool_size < -1:
        raise ValueError(f"pool_size must be -1, 0 or positive, got {settings.pool_size}")
    return cap if settings.pool_size == -1 else min(settings.pool_size, cap)


def preimport_modules(settings: Settings) -> tuple[str, ...]:
    """``settings.pool_preimport`` as module names; raises ValueError for a bad name."""
    names = tuple(m.strip() for m in settings.pool_preimport.split(",") if m.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"pool_preimport: {name!r} is not a module name")
    return names


def min_available_mb(settings: Settings) -> int:
    """Free memory (MB) needed before the pool starts another kernel."""
    return settings.max_mem_mb + RESERVE_MB


def memory_mb(pids: Sequence[int], children: bool = True, pss: bool = False) -> float:
    """RSS (or, with ``pss``, PSS) in MB of the given processes and (``children``) their
    descendants.

    RSS counts a page shared by several processes (a forked kernel and its template) in
    each of them; PSS splits it between them, so PSS adds up to what they really hold. PSS
    costs the kernel a walk of the page tables (far more than RSS); it is RSS where the
    system does not report it."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in (root, *(root.children(recursive=True) if children else ())):
                with contextlib.suppress(psutil.Error):
                    if pss:
                        info = p.memory_full_info()
                        total += getattr(info, "pss", info.rss)
                    else:
                        total += p.memory_info().rss
    return total / MB


class _PreimportFailed(RuntimeError):
    """A ``pool_preimport`` module could not be imported in a warm-up."""


@dataclass
class _Idle:
    handle: KernelHandle
    ready_at: float  # time.monotonic()
    refused: bool = False  # set when it was over a run's cap


class KernelPool(KernelProvider):
    """Up to ``size`` ready kernels; see the module docstring. Thread-safe."""

    def __init__(self, settings: Settings, size: int, *, preimport: Sequence[str] = (),
                 budget: int | None = None) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.settings = settings
        self.size = size
        self.preimport = tuple(preimport)
        self.budget = budget
        self._idle: collections.deque[_Idle] = collections.deque()
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retry_at = 0.0
        self._failures = 0
        self.counts = collections.Counter[str]()
        self.fresh = FreshKernels(settings)  # when no pooled kernel fits
        self._refused: set[str] = set()  # run ids whose ready() refused a kernel: go fresh
        self._pss: tuple[float, tuple[int, ...], dict[str, Any]] | None = None  # (at, idle pids, figures)

    # -- life cycle (any thread) --
    def start(self) -> KernelPool:
        """Start the pool's thread and its first kernels; returns self."""
        if self._thread is not None:
            return self
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            maint = loop.create_task(self._maintain())
            try:
                loop.run_forever()
            finally:
                maint.cancel()
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=main, name="jupycron-pool", daemon=True)
        self._thread.start()
        ready.wait()
        self._fill()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Kill every idle and starting kernel and stop the pool's thread (idempotent).
        Kernels already handed to runs are theirs to discard."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._loop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("kernel pool did not stop within %.0f s", timeout)

    def __enter__(self) -> KernelPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the provider interface (run threads) --
    def ready(self, request: KernelRequest) -> KernelHandle | None:
        """An idle kernel for ``request``, at once, or None (none idle, another kernel
        name, or the idle kernel did not fit: :meth:`acquire` then starts a fresh one)."""
        if request.kernel_name != self.settings.kernel_name:
            return None
        try:
            handle, refused = self._take(request.mem_mb, 0.0)
        except Exception:  # the pool must never fail a run: a fresh kernel instead
            log.exception("kernel pool failed; starting a fresh kernel")
            handle, refused = None, True
        if handle is None:
            if refused:
                with self._cond:
                    self._refused.add(request.run_id)
            return None
        return self._serve(handle, request)

    async def acquire(self, request: KernelRequest) -> KernelHandle:
        """A kernel the pool is starting (waiting up to KERNEL_START_TIMEOUT_S), else a
        fresh one (another kernel name, a refused kernel, an empty or failing pool)."""
        with self._cond:
            refused = request.run_id in self._refused
            self._refused.discard(request.run_id)
        handle = None
        if request.kernel_name == self.settings.kernel_name and not refused:
            try:
                handle = await asyncio.to_thread(self.take, request.mem_mb,
                                                 KERNEL_START_TIMEOUT_S)
            except Exception:
                log.exception("kernel pool failed; starting a fresh kernel")
        if handle is None:
            return await self.fresh.acquire(request)
        return self._serve(handle, request)

    @staticmethod
    def _serve(handle: KernelHandle, request: KernelRequest) -> KernelHandle:
        handle.serving = request.run_id
        handle.pooled = True
        handle.env_update = {RUN_ID_ENV: request.run_id, "JUPYCRON_NOTEBOOK": request.notebook}
        return handle

    # -- hand-out (run threads) --
    def take(self, limit_mb: int, timeout: float = 0.0) -> KernelHandle | None:
        """A ready kernel capped at ``limit_mb``, or None (closed, empty, or nothing became
        ready within ``timeout`` s while kernels were starting). The caller owns the kernel
        and must discard it after its run. Dead kernels are discarded and waited past; a
        kernel over ``limit_mb`` is discarded and None returned at once (its replacement
        would most likely not fit either: the caller should start a plain kernel)."""
        return self._take(limit_mb, timeout)[0]

    def _take(self, limit_mb: int, timeout: float) -> tuple[KernelHandle | None, bool]:
        """:meth:`take`, and whether a kernel was refused for being over ``limit_mb``."""
        deadline = time.monotonic() + timeout
        try:
            with self._cond:
                while not self._closed:
                    while self._idle:
                        item = self._idle.popleft()
                        handle = self._hand_out(item, limit_mb)
                        if handle is not None:
                            return handle, False
                        if item.refused:
                            return None, True
                    self._fill()  # replacements for discarded kernels count as starting
                    remaining = deadline - time.monotonic()
                    if not self._starting or remaining <= 0:
                        return None, False
                    self._cond.wait(remaining)
                return None, False
        finally:
            self._fill()

    def _hand_out(self, item: _Idle, limit_mb: int) -> KernelHandle | None:
        """Check and cap one idle kernel (under the lock); None when it was discarded."""
        handle = item.handle
        if not handle.alive():
            log.warning("pooled kernel %s died while idle (exit %s); replacing it",
                        handle.pid, handle.exit_code())
            self.counts["died_idle"] += 1
            self._discard_later(handle)
            return None
        cap = handle.cap
        if cap is not None:
            try:
                cap.set_limit(limit_mb)
                cap.begin_run()
            except (limits.CapError, OSError) as exc:
                log.info("pooled kernel %s not used for a %d MB run: %s", handle.pid, limit_mb, exc)
                self.counts["refused"] += 1
                item.refused = True
                self._discard_later(handle)
                return None
        self.counts["handed_out"] += 1
        return handle

    # -- reporting --
    def stats(self) -> dict[str, Any]:
        """For the heartbeat and `jupycron list`: sizes, idle memory, counters."""
        with self._cond:
            pids = [item.handle.pid for item in self._idle]
            out = {"size": self.size, "idle": len(pids), "starting": self._starting,
                   "idle_pids": pids, "preimport": list(self.preimport), **dict(self.counts)}
        out["idle_rss_mb"] = round(memory_mb(pids), 1)
        now, key = time.monotonic(), tuple(sorted(pids))
        age = now - self._pss[0] if self._pss is not None else PSS_MAX_AGE_S
        if age >= PSS_MAX_AGE_S or (self._pss is not None and key != self._pss[1] and age >= PSS_MIN_AGE_S):
            templates = forkserver.template_pids()
            self._pss = (now, key, {"idle_pss_mb": round(memory_mb(pids, pss=True), 1),
                                    "templates": len(templates),
                                    "templates_pss_mb": round(memory_mb(templates, False, pss=True), 1)})
        assert self._pss is not None
        out.update(self._pss[2])
        return out

    # -- the pool's loop --
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _discard_later(self, handle: KernelHandle) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(lambda: self._spawn(discard(handle)))
        except RuntimeError:  # the loop is gone: kill synchronously
            kill_tree(handle)
            if handle.cap is not None:
                handle.cap.close()

    def _memory_ok(self, need_mb: int) -> bool:
        return psutil.virtual_memory().available / MB >= need_mb

    def _fill(self) -> None:
        """Start kernels until idle + starting reaches the size (any thread: the starts are
        counted at once, so a waiting :meth:`acquire` knows a kernel is coming)."""
        loop = self._loop
        with self._cond:
            if loop is None or self._closed or time.monotonic() < self._retry_at:
                return
            want = self.size - len(self._idle) - self._starting
            if self.budget is not None:
                want = min(want, self.budget - self.counts["started"])
            if want <= 0:
                return
            if not self._memory_ok(min_available_mb(self.settings)):
                self.counts["skipped_low_memory"] += 1
                log.debug("kernel pool: not starting kernels, less than %d MB free",
                          min_available_mb(self.settings))
                return
            try:
                for _ in range(want):
                    loop.call_soon_threadsafe(lambda: self._spawn(self._start_one()))
                    self._starting += 1
                    self.counts["started"] += 1
            except RuntimeError:  # the loop is closed
                return

    async def _start_one(self) -> None:
        handle: KernelHandle | None = None
        ok = False
        try:
            handle = await self._new_kernel()
            ok = True
        except _PreimportFailed:
            self.counts["start_failed"] += 1  # preimport is off now: start a plain one at once
        except Exception as exc:
            self._failures += 1
            delay = min(60.0, RETRY_S * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            self.counts["start_failed"] += 1
            log.warning("kernel pool: could not start a kernel (%s); retrying in %.0f s", exc, delay)
            if self._loop is not None:
                self._loop.call_later(delay, self._fill)
        finally:
            with self._cond:
                self._starting -= 1
                if ok and handle is not None and not self._closed:
                    self._idle.append(_Idle(handle, time.monotonic()))
                    self._failures = 0
                    handle = None
                self._cond.notify_all()
        if handle is not None:  # closed meanwhile
            await discard(handle)
        self._fill()

    async def _new_kernel(self) -> KernelHandle:
        """Start, wait until ready, preimport. Any failure discards the kernel and raises."""
        name = limits.pool_cap_name(secrets.token_hex(4))
        cap = limits.create_cap(self.settings.max_mem_mb, name,
                                instance=limits.instance_key(self.settings.output_dir))
        env = kernel_env(name, "", self.settings.output_dir)
        try:
            handle = await start_kernel(self.settings.kernel_name, self.settings.notebooks, env,
                                        name, cap, fork=self.settings.kernel_forkserver,
                                        preload=self.preimport)
        except BaseException:
            cap.close()
            raise
        try:
            await self._warm(handle)
        except BaseException:
            await discard(handle)
            raise
        return handle

    async def _warm(self, handle: KernelHandle) -> None:
        kc = handle.km.client()
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        try:
            # not wait_for_ready: it sleeps 0.2 s after the kernel answered
            reply = await wait_connected(kc, KERNEL_START_TIMEOUT_S, shell_wait=0.25)
            handle.language_info = reply["content"].get("language_info")
            if self.preimport:
                code = "; ".join(f"__import__({m!r})" for m in self.preimport)
                reply = await kc.execute(code, silent=True, store_history=False, reply=True,
                                         timeout=KERNEL_START_TIMEOUT_S)
                if reply["content"].get("status") != "ok":
                    err = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
                    log.error("kernel pool: pool_preimport %s failed (%s); preimport is off "
                              "from now on", ",".join(self.preimport), err)
                    self.preimport = ()
                    raise _PreimportFailed(err)
        finally:
            kc.stop_channels()

    async def _maintain(self) -> None:
        """Every CHECK_INTERVAL_S: replace dead idle kernels, recycle old ones, shrink when
        memory is short, measure the idle kernels' memory, refill."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                self._check_idle()
            except Exception:
                log.exception("kernel pool maintenance failed")

    def _check_idle(self) -> None:
        now = time.monotonic()
        low = not self._memory_ok(self.settings.max_mem_mb)
        drop: list[KernelHandle] = []
        with self._cond:
            keep: collections.deque[_Idle] = collections.deque()
            for item in self._idle:
                if not item.handle.alive():
                    self.counts["died_idle"] += 1
                    log.warning("pooled kernel %s died while idle; replacing it", item.handle.pid)
                    drop.append(item.handle)
                elif now - item.ready_at > MAX_IDLE_S:
                    self.counts["recycled"] += 1
                    drop.append(item.handle)
                else:
                    keep.append(item)
            if low and keep:
                self.counts["shrunk_low_memory"] += 1
                log.warning("kernel pool: less than %d MB free; discarding an idle kernel",
                            self.settings.max_mem_mb)
                drop.append(keep.pop().handle)
            self._idle = keep
        for h in drop:
            self._spawn(discard(h))
        if not low:
            self._fill()

    async def _shutdown(self) -> None:
        """On the loop thread at close: discard idle kernels, let starting ones finish and
        discard them too (a start cancelled half-way could leave a process behind)."""
        deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        with self._cond:
            idle, self._idle = list(self._idle), collections.deque()
        await asyncio.gather(*(discard(item.handle) for item in idle),
                             return_exceptions=True)
