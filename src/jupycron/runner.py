"""Run one notebook: a kernel, every cell, an offline HTML page, a history row.

:func:`run_notebook` is the whole life of a run, in this order::

    1. claim       this process owns the run until its outcome is written (recording.py)
    2. kernel      one ready now (a pool's), else record RUNNING and acquire one (wait for
                   the pool, or start one: the notebook's ``kernelspec``, else ``kernel_name``;
                   own session, cwd = notebooks folder, AUTORUN=1, memory cap attached)
    3. execute     every cell (jupycron.execute), then the kernel is killed and the cap's
                   verdict read; a pooled kernel's RUNNING row is written while it connects
    4. classify    the outcome into the run (jupycron.execute.classify)
    5. export      the HTML page, atomically (jupycron.export)
    6. release     the kernel is reaped, its cgroup and sockets removed
    7. record      the outcome in the history

Outcomes are :class:`jupycron.models.RunStatus` (see :mod:`jupycron.execute`); also
``failed``: the notebook names a kernel that is not installed (``KernelNotInstalled``,
nothing runs), or the cells ran but the HTML page could not be written (``ExportError``):
no page, no success. The notebook file is only read, never written. Run ids are
``<UTC yyyymmddTHHMMSS>-<6 hex>``. ``run.kernel`` keeps the kernel's identity while it runs
(orphan reaping kills by it); ``run.extra["timing"]`` keeps where the time went (``start_s``
starting a fresh kernel, ``ready_s`` connecting, ``cells_s`` the notebook's own cell time
from nbclient's per-cell timestamps, ``export_s``, ``pooled``, ``total_s``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import findings, limits, recording
from .config import Settings
from .events import RunEvents
from .exceptions import HistoryError, RunNotRecorded
from .execute import MAX_ERROR_VALUE, ExecResult, classify, execute, note_error
from .export import export_html, prepare_for_export
from .kernels import FreshKernels, KernelHandle, KernelProvider, KernelRequest, KernelStartError
from .kernelspecs import KernelNotInstalled, choose_kernel
from .ledger import RunStore, open_store
from .models import Notebook, Run, RunStatus, Trigger
from .paths import output_html, validate_rel

log = logging.getLogger(__name__)

__all__ = ["effective_limits", "new_run_id", "run_notebook"]


def new_run_id(now: datetime | None = None) -> str:
    """``<UTC yyyymmddTHHMMSS>-<6 hex>``: unique and sortable by start time."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def effective_limits(settings: Settings, notebook: Notebook) -> tuple[int, float]:
    """(memory cap in MB, runtime cap in s): the notebook's MaxMem/MaxRuntime or the
    defaults, never above the settings' upper bounds."""
    spec = notebook.spec
    mem = spec.max_mem_mb if spec and spec.max_mem_mb else settings.default_max_mem_mb
    rt = spec.max_runtime_s if spec and spec.max_runtime_s else settings.default_max_runtime_s
    return min(int(mem), settings.max_mem_mb), min(float(rt), settings.max_runtime_s)


