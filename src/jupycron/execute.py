"""Execute a notebook on an acquired kernel and say what happened (:class:`ExecResult`).

:func:`execute` runs every code cell of a notebook (in place) on a
:class:`~jupycron.kernels.base.KernelHandle` with nbclient, under a watchdog that kills the
kernel's tree when ``MaxRuntime`` passes or the scheduler stops; at the end it kills the
kernel (without waiting: the provider's ``release`` reaps it later) and reads the memory
cap's verdict. :func:`classify` turns the result into the run's outcome:

* ``success`` - every cell ran without error. A cell calling ``sys.exit(0)`` / ``sys.exit()``
  also counts as success and **stops** the notebook there (like a script; papermill treats
  ``SystemExit`` with code 0 the same way). Any other ``sys.exit(code)`` stops it as ``failed``.
* ``failed`` - a cell raised. Later cells still run (so the page shows everything); the first
  error's class, message and cell index (position in ``nb.cells``, 0-based) are kept. A cell
  tagged ``raises-exception`` may raise (as in nbclient and papermill): its error shows in
  the page and in :attr:`ExecResult.expected_errors`, and is no failure.
* ``timeout`` - ``MaxRuntime`` (whole notebook, seconds) passed: the kernel's tree is killed.
* ``oom`` - the OOM killer fired inside the memory cap, or a cell raised ``MemoryError``.
* ``crashed`` - the kernel died otherwise (``os._exit``, a signal, failed start).
* ``interrupted`` - ``stop_event`` was set (scheduler shutting down): the kernel is killed.

Outputs are capped at :data:`MAX_OUTPUT_BYTES` per run (a note says what was dropped);
a finding (``report_finding``) is kept past the cap, cut to its limits, so a verbose run
still reports what it found; adjacent stream outputs are joined (:func:`merge_streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from .findings import FINDING_MIME, finding_from_payload, finding_html
from .kernels.base import (
    KERNEL_START_TIMEOUT_S,
    KernelHandle,
    kill_tree,
    maybe_await,
    wait_connected,
)
from .models import RunStatus

log = logging.getLogger(__name__)

__all__ = ["EXPECTED_ERROR_TAG", "MAX_ERROR_VALUE", "MAX_OUTPUT_BYTES", "ExecResult", "classify",
           "execute", "merge_streams", "note_error"]

#: Outputs kept per run (text and encoded data): beyond it, outputs are dropped and a note
#: says so. Protects this process's memory and the page size from a runaway ``print`` loop.
MAX_OUTPUT_BYTES = 20 * 1024 * 1024
MAX_ERROR_VALUE = 2000
#: A cell tagged so may raise: its error shows in the page but does not fail the run.
EXPECTED_ERROR_TAG = "raises-exception"
_WATCH_INTERVAL_S = 0.1


def _finding_only(msg: dict[str, Any]) -> dict[str, Any]:
    """A finding output message kept past the output cap: its finding cut to the limits
    of :mod:`jupycron.findings` and a banner drawn from it, nothing else of the bundle."""
    content = msg.get("content", {})
    try:
        finding = finding_from_payload(content.get("data", {}).get(FINDING_MIME))
    except ValueError:
        return msg | {"content": content | {"data": {"text/plain": "[invalid finding]"}}}
    payload = {"level": str(finding.level), "summary": finding.summary,
               "detail": finding.detail}
    data = {FINDING_MIME: payload, "text/html": finding_html(finding),
            "text/plain": f"{str(finding.level).upper()}: {finding.summary}"}
    return msg | {"content": content | {"data": data, "metadata": {}}}


@dataclass
class ExecResult:
    """What happened to a notebook on its kernel (filled while executing, then returned)."""

    error_name: str | None = None       # the first error (a cell's exception class)
    error_value: str | None = None
    error_cell: int | None = None       # index in nb.cells of the first failing cell
    sys_exit: str | None = None         # SystemExit code, when a cell called sys.exit
    current_cell: int | None = None     # the cell that was running when the run stopped
    kill_reason: RunStatus | None = None  # TIMEOUT / INTERRUPTED, set by the watchdog
    kernel_died: bool = False
    start_error: str | None = None      # why there was no usable kernel
    truncated: bool = False             # outputs beyond MAX_OUTPUT_BYTES were dropped
    expected_errors: list[int] = field(default_factory=list)  # cells tagged raises-exception
    exit_code: int | None = None        # the kernel process's exit code (-signal when killed)
    peak_mb: float | None = None        # the memory cap's peak
    oom: bool = False                   # the memory cap's OOM verdict
    start_s: float | None = None        # starting a fresh kernel
    ready_s: float | None = None        # connecting to it until the first cell could run
    cells_s: float | None = None        # the cells' own run time (nbclient's timestamps)

    @classmethod
    def no_kernel(cls, why: str) -> ExecResult:
        """The run got no kernel (it could not start, or jupycron failed around it)."""
        return cls(kernel_died=True, start_error=why[:MAX_ERROR_VALUE])


def classify(result: ExecResult, limit_mb: int, max_runtime_s: float,
             method: str) -> tuple[RunStatus, str | None, str | None]:
    """(status, error_name, error_value) from what happened (see the module docstring)."""
    if result.kill_reason is RunStatus.TIMEOUT:
        return RunStatus.TIMEOUT, "Timeout", f"MaxRuntime of {max_runtime_s:g} s exceeded"
    if result.kill_reason is RunStatus.INTERRUPTED:
        return RunStatus.INTERRUPTED, "Interrupted", "the scheduler was stopped during the run"
    if result.oom and (result.kernel_died or result.error_name is not None):
        return RunStatus.OOM, "MemoryError", f"killed by the memory cap ({limit_mb} MB, {method})"
    if result.kernel_died:
        code = result.exit_code
        if code is not None and code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            return RunStatus.CRASHED, "KernelDied", f"the kernel was killed by {sig}"
        return RunStatus.CRASHED, "KernelDied", \
            result.start_error or f"the kernel exited with code {code}"
    if result.error_name == "MemoryError":
        return RunStatus.OOM, "MemoryError", result.error_value or f"memory cap {limit_mb} MB"
    if result.error_name is not None:
        return RunStatus.FAILED, result.error_name, result.error_value
    return RunStatus.SUCCESS, None, None


class _Client(NotebookClient):
    """nbclient with a cap on kept output and a record of the first error."""

    def __init__(self, nb: NotebookNode, handle: KernelHandle, result: ExecResult,
                 **kw: Any) -> None:
        super().__init__(nb, km=handle.km, **kw)
        self.result = result
        self._out_bytes = 0
        self.on_cell_error = self._on_cell_error

    def _on_cell_error(self, cell: NotebookNode, cell_index: int,
                       execute_reply: dict[str, Any]) -> None:
        content = execute_reply.get("content", {})
        ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
        r = self.result
        if ename != "SystemExit" and EXPECTED_ERROR_TAG in cell.get("metadata", {}).get("tags", ()):
            # Expected, as in nbclient and papermill: shown in the page, not a failure.
            r.expected_errors.append(cell_index)
            return
        if ename == "SystemExit":
            r.sys_exit = evalue
            if evalue in ("", "0", "None"):
                return
        if r.error_name is None:
            r.error_name, r.error_value, r.error_cell = ename, evalue[:MAX_ERROR_VALUE], cell_index

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        if msg["msg_type"] != "error":
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(
                len(v) if isinstance(v, str) else len(str(v))
                for v in content.get("data", {}).values())
            self._out_bytes += size
            if self._out_bytes > MAX_OUTPUT_BYTES:
                if not self.result.truncated:
                    self.result.truncated = True
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stderr",
                        text=f"\n[jupycron: output truncated: more than "
                             f"{MAX_OUTPUT_BYTES // (1024 * 1024)} MB in this run]\n"))
                if FINDING_MIME not in content.get("data", {}):
                    return None
                msg = _finding_only(msg)  # what the run found is never dropped
        return super().output(outs, msg, display_id, cell_index)

    async def connect(self, handle: KernelHandle,
                      alongside: Coroutine[Any, Any, None] | None) -> None:
        """Start this client's channels to the kernel; ``alongside`` runs meanwhile and has
        finished (its exception raised) before this returns."""
        if handle.language_info is not None:  # a pooled kernel: known to be up
            self.kc = handle.km.client()
            # No heartbeat thread, stdin or control socket: liveness comes from the manager
            # (the process), stdin is off; fewer sockets to set up on the critical path.
            self.kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
            self.kc.allow_stdin = False
            first = asyncio.ensure_future(alongside) if alongside is not None else None
            try:
                await wait_connected(self.kc, KERNEL_START_TIMEOUT_S)
            finally:
                if first is not None:  # always finished before anything else is recorded
                    await asyncio.shield(first)
            self.nb.metadata["language_info"] = handle.language_info
            return
        await self.async_start_new_kernel_client()
        assert self.kc is not None
        if alongside is not None:
            await alongside
        reply = await self.async_wait_for_reply(await maybe_await(self.kc.kernel_info()))
        if reply is not None and "language_info" in reply["content"]:
            self.nb.metadata["language_info"] = reply["content"]["language_info"]

    async def set_env(self, env: dict[str, str]) -> None:
        """Update the kernel's ``os.environ`` silently (no count, no history, no name bound)."""
        assert self.kc is not None
        code = f"__import__('os').environ.update({env!r})"
        reply = await self.async_wait_for_reply(
            await maybe_await(self.kc.execute(code, silent=True, store_history=False)))
        if reply is None or reply["content"].get("status") != "ok":
            raise RuntimeError("could not set the run's environment in the pooled kernel")


