"""The run ledger's interface (:class:`RunStore`) and its read model (:class:`NotebookHistory`).

Every run-state question jupycron asks goes through a :class:`RunStore`: which runs a
notebook had (newest first), which are RUNNING, when a notebook was first seen or deleted,
where its kept success page is, what the run alerts last told, the scheduler's heartbeat.
Two implementations: :class:`jupycron.ledger.sqlite.SqliteRunStore` (the product: one SQLite
file in the outputs folder, shared by every jupycron process) and
:class:`jupycron.ledger.memory.MemoryRunStore` (tests, embedding). Both pass one contract
test suite (``tests/jupycron/test_run_store_contract.py``).

The claim rule (:meth:`RunStore.claim`): a run starts only after a conditional write, in one
transaction, of its RUNNING row: refused (:class:`~jupycron.exceptions.AlreadyRunning`) when
the notebook has a RUNNING row already, and skipped when a scheduled run's slot was served
meanwhile. ``tick``, the daemon and the dashboard's Run all start runs through it.

Output files (the kept copy of the latest success, the outputs of purged notebooks) are
handled by :mod:`jupycron.retention`, called from :meth:`RunStore.record` and
:meth:`RunStore.purge` when the store has an ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psutil

from .. import retention
from ..models import KernelInfo, Run, RunStatus, Trigger

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED_RETRIES", "NotebookHistory", "Purged", "RunStore", "kernel_from_extra",
           "run_sort_key", "runner_alive", "served_slot"]

#: How often an interrupted scheduled run is retried for the same slot.
INTERRUPTED_RETRIES = 3
T = TypeVar("T")


def run_sort_key(run: Run) -> tuple[datetime, str]:
    return (run.started_at, run.run_id)


@dataclass
class NotebookHistory:
    """One notebook's entry: runs newest first plus bookkeeping."""

    runs: list[Run] = field(default_factory=list)
    deleted_at: datetime | None = None
    last_success_output: str | None = None   # kept HTML copy, relative to the output folder
    first_seen: datetime | None = None

    @property
    def latest(self) -> Run | None:
        """The newest run of any status (may be RUNNING)."""
        return self.runs[0] if self.runs else None

    @property
    def running(self) -> list[Run]:
        return [r for r in self.runs if r.status is RunStatus.RUNNING]

    @property
    def last_finished(self) -> Run | None:
        """The newest run that is not RUNNING."""
        return next((r for r in self.runs if r.status is not RunStatus.RUNNING), None)

    @property
    def last_success(self) -> Run | None:
        return next((r for r in self.runs if r.status is RunStatus.SUCCESS), None)

    @property
    def last_scheduled_slot(self) -> datetime | None:
        """The latest slot served by a scheduled run, whatever its outcome (the due rule's input)."""
        slots = [r.slot for r in self.runs if r.trigger is Trigger.SCHEDULE and r.slot is not None]
        return max(slots) if slots else None

    @property
    def consecutive_failures(self) -> int:
        """Failures (failed/timeout/oom/crashed) since the last success, newest first.

        RUNNING and INTERRUPTED rows neither count nor break the streak.
        """
        n = 0
        for r in self.runs:
            if r.status is RunStatus.SUCCESS:
                break
            if r.status.is_failure:
                n += 1
        return n


def served_slot(entry: NotebookHistory | None) -> datetime | None:
    """The latest slot a scheduled run has served (interrupted runs serve it only after
    :data:`INTERRUPTED_RETRIES` attempts): the due rule's and the claim rule's input."""
    if entry is None:
        return None
    served: list[datetime] = []
    interrupted: Counter[datetime] = Counter()
    for r in entry.runs:
        if r.trigger is not Trigger.SCHEDULE or r.slot is None:
            continue
        if r.status is RunStatus.INTERRUPTED:
            interrupted[r.slot] += 1
        else:
            served.append(r.slot)
    served += [s for s, n in interrupted.items() if n >= INTERRUPTED_RETRIES]
    return max(served, default=None)


@dataclass(frozen=True)
class Purged:
    """A notebook whose runs and outputs :meth:`RunStore.purge` removed."""

    notebook: str
    deleted_at: datetime
    files: tuple[Path, ...]


def kernel_from_extra(run: Run) -> KernelInfo | None:
    """``run.kernel``, or the kernel's ids as older rows kept them in ``run.extra``
    (:meth:`jupycron.models.KernelInfo.from_legacy_extra`, the one mapping)."""
    return run.kernel if run.kernel is not None else KernelInfo.from_legacy_extra(run.extra)


