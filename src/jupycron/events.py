"""Run events: who hears that a run started or finished.

A run publishes ``run_started`` once its RUNNING row is in the history and ``run_finished``
once its outcome is (also an outcome written late, after a full disk). The scheduler wires
its listeners to a :class:`RunEvents` dispatcher: its own running set and the history's
health, the heartbeat and summary.html refresh (``/metrics`` reads the heartbeat), and the
run-state alerts. Listeners are called in the publishing thread, in subscription order;
one that raises is logged and never fails the run or the other listeners.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from .models import Run

log = logging.getLogger(__name__)

__all__ = ["RunEvents", "RunListener"]


class RunListener(Protocol):
    def run_started(self, run: Run) -> None:
        """``run``'s RUNNING row was written."""

    def run_finished(self, run: Run) -> None:
        """``run``'s outcome was written."""


class RunEvents:
    """A dispatcher of run events to its listeners (thread-safe)."""

    def __init__(self, *listeners: RunListener) -> None:
        self._listeners: tuple[RunListener, ...] = tuple(listeners)
        self._lock = threading.Lock()

    def subscribe(self, listener: RunListener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def started(self, run: Run) -> None:
        for listener in self._listeners:
            try:
                listener.run_started(run)
            except Exception:
                log.exception("a listener of run %s's start failed", run.run_id)

    def finished(self, run: Run) -> None:
        for listener in self._listeners:
            try:
                listener.run_finished(run)
            except Exception:
                log.exception("a listener of run %s's outcome failed", run.run_id)