def run_notebook(settings: Settings, notebook: Notebook, trigger: Trigger = Trigger.SCHEDULE,
                 slot: datetime | None = None, history: RunStore | None = None, *,
                 stop_event: threading.Event | None = None, run_id: str | None = None,
                 kernels: KernelProvider | None = None, events: RunEvents | None = None) -> Run:
    """Run ``notebook`` once and return its finished :class:`Run` (also in the history).

    Blocks until the notebook finished or was killed (the run's own event loop runs in the
    calling thread, so call it from a worker thread to run several at once). ``kernels``:
    where the kernel comes from (default: a fresh kernel; a
    :class:`~jupycron.kernels.KernelPool` hands out one started ahead of need). ``events``
    hears ``run_started`` once the RUNNING row is written and ``run_finished`` once the
    outcome is. Never raises for anything the notebook does; history I/O errors
    (:class:`jupycron.exceptions.HistoryError`) propagate: when the RUNNING row cannot be
    written nothing runs; when the outcome cannot be written,
    :class:`~jupycron.exceptions.RunNotRecorded` carries the finished run, which this process
    still owns (:func:`jupycron.recording.owned_here`) until the caller writes or drops it.

    Example::

        run = run_notebook(settings, discovery.read_notebook(path, "daily_autorun.ipynb"))
        print(run.status, run.output)
    """
    validate_rel(notebook.path)
    history = history or open_store(settings)
    events = events or RunEvents()
    kernels = kernels or FreshKernels(settings)
    t0 = time.monotonic()
    run = _new_run(notebook, trigger, slot, run_id)
    mem_mb, runtime_s = effective_limits(settings, notebook)
    run.extra.update({"max_mem_mb": mem_mb, "max_runtime_s": runtime_s})
    nb, kernel_name, unreadable = _read_notebook(settings, notebook)
    run.extra["kernel"] = kernel_name
    request = KernelRequest(run.run_id, notebook.path, kernel_name, mem_mb)

    # 1. claim: this process owns the run until its outcome is written (orphan reaping).
    recording.claim(run.run_id)
    # 2. a kernel ready now: its RUNNING row (with the kernel's ids) is written while the
    # client connects. Otherwise RUNNING is recorded first, then a kernel is awaited/started.
    handle = kernels.ready(request) if nb is not None else None
    running_row = None
    if handle is not None:
        _note_kernel(run, handle)
        running_row = asyncio.to_thread(_record_running, history, run, events)
    else:
        _record_running(history, run, events)
    log.info("run %s of %s started (cap %d MB via %s, max %g s%s)", run.run_id, notebook.path,
             mem_mb, run.memory_limit, runtime_s, ", pooled kernel" if handle else "")

    result = unreadable
    with asyncio.Runner() as aio:
        if nb is not None and handle is None:
            handle, result = _acquire(aio, kernels, request, run, history)
        if nb is not None and handle is not None:
            # 3. execute (the kernel is dead when it returns; its cap's verdict is read)
            try:
                result = aio.run(execute(handle, nb, max_runtime_s=runtime_s,
                                         stop_event=stop_event, alongside=running_row))
            except HistoryError:  # the RUNNING row could not be written: the run never was
                aio.run(kernels.release(handle))
                recording.release(run.run_id)
                raise
            except Exception as exc:  # a bug or an I/O error around the kernel: record it
                log.exception("run %s of %s failed inside jupycron", run.run_id, notebook.path)
                result = ExecResult.no_kernel(f"{type(exc).__name__}: {exc}")
        try:
            # 4. classify and 5. export
            _finish(settings, notebook, nb, run, result, mem_mb, runtime_s)
        finally:
            # 6. release: reap the kernel, remove its cgroup and sockets
            if handle is not None:
                aio.run(kernels.release(handle))

    run.finished_at = datetime.now(UTC)
    run.duration_s = round(time.monotonic() - t0, 3)
    run.extra["timing"].update({"pooled": bool(handle and handle.pooled),
                                "total_s": run.duration_s})
    # 7. record the outcome
    try:
        history.record(run)
    except HistoryError as exc:  # still owned: the caller keeps the outcome and retries
        raise RunNotRecorded(run, exc) from exc
    recording.release(run.run_id)
    events.finished(run)
    log.info("run %s of %s: %s in %.1f s%s", run.run_id, notebook.path, run.status,
             run.duration_s, f" ({run.error_name}: {run.error_value})" if run.error_name else "")
    return run


def _new_run(notebook: Notebook, trigger: Trigger, slot: datetime | None,
             run_id: str | None) -> Run:
    started = datetime.now(UTC)
    return Run(notebook=notebook.path, run_id=run_id or new_run_id(started), started_at=started,
               trigger=trigger, slot=slot, pid=os.getpid(), host=socket.gethostname(),
               memory_limit=limits.detect_method())


def _read_notebook(settings: Settings,
                   notebook: Notebook) -> tuple[NotebookNode | None, str, ExecResult]:
    """(the notebook with stale outputs cleared, or None when it cannot run; the kernel it
    names; the result of a run that cannot start: its error)."""
    failed = ExecResult()
    try:
        nb = nbformat.read(settings.notebooks / notebook.path, as_version=4)
    except FileNotFoundError:
        failed.error_name = "FileNotFoundError"
        failed.error_value = "the notebook was deleted before the run started"
        return None, settings.kernel_name, failed
    except Exception as exc:  # a corrupt notebook fails its run, it does not crash the scheduler
        failed.error_name, failed.error_value = type(exc).__name__, str(exc)[:MAX_ERROR_VALUE]
        return None, settings.kernel_name, failed
    try:
        kernel_name = choose_kernel(nb.metadata, settings.kernel_name).name
    except KernelNotInstalled as exc:  # never run it in another language's kernel
        failed.error_name, failed.error_value = "KernelNotInstalled", str(exc)[:MAX_ERROR_VALUE]
        return None, settings.kernel_name, failed
    for cell in nb.cells:  # stale outputs of cells that will not run must not show
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb, kernel_name, failed


def _record_running(history: RunStore, run: Run, events: RunEvents) -> None:
    """The RUNNING row. When it cannot be written nothing of the run is in the history, so
    the run is abandoned before any cell runs (no outcome, no page over the last one)."""
    try:
        history.record(run)
    except HistoryError:
        recording.release(run.run_id)
        raise
    events.started(run)


