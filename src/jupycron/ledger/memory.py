"""An in-memory :class:`~jupycron.ledger.base.RunStore` (tests, embedding): one process,
nothing persisted. Same contract as the SQLite store (``test_run_store_contract.py``)."""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..exceptions import AlreadyRunning
from ..models import Run, RunStatus
from .base import NotebookHistory, RunStore, capped

log = logging.getLogger(__name__)

__all__ = ["MemoryRunStore"]


class MemoryRunStore(RunStore):
    """Example::

        store = MemoryRunStore(keep=10)
        store.record(run)
    """

    def __init__(self, output_dir: Path | str | None = None, keep: int = 100) -> None:
        super().__init__(output_dir, keep)
        self._lock = threading.RLock()
        self._data: dict[str, NotebookHistory] = {}
        self._generation = 0
        self._state: dict[str, str] = {}   # JSON text: what a reader gets is its own copy

    def _changed(self, rel: str) -> None:
        # Readers share the entries: replace the changed one, never mutate it.
        self._generation += 1
        old = self._data.get(rel)
        if old is not None:
            self._data[rel] = NotebookHistory(list(old.runs), old.deleted_at,
                                              old.last_success_output, old.first_seen)

    def snapshot(self) -> tuple[int, dict[str, NotebookHistory]]:
        with self._lock:
            return self._generation, dict(self._data)

    def _entry(self, rel: str, first_seen: datetime | None) -> NotebookHistory:
        self._changed(rel)
        entry = self._data.setdefault(rel, NotebookHistory(first_seen=first_seen))
        if entry.first_seen is None:
            entry.first_seen = first_seen
        return entry

    def _upsert(self, run: Run, kept_rel: str | None) -> str | None:
        run = copy.deepcopy(run)
        with self._lock:
            entry = self._entry(run.notebook, run.started_at)
            entry.runs = capped([r for r in entry.runs if r.run_id != run.run_id] + [run],
                                self.keep)
            if kept_rel is not None and entry.last_success is run:
                entry.last_success_output = kept_rel
            return entry.last_success_output

    def _claim(self, run: Run, check: Callable[[NotebookHistory], bool]) -> bool:
        with self._lock:
            entry = self._data.get(run.notebook) or NotebookHistory()
            holders = [r for r in entry.running if r.run_id != run.run_id]
            if holders:
                raise AlreadyRunning(f"{run.notebook} is already running (run "
                                     f"{holders[0].run_id}, pid {holders[0].pid})")
            if not check(entry):
                return False
            self._upsert(run, None)
            return True

    def _replace_running(self, runs: list[Run]) -> list[Run]:
        done = []
        with self._lock:
            for run in runs:
                entry = self._data.get(run.notebook)
                old = next((r for r in entry.runs if r.run_id == run.run_id), None) \
                    if entry else None
                if old is None or old.status is not RunStatus.RUNNING:
                    continue
                self._upsert(run, None)
                done.append(run)
        return done

    def _discard(self, run: Run) -> bool:
        with self._lock:
            entry = self._data.get(run.notebook)
            if entry is None or not any(r.run_id == run.run_id and r.status is RunStatus.RUNNING
                                        for r in entry.runs):
                return False
            self._changed(run.notebook)
            self._data[run.notebook].runs = [r for r in entry.runs if r.run_id != run.run_id]
            return True

    def _reconcile(self, present: set[str], now: datetime) -> list[str]:
        newly = []
        with self._lock:
            for p in present:
                entry = self._data.get(p)
                if entry is None or entry.first_seen is None or entry.deleted_at is not None:
                    if entry is not None and entry.deleted_at is not None:
                        log.info("notebook %s is back: no longer marked deleted", p)
                    entry = self._entry(p, now)
                    entry.deleted_at = None
            for p, entry in list(self._data.items()):
                if p not in present and entry.deleted_at is None:
                    self._entry(p, None).deleted_at = now
                    newly.append(p)
        return sorted(newly)

    def _purge(self, now: datetime, grace: timedelta) -> list[tuple[str, datetime]]:
        with self._lock:
            gone = [(p, e.deleted_at) for p, e in self._data.items()
                    if e.deleted_at is not None and now - e.deleted_at > grace]
            for p, _ in gone:
                del self._data[p]
            if gone:
                self._generation += 1
            return gone

    def replace_entries(self, entries: dict[str, NotebookHistory]) -> None:
        with self._lock:
            for rel, e in entries.items():
                self._changed(rel)
                self._data[rel] = NotebookHistory(capped(copy.deepcopy(e.runs), self.keep),
                                                  e.deleted_at, e.last_success_output,
                                                  e.first_seen)

    def alert_state(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._state.get(f"alerts:{name}")
        return json.loads(text) if text is not None else None

    def save_alert_state(self, name: str, state: dict[str, Any]) -> None:
        text = json.dumps(state)
        with self._lock:
            self._state[f"alerts:{name}"] = text

    def write_heartbeat(self, beat: dict[str, Any]) -> None:
        text = json.dumps(beat)
        with self._lock:
            self._state["heartbeat"] = text

    def heartbeat(self) -> dict[str, Any] | None:
        with self._lock:
            text = self._state.get("heartbeat")
        return json.loads(text) if text is not None else None