def merge_streams(cell: NotebookNode) -> None:
    """Join adjacent stream outputs of the same name (stdout, stderr) into one.

    Linear in the total text: each run of adjacent streams is joined once (repeated ``+``
    copies the growing text again for every output). nbclient's own ``coalesce_streams``
    also interprets ``\\r`` and ``\\b`` with regular expressions that are quadratic in the
    line length, so it is off.
    """
    outs = cell.get("outputs")
    if not outs or len(outs) < 2:
        return
    merged: list[NotebookNode] = []
    pieces: list[str] = []  # the texts of the stream run ending in merged[-1]
    for out in outs:
        prev = merged[-1] if merged else None
        is_stream = out.get("output_type") == "stream"
        if is_stream and prev is not None and pieces and prev.get("name") == out.get("name"):
            pieces.append(_stream_text(out))
            continue
        if len(pieces) > 1:
            merged[-1]["text"] = "".join(pieces)
        merged.append(out)
        pieces = [_stream_text(out)] if is_stream else []
    if len(pieces) > 1:
        merged[-1]["text"] = "".join(pieces)
    cell.outputs = merged


def _stream_text(out: NotebookNode) -> str:
    text = out.get("text", "")
    return "".join(text) if isinstance(text, list) else str(text)


def note_error(cell: NotebookNode, ename: str, evalue: str) -> None:
    """Show where the run stopped, in the cell that was running."""
    if cell.cell_type == "code":
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]))


