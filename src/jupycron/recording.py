"""Recording runs when writes fail (a full disk, a read-only folder).

* :class:`WriteFailures` logs an episode of failing writes once, with the traceback, then at
  most one line per :data:`LOG_EVERY_S` however often the writes are retried, and one line
  when every kind of write that failed works again.
* :class:`PendingOutcomes` keeps the outcome of a finished run whose history row could not be
  written and retries the write on a thread of its own, with a growing delay, until it lands:
  the row does not stay ``running``, and the notebook's later slots run.
* :func:`claim` / :func:`release` / :func:`owned_here` say which runs this process is still
  responsible for: a RUNNING row written by this process whose run it no longer owns was
  abandoned (its outcome could not be written and the retries gave up), so orphan reaping
  marks it interrupted although the process (pid) is alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .exceptions import HistoryError
from .models import Run

log = logging.getLogger(__name__)

__all__ = ["LOG_EVERY_S", "PendingOutcomes", "WriteFailures", "claim", "owned_here", "release"]

#: While writes keep failing, at most one line per this many seconds.
LOG_EVERY_S = 60.0
#: First and longest wait between two attempts to write a pending outcome.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


class WriteFailures:
    """Log failing writes once per episode (see the module docstring). Thread-safe.

    ``what`` names a kind of write (``"heartbeat"``, ``"history"``…): :meth:`ok` for a kind
    clears it; the episode ends when no kind is failing. ``clock`` is injectable for tests.
    """

    def __init__(self, where: str, *, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.where = where
        self._every = every_s
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}  # kind -> last error
        self._since = 0.0
        self._last_line = 0.0
        self._count = 0
        self.episodes = 0

    @property
    def failing(self) -> dict[str, str]:
        """The kinds of write failing now, with their last error."""
        with self._lock:
            return dict(self._failing)

    def failed(self, what: str, exc: BaseException) -> None:
        now = self._clock()
        with self._lock:
            start = not self._failing
            self._failing[what] = str(exc)
            if start:
                self._since = self._last_line = now
                self._count = 1
                self.episodes += 1
            else:
                self._count += 1
                if now - self._last_line < self._every:
                    return
                self._last_line = now
            count, since = self._count, now - self._since
        if start:
            self._log.error("cannot write the %s in %s: %s; retrying (logged at most once every "
                            "%.0f s until writes work again)", what, self.where, exc, self._every,
                            exc_info=exc)
        else:
            self._log.error("still cannot write in %s (%s): %s; %d failed write(s) in %.0f s",
                            self.where, ", ".join(sorted(self.failing)), exc, count, since)

    def ok(self, what: str) -> None:
        """A write of kind ``what`` worked."""
        if what not in self._failing:  # the common case, without the lock
            return
        now = self._clock()
        with self._lock:
            if self._failing.pop(what, None) is None or self._failing:
                return
            count, since = self._count, now - self._since
        self._log.warning("writes in %s work again (recovered after %d failed write(s) in %.0f s)",
                          self.where, count, since)


class _Recorder(Protocol):
    def record(self, run: Run, *, retry: bool = False) -> None: ...


class PendingOutcomes:
    """Finished runs whose outcome the history has not taken yet, retried until it does.

    :meth:`add` keeps a run (the process keeps owning it, see :func:`owned_here`); a thread
    tries ``history.record(run)`` after :data:`RETRY_FIRST_S`, doubling the wait up to
    :data:`RETRY_MAX_S` (:meth:`poke` tries at once, e.g. after another write worked). When
    a write lands, ``on_recorded(run)`` is called and the run released. :meth:`close` makes
    one last attempt; what still fails is logged and released, so the next pass of any
    jupycron process marks its row interrupted.
    """

    def __init__(self, history: _Recorder, failures: WriteFailures,
                 on_recorded: Callable[[Run], None], *, first_s: float = RETRY_FIRST_S,
                 max_s: float = RETRY_MAX_S) -> None:
        self._history = history
        self._failures = failures
        self._on_recorded = on_recorded
        self._first, self._max = first_s, max_s
        self._cond = threading.Condition()
        self._runs: dict[str, Run] = {}
        self._attempts: dict[str, int] = {}
        self._poked = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def runs(self) -> list[Run]:
        with self._cond:
            return list(self._runs.values())

    def add(self, run: Run, exc: BaseException) -> None:
        log.error("run %s of %s: its outcome (%s) could not be written to the history: %s; "
                  "kept in memory and retried until it can", run.run_id, run.notebook,
                  run.status, exc)
        self._failures.failed("history", exc)
        with self._cond:
            self._runs[run.run_id] = run
            self._attempts[run.run_id] = 1
            if self._closed:
                self._flush_locked()
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="jupycron-record-retry")
                self._thread.start()
            self._cond.notify_all()

    def poke(self) -> None:
        """Try the pending writes now (a write elsewhere just worked)."""
        with self._cond:
            if self._runs:
                self._poked = True
                self._cond.notify_all()

    def _loop(self) -> None:
        delay = self._first
        while True:
            with self._cond:
                deadline = time.monotonic() + delay
                while not self._closed and not self._poked and self._runs:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
                if not self._runs:
                    self._thread = None
                    return
                self._poked = False
                wrote = self._try_all_locked()
            delay = self._first if wrote else min(delay * 2, self._max)

    def _try_all_locked(self) -> bool:
        """Under the condition's lock: one attempt for each pending run; True when all landed."""
        for run_id, run in list(self._runs.items()):
            try:
                self._history.record(run, retry=True)
            except (HistoryError, OSError) as exc:
                self._attempts[run_id] += 1
                self._failures.failed("history", exc)
                return False
            del self._runs[run_id]
            attempts = self._attempts.pop(run_id)
            self._failures.ok("history")
            log.warning("run %s of %s: outcome %s recorded after %d attempt(s)", run.run_id,
                        run.notebook, run.status, attempts)
            release(run_id)
            try:
                self._on_recorded(run)
            except Exception:
                log.exception("after recording run %s", run_id)
        return True

    def _flush_locked(self) -> list[Run]:
        if not self._runs or self._try_all_locked():
            return []
        given_up = list(self._runs.values())
        for run in given_up:
            log.error("run %s of %s: gave up writing its outcome (%s) after %d attempt(s); the "
                      "next jupycron pass marks its row interrupted", run.run_id, run.notebook,
                      run.status, self._attempts.get(run.run_id, 0))
            release(run.run_id)
        self._runs.clear()
        self._attempts.clear()
        return given_up

    def close(self) -> list[Run]:
        """One last attempt for every pending outcome, then give up on what still fails;
        returns the runs given up."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(30)
        with self._cond:
            return self._flush_locked()


# --- the runs this process owns ----------------------------------------------------------

_owned: set[str] = set()
_owned_lock = threading.Lock()


def claim(run_id: str) -> None:
    """This process runs (or still has to record) ``run_id``; call before its first write."""
    with _owned_lock:
        _owned.add(run_id)


def release(run_id: str) -> None:
    """``run_id``'s outcome is in the history, or will never be written by this process."""
    with _owned_lock:
        _owned.discard(run_id)


def owned_here(run_id: str) -> bool:
    with _owned_lock:
        return run_id in _owned
