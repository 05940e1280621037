"""Kernels forked from a template process instead of started from scratch.

A fresh ``python -m ipykernel_launcher`` spends most of its start-up importing (IPython,
ipykernel, ZeroMQ, tornado, debugpy; BENCHMARKS.md has the CPU it costs), and does so for
every run. A :class:`ForkServer` starts one *template* process (:mod:`jupycron.kernels.template`)
that imports all that once, with no thread, ZeroMQ context or socket created, and forks one
kernel per request. The forked kernel then only builds its sockets, threads and shell.

Isolation is that of a fresh kernel: each forked kernel serves one run and is discarded;
before IPKernelApp starts, the child calls ``setsid`` (own session and process group, so a
MaxRuntime kill of the group works), changes to the run's cwd, and *replaces* its
environment with the run's (``AUTORUN=1``, ``JUPYCRON_RUN_ID``, ...). Nothing a run does
reaches the template or another kernel (a fork copies memory; nothing flows back). The
caller attaches the memory cap to the new pid, as for a started kernel. Differences from a
started kernel, by construction:

* the hash seed (``PYTHONHASHSEED``) is the template's, shared by its kernels;
* ``/proc/<pid>/environ`` of the kernel process itself shows the template's environment
  (the kernel's ``os.environ`` and every process it starts carry the run's); the kernel is
  identified by pid, process group and cgroup, like any kernel.

The template is the kernels' parent: it relays each exit status (``-signal`` when killed,
as ``Popen.returncode``), so the runner classifies crashes and OOM kills as before, and
leaves the exited kernel a zombie until the runner reaps it (so its pid and process group id
are not reused while jupycron may still signal them). ipykernel's parent poller makes a
kernel exit when the template goes away; the template SIGKILLs its kernels' groups and exits
when jupycron closes the socket or dies.

The integration with jupyter_client is :class:`ForkProvisioner`, a ``LocalProvisioner``
whose ``launch_kernel`` asks the server for the kernel command's ipykernel arguments. Any
command that is not ``<python> [options] -m ipykernel_launcher ...`` (another kernel,
``systemd-run`` wrapping it), and any failure to start or reach the template, falls back to
the normal start (logged). A template that died is replaced at the next request; one older
than :data:`MAX_AGE_S` is retired (no new kernels; it exits when its last kernel is reaped)
so upgraded packages are picked up.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

log = logging.getLogger(__name__)

__all__ = ["MAX_AGE_S", "PRELOAD", "ForkProvisioner", "ForkServer", "ForkedProcess",
           "TemplateError", "get_server", "kernel_args", "shutdown_all", "template_pids"]

#: Modules a fresh ipykernel 7 kernel imports while it starts (beyond ``ipykernel.kernelapp``):
#: preloaded in the template, so a forked kernel has the same modules, already imported.
#: One that fails to import or starts a thread is skipped (see the template's checks).
PRELOAD = ("ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger", "debugpy",
           "debugpy.server.api", "IPython.core.completerlib", "IPython.core.debugger",
           "IPython.core.oinspect", "IPython.extensions.storemagic", "psutil", "pydoc", "pdb",
           "sqlite3", "tornado.gen", "tornado.locks", "tornado.queues",
           "tornado.platform.asyncio", "http.client", "xmlrpc.client")
#: How long the template may take to import everything.
START_TIMEOUT_S = 60.0
#: How long a fork request may take (the template answers once the child is set up).
SPAWN_TIMEOUT_S = 10.0
#: A template older than this gets no new requests (packages upgraded on disk are picked up).
MAX_AGE_S = 3600.0
#: After a template failed to start, normal starts are used for this long.
RETRY_AFTER_S = 60.0
_LAUNCHERS = ("ipykernel_launcher", "ipykernel")
_SOURCE = Path(__file__).with_name("template.py")


class TemplateError(RuntimeError):
    """The template process cannot start or serve a request."""


def kernel_args(cmd: Sequence[str]) -> tuple[str, tuple[str, ...], list[str]] | None:
    """Split ``[python, *options, "-m", "ipykernel_launcher", *args]`` into (python,
    options, args); None for any other command (another kernel, a wrapper such as
    systemd-run), which the fork server cannot start."""
    for i in range(1, len(cmd) - 1):
        if cmd[i] == "-m":
            if cmd[i + 1] not in _LAUNCHERS:
                return None
            options = tuple(cmd[1:i])
            if not all(o.startswith("-") and o not in ("-c", "-m") for o in options):
                return None
            if "python" not in Path(cmd[0]).name:
                return None
            return cmd[0], options, list(cmd[i + 2:])
    return None


class ForkedProcess:
    """A ``subprocess.Popen``-like handle on a kernel forked by a :class:`ForkServer`
    (what jupyter_client's provisioner and :class:`jupycron.kernels.base.KernelHandle` use)."""

    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None
        self._reaped = False

    def poll(self) -> int | None:
        """The exit code once the kernel exited (reaping it), else None."""
        if not self._reaped:
            known, code = self.server.exit_status(self.pid)
            if known:
                self._reap(code)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit code (``subprocess.TimeoutExpired`` after ``timeout`` s). None
        when the template died before the kernel (its status is lost)."""
        if not self._reaped:
            known, code = self.server.wait_exit(self.pid, timeout)
            if not known:
                raise subprocess.TimeoutExpired(f"forked kernel {self.pid}", timeout or 0.0)
            self._reap(code)
        return self.returncode

    def _reap(self, code: int | None) -> None:
        self.returncode = code
        self._reaped = True
        self.server.reap(self.pid)

    def send_signal(self, sig: int) -> None:
        if not self._reaped:  # like Popen: never signal a pid that may have been reused
            os.kill(self.pid, sig)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        import signal

        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One template process and the kernels forked from it. Thread-safe.

    Example::

        server = ForkServer(sys.executable, ("-Xfrozen_modules=off",)).start()
        proc = server.spawn(["-f", "kernel.json"], env=env, cwd="/srv/notebooks")
        ...
        proc.kill(); proc.wait()
        server.close()
    """

    def __init__(self, python: str, options: Sequence[str] = (),
                 preload: Sequence[str] = PRELOAD) -> None:
        self.python = python
        self.options = tuple(options)
        self.preload = tuple(preload)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.started_at = 0.0  # time.monotonic()
        self.skipped: list[str] = []
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: dict[int, Future[int]] = {}
        self._exits: dict[int, int | None] = {}
        self._children: set[int] = set()  # forked and not reaped
        self._next_id = 0
        self._dead = False
        self._retired = False
        self._reader: threading.Thread | None = None

    # -- life cycle --
    def start(self, timeout: float = START_TIMEOUT_S) -> ForkServer:
        """Start the template and wait until it has imported everything (TemplateError if
        it cannot: ipykernel missing, a preloaded module started a thread, a timeout)."""
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [self.python, *self.options, str(_SOURCE), str(theirs.fileno()),
                 ",".join(self.preload)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, cwd="/",
                start_new_session=True)
        except OSError as exc:
            ours.close()
            raise TemplateError(f"cannot start {self.python}: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        ours.settimeout(timeout)
        try:
            first = self._read_line(ours, b"")
        except (OSError, ValueError) as exc:
            self._kill_template()
            raise TemplateError(f"kernel template did not start: {exc}") from exc
        line, rest = first
        msg = json.loads(line)
        if msg.get("op") != "ready":
            self._kill_template()
            raise TemplateError(f"kernel template unusable: {msg.get('error', msg)}")
        ours.settimeout(None)
        self.pid = int(msg["pid"])
        self.skipped = list(msg.get("skipped", []))
        self.started_at = time.monotonic()
        for skipped in self.skipped:
            log.info("kernel template: not preloaded: %s", skipped)
        self._reader = threading.Thread(target=self._read_loop, args=(rest,), daemon=True,
                                        name="jupycron-forkserver")
        self._reader.start()
        log.info("kernel template %s started (%d modules preloaded)", self.pid,
                 len(self.preload) - len(self.skipped))
        return self

    @staticmethod
    def _read_line(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        while b"\n" not in buf:
            data = sock.recv(1 << 16)
            if not data:
                raise ValueError("the template exited")
            buf += data
        line, rest = buf.split(b"\n", 1)
        return line, rest

    def alive(self) -> bool:
        """Whether the template serves requests (running, not retired)."""
        return not self._dead and not self._retired and self.proc is not None \
            and self.proc.poll() is None

    def retire(self) -> None:
        """No new kernels; the template exits once its last kernel is reaped."""
        with self._cond:
            self._retired = True
            idle = not self._children
        if idle:
            self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the template (it SIGKILLs kernels still running). Idempotent."""
        with self._cond:
            self._dead = True
            self._cond.notify_all()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_template()

    def _kill_template(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def rss_mb(self) -> float | None:
        """The template's resident memory in MB (None when it is not running)."""
        if self.pid is None or self._dead:
            return None
        try:
            return float(psutil.Process(self.pid).memory_info().rss) / (1024 * 1024)
        except psutil.Error:
            return None

    # -- requests --
    def _send(self, msg: dict[str, Any]) -> None:
        if self._sock is None:
            raise TemplateError("kernel template not started")
        with self._send_lock:
            try:
                self._sock.sendall(json.dumps(msg).encode() + b"\n")
            except OSError as exc:
                raise TemplateError(f"kernel template unreachable: {exc}") from exc

    def spawn(self, argv: Sequence[str], env: dict[str, str], cwd: str,
              timeout: float = SPAWN_TIMEOUT_S) -> ForkedProcess:
        """Fork a kernel running ``ipykernel_launcher *argv`` with exactly ``env`` in ``cwd``
        (its own session and process group). Raises TemplateError (the caller falls back)."""
        fut: Future[int] = Future()
        with self._cond:
            if self._dead or self._retired:
                raise TemplateError("kernel template is not serving")
            self._next_id += 1
            req = self._next_id
            self._pending[req] = fut
        try:
            self._send({"op": "spawn", "id": req, "argv": list(argv), "env": env, "cwd": cwd})
            pid = fut.result(timeout)
        except TimeoutError as exc:
            raise TemplateError(f"kernel template did not fork within {timeout:.0f} s") from exc
        finally:
            with self._cond:
                self._pending.pop(req, None)
        return ForkedProcess(self, pid)

    def exit_status(self, pid: int) -> tuple[bool, int | None]:
        """(known, code): whether kernel ``pid`` exited, and its code (None: the template
        died first, the status is lost)."""
        with self._cond:
            if pid in self._exits:
                return True, self._exits[pid]
            if self._dead and not _running(pid):
                return True, None
            return False, None

    def wait_exit(self, pid: int, timeout: float | None) -> tuple[bool, int | None]:
        """:meth:`exit_status`, waiting up to ``timeout`` s for the kernel to exit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                known, code = self.exit_status(pid)
                if known:
                    return known, code
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False, None
                # a dead template cannot notify: poll the process then
                self._cond.wait(0.05 if self._dead else remaining)

    def reap(self, pid: int) -> None:
        """Let the template reap an exited kernel (its pid may be reused from now on)."""
        with self._cond:
            self._exits.pop(pid, None)
            self._children.discard(pid)
            last = self._retired and not self._children
        with contextlib.suppress(TemplateError):
            self._send({"op": "reap", "pid": pid})
        if last:
            self.close()

    def _read_loop(self, buf: bytes) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                line, buf = self._read_line(sock, buf)
                self._dispatch(json.loads(line))
        except (OSError, ValueError) as exc:
            with self._cond:
                if not self._dead:
                    log.warning("kernel template %s exited (%s); kernels are started normally "
                                "until a new one is up", self.pid, exc)
                self._dead = True
                pending = list(self._pending.values())
                self._cond.notify_all()
            for fut in pending:
                if not fut.done():
                    fut.set_exception(TemplateError("kernel template exited"))
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
            with contextlib.suppress(OSError):
                sock.close()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        with self._cond:
            if op == "exit":
                self._exits[int(msg["pid"])] = msg.get("code")
                self._cond.notify_all()
                return
            fut = self._pending.get(int(msg.get("id", 0)))
            if op == "spawned":
                self._children.add(int(msg["pid"]))
        if fut is None:
            return
        if op == "spawned":
            fut.set_result(int(msg["pid"]))
        else:
            if msg.get("pid"):
                with self._cond:
                    self._children.add(int(msg["pid"]))
                self._reap_failed(int(msg["pid"]))
            fut.set_exception(TemplateError(f"fork failed: {msg.get('error')}"))

    def _reap_failed(self, pid: int) -> None:
        """A child that could not set itself up exits at once: reap it in the background."""
        def reap() -> None:
            known, _ = self.wait_exit(pid, SPAWN_TIMEOUT_S)
            if known:
                self.reap(pid)

        threading.Thread(target=reap, daemon=True, name="jupycron-forkserver-reap").start()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- one template per interpreter, shared by the process ---------------------------------

_Key = tuple[str, tuple[str, ...], tuple[str, ...]]
_servers: dict[_Key, ForkServer] = {}
_failed_at: dict[_Key, float] = {}
_servers_lock = threading.Lock()


def get_server(python: str, options: Sequence[str], extra: Sequence[str] = ()) -> ForkServer | None:
    """The serving template for this interpreter and options, with ``extra`` modules
    preloaded beyond :data:`PRELOAD` (the pool's ``pool_preimport``: one template per
    list), started (or replaced, when it died or is older than :data:`MAX_AGE_S`) on
    demand; None when it cannot start (then not retried for :data:`RETRY_AFTER_S`, callers
    start kernels normally)."""
    key = (python, tuple(options), tuple(extra))
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.alive():
            if time.monotonic() - server.started_at <= MAX_AGE_S:
                return server
            log.info("kernel template %s is %.0f s old: retiring it", server.pid,
                     time.monotonic() - server.started_at)
            server.retire()
        elif server is not None:
            log.warning("kernel template %s is gone; starting a new one", server.pid)
        _servers.pop(key, None)
        if time.monotonic() - _failed_at.get(key, -RETRY_AFTER_S) < RETRY_AFTER_S:
            return None
        try:
            server = ForkServer(python, options, preload=(*PRELOAD, *extra)).start()
        except (TemplateError, OSError) as exc:
            _failed_at[key] = time.monotonic()
            log.warning("kernel template: %s; starting kernels normally for %.0f s", exc,
                        RETRY_AFTER_S)
            return None
        _servers[key] = server
        return server


def template_pids() -> list[int]:
    """The pids of this process's serving templates."""
    with _servers_lock:
        return [s.pid for s in _servers.values() if s.pid is not None and s.alive()]


def shutdown_all() -> None:
    """Stop every template of this process (their kernels are SIGKILLed)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


atexit.register(shutdown_all)


class ForkProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, launching through the fork server when it can."""

    forked = False

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        parsed = kernel_args(cmd)
        extra = set(kwargs) - {"env", "cwd", "kernel_id", "extra_arguments"}
        server = None
        if parsed is not None and not extra:
            preload = tuple(getattr(self.parent, "preload", ()))  # the kernel manager's
            server = get_server(parsed[0], parsed[1], preload)
            if server is None and preload:  # e.g. a module that starts a thread: fork plain
                server = get_server(parsed[0], parsed[1])
        if server is None or parsed is None:
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(server.pid)  # what ipykernel polls (read at import)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            proc = server.spawn(parsed[2], env, cwd)
        except TemplateError as exc:
            log.warning("kernel template: %s; starting this kernel normally", exc)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = proc  # type: ignore[assignment]  # Popen's interface, see ForkedProcess
        self.forked = True
        self.pid = self.pgid = proc.pid  # the child called setsid
        self.cwd = cwd
        return self.connection_info