def runner_alive(run: Run) -> bool:
    """Default orphan test: is the process that recorded this RUNNING row still there?

    Rows from another host, or without a pid, are assumed alive (we cannot tell). A pid that
    now belongs to a process started after the run began is a reused pid, i.e. gone.
    """
    if run.host and run.host != socket.gethostname():
        return True
    if run.pid is None:
        return True
    try:
        proc = psutil.Process(run.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= run.started_at.timestamp() + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def interrupted(run: Run, now: datetime) -> Run:
    """``run`` (a RUNNING row whose runner went away) marked INTERRUPTED at ``now``."""
    why = (f"the runner process {run.pid} on {run.host or 'this host'} went away during the "
           "run (killed or crashed)" if run.pid != os.getpid()
           else f"the outcome of this run could not be written by process {run.pid} (e.g. the "
           "disk was full) and is lost")
    return replace(run, status=RunStatus.INTERRUPTED, finished_at=now,
                   duration_s=max(0.0, (now - run.started_at).total_seconds()),
                   error_name="Interrupted", error_value=why,
                   extra={**run.extra, "orphaned": True})


class RunStore(ABC):
    """The run ledger (see the module docstring). Thread-safe; every method that writes
    raises :class:`~jupycron.exceptions.HistoryError` when the write cannot be made (a full
    disk, a read-only folder), naming the problem.

    ``output_dir``: the outputs folder whose kept success copies and purged outputs
    :mod:`jupycron.retention` manages (None: the store touches no file but its own).
    ``keep``: runs kept per notebook (RUNNING rows are never dropped).

    Example::

        store = open_store(settings)          # jupycron.ledger.open_store
        store.claim(run)                      # the RUNNING row, or AlreadyRunning
        store.record(run)                     # upsert by run_id, capped
        entry = store.load().get("a/b_autorun.ipynb")
    """

    def __init__(self, output_dir: Path | str | None, keep: int = 100) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.keep = keep
        self._memo_lock = threading.Lock()
        self._memo_gen = -1
        self._memo: dict[str, Any] = {}

    # --- the primitives an implementation provides ----------------------------------------

    @abstractmethod
    def snapshot(self) -> tuple[int, dict[str, NotebookHistory]]:
        """``(generation, history)``: every notebook's entry (deleted ones included), runs
        newest first, and a number that changes with every write of runs or notebooks.
        The entries are shared between calls: treat them as read-only."""

    @abstractmethod
    def _upsert(self, run: Run, kept_rel: str | None) -> str | None:
        """Insert or replace ``run`` (by notebook and run_id), create its notebook (``first_seen`` =
        its start), cap the notebook's runs, point ``last_success_output`` at ``kept_rel``
        when ``run`` is the notebook's newest success; return ``last_success_output``."""

    @abstractmethod
    def _claim(self, run: Run, check: Callable[[NotebookHistory], bool]) -> bool:
        """In one transaction: AlreadyRunning when the notebook has a RUNNING row other than
        ``run``; False when ``check(entry)`` is false; else insert ``run``, return True."""

    @abstractmethod
    def _replace_running(self, runs: list[Run]) -> list[Run]:
        """Replace each of ``runs`` whose stored row is still RUNNING; return those replaced."""

    @abstractmethod
    def _discard(self, run: Run) -> bool:
        """Delete ``run``'s row if it is still RUNNING; True when it was."""

    @abstractmethod
    def _reconcile(self, present: set[str], now: datetime) -> list[str]:
        """:meth:`mark_deleted`'s write (one transaction); returns the paths newly deleted."""

    @abstractmethod
    def _purge(self, now: datetime, grace: timedelta) -> list[tuple[str, datetime]]:
        """Remove the notebooks (and their runs) deleted more than ``grace`` before ``now``."""

    @abstractmethod
    def replace_entries(self, entries: dict[str, NotebookHistory]) -> None:
        """Bulk write (imports, rebuilds, benchmarks): each notebook of ``entries`` gets
        exactly that entry (runs capped to ``keep``), in one transaction. No retention."""

    @abstractmethod
    def alert_state(self, name: str) -> dict[str, Any] | None:
        """The JSON object saved as ``name`` by :meth:`save_alert_state`, None when none."""

    @abstractmethod
    def save_alert_state(self, name: str, state: dict[str, Any]) -> None:
        """Keep ``state`` (a JSON object) as ``name``, replacing what was there."""

    @abstractmethod
    def write_heartbeat(self, beat: dict[str, Any]) -> None:
        """Keep the scheduler's heartbeat (a JSON object), replacing the last one."""

    @abstractmethod
    def heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat written, None when none."""

    def close(self) -> None:  # noqa: B027 - a store without resources needs no close
        """Release the store's resources (a closed store reopens on use)."""

    # --- reads ----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.snapshot()[0]

    def load(self) -> dict[str, NotebookHistory]:
        """Every notebook's history (deleted ones included), runs newest first (shared
        objects: read-only)."""
        return self.snapshot()[1]

    def get(self, rel: str) -> NotebookHistory:
        """One notebook's history (an empty one when unknown)."""
        return self.load().get(rel) or NotebookHistory()

    def _memoised(self, name: str, fn: Callable[[dict[str, NotebookHistory]], T]) -> T:
        generation, data = self.snapshot()
        with self._memo_lock:
            if generation == self._memo_gen and name in self._memo:
                value: T = self._memo[name]
                return value
        value = fn(data)
        with self._memo_lock:
            if generation != self._memo_gen:
                self._memo_gen, self._memo = generation, {}
            self._memo[name] = value
        return value

    def running_runs(self) -> list[Run]:
        """Every RUNNING row (computed once per generation)."""
        return list(self._memoised("running", lambda data: [
            r for e in data.values() for r in e.runs if r.status is RunStatus.RUNNING]))

    def earliest_deleted(self) -> datetime | None:
        """The oldest ``deleted_at`` of any notebook, None when none is marked deleted."""
        return self._memoised("deleted", lambda data: min(
            (e.deleted_at for e in data.values() if e.deleted_at is not None), default=None))

    # --- writes ---------------------------------------------------------------------------

    def record(self, run: Run, *, retry: bool = False) -> None:
        """Insert or replace ``run`` (matched by run_id) and cap the notebook's runs.

        Keeps the newest ``keep`` runs plus any older RUNNING rows. For a SUCCESS run with
        an ``output`` the HTML is kept (:func:`jupycron.retention.keep_success_copy`),
        ``last_success_output`` points to it and older kept copies are removed. ``retry``:
        this write already failed once (a full disk), so a copy that fails again is logged
        at debug level only. The store keeps a copy: later changes to ``run`` need another
        ``record``.
        """
        kept = None
        if self.output_dir is not None and run.status is RunStatus.SUCCESS:
            kept = retention.keep_success_copy(self.output_dir, run, retry)
        current = self._upsert(run, kept)
        if kept is not None and self.output_dir is not None:
            retention.remove_other_kept(self.output_dir, run.notebook, keep_rel=current)

    def claim(self, run: Run) -> bool:
        """Write ``run``'s RUNNING row if the claim rule allows (see the module docstring).

        Raises :class:`~jupycron.exceptions.AlreadyRunning` when the notebook has another
        RUNNING row; returns False (nothing written) when ``run`` is scheduled for a slot a
        scheduled run already served; True when claimed.
        """
        if run.status is not RunStatus.RUNNING:
            raise ValueError(f"only a RUNNING run can be claimed, got {run.status}")

        def free(entry: NotebookHistory) -> bool:
            if run.trigger is not Trigger.SCHEDULE or run.slot is None:
                return True
            served = served_slot(NotebookHistory(
                runs=[r for r in entry.runs if r.run_id != run.run_id]))
            return served is None or served < run.slot

        return self._claim(run, free)

    def discard_claim(self, run: Run) -> bool:
        """Undo a claim whose run never started (its row is deleted if still RUNNING)."""
        return self._discard(run)

    def reap_orphans(self, is_alive: Callable[[int], bool] | None = None,
                     now: datetime | None = None, *,
                     run_alive: Callable[[Run], bool] | None = None) -> list[Run]:
        """Mark RUNNING runs whose runner process is gone as INTERRUPTED; return them.

        ``is_alive(pid)`` overrides the default test (:func:`runner_alive`, which also
        detects reused pids and skips rows recorded on another host); ``run_alive(run)``
        overrides both. A row that stopped being RUNNING meanwhile is left alone.
        """
        now = now or datetime.now(UTC)

        def alive(run: Run) -> bool:
            if run_alive is not None:
                return run_alive(run)
            if is_alive is None:
                return runner_alive(run)
            return run.pid is None or is_alive(run.pid)

        orphans = [interrupted(r, now) for r in self.running_runs() if not alive(r)]
        reaped = self._replace_running(orphans) if orphans else []
        for r in reaped:
            log.warning("run %s of %s was orphaned (runner pid %s gone): marked interrupted",
                        r.run_id, r.notebook, r.pid)
        return reaped

    def mark_deleted(self, existing: Iterable[str], now: datetime) -> list[str]:
        """Reconcile with the notebooks on disk (``existing``: every discovered path).

        Notebooks missing from ``existing`` get ``deleted_at = now`` (once); ones that came
        back have it cleared; new ones get an entry with ``first_seen = now``. Returns the
        paths newly marked deleted. Writes only when something changed.
        """
        present = set(existing)
        current = self.load()
        if all(p in current and current[p].deleted_at is None and current[p].first_seen
               for p in present) and all(e.deleted_at is not None or p in present
                                         for p, e in current.items()):
            return []
        newly = self._reconcile(present, now)
        for p in newly:
            log.info("notebook %s disappeared: marked deleted", p)
        return newly

    def purge(self, now: datetime, grace: float | timedelta) -> list[Purged]:
        """Remove the runs and output files of notebooks deleted more than ``grace`` ago."""
        grace_td = grace if isinstance(grace, timedelta) else timedelta(seconds=grace)
        deleted = self.earliest_deleted()
        if deleted is None or now - deleted <= grace_td:
            return []
        removed = []
        for rel, deleted_at in self._purge(now, grace_td):
            files = retention.remove_outputs(self.output_dir, rel) \
                if self.output_dir is not None else []
            log.info("purged notebook %s (deleted at %s): removed %d file(s)",
                     rel, deleted_at.isoformat(), len(files))
            removed.append(Purged(rel, deleted_at, tuple(files)))
        return removed


def capped(runs: list[Run], keep: int) -> list[Run]:
    """``runs`` newest first, the newest ``keep`` plus any older RUNNING rows."""
    runs = sorted(runs, key=run_sort_key, reverse=True)
    return runs[:keep] + [r for r in runs[keep:] if r.status is RunStatus.RUNNING]