def _cell_seconds(cell: NotebookNode) -> float:
    """A cell's own run time from nbclient's timestamps (execute_input to execute_reply)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start = timing.get("iopub.execute_input") or timing.get("iopub.status.busy")
    end = timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return 0.0


async def _run_cells(client: _Client, handle: KernelHandle, result: ExecResult,
                     alongside: Coroutine[Any, Any, None] | None) -> None:
    t0 = time.monotonic()
    await client.connect(handle, alongside)
    if handle.env_update:
        await client.set_env(handle.env_update)
    result.ready_s = time.monotonic() - t0
    result.cells_s = 0.0
    for index, cell in enumerate(client.nb.cells):
        result.current_cell = index
        try:
            await client.async_execute_cell(cell, index,
                                            execution_count=client.code_cells_executed + 1)
        finally:  # also the cell a kill interrupted: its page shows what it printed
            merge_streams(cell)
        result.cells_s += _cell_seconds(cell)
        cell.get("metadata", {}).pop("execution", None)  # not part of the page
        if result.sys_exit is not None:
            break
    result.current_cell = None


async def execute(handle: KernelHandle, nb: NotebookNode, *, max_runtime_s: float,
                  stop_event: threading.Event | None = None,
                  alongside: Coroutine[Any, Any, None] | None = None) -> ExecResult:
    """Run every code cell of ``nb`` (in place) on ``handle``, then kill the kernel's tree
    and read the memory cap's verdict; returns what happened.

    Errors do not stop the notebook (allow_errors), except ``SystemExit``. A watchdog kills
    the kernel's tree when ``max_runtime_s`` passes or ``stop_event`` is set. The handle's
    ``env_update`` is set in the kernel's ``os.environ`` before the first cell.
    ``alongside`` (e.g. writing the RUNNING history row) runs while the client connects
    and has finished before the first cell; its exception propagates (the kernel is killed
    all the same).
    """
    result = ExecResult(start_s=handle.start_s)
    client = _Client(nb, handle, result, allow_errors=True, timeout=None,
                     startup_timeout=KERNEL_START_TIMEOUT_S, kernel_name=handle.km.kernel_name,
                     record_timing=True, coalesce_streams=False)
    task = asyncio.ensure_future(_run_cells(client, handle, result, alongside))
    loop = asyncio.get_running_loop()
    watch = _Watchdog(handle, result, time.monotonic() + max_runtime_s, stop_event,
                      on_kill=lambda: loop.call_soon_threadsafe(task.cancel))
    watch.start()
    try:
        await task
    except (DeadKernelError, asyncio.CancelledError):
        result.kernel_died = True
    except RuntimeError as exc:  # e.g. "Kernel died before replying to kernel_info"
        result.kernel_died = True
        result.start_error = str(exc)[:MAX_ERROR_VALUE]
    finally:
        watch.finish()
        if client.kc is not None:
            with contextlib.suppress(Exception):
                client.kc.stop_channels()
        if alongside is not None and inspect.getcoroutinestate(alongside) == inspect.CORO_CREATED:
            alongside.close()  # never started (the kernel died first)
        _read_verdict(handle, result)
    return result


def _read_verdict(handle: KernelHandle, result: ExecResult) -> None:
    """Kill the kernel (not waiting) and keep its exit code and the cap's verdict. The
    verdict is read before the cgroup goes away; a kernel that died by itself keeps its own
    exit code (the kill only hits a live one)."""
    cap = handle.cap
    if cap is not None:
        cap.sample()
    kill_tree(handle, wait=False)
    result.exit_code = handle.exit_code()
    result.peak_mb = cap.peak_mb() if cap is not None else None
    result.oom = cap.oom_killed() if cap is not None else False


class _Watchdog(threading.Thread):
    """Kills the kernel's tree when the deadline passes or ``stop_event`` is set.

    A thread of its own, not a task on the run's event loop: whatever keeps the loop busy
    (a flood of outputs, a slow step of nbclient) cannot delay the kill. ``on_kill`` (thread
    safe) then tells the loop to stop waiting for the cells.
    """

    def __init__(self, handle: KernelHandle, result: ExecResult, deadline: float,
                 stop_event: threading.Event | None, on_kill: Callable[[], object]) -> None:
        super().__init__(name=f"watchdog-{handle.run_id}", daemon=True)
        self.handle, self.result, self.deadline = handle, result, deadline
        self.stop_event, self.on_kill = stop_event, on_kill
        self._done = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._done.wait(_WATCH_INTERVAL_S):
            if self.handle.cap is not None:
                with contextlib.suppress(Exception):
                    self.handle.cap.sample()
            reason = None
            if time.monotonic() >= self.deadline:
                reason = RunStatus.TIMEOUT
            elif self.stop_event is not None and self.stop_event.is_set():
                reason = RunStatus.INTERRUPTED
            if reason is None:
                continue
            with self._lock:
                if self._done.is_set():  # the cells finished first: no verdict to give
                    return
                self.result.kill_reason = reason
            log.info("run %s: %s; killing the kernel", self.handle.serving or self.handle.run_id,
                     "MaxRuntime exceeded" if reason is RunStatus.TIMEOUT else "stop requested")
            try:
                kill_tree(self.handle)
            finally:
                self.on_kill()
            return

    def finish(self) -> None:
        """The cells are over (or the kill landed): stop watching and wait for the thread."""
        with self._lock:
            self._done.set()
        self.join()
