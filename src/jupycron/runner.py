"""Run one notebook: a fresh kernel, every cell, an offline HTML page, a history row.

:func:`run_notebook` is the whole life of a run::

    record RUNNING (pid = this process)  ->  start a kernel (the one the notebook's
    ``kernelspec`` names, else ``kernel_name``; own session, cwd = notebooks folder,
    AUTORUN=1, memory cap attached)  ->  execute every cell  ->  kill the kernel's process tree
    ->  write the HTML atomically  ->  record the outcome

Outcomes (:class:`jupycron.models.RunStatus`):

* ``success`` - every cell ran without error. A cell calling ``sys.exit(0)`` / ``sys.exit()``
  also counts as success and **stops** the notebook there (like a script; papermill treats
  ``SystemExit`` with code 0 the same way). Any other ``sys.exit(code)`` stops it as ``failed``.
* ``failed`` - a cell raised. Later cells still run (so the page shows everything); the first
  error's class, message and cell index (position in ``nb.cells``, 0-based) are kept. A cell
  tagged ``raises-exception`` may raise (as in nbclient and papermill): its error shows in the
  page and in ``run.extra["expected_errors"]``, and is no failure. Also ``failed``: the
  notebook names a kernel that is not installed (``KernelNotInstalled``, nothing runs), or
  the cells ran but the HTML page could not be written (``ExportError``): no page, no success.
* ``timeout`` - ``MaxRuntime`` (whole notebook, seconds) passed: the kernel's process group and
  memory cgroup are killed with SIGKILL.
* ``oom`` - the OOM killer fired inside the memory cap, or a cell raised ``MemoryError``.
* ``crashed`` - the kernel died otherwise (``os._exit``, a signal, failed start).
* ``interrupted`` - ``stop_event`` was set (scheduler shutting down): the kernel is killed.

Nothing is left running: the kernel starts in its own session (process group) with a marker
``JUPYCRON_RUN_ID`` in its environment; at the end the group, every descendant, every process
inside the run's cgroup and (without a cgroup) every process carrying the marker gets SIGKILL.

The notebook file is only read, never written. Run ids are ``<UTC yyyymmddTHHMMSS>-<6 hex>``.

Kernels are started and used in separate steps (:func:`start_kernel`, :func:`execute`,
:func:`discard_kernel`). With a :class:`jupycron.pool.KernelPool` (``pool=``), the run takes
a kernel started ahead of need instead of starting one: the pool has already applied the
notebook's memory cap to it; the run sets ``JUPYCRON_RUN_ID`` / ``JUPYCRON_NOTEBOOK`` in the
kernel's ``os.environ`` (so the notebook and its children see them) before the first cell,
and discards the kernel afterwards like a fresh one: one kernel, one run.

Critical path order: kill the kernel and read the cap's verdict, write the HTML, then reap
the kernel and remove its cgroup, then record the outcome. ``run.extra["timing"]`` keeps
where the time went (``kernel_s`` waiting for a ready kernel, ``cells_s`` the notebook's own
cell time from nbclient's per-cell timestamps, ``export_s``, ``pooled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import nbformat
import psutil
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from safefiles.atomic import atomic_write_text

from . import limits, recording
from .config import Settings
from .exceptions import HistoryError, RunNotRecorded
from .export import prepare_for_export
from .forkserver import ForkProvisioner
from .kernelspecs import KernelNotInstalled, choose_kernel
from .ledger import RunStore, open_store
from .models import Notebook, Run, RunStatus, Trigger
from .paths import output_html, validate_rel

if TYPE_CHECKING:
    from .pool import KernelPool

log = logging.getLogger(__name__)

__all__ = [
    "MAX_OUTPUT_BYTES",
    "KernelHandle",
    "effective_limits",
    "execute",
    "export_html",
    "new_run_id",
    "run_notebook",
    "start_kernel",
    "warm_exporters",
]

#: Outputs kept per run (text and encoded data): beyond it, outputs are dropped and a note
#: says so. Protects this process's memory and the page size from a runaway ``print`` loop.
MAX_OUTPUT_BYTES = 20 * 1024 * 1024
MAX_ERROR_VALUE = 2000
RUN_ID_ENV = "JUPYCRON_RUN_ID"
#: A cell tagged so may raise: its error shows in the page but does not fail the run.
EXPECTED_ERROR_TAG = "raises-exception"
KERNEL_START_TIMEOUT_S = 60
_WATCH_INTERVAL_S = 0.1

# An offline page: the "lab" template embeds its CSS; the blocks below would add
# <script src="https://cdn..."> for require.js, MathJax, Mermaid and widgets.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


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


# --- kernels -------------------------------------------------------------------------------

class _CappedKernelManager(AsyncKernelManager):
    """A kernel manager whose command goes through the memory cap (systemd-run wraps it),
    launched through the fork server when ``fork`` is set (see :mod:`jupycron.forkserver`)."""

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


@dataclass
class KernelHandle:
    """A started kernel: its manager, process ids and the cap it runs under."""

    km: AsyncKernelManager
    pid: int
    pgid: int
    create_time: float
    run_id: str
    cap: limits.MemoryCap | None = None
    sockets: Path | None = None   # private folder of the connection file and ipc sockets
    language_info: dict[str, Any] | None = None  # from the pool's warm-up kernel_info reply
    serving: str | None = None  # the run id a pooled kernel runs (its children carry it)
    forked: bool = False  # forked from the kernel template (jupycron.forkserver)

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


def kernel_env(run_id: str, notebook_rel: str, output_dir: Path | None = None) -> dict[str, str]:
    """The kernel's environment: ours plus ``AUTORUN=1`` and the run marker.

    ``JUPYCRON_STATE_DIR`` (where notebooks keep what they already alerted on) defaults to
    ``<output>/.state``: writable under the hardened systemd units, never served (a dot
    folder), and kept with the outputs it belongs to.
    """
    env = dict(os.environ)
    env.update({"AUTORUN": "1", RUN_ID_ENV: run_id, "JUPYCRON_NOTEBOOK": notebook_rel,
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    if output_dir is not None:
        env.setdefault("JUPYCRON_STATE_DIR", str(output_dir / ".state"))
    return env


async def start_kernel(kernel_name: str, cwd: Path, env: dict[str, str], run_id: str,
                       cap: limits.MemoryCap | None, *, fork: bool = False,
                       preload: Sequence[str] = ()) -> KernelHandle:
    """Start a kernel in its own session (process group) and attach ``cap`` to it.

    jupyter_client starts kernels with ``start_new_session=True`` and sets JPY_PARENT_PID,
    so ipykernel exits by itself if this process dies. The command is an argv list: no shell.
    ``fork``: fork it from the kernel template (:mod:`jupycron.forkserver`: the child calls
    setsid, the template is its parent and exits with us), falling back to a normal start;
    ``preload``: fork it from a template that has also imported these modules.
    """
    # Unix sockets in a private folder instead of TCP ports on localhost: other local users
    # cannot connect to the kernel, and no port can collide.
    sockets = tempfile.mkdtemp(prefix="jupycron-kernel-")
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
            await discard_kernel(handle)
            raise
    return handle


def kill_kernel_tree(handle: KernelHandle, wait: bool = True) -> None:
    """SIGKILL the kernel, its process group, its descendants and everything in its cap.

    ``wait=False`` sends the signals once without waiting for the cap to empty (the run's
    critical path; :func:`discard_kernel` then waits)."""
    procs = handle.descendants()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(handle.pgid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if handle.cap is not None:
        handle.cap.kill_all(wait=wait)
    if handle.cap is None or not isinstance(handle.cap, limits._CgroupCap):
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


async def discard_kernel(handle: KernelHandle) -> None:
    """Kill the kernel's whole process tree and release its manager's resources."""
    kill_kernel_tree(handle)
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


# --- execution ---------------------------------------------------------------------------

@dataclass
class ExecState:
    """What happened while executing; filled by :func:`execute` and its watchdog."""

    error_name: str | None = None
    error_value: str | None = None
    error_cell: int | None = None
    exit_code: str | None = None          # SystemExit code, when a cell called sys.exit
    current_cell: int | None = None
    kill_reason: RunStatus | None = None  # TIMEOUT / INTERRUPTED, set by the watchdog
    kernel_died: bool = False
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _Client(NotebookClient):
    """nbclient with a cap on kept output and a record of the first error."""

    def __init__(self, nb: NotebookNode, km: AsyncKernelManager, state: ExecState,
                 **kw: Any) -> None:
        super().__init__(nb, km=km, **kw)
        self.state = state
        self._out_bytes = 0
        self.on_cell_error = self._on_cell_error

    def _on_cell_error(self, cell: NotebookNode, cell_index: int,
                       execute_reply: dict[str, Any]) -> None:
        content = execute_reply.get("content", {})
        ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
        if ename != "SystemExit" and EXPECTED_ERROR_TAG in cell.get("metadata", {}).get("tags", ()):
            # Expected, as in nbclient and papermill: shown in the page, not a failure.
            self.state.extra.setdefault("expected_errors", []).append(cell_index)
            return
        if ename == "SystemExit":
            self.state.exit_code = evalue
            if evalue in ("", "0", "None"):
                return
        if self.state.error_name is None:
            self.state.error_name, self.state.error_value = ename, evalue[:MAX_ERROR_VALUE]
            self.state.error_cell = cell_index

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        if msg["msg_type"] != "error":
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(
                len(v) if isinstance(v, str) else len(str(v))
                for v in content.get("data", {}).values())
            self._out_bytes += size
            if self._out_bytes > MAX_OUTPUT_BYTES:
                if not self.state.truncated:
                    self.state.truncated = True
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stderr",
                        text=f"\n[jupycron: output truncated: more than "
                             f"{MAX_OUTPUT_BYTES // (1024 * 1024)} MB in this run]\n"))
                return None
        return super().output(outs, msg, display_id, cell_index)


def _merge_streams(cell: NotebookNode) -> None:
    """Join adjacent stream outputs of the same name (stdout, stderr) into one.

    Linear in the total text: each run of adjacent streams is joined once (repeated ``+``
    copied the growing text again for every output: minutes for 100k ``print(flush=True)``).
    nbclient's own ``coalesce_streams`` also interprets ``\r`` and ``\b`` with regular
    expressions that are quadratic in the line length (minutes for a few MB of long lines).
    """
    outs = cell.get("outputs")
    if not outs or len(outs) < 2:
        return
    merged: list[NotebookNode] = []
    pieces: list[str] = []  # the texts of the stream run ending in merged[-1]

    def close_run() -> None:
        if len(pieces) > 1:
            merged[-1]["text"] = "".join(pieces)

    for out in outs:
        prev = merged[-1] if merged else None
        is_stream = out.get("output_type") == "stream"
        if is_stream and prev is not None and pieces and prev.get("name") == out.get("name"):
            pieces.append(_stream_text(out))
            continue
        close_run()
        merged.append(out)
        pieces = [_stream_text(out)] if is_stream else []
    close_run()
    cell.outputs = merged


def _stream_text(out: NotebookNode) -> str:
    text = out.get("text", "")
    return "".join(text) if isinstance(text, list) else str(text)


def _note_error(cell: NotebookNode, ename: str, evalue: str) -> None:
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


async def execute(handle: KernelHandle, nb: NotebookNode, state: ExecState, *,
                  max_runtime_s: float, stop_event: threading.Event | None = None,
                  env: dict[str, str] | None = None,
                  before_cells: Callable[[], None] | None = None) -> None:
    """Run every code cell of ``nb`` (in place) on a started kernel.

    Errors do not stop the notebook (allow_errors), except ``SystemExit``. A watchdog kills
    the kernel's tree when ``max_runtime_s`` passes or ``stop_event`` is set. Returns when
    the notebook finished or the kernel is gone; the outcome is in ``state`` (the sum of the
    cells' own run times in ``state.extra["cells_s"]``). ``env`` is set in the kernel's
    ``os.environ`` before the first cell (a pooled kernel learns its run id), silently:
    no execution count, no history, no variable left behind. ``before_cells`` (blocking,
    e.g. the RUNNING history row) runs in a worker thread while the client connects, and
    has finished before the first cell starts.
    """
    client = _Client(nb, handle.km, state, allow_errors=True, timeout=None,
                     startup_timeout=KERNEL_START_TIMEOUT_S, kernel_name=handle.km.kernel_name,
                     record_timing=True, coalesce_streams=False)
    deadline = time.monotonic() + max_runtime_s

    async def cells() -> None:
        t0 = time.monotonic()
        if handle.language_info is not None:  # a pooled kernel: known to be up
            client.kc = handle.km.client()
            # No heartbeat thread, stdin or control socket: liveness comes from the manager
            # (the process), stdin is off; fewer sockets to set up on the critical path.
            client.kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
            client.kc.allow_stdin = False
            first = asyncio.ensure_future(asyncio.to_thread(before_cells)) if before_cells else None
            try:
                await wait_connected(client.kc, KERNEL_START_TIMEOUT_S)
            finally:
                if first is not None:  # always finished before anything else is recorded
                    await asyncio.shield(first)
            nb.metadata["language_info"] = handle.language_info
        else:
            await client.async_start_new_kernel_client()
            assert client.kc is not None
            if before_cells is not None:
                before_cells()
            reply = await client.async_wait_for_reply(await _maybe(client.kc.kernel_info()))
            if reply is not None and "language_info" in reply["content"]:
                nb.metadata["language_info"] = reply["content"]["language_info"]
        if env:
            code = f"__import__('os').environ.update({env!r})"
            reply = await client.async_wait_for_reply(
                await _maybe(client.kc.execute(code, silent=True, store_history=False)))
            if reply is None or reply["content"].get("status") != "ok":
                raise RuntimeError("could not set the run's environment in the pooled kernel")
        state.extra["ready_s"] = time.monotonic() - t0
        for index, cell in enumerate(nb.cells):
            state.current_cell = index
            try:
                await client.async_execute_cell(cell, index,
                                                execution_count=client.code_cells_executed + 1)
            finally:  # also the cell a kill interrupted: its page shows what it printed
                _merge_streams(cell)
            state.extra["cells_s"] = state.extra.get("cells_s", 0.0) + _cell_seconds(cell)
            cell.get("metadata", {}).pop("execution", None)  # not part of the page
            if state.exit_code is not None:
                break
        state.current_cell = None

    task = asyncio.ensure_future(cells())
    loop = asyncio.get_running_loop()
    watch = _Watchdog(handle, state, deadline, stop_event,
                      on_kill=lambda: loop.call_soon_threadsafe(task.cancel))
    watch.start()
    try:
        await task
    except (DeadKernelError, asyncio.CancelledError):
        state.kernel_died = True
    except RuntimeError as exc:  # e.g. "Kernel died before replying to kernel_info"
        state.kernel_died = True
        state.extra["start_error"] = str(exc)[:MAX_ERROR_VALUE]
    finally:
        watch.finish()
        if client.kc is not None:
            with contextlib.suppress(Exception):
                client.kc.stop_channels()


class _Watchdog(threading.Thread):
    """Kills the kernel's tree when the deadline passes or ``stop_event`` is set.

    A thread of its own, not a task on the run's event loop: whatever keeps the loop busy
    (a flood of outputs, a slow step of nbclient) cannot delay the kill. ``on_kill`` (thread
    safe) then tells the loop to stop waiting for the cells.
    """

    def __init__(self, handle: KernelHandle, state: ExecState, deadline: float,
                 stop_event: threading.Event | None, on_kill: Callable[[], object]) -> None:
        super().__init__(name=f"watchdog-{handle.run_id}", daemon=True)
        self.handle, self.state, self.deadline = handle, state, deadline
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
                self.state.kill_reason = reason
            log.info("run %s: %s; killing the kernel", self.handle.run_id,
                     "MaxRuntime exceeded" if reason is RunStatus.TIMEOUT else "stop requested")
            try:
                kill_kernel_tree(self.handle)
            finally:
                self.on_kill()
            return

    def finish(self) -> None:
        """The cells are over (or the kill landed): stop watching and wait for the thread."""
        with self._lock:
            self._done.set()
        self.join()


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


async def _maybe(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) or isinstance(v, asyncio.Future) else v


# --- HTML --------------------------------------------------------------------------------

# Idle exporters: building one (templates, CSS, Pygments) costs more than a small export
# (about a second on a busy 2-core machine), and one exporter must not serve two threads at
# once, so each export borrows one and gives it back.
_exporters: queue.SimpleQueue[HTMLExporter] = queue.SimpleQueue()
_exporters_built = 0
_exporters_lock = threading.Lock()


def _new_exporter() -> HTMLExporter:
    global _exporters_built
    exporter = HTMLExporter(
        template_name="lab", embed_images=True,
        extra_loaders=[jinja2.DictLoader({"jupycron.html.j2": _OFFLINE_TEMPLATE})],
        template_file="jupycron.html.j2")
    # Render once: jinja compiles the templates on first use.
    exporter.from_notebook_node(nbformat.v4.new_notebook(), resources={"metadata": {"name": "warm"}})
    with _exporters_lock:
        _exporters_built += 1
    return exporter


@contextlib.contextmanager
def _exporter() -> Any:
    try:
        exporter = _exporters.get_nowait()
    except queue.Empty:
        exporter = _new_exporter()
    try:
        yield exporter
    finally:
        _exporters.put(exporter)


def warm_exporters(count: int) -> None:
    """Build HTML exporters until ``count`` exist, so no run pays for building one (the
    daemon calls it in the background at start-up, one per concurrent run)."""
    while _exporters_built < count:
        _exporters.put(_new_exporter())


def export_html(nb: NotebookNode, dest: Path, title: str, folder: Path | None = None) -> None:
    """Write ``nb`` as a self-contained, offline HTML page to ``dest`` atomically.

    The "lab" template with its CSS embedded; require.js, MathJax, Mermaid and widget
    scripts (CDN links) are left out, so LaTeX in markdown shows as source text. Images,
    markdown attachments and files relative to ``folder`` (the notebook's), are embedded
    as data URIs.
    """
    meta = {"name": title, **({"path": str(folder)} if folder is not None else {})}
    with _exporter() as exporter:
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": meta})
    atomic_write_text(dest, body, durable=False)


# --- one run -----------------------------------------------------------------------------

def _classify(state: ExecState, oom: bool, exit_code: int | None, limit_mb: int,
              max_runtime_s: float, method: str) -> tuple[RunStatus, str | None, str | None]:
    """(status, error_name, error_value) from what happened; ``oom``: the cap's OOM verdict."""
    if state.kill_reason is RunStatus.TIMEOUT:
        return RunStatus.TIMEOUT, "Timeout", f"MaxRuntime of {max_runtime_s:g} s exceeded"
    if state.kill_reason is RunStatus.INTERRUPTED:
        return RunStatus.INTERRUPTED, "Interrupted", "the scheduler was stopped during the run"
    if oom and (state.kernel_died or state.error_name is not None):
        return RunStatus.OOM, "MemoryError", f"killed by the memory cap ({limit_mb} MB, {method})"
    if state.kernel_died:
        if exit_code is not None and exit_code < 0:
            try:
                sig = signal.Signals(-exit_code).name
            except ValueError:
                sig = f"signal {-exit_code}"
            return RunStatus.CRASHED, "KernelDied", f"the kernel was killed by {sig}"
        detail = state.extra.get("start_error") or f"the kernel exited with code {exit_code}"
        return RunStatus.CRASHED, "KernelDied", detail
    if state.error_name == "MemoryError":
        return RunStatus.OOM, "MemoryError", state.error_value or f"memory cap {limit_mb} MB"
    if state.error_name is not None:
        return RunStatus.FAILED, state.error_name, state.error_value
    return RunStatus.SUCCESS, None, None


async def _run_async(settings: Settings, notebook: Notebook, nb: NotebookNode, run: Run,
                     mem_mb: int, runtime_s: float, stop_event: threading.Event | None,
                     handle: KernelHandle | None, on_kernel: Callable[[KernelHandle], None],
                     finish: Callable[[ExecState], None],
                     before_cells: Callable[[], None] | None = None,
                     kernel_name: str | None = None) -> ExecState:
    """Start (or take ``handle``, a pooled kernel), execute, kill; then ``finish(state)``
    (classification and HTML) before the kernel is reaped and its cap removed.
    ``kernel_name``: the notebook's kernel (default: the configured one); only the
    configured kernel is forked from the kernel template."""
    kernel_name = kernel_name or settings.kernel_name
    state = ExecState()
    t0 = time.monotonic()
    cap: limits.MemoryCap | None
    if handle is None:
        cap = limits.create_cap(mem_mb, run.run_id,
                                instance=limits.instance_key(settings.output_dir))
        try:
            fork = settings.kernel_forkserver and kernel_name == settings.kernel_name
            handle = await start_kernel(kernel_name, settings.notebooks,
                                        kernel_env(run.run_id, notebook.path, settings.output_dir),
                                        run.run_id, cap, fork=fork)
        except Exception as exc:
            log.error("run %s of %s: cannot start kernel %r: %s", run.run_id, notebook.path,
                      kernel_name, exc)
            cap.close()
            state.kernel_died = True
            state.extra["start_error"] = f"cannot start kernel: {exc}"[:MAX_ERROR_VALUE]
            finish(state)
            return state
        state.extra["start_s"] = time.monotonic() - t0
        env = None
    else:
        env = {RUN_ID_ENV: run.run_id, "JUPYCRON_NOTEBOOK": notebook.path}
        handle.serving = run.run_id
    cap = handle.cap
    if cap is not None:
        run.memory_limit = cap.method
    try:
        on_kernel(handle)
        await execute(handle, nb, state, max_runtime_s=runtime_s, stop_event=stop_event, env=env,
                      before_cells=before_cells)
    finally:
        # Read the verdict before the cgroup goes away; a kernel that died by itself keeps
        # its own exit code (the kill below only hits a live one).
        if cap is not None:
            cap.sample()
        kill_kernel_tree(handle, wait=False)
        state.extra["exit_code"] = handle.exit_code()
        state.extra["peak_mb"] = cap.peak_mb() if cap is not None else None
        state.extra["oom"] = cap.oom_killed() if cap is not None else False
        try:
            finish(state)
        finally:
            await discard_kernel(handle)
    return state


def _take_pooled(pool: KernelPool, mem_mb: int, on_wait: Callable[[], None]) -> KernelHandle | None:
    try:
        return pool.acquire(mem_mb, timeout=KERNEL_START_TIMEOUT_S, on_wait=on_wait)
    except HistoryError:  # from on_wait: the RUNNING row could not be written
        raise
    except Exception:  # the pool must never fail a run: fall back to a fresh kernel
        log.exception("kernel pool failed; starting a fresh kernel")
        return None


def run_notebook(settings: Settings, notebook: Notebook, trigger: Trigger = Trigger.SCHEDULE,
                 slot: datetime | None = None, history: RunStore | None = None, *,
                 stop_event: threading.Event | None = None, run_id: str | None = None,
                 on_change: Callable[[Run], None] | None = None,
                 pool: KernelPool | None = None) -> Run:
    """Run ``notebook`` once and return its finished :class:`Run` (also in the history).

    Blocks until the notebook finished or was killed (the run's own event loop runs in the
    calling thread, so call it from a worker thread to run several at once). ``on_change``
    is called after each history write (RUNNING, then the outcome) - the scheduler refreshes
    summary.html there. ``pool``: take a kernel started ahead of need (waiting for one the
    pool is starting), or start a fresh one when the pool has none or refuses (its kernel
    uses more memory than this notebook's cap). Never raises for anything the notebook does;
    history I/O errors (:class:`jupycron.exceptions.HistoryError`) propagate: when the
    RUNNING row cannot be written nothing runs; when the outcome cannot be written,
    :class:`~jupycron.exceptions.RunNotRecorded` carries the finished run, which this process
    still owns (:func:`jupycron.recording.owned_here`) until the caller writes or drops it.

    Example::

        run = run_notebook(settings, discovery.read_notebook(path, "daily_autorun.ipynb"))
        print(run.status, run.output)
    """
    validate_rel(notebook.path)
    history = history or open_store(settings)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    run = Run(notebook=notebook.path, run_id=run_id or new_run_id(started), started_at=started,
              trigger=trigger, slot=slot, pid=os.getpid(), host=socket.gethostname(),
              memory_limit=limits.detect_method())
    mem_mb, runtime_s = effective_limits(settings, notebook)
    run.extra.update({"max_mem_mb": mem_mb, "max_runtime_s": runtime_s})

    nb_path = settings.notebooks / notebook.path
    state = ExecState()
    nb: NotebookNode | None = None
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except FileNotFoundError:
        state.error_name, state.error_value = "FileNotFoundError", "the notebook was deleted before the run started"
    except Exception as exc:  # a corrupt notebook fails its run, it does not crash the scheduler
        state.error_name, state.error_value = type(exc).__name__, str(exc)[:MAX_ERROR_VALUE]
    kernel_name = settings.kernel_name
    if nb is not None:
        try:
            kernel_name = choose_kernel(nb.metadata, settings.kernel_name).name
        except KernelNotInstalled as exc:  # never run it in another language's kernel
            state.error_name, state.error_value = "KernelNotInstalled", str(exc)[:MAX_ERROR_VALUE]
            nb = None
    run.extra["kernel"] = kernel_name
    # The pool's kernels (and the fork server's) are the configured kernel only.
    pool = pool if pool is not None and kernel_name == pool.settings.kernel_name else None

    def record(r: Run) -> None:
        history.record(r)
        if on_change:
            on_change(r)

    # This process owns the run until its outcome is written (orphan reaping: recording.py).
    recording.claim(run.run_id)
    # A RUNNING row that could not be written: nothing of the run is in the history, so it
    # is abandoned before any cell runs (no outcome, no page over the last one).
    not_started: list[HistoryError] = []

    def record_first() -> None:
        try:
            record(run)
        except HistoryError as exc:
            not_started.append(exc)
            raise

    # A pooled kernel ready now: one history write (RUNNING with the kernel's ids) before
    # the first cell. Otherwise RUNNING is recorded first, then the kernel is awaited/started.
    recorded = False

    def record_running() -> None:
        nonlocal recorded
        record_first()
        recorded = True

    t = time.monotonic()
    try:
        handle = _take_pooled(pool, mem_mb, record_running) if nb is not None and pool else None
        waited = time.monotonic() - t if recorded else 0.0
        # The RUNNING row (with a pooled kernel's ids) is written while the client connects.
        first_record: Callable[[], None] | None = None
        if handle is not None:
            _note_kernel(run, handle)
            first_record = record_first
        elif not recorded:
            record_first()
    except HistoryError:
        recording.release(run.run_id)
        raise
    log.info("run %s of %s started (cap %d MB via %s, max %g s%s)", run.run_id, notebook.path,
             mem_mb, run.memory_limit, runtime_s, ", pooled kernel" if handle else "")

    def finish(st: ExecState) -> None:
        if not not_started:
            _finish(settings, notebook, nb, run, st, mem_mb, runtime_s)

    if nb is not None:
        for cell in nb.cells:  # stale outputs of cells that will not run must not show
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None

        def on_kernel(h: KernelHandle) -> None:
            if run.extra.get("kernel_pid") != h.pid:
                _note_kernel(run, h)
                try:
                    history.record(run)
                except HistoryError as exc:  # the run goes on; its outcome is retried
                    log.warning("run %s of %s: cannot record the kernel's ids: %s", run.run_id,
                                notebook.path, exc)

        finished = False

        def finish_once(st: ExecState) -> None:
            nonlocal finished
            finished = True
            finish(st)

        try:
            state = asyncio.run(_run_async(settings, notebook, nb, run, mem_mb, runtime_s,
                                           stop_event, handle, on_kernel, finish_once,
                                           first_record, kernel_name))
        except Exception as exc:  # a bug or an I/O error around the kernel: record, don't crash
            if not not_started:  # else raised below, without a traceback per attempt
                log.exception("run %s of %s failed inside jupycron", run.run_id, notebook.path)
            state.kernel_died = True
            state.extra["start_error"] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_VALUE]
            if not finished:
                finish(state)
    else:
        finish(state)
    if not_started:
        recording.release(run.run_id)
        raise not_started[0]

    run.finished_at = datetime.now(UTC)
    run.duration_s = round(time.monotonic() - t0, 3)
    timing = run.extra.setdefault("timing", {})
    timing.update({"pooled": handle is not None, "total_s": run.duration_s})
    if waited:
        timing["pool_wait_s"] = round(waited, 3)
    try:
        history.record(run)
    except HistoryError as exc:  # still owned: the caller keeps the outcome and retries
        raise RunNotRecorded(run, exc) from exc
    recording.release(run.run_id)
    if on_change:
        on_change(run)
    log.info("run %s of %s: %s in %.1f s%s", run.run_id, notebook.path, run.status,
             run.duration_s, f" ({run.error_name}: {run.error_value})" if run.error_name else "")
    return run


def _note_kernel(run: Run, handle: KernelHandle) -> None:
    """Record the kernel's ids in the run (orphan reaping kills by them)."""
    run.extra.update({"kernel_pid": handle.pid, "kernel_pgid": handle.pgid,
                      "kernel_create_time": handle.create_time,
                      "sockets": str(handle.sockets), "kernel_forked": handle.forked})
    if handle.run_id != run.run_id:
        run.extra["kernel_marker"] = handle.run_id  # a pooled kernel's own JUPYCRON_RUN_ID
    if handle.cap is not None:
        run.memory_limit = handle.cap.method
    if isinstance(handle.cap, limits._CgroupCap):
        run.extra["cgroup"] = str(handle.cap.path)


def _finish(settings: Settings, notebook: Notebook, nb: NotebookNode | None, run: Run,
            state: ExecState, mem_mb: int, runtime_s: float) -> None:
    """Classify the outcome into ``run`` and write the HTML (the kernel is already dead)."""
    exit_code = state.extra.get("exit_code")
    if nb is None:
        status, ename, evalue = RunStatus.FAILED, state.error_name, state.error_value
    else:
        status, ename, evalue = _classify(state, bool(state.extra.get("oom")), exit_code, mem_mb,
                                          runtime_s, run.memory_limit or "")
    run.status, run.error_name, run.error_value = status, ename, evalue
    if status is RunStatus.FAILED or (status is RunStatus.OOM and state.error_cell is not None):
        run.error_cell = state.error_cell
    elif status is not RunStatus.SUCCESS:
        run.error_cell = state.current_cell
    run.peak_mem_mb = round(state.extra["peak_mb"], 1) if state.extra.get("peak_mb") else None
    if state.exit_code is not None:
        run.extra["sys_exit"] = state.exit_code
    if state.truncated:
        run.extra["output_truncated"] = True
    if state.extra.get("expected_errors"):
        run.extra["expected_errors"] = state.extra["expected_errors"]
    if exit_code is not None and status is not RunStatus.SUCCESS:
        run.extra["kernel_exit_code"] = exit_code
    timing: dict[str, float] = {k: round(state.extra[k], 3)
                                for k in ("start_s", "ready_s", "cells_s") if k in state.extra}
    if nb is not None:
        if state.current_cell is not None and status is not RunStatus.SUCCESS \
                and state.current_cell < len(nb.cells) and state.kernel_died:
            _note_error(nb.cells[state.current_cell], ename or "Error", evalue or "")
        dest = output_html(settings.output_dir, notebook.path)
        t = time.monotonic()
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
        timing["export_s"] = round(time.monotonic() - t, 3)
        run.extra["html_written_at"] = datetime.now(UTC).isoformat()
    run.extra["timing"] = timing
