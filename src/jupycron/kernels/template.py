"""The fork server's template process: ipykernel imported once, one forked kernel per request.

This file is run as a program (``python <this file> <fd> <modules>``, see
:mod:`jupycron.kernels.forkserver`; a short command line for ``ps``), never imported by jupycron
itself, and its own folder is dropped from ``sys.path`` (so a notebook's ``import config``
cannot find jupycron's modules): it must only use the
standard library, so a kernel forked from it has exactly the modules a fresh
``python -m ipykernel_launcher`` would have, plus the ones listed to preload.

Life of the template:

1. drop ``''`` from ``sys.path`` (as ``ipykernel_launcher`` does), set ``JPY_PARENT_PID`` to
   its own pid (ipykernel reads it at import: a forked kernel exits when its parent, this
   template, goes away), import ``ipykernel.kernelapp`` and the preload modules (a failing
   optional module is skipped), and refuse to serve (exit 3) if anything started a thread
   that makes forking unsafe (see :func:`_unsafe_threads`): a fork copies only the calling
   thread, so no ZeroMQ context, socket or such thread may exist before a fork;
2. say ``{"op": "ready", "pid": ..., "skipped": [...]}`` on the protocol socket (fd given
   on the command line), then serve JSON lines:

   * ``{"op": "spawn", "id": n, "argv": [...], "env": {...}, "cwd": "..."}`` forks a
     kernel and answers ``{"op": "spawned", "id": n, "pid": pid}`` once the child has set
     itself up (``setsid``: its own session and process group; cwd; the environment
     replaced by ``env``; ``sys.path`` starts with cwd and ``env``'s
     ``PYTHONPATH``, as for ``python -m``), or
     ``{"op": "failed", "id": n, "error": "..."}``;
   * when a kernel exits, ``{"op": "exit", "pid": pid, "code": c}`` is sent (``c`` as a
     ``Popen.returncode``: ``-signal`` when killed). The kernel stays a zombie until
     ``{"op": "reap", "pid": pid}``, exactly like a ``Popen`` child that was not waited
     for yet: its pid (and process group id) cannot be reused while the parent may still
     signal it;
3. on end of file (jupycron closed the socket or died) SIGKILL the process group of every
   kernel still alive and exit: kernels never outlive their scheduler.

The forked child reseeds ``random`` (``os.fork`` runs the at-fork hooks) and, when a preload
imported it, numpy's global generator; the hash seed is the template's (one
``PYTHONHASHSEED`` for all kernels forked from one template).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import threading
import traceback
from typing import Any

#: Exit code of a template that cannot serve (import failed, a thread was started).
EXIT_UNUSABLE = 3


def _launcher() -> str:
    """``sys.argv[0]`` of a kernel started with ``-m ipykernel_launcher``."""
    import importlib.util

    spec = importlib.util.find_spec("ipykernel_launcher")
    return spec.origin if spec is not None and spec.origin else "ipykernel_launcher"


#: Native threads whose library makes a fork safe by itself: jemalloc's background purging
#: thread (pyarrow's allocator, started by ``import pandas``) takes every jemalloc lock in
#: its at-fork hook, and the child starts without it.
FORK_AWARE_THREADS = frozenset({"jemalloc_bg_thd"})


def _other_threads() -> list[str]:
    """Names of this process's threads but the calling one, native ones included."""
    own = str(threading.get_native_id())
    try:
        tids = [t for t in os.listdir("/proc/self/task") if t != own]
    except OSError:
        return [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    names = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                names.append(fh.read().strip())
        except OSError:  # it ended meanwhile
            continue
    return names


def _unsafe_threads() -> list[str]:
    """Threads that make forking this process unsafe (a fork copies only the calling thread,
    so a lock another thread holds stays locked in the child).

    Any Python thread is. A native one is unless it is gone after a trial fork (OpenBLAS,
    which ``import numpy`` starts, stops its pool in an at-fork hook and restarts it only
    when the template itself does linear algebra, which it never does) or is in
    :data:`FORK_AWARE_THREADS`.
    """
    if threading.active_count() != 1:
        return [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if not _other_threads():
        return []
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return [name for name in _other_threads() if name not in FORK_AWARE_THREADS]


def _exit_code(status: os.waitid_result) -> int:
    """A ``Popen.returncode`` from a ``waitid`` result: the exit code, or ``-signal``."""
    if status.si_code == os.CLD_EXITED:
        return int(status.si_status)
    return -int(status.si_status)


def _reseed() -> None:
    """Fresh seeds for the random generators a preloaded module seeded at import (``random``
    is reseeded by ``os.fork`` itself): numpy's global ``RandomState``, which every kernel
    would otherwise share with the template, starting from the same state."""
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()


class Template:
    """The serving loop (one thread, no threads ever started)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.live: set[int] = set()     # forked kernels not exited yet
        self.exited: set[int] = set()   # exited, announced, not reaped yet (zombies)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler is needed for the wakeup
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                if key.fileobj is self.sock:
                    data = self.sock.recv(1 << 16)
                    if not data:
                        self.shutdown()
                        return
                    self.buf += data
                    while b"\n" in self.buf:
                        line, self.buf = self.buf.split(b"\n", 1)
                        self.handle(json.loads(line))
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 512)
            self.check_children()

    def check_children(self) -> None:
        """Announce kernels that exited (left as zombies until reaped on request)."""
        for pid in sorted(self.live):
            try:
                status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                status = None
                self.live.discard(pid)
                self.send({"op": "exit", "pid": pid, "code": None})
                continue
            if status is not None:
                self.live.discard(pid)
                self.exited.add(pid)
                self.send({"op": "exit", "pid": pid, "code": _exit_code(status)})

    def handle(self, msg: dict[str, Any]) -> None:
        if msg["op"] == "spawn":
            self.spawn(msg)
        elif msg["op"] == "reap":
            pid = int(msg["pid"])
            if pid in self.exited:
                self.exited.discard(pid)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def spawn(self, msg: dict[str, Any]) -> None:
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(ready_r)
            os.close(ready_w)
            self.send({"op": "failed", "id": msg["id"], "error": f"fork: {exc}"})
            return
        if pid == 0:  # the kernel
            os.close(ready_r)
            self.become_kernel(msg, ready_w)
        os.close(ready_w)
        self.live.add(pid)
        with os.fdopen(ready_r, "rb") as fh:
            report = fh.read()  # closed by the child once set up (or on its death)
        if report:
            self.send({"op": "failed", "id": msg["id"], "error": report.decode(errors="replace"),
                       "pid": pid})
        else:
            self.send({"op": "spawned", "id": msg["id"], "pid": pid})

    def become_kernel(self, msg: dict[str, Any], ready_w: int) -> None:
        """In the forked child: set up the run environment, then run IPKernelApp. Never returns."""
        code = 1
        try:
            try:
                os.setsid()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self.sel.close()
                self.sock.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
                cwd = str(msg["cwd"])
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update({str(k): str(v) for k, v in msg["env"].items()})
                tempfile.tempdir = None  # found again from the run's TMPDIR, not the template's
                # what `python -m ipykernel_launcher` run there with this env has: cwd, then
                # the PYTHONPATH entries the template did not start with
                extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                         if p and os.path.abspath(p) not in sys.path]
                sys.path[0:0] = [cwd, *(os.path.abspath(p) for p in extra)]
                sys.argv = [_launcher(), *(str(a) for a in msg["argv"])]
                _reseed()
            except BaseException as exc:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
                raise
            os.close(ready_w)
            from ipykernel import kernelapp

            kernelapp.launch_new_instance()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def shutdown(self) -> None:
        for pid in self.live:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """``argv``: [protocol fd, comma list of modules to preload]."""
    here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else ""
    if sys.path and sys.path[0] in ("", os.getcwd(), here):
        del sys.path[0]
    sock = socket.socket(fileno=int(argv[0]))
    os.environ["JPY_PARENT_PID"] = str(os.getpid())
    skipped: list[str] = []
    try:
        import ipykernel.kernelapp  # noqa: F401
    except BaseException as exc:
        sock.sendall(json.dumps({"op": "unusable", "error": f"ipykernel: {exc}"}).encode() + b"\n")
        return EXIT_UNUSABLE
    for name in filter(None, (argv[1] if len(argv) > 1 else "").split(",")):
        try:
            __import__(name)
        except BaseException as exc:
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
    del os.environ["JPY_PARENT_PID"]
    unsafe = _unsafe_threads()
    if unsafe:
        sock.sendall(json.dumps({"op": "unusable", "error": f"threads after import: {', '.join(unsafe)}"})
                     .encode() + b"\n")
        return EXIT_UNUSABLE
    template = Template(sock)
    template.send({"op": "ready", "pid": os.getpid(), "skipped": skipped})
    template.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
