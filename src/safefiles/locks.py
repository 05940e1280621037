"""The one advisory file lock (``fcntl.flock``) helper.

A lock belongs to an open file description: closing the file (or the process dying, even
by ``kill -9``) releases it, so a crashed holder never leaves a stale lock behind. Locks are
advisory: only code that asks for them is kept out.

- :func:`locked` opens (creating when needed) a lock file or a folder and holds the lock
  for the ``with`` block: exclusive by default, shared with ``shared=True``.
- ``timeout``: ``None`` waits as long as it takes, ``0`` tries once, a positive number
  keeps trying for that many seconds; when the lock stays taken :class:`LockTimeout`
  (a :class:`TimeoutError`) is raised, naming the path.
- :func:`try_locked` is the "give way when busy" form: it yields False instead of raising.
- :func:`lock_fd` locks a file descriptor the caller already opened (a temp file created
  with ``O_EXCL``, a folder) with the same rules.

>>> from safefiles.locks import locked
>>> with locked("/srv/out/.history.json.lock", timeout=10):  # doctest: +SKIP
...     ...  # read-modify-write the history
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

__all__ = ["LockTimeout", "lock_fd", "locked", "try_locked"]

_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.1


class LockTimeout(TimeoutError):
    """The lock on ``path`` stayed taken for ``timeout`` seconds (0: it was taken)."""

    def __init__(self, path: str, timeout: float, shared: bool) -> None:
        kind = "shared" if shared else "exclusive"
        wait = "it is held by another process" if timeout == 0 else \
            f"it stayed held by another process for {timeout:g} s"
        super().__init__(f"cannot take the {kind} lock on {path}: {wait}")
        self.path = path
        self.timeout = timeout
        self.shared = shared


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (timeout >= 0 and timeout != float("inf")):
        raise ValueError(f"lock timeout must be None or a finite number >= 0, not {timeout!r}")


def lock_fd(fd: int, *, shared: bool = False, timeout: float | None = None,
            path: str | os.PathLike[str] = "<fd>") -> None:
    """Take the lock on the open file ``fd`` (see the module docstring for ``timeout``);
    raise :class:`LockTimeout` naming ``path`` when it stays taken. Closing ``fd`` releases it."""
    _check_timeout(timeout)
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST_S
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(os.fspath(path), timeout, shared) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX_S)


def _open(path: str, mode: int) -> int:
    """An fd to lock: the folder itself when ``path`` is a folder (no lock file left behind),
    else the file, created with ``mode`` when missing."""
    if os.path.isdir(path):
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], *, shared: bool = False,
           timeout: float | None = None, mode: int = 0o644) -> Iterator[int]:
    """Hold the lock on ``path`` (a lock file, created with ``mode`` when missing, or a
    folder) for the ``with`` block; yields the open fd (e.g. to write the holder's pid).
    Raises :class:`LockTimeout` (see the module docstring) or ``OSError`` when ``path``
    cannot be opened."""
    _check_timeout(timeout)
    name = os.fspath(path)
    fd = _open(name, mode)
    try:
        lock_fd(fd, shared=shared, timeout=timeout, path=name)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def try_locked(path: str | os.PathLike[str], *, shared: bool = False,
               mode: int = 0o644) -> Iterator[bool]:
    """Like :func:`locked` with ``timeout=0``, but yields False (holding nothing) instead of
    raising when the lock is taken: for work that gives way to another process doing it."""
    name = os.fspath(path)
    fd = _open(name, mode)
    try:
        try:
            lock_fd(fd, shared=shared, timeout=0, path=name)
        except LockTimeout:
            yield False
            return
        yield True
    finally:
        os.close(fd)