def _acquire(aio: asyncio.Runner, kernels: KernelProvider, request: KernelRequest, run: Run,
             history: RunStore) -> tuple[KernelHandle | None, ExecResult]:
    """A kernel for the run (its ids recorded), or None and the result of a run without one."""
    t = time.monotonic()
    try:
        handle = aio.run(kernels.acquire(request))
    except KernelStartError as exc:
        return None, ExecResult.no_kernel(str(exc))
    except Exception as exc:  # a bug around the kernel: record it, don't crash
        log.exception("run %s of %s failed inside jupycron", run.run_id, run.notebook)
        return None, ExecResult.no_kernel(f"{type(exc).__name__}: {exc}")
    if handle.pooled:
        run.extra.setdefault("timing", {})["pool_wait_s"] = round(time.monotonic() - t, 3)
    _note_kernel(run, handle)
    try:
        history.record(run)
    except HistoryError as exc:  # the run goes on; its outcome is retried
        log.warning("run %s of %s: cannot record the kernel's ids: %s", run.run_id,
                    run.notebook, exc)
    return handle, ExecResult()


def _note_kernel(run: Run, handle: KernelHandle) -> None:
    """Record the kernel's identity in the run (orphan reaping kills by it)."""
    run.kernel = handle.info()
    if handle.cap is not None:
        run.memory_limit = handle.cap.method


def _name_lowered_limit(settings: Settings, notebook: Notebook, status: RunStatus,
                        evalue: str | None) -> str | None:
    """``evalue`` of an OOM or a timeout, plus why the limit was lower than the notebook's
    line asked (an operator who wrote "MaxMem": 4000 reads "1000 MB" and nothing else)."""
    spec = notebook.spec
    if spec is None or evalue is None:
        return evalue
    if status is RunStatus.OOM and spec.max_mem_mb and spec.max_mem_mb > settings.max_mem_mb:
        return (f"{evalue}; the notebook's MaxMem {int(spec.max_mem_mb)} MB is above the "
                f"max_mem_mb setting {settings.max_mem_mb}")
    if status is RunStatus.TIMEOUT and spec.max_runtime_s and spec.max_runtime_s > settings.max_runtime_s:
        return (f"{evalue}; the notebook's MaxRuntime {spec.max_runtime_s:g} s is above the "
                f"max_runtime_s setting {settings.max_runtime_s:g}")
    return evalue


def _finish(settings: Settings, notebook: Notebook, nb: NotebookNode | None, run: Run,
            result: ExecResult, mem_mb: int, runtime_s: float) -> None:
    """Classify the outcome into ``run``, then write the HTML (the kernel is already dead)."""
    if nb is None:
        status, ename, evalue = RunStatus.FAILED, result.error_name, result.error_value
    else:
        status, ename, evalue = classify(result, mem_mb, runtime_s, run.memory_limit or "")
        evalue = _name_lowered_limit(settings, notebook, status, evalue)
    run.status, run.error_name, run.error_value = status, ename, evalue
    if status is RunStatus.FAILED or (status is RunStatus.OOM and result.error_cell is not None):
        run.error_cell = result.error_cell
    elif status is not RunStatus.SUCCESS:
        run.error_cell = result.current_cell
    run.peak_mem_mb = round(result.peak_mb, 1) if result.peak_mb else None
    if result.sys_exit is not None:
        run.extra["sys_exit"] = result.sys_exit
    if result.truncated:
        run.extra["output_truncated"] = True
    if result.expected_errors:
        run.extra["expected_errors"] = result.expected_errors
    if result.exit_code is not None and status is not RunStatus.SUCCESS:
        run.extra["kernel_exit_code"] = result.exit_code
    timing = run.extra.setdefault("timing", {})
    timing.update({k: round(v, 3) for k, v in (("start_s", result.start_s),
                                               ("ready_s", result.ready_s),
                                               ("cells_s", result.cells_s)) if v is not None})
    if nb is None:
        return
    run.finding = findings.last_finding(nb)  # what the notebook reported (the last one wins)
    if result.current_cell is not None and status is not RunStatus.SUCCESS \
            and result.current_cell < len(nb.cells) and result.kernel_died:
        note_error(nb.cells[result.current_cell], ename or "Error", evalue or "")
    t = time.monotonic()
    _export(settings, notebook, nb, run)
    timing["export_s"] = round(time.monotonic() - t, 3)


def _export(settings: Settings, notebook: Notebook, nb: NotebookNode, run: Run) -> None:
    """Write the page; a page that cannot be written fails a successful run."""
    dest = output_html(settings.output_dir, notebook.path)
    try:
        prepare_for_export(nb, str(run.extra.get("kernel") or settings.kernel_name))
        export_html(nb, dest, Path(notebook.path).stem, (settings.notebooks / notebook.path).parent)
        run.output = dest.relative_to(settings.output_dir).as_posix()
    except Exception as exc:
        log.error("run %s of %s: cannot write HTML %s: %s", run.run_id, notebook.path, dest, exc)
        run.extra["html_error"] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_VALUE]
        if run.status is RunStatus.SUCCESS:  # no page, no success: the operator would see nothing
            run.status, run.error_name = RunStatus.FAILED, "ExportError"
            run.error_value = f"the cells ran but the HTML page could not be written: " \
                              f"{run.extra['html_error']}"[:MAX_ERROR_VALUE]
    run.extra["html_written_at"] = datetime.now(UTC).isoformat()
