"""When notebooks run: one pass (``tick``), a long-running loop (``run_forever``), ``run_now``.

Run state is the run ledger (:mod:`jupycron.ledger`, ``<output>/.jupycron.sqlite``).

* Per notebook: a run starts only once the ledger accepted its claim
  (:meth:`jupycron.ledger.RunStore.claim`, one conditional write): a notebook already
  running in any process (an earlier tick still busy, the daemon, a run-now) is skipped
  (run-now: :class:`~jupycron.exceptions.AlreadyRunning`), and so is a slot served meanwhile.
  A RUNNING row whose runner died is reaped first (see below), so it never blocks for long.
* Global slots, ``<output>/.locks/slot-<K>.lock`` for K < ``settings.effective_concurrency``
  (:func:`fcntl.flock`, released by the OS when a process dies): a run holds one slot while
  its kernel lives, so the cap holds across processes. A claimed run that finds no free
  slot waits (polling); its RUNNING row exists meanwhile (the runner rewrites it with the
  real start time when the kernel starts).

Due rule: :func:`jupycron.schedule.due_slot` with the slot last served by a scheduled run,
except that ``interrupted`` runs (scheduler stopped, runner killed) do not serve their slot:
that slot is retried, at most :data:`INTERRUPTED_RETRIES` times. Failures are not retried.

Each pass also reaps orphans (RUNNING rows whose runner died: their kernel, children and
cgroup are killed, the row becomes ``interrupted``; and rows of this process for runs it no
longer owns, see :mod:`jupycron.recording`), marks vanished notebooks deleted and
purges those deleted longer than ``settings.deleted_grace_s`` ago. ``summary.html`` and the
heartbeat (in the ledger, :meth:`~jupycron.ledger.RunStore.write_heartbeat`) are rewritten
after a change, by a background
thread that coalesces bursts of changes: at most once per :data:`REFRESH_BURST_S` while they
keep coming (a run never waits for the page; the last state is written before
``tick``/``run_now`` return and when the daemon stops); run-state alerts
(:mod:`jupycron.run_alerts`, when present) are checked after each run over the scheduler's
history view and last scan, errors only logged.

A full disk (:mod:`jupycron.recording`): an outcome the history refuses is kept and its write
retried until it lands (the row does not stay ``running``, later slots run); a RUNNING row
that cannot be written starts nothing and backs starts off; failing writes of the history,
the heartbeat and summary.html are logged once per episode, then once a minute.

Cost per run in a burst: a run's start and end are one small SQLite transaction each, and
the scheduler's view of the ledger re-reads only the notebooks that changed
(:meth:`jupycron.ledger.SqliteRunStore.snapshot`), so the due check, the run-state alerts
and the page read that view.

Kernel pool (``settings.pool_size``, :mod:`jupycron.kernels.pooled`): the daemon keeps up to
``pool_size`` kernels ready between slots (their memory is in the heartbeat's ``pool``), and
builds its HTML exporters at start-up. The daemon rescans the notebooks folder
:data:`PREPARE_S` before each slot, so at the slot it only reads the history and starts the
due runs. A ``tick`` lives for one pass, so its pool only helps when more notebooks are due
than the concurrency cap: it starts at most one kernel per due notebook, replacements
starting while other runs execute. ``run_now`` uses no pool.

Idle cost: the daemon rescans every :data:`RESCAN_S` seconds, and a rescan in which nothing
changed is a directory walk plus one ``stat`` per notebook and one query of the ledger's
generation. Parsed notebooks come from the :class:`~jupycron.discovery.ScanCache`, the
ledger's view from the store (read again only when its generation moves), the due
answer and ``next_wake`` from the last computation while the notebooks and the history are
unchanged and no slot has passed (:meth:`Scheduler.due`), and between changes summary.html
only gets a new "generated at" line (rows rendered again every
:data:`SUMMARY_RENDER_MAX_S`).

Events: runs publish ``run_started`` / ``run_finished`` (:mod:`jupycron.events`) to the
scheduler's listeners: its running set and the history's health, the heartbeat and
summary refresh, the run-state alerts. :meth:`Scheduler.tick_once` is one unit of work
(start the due runs on the run workers); ``tick`` and ``run_forever`` are built on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from safefiles.atomic import atomic_write_bytes

from . import discovery, limits, recording, schedule, status, summary
from .config import Settings
from .events import RunEvents
from .exceptions import AlreadyRunning, HistoryError, NotebookNotFound, RunNotRecorded, SpecError
from .export import warm_exporters
from .kernels import KernelPool, pool_size, preimport_modules
from .ledger import (
    INTERRUPTED_RETRIES,
    NotebookHistory,
    RunStore,
    open_store,
    served_slot,
)
from .models import Notebook, Run, Trigger
from .orphans import reap_orphans, still_running
from .paths import summary_file, validate_rel
from .runner import new_run_id, run_notebook
from .slots import acquire_slot, release

log = logging.getLogger(__name__)

__all__ = [
    "INTERRUPTED_RETRIES",
    "due_runs",
    "reap_orphans",
    "run_forever",
    "run_now",
    "tick",
]

#: The daemon rescans the notebooks folder at least this often (seconds).
RESCAN_S = 10.0
SUMMARY_MAX_AGE_S = 60.0
"""summary.html is rewritten at least this often (its "generated at" line), else only on change."""
SUMMARY_RENDER_MAX_S = 600.0
"""Between changes, rewrites only restamp the "generated at" line of the last rendered page;
the rows are rendered again at least this often (and whenever a slot passes), which also
picks up output files removed by hand."""
#: The background refresh waits this long after a change, so a short run's RUNNING and
#: outcome rows make one summary write, and the page is never rendered on a run's
#: critical path (it would compete with the run for the GIL).
REFRESH_DELAY_S = 0.5
#: While changes keep coming (a burst of runs), the heartbeat and summary.html are rewritten
#: at most this often, and once more when the burst ends: a render costs time proportional
#: to the notebooks, and 50 runs a minute must not mean 100 renders.
REFRESH_BURST_S = 2.0
#: The daemon rescans this many seconds before a slot, so the slot itself starts runs at once.
PREPARE_S = 1.0


# --- due (served_slot, INTERRUPTED_RETRIES: jupycron.ledger, shared with the claim rule) ---


def due_runs(notebooks: Iterable[Notebook], history: dict[str, NotebookHistory],
             now: datetime, run_new: bool = False) -> list[tuple[Notebook, datetime]]:
    """(notebook, slot) of every schedulable notebook due at ``now`` and not running
    (``run_new``: the ``run_new_at_once`` setting, see :func:`jupycron.schedule.due_slot`)."""
    due = []
    for nb in notebooks:
        if not nb.schedulable or nb.spec is None:
            continue
        entry = history.get(nb.path)
        if entry is not None and entry.running:
            continue
        try:
            slot = schedule.due_slot(nb.spec, now, served_slot(entry),
                                     entry.first_seen if entry else now, run_new)
        except SpecError as exc:
            log.warning("notebook %s: %s", nb.path, exc)
            continue
        if slot is not None:
            due.append((nb, slot))
    return due


def next_wake(notebooks: Iterable[Notebook], now: datetime) -> datetime | None:
    """The earliest next slot of any schedulable notebook."""
    slots = []
    for nb in notebooks:
        if nb.schedulable and nb.spec is not None:
            with contextlib.suppress(SpecError):
                slots.append(schedule.next_slot(nb.spec, now))
    return min(slots, default=None)


# --- the shared machinery of tick / daemon / run-now -------------------------------------

def notify_alerts(settings: Settings, now: datetime | None = None, *,
                  history: RunStore | None = None,
                  notebooks: list[Notebook] | None = None,
                  cancel: threading.Event | None = None) -> None:
    """Call :func:`jupycron.run_alerts.notify_changes`; never raises, skips if absent.

    ``history`` (the scheduler's ledger) and ``notebooks`` (its last scan) spare each call
    a scan and a fresh read of the ledger."""
    try:
        from . import run_alerts
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.run_alerts":
            return
        log.exception("run alerts unavailable")
        return
    except Exception:
        log.exception("run alerts unavailable")
        return
    try:
        run_alerts.notify_changes(settings, now or datetime.now(UTC), history=history,
                                  notebooks=notebooks, cancel=cancel)
    except Exception:
        log.exception("run alerts failed (runs are not affected)")


#: How long closing a scheduler waits for its last alert check (each delivery is bounded by
#: run_alerts.SEND_TIMEOUT_S, a check by CHECK_BUDGET_S after at most LOCK_WAIT_S).
ALERT_FLUSH_S = 45.0


class AlertWorker:
    """Run-state alert checks on a thread of their own, never on a run's worker.

    :meth:`request` only flags a check and returns; requests made while a check runs are
    coalesced into one more check. :meth:`close` lets a pending check run and waits for it
    up to ``flush_s``; the ``cancel`` event (the scheduler's stop event, set by SIGTERM)
    aborts a delivery in flight.
    """

    def __init__(self, check: Callable[[], None], flush_s: float = ALERT_FLUSH_S) -> None:
        self._check = check
        self._flush_s = flush_s
        self._cond = threading.Condition()
        self._pending = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.checks = 0

    def request(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="jupycron-alerts")
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                self._pending = False
            try:
                self._check()
            except Exception:
                log.exception("run alerts failed (runs are not affected)")
            with self._cond:
                self.checks += 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(self._flush_s)
            if t.is_alive():
                log.warning("run alerts: the last check is still sending after %.0f s; "
                            "leaving it (unsent messages go at the next check)", self._flush_s)


class Scheduler:
    """State shared by the runs of one process: the ledger, slot locks, heartbeat, summary."""

    def __init__(self, settings: Settings, mode: str,
                 stop_event: threading.Event | None = None) -> None:
        self.settings = settings
        self.mode = mode
        self.stop_event = stop_event or threading.Event()
        self.output = settings.output_dir
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, a read-only or missing mount
            raise HistoryError(f"cannot create the outputs folder {self.output} (setting "
                               f"`output`): {exc.strerror or exc}") from exc
        self.history: RunStore = open_store(settings)
        self._notebooks: list[Notebook] = []
        self.notebooks_generation = 0
        self.queue: set[str] = set()
        self.running: dict[str, Run] = {}
        self.next_wake: datetime | None = None
        self._lock = threading.Lock()
        self.cap = settings.effective_concurrency
        self.pool: KernelPool | None = None
        self._dirty = threading.Event()
        self._refresher: threading.Thread | None = None
        self._summary_written: tuple[Any, float] = (None, 0.0)  # (fingerprint, monotonic time)
        self._page: _Page | None = None
        self._closing = False
        self._closed = threading.Event()  # wakes the refresher when closing
        # the due answer and what it was computed from (see due())
        self._agenda: _Agenda | None = None
        self._reconciled: tuple[int, int] | None = None  # (notebooks, history) generations
        self.alerts = AlertWorker(self._check_alerts)
        # Writes that fail (a full disk): logged once per episode; outcomes kept and retried;
        # starts wait _start_delay (doubling) after a RUNNING row could not be written.
        self.write_failures = recording.WriteFailures(f"the outputs folder {self.output}")
        # Runs publish their start and outcome here (an outcome written late too).
        self.events = RunEvents(_Bookkeeping(self), _PageRefresh(self), _AlertCheck(self.alerts))
        self.pending = recording.PendingOutcomes(self.history, self.write_failures,
                                                 self.events.finished)
        self.outcome_written = threading.Event()  # wakes the daemon's due check
        self.given_up: list[Run] = []  # outcomes still unwritten when closing
        self._start_delay = 0.0
        self._start_retry_at = 0.0
        # runs started by tick_once, by notebook, in start order
        self.inflight: dict[str, Future[Run | None]] = {}
        self._workers: ThreadPoolExecutor | None = None

    @property
    def notebooks(self) -> list[Notebook]:
        """The notebooks of the last scan, sorted by path."""
        return self._notebooks

    @notebooks.setter
    def notebooks(self, value: list[Notebook]) -> None:
        # An unchanged scan returns the cache's Notebook objects, so this compares pointers.
        if value != self._notebooks:
            self.notebooks_generation += 1
        self._notebooks = value

    def start_pool(self, budget: int | None = None, size: int | None = None) -> None:
        """Start a kernel pool per the settings (no-op when ``pool_size`` is 0). A bad
        ``pool_preimport`` is logged and ignored (the pool runs without it)."""
        size = pool_size(self.settings) if size is None else size
        if size <= 0 or self.pool is not None:
            return
        try:
            preimport = preimport_modules(self.settings)
        except ValueError as exc:
            log.error("%s; starting the pool without preimport", exc)
            preimport = ()
        self.pool = KernelPool(self.settings, size, preimport=preimport, budget=budget).start()
        log.info("kernel pool: %d kernel(s)%s", size,
                 f", preimporting {', '.join(preimport)}" if preimport else "")

    def request_refresh(self) -> None:
        """Ask the background thread to rewrite the heartbeat and summary soon (coalesced)."""
        with self._lock:
            if self._refresher is None and not self._closing:
                self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                                   name="jupycron-refresh")
                self._refresher.start()
        self._dirty.set()

    def _refresh_loop(self) -> None:
        last = -REFRESH_BURST_S
        while True:
            self._dirty.wait()
            if self._closing:
                return
            delay = max(REFRESH_DELAY_S, last + REFRESH_BURST_S - time.monotonic())
            if self._closed.wait(delay):
                return  # close() writes the final state itself
            self._dirty.clear()
            last = time.monotonic()
            self.refresh()

    def close(self) -> None:
        """Stop the pool (killing idle kernels), the refresher and the alert worker (after
        its pending check, bounded); write the final state."""
        if self.pool is not None:
            self.pool.close()
        self.alerts.close()
        with self._lock:
            self._closing = True
            t, self._refresher = self._refresher, None
        self._closed.set()
        self._dirty.set()
        if t is not None:
            t.join(30)
        self.given_up = self.pending.close()  # a last attempt for outcomes not written yet
        self.refresh(force=True)

    # -- bookkeeping --
    def scan(self, now: datetime, cache: discovery.ScanCache | None = None) -> list[Notebook]:
        """Scan, reap orphans, reconcile deletions and purge; returns the notebooks.

        A history that cannot be written (a full disk) leaves that bookkeeping for the next
        scan, logged by :attr:`write_failures`."""
        try:
            reap_orphans(self.history)
        except HistoryError as exc:
            self.write_failures.failed("history", exc)
        self.notebooks = discovery.scan(self.settings.notebooks, self.output, cache)
        if not self.settings.notebooks.is_dir():
            # An unmounted or renamed folder is not "every notebook was deleted".
            log.error("notebooks folder %s is missing: nothing runs, nothing is marked deleted",
                      self.settings.notebooks)
            return self.notebooks
        try:
            generation, _ = self.history.snapshot()
            if self._reconciled != (self.notebooks_generation, generation):
                # Same notebooks, same history: the reconciliation would find nothing to do.
                self.history.mark_deleted([n.path for n in self.notebooks], now)
                self._reconciled = (self.notebooks_generation, generation)
            deleted = self.history.earliest_deleted()
            if deleted is not None and \
                    now - deleted > timedelta(seconds=self.settings.deleted_grace_s):
                self.history.purge(now, self.settings.deleted_grace_s)
        except HistoryError as exc:
            self.write_failures.failed("history", exc)
        return self.notebooks

    def due(self, now: datetime) -> list[tuple[Notebook, datetime]]:
        """:func:`due_runs` over the scanned notebooks and the history; sets ``next_wake``.

        The answer is reused while the notebooks and the history are unchanged and ``now``
        lies between the time it was computed and the earliest next slot: every notebook's
        latest and next slot are constant in that window, so the due rule gives the same
        answer. An idle rescan thus costs no schedule maths at all.
        """
        generation, history = self.history.snapshot()
        a = self._agenda
        if (a is not None and a.notebooks == self.notebooks_generation
                and a.history == generation and a.computed <= now
                and (a.wake is None or now < a.wake)):
            self.next_wake = a.wake
            return list(a.jobs)
        jobs = due_runs(self.notebooks, history, now, self.settings.run_new_at_once)
        wake = next_wake(self.notebooks, now)
        self._agenda = _Agenda(self.notebooks_generation, generation, now, wake, tuple(jobs))
        self.next_wake = wake
        return jobs

    def refresh(self, now: datetime | None = None, force: bool = False) -> None:
        """Rewrite the heartbeat, and summary.html when what it shows changed or it is older
        than :data:`SUMMARY_MAX_AGE_S` (or ``force``). Errors are logged, never raised."""
        now = now or datetime.now(UTC)
        with self._lock:
            state: dict[str, Any] = {
                "pid": os.getpid(), "host": socket.gethostname(), "mode": self.mode,
                "heartbeat": now.isoformat(), "queue": sorted(self.queue),
                "running": sorted(r.notebook for r in self.running.values()),
                "running_runs": [{"notebook": r.notebook, "run_id": r.run_id,
                                  "started_at": r.started_at.isoformat()}
                                 for r in self.running.values()],
                "memory_limit": limits.describe_method(), "concurrency": self.cap,
                "next_wake": self.next_wake.isoformat() if self.next_wake else None,
                "pool": self.pool.stats() if self.pool is not None else None,
                "unrecorded": sorted(r.run_id for r in self.pending.runs()),
                "write_failures": self.write_failures.failing,
            }
            try:
                self.history.write_heartbeat(state)
                self.write_failures.ok("heartbeat")
                if self.write_failures.failing:  # the disk has room again: try at once
                    self._start_retry_at = 0.0
                    self.pending.poke()
            except (HistoryError, OSError) as exc:
                self.write_failures.failed("heartbeat", exc)
            fingerprint = self._summary_fingerprint(state)
            mono = time.monotonic()
            if (not force and fingerprint == self._summary_written[0]
                    and mono - self._summary_written[1] < SUMMARY_MAX_AGE_S):
                return  # nothing the page shows has changed: the idle daemon stays idle
            try:
                self._write_page(fingerprint, now, mono, force)
                self._summary_written = (fingerprint, mono)
                self.write_failures.ok("summary page")
            except OSError as exc:
                self.write_failures.failed("summary page", exc)
            except Exception:
                log.exception("cannot write summary.html")

    def _write_page(self, fingerprint: tuple[Any, ...], now: datetime, mono: float,
                    force: bool) -> None:
        """Write summary.html: the last rendered page with a new "generated at" time when
        its rows are still what :func:`status.build_rows` would give, else a new render.

        The rows depend on ``now`` only through each notebook's next/due slot, which is
        constant until the earliest next slot (``next_wake``) passes."""
        page = self._page
        html = None
        if (page is not None and not force and page.fingerprint == fingerprint
                and page.computed <= now < page.valid_until
                and mono - page.rendered < SUMMARY_RENDER_MAX_S):
            html = summary.restamp_summary(page.html, now)
        if html is None:
            try:
                history = self.history.load()
            except HistoryError as exc:
                raise OSError(str(exc)) from exc  # logged as a failing page write
            rows = status.build_rows(self.settings, self.notebooks, history, now)
            html = summary.render_summary(rows, now, limits.detect_method())
            self._page = _Page(fingerprint, html, now, self._rows_valid_until(now), mono)
        target = summary_file(self.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, html.encode("utf-8"), durable=False)

    def _rows_valid_until(self, now: datetime) -> datetime:
        """Until when rows built at ``now`` stay right: the due answer's next slot when it
        is current (``now`` itself, i.e. never, when there is none)."""
        a = self._agenda
        if (a is None or a.notebooks != self.notebooks_generation or now < a.computed
                or (a.wake is not None and now >= a.wake)):
            return now
        return a.wake if a.wake is not None else datetime.max.replace(tzinfo=UTC)

    def _summary_fingerprint(self, state: dict[str, Any]) -> tuple[Any, ...]:
        """What summary.html depends on: the scanned notebooks (their generation), the ledger
        (its generation: any recorded run changes it) and the running set."""
        try:
            generation = self.history.generation
        except HistoryError:
            generation = -1
        return self.notebooks_generation, generation, tuple(state["running"])

    def history_written(self) -> None:
        """A history write worked: starts may go on, pending outcomes are tried at once."""
        self.write_failures.ok("history")
        self._start_delay = self._start_retry_at = 0.0
        self.pending.poke()

    # -- one job --
    def run_job(self, notebook: Notebook, trigger: Trigger, slot: datetime | None,
                strict: bool = False) -> Run | None:
        """Claim the run in the ledger, wait for a global slot, run. None when skipped
        (already running / slot served meanwhile / stopping).

        ``strict``: raise :class:`AlreadyRunning` instead of skipping (run-now).
        """
        rel = notebook.path
        if not strict and time.monotonic() < self._start_retry_at:
            log.debug("%s: not started, the history could not be written just before", rel)
            return None
        # A cheap look first, so a busy notebook does not wait for a slot (the claim decides).
        with contextlib.suppress(HistoryError):
            entry = self.history.load().get(rel)
            if entry is not None and any(still_running(r) for r in entry.running):
                self._busy(rel, strict)
                return None
            if slot is not None and (served := served_slot(entry)) and served >= slot:
                log.info("%s: slot %s was served meanwhile: skipped", rel, slot.isoformat())
                return None
        run_id = new_run_id()
        # Owned before its row exists: orphan reaping must not take the row as abandoned.
        recording.claim(run_id)
        claim = Run(notebook=rel, run_id=run_id, started_at=datetime.now(UTC), trigger=trigger,
                    slot=slot, pid=os.getpid(), host=socket.gethostname())
        fd: int | None = None
        try:
            # The claim comes before the wait for a global slot: a notebook waiting here is
            # taken, another process skips it (and starts the next one) instead of waiting too.
            try:
                if not self._claim(claim):
                    log.info("%s: slot %s was served meanwhile: skipped", rel,
                             slot.isoformat() if slot else None)
                    recording.release(run_id)
                    return None
            except AlreadyRunning:
                recording.release(run_id)
                self._busy(rel, strict)
                return None
            with self._lock:
                self.queue.add(rel)
            self.request_refresh()
            try:
                fd = acquire_slot(self.output, self.cap, self.stop_event)
            finally:
                with self._lock:
                    self.queue.discard(rel)
            if fd is None:
                log.info("%s: not started, the scheduler is stopping", rel)
                with contextlib.suppress(HistoryError):
                    self.history.discard_claim(claim)
                recording.release(run_id)
                return None
            try:
                run = run_notebook(self.settings, notebook, trigger, slot, self.history,
                                   stop_event=self.stop_event, events=self.events,
                                   kernels=self.pool, run_id=run_id)
            except RunNotRecorded as exc:  # it ran: keep its outcome and retry the write
                run = exc.run
                self.pending.add(run, exc.__cause__ or exc)
                with self._lock:
                    self.running.pop(run.run_id, None)
                self.request_refresh()
                return run
            except HistoryError:  # its RUNNING row could not be written: it never ran
                with contextlib.suppress(HistoryError):
                    self.history.discard_claim(claim)
                raise
        except HistoryError as exc:  # the claim or the RUNNING row could not be written
            recording.release(run_id)
            self._start_delay = min(max(recording.RETRY_FIRST_S, 2 * self._start_delay),
                                    recording.RETRY_MAX_S)
            self._start_retry_at = time.monotonic() + self._start_delay
            self.write_failures.failed("history", exc)
            if strict:
                raise
            return None
        except BaseException:
            recording.release(run_id)
            raise
        finally:
            release(fd)
        return run

    def _claim(self, run: Run) -> bool:
        """:meth:`RunStore.claim`; a RUNNING row left by a dead runner is reaped first and
        the claim tried once more."""
        try:
            return self.history.claim(run)
        except AlreadyRunning:
            holders = [r for r in self.history.get(run.notebook).running if r.run_id != run.run_id]
            if not holders or any(still_running(r) for r in holders):
                raise
            reap_orphans(self.history)
            return self.history.claim(run)

    def _busy(self, rel: str, strict: bool) -> None:
        if strict:
            raise AlreadyRunning(f"{rel} is already running")
        log.info("%s is already running elsewhere: skipped", rel)

    def notify_alerts(self) -> None:
        """Ask the alert worker for a check (returns at once; see :class:`AlertWorker`)."""
        self.alerts.request()

    def _check_alerts(self) -> None:
        """:func:`notify_alerts` over this scheduler's history view and scanned notebooks."""
        notify_alerts(self.settings, history=self.history, notebooks=self._notebooks or None,
                      cancel=self.stop_event)

    # -- one unit of work --
    def tick_once(self, now: datetime) -> bool:
        """Start every notebook due at ``now`` that is not already in flight, on the run
        workers (up to the concurrency cap run at once; each mostly waits on its kernel).
        Returns whether runs are in flight: more work is waiting to finish."""
        self.collect_finished()
        for nb, slot in self.due(now):
            if nb.path not in self.inflight:
                if self._workers is None:
                    self._workers = ThreadPoolExecutor(max_workers=self.cap,
                                                       thread_name_prefix="jupycron-run")
                self.inflight[nb.path] = self._workers.submit(self.run_job, nb,
                                                              Trigger.SCHEDULE, slot)
        return bool(self.inflight)

    def any_finished(self) -> bool:
        """Whether a run started by :meth:`tick_once` has ended since the last collection."""
        return any(f.done() for f in self.inflight.values())

    def collect_finished(self, wait: bool = False) -> list[Run]:
        """The runs in flight that ended (``wait``: all of them, waiting), in start order;
        forgotten from the in-flight set. A run that failed inside jupycron is logged."""
        runs: list[Run] = []
        for rel, f in list(self.inflight.items()):
            if not wait and not f.done():
                continue
            del self.inflight[rel]
            try:
                if (run := f.result()) is not None:
                    runs.append(run)
            except Exception:
                log.exception("the run of %s failed inside jupycron", rel)
        return runs

    def stop_workers(self) -> None:
        """Drop queued runs and wait for the running ones (their kernels are killed by the
        stop event)."""
        if self._workers is not None:
            self._workers.shutdown(wait=True, cancel_futures=True)
            self._workers = None


class _Bookkeeping:
    """The scheduler's own view of runs: the running set (heartbeat, page) and the
    history's health (a written row means starts may go on, pending outcomes retried); an
    outcome wakes the daemon's due check (a long run may be due again)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    def run_started(self, run: Run) -> None:
        with self.sched._lock:
            self.sched.running[run.run_id] = run
        self.sched.history_written()

    def run_finished(self, run: Run) -> None:
        with self.sched._lock:
            self.sched.running.pop(run.run_id, None)
        self.sched.history_written()
        self.sched.outcome_written.set()


class _PageRefresh:
    """Rewrite the heartbeat and summary.html soon after a run starts or ends (coalesced by
    the refresher thread; ``/metrics`` reads the heartbeat)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    def run_started(self, run: Run) -> None:
        self.sched.request_refresh()

    def run_finished(self, run: Run) -> None:
        self.sched.request_refresh()


class _AlertCheck:
    """A run-state alert check after each outcome (on the alert worker's thread)."""

    def __init__(self, alerts: AlertWorker) -> None:
        self.alerts = alerts

    def run_started(self, run: Run) -> None:
        pass

    def run_finished(self, run: Run) -> None:
        self.alerts.request()


@dataclass(frozen=True, slots=True)
class _Agenda:
    """A due answer (:meth:`Scheduler.due`) and what it was computed from."""

    notebooks: int          # Scheduler.notebooks_generation
    history: int            # RunStore.generation
    computed: datetime
    wake: datetime | None   # the earliest next slot: the answer holds until then
    jobs: tuple[tuple[Notebook, datetime], ...]


@dataclass(frozen=True, slots=True)
class _Page:
    """The last rendered summary.html and how long its rows stay right."""

    fingerprint: tuple[Any, ...]
    html: str
    computed: datetime
    valid_until: datetime
    rendered: float         # time.monotonic()


# --- entry points ------------------------------------------------------------------------

def tick(settings: Settings, now: datetime | None = None,
         stop_event: threading.Event | None = None) -> list[Run]:
    """One scheduling pass (for a timer every minute): run what is due, wait, return the runs.

    ``now`` (aware) overrides the clock for the due computation only. A tick that starts
    while an earlier one is still busy skips notebooks that are running and starts the
    others within the global cap.
    """
    now = now or datetime.now(UTC)
    sched = Scheduler(settings, "tick", stop_event)
    # the cache file makes a tick (a new process every minute) re-read only changed notebooks
    notebooks = sched.scan(now, discovery.ScanCache.for_output(sched.output))
    jobs = sched.due(now)
    log.info("tick: %d notebook(s), %d due, memory caps via %s", len(notebooks), len(jobs),
             limits.describe_method())
    sched.refresh(now)
    if len(jobs) > sched.cap:
        # Kernels for the runs after the first `cap` start while those run.
        sched.start_pool(budget=len(jobs), size=min(pool_size(settings), len(jobs)))
    try:
        sched.tick_once(now)
        runs = sched.collect_finished(wait=True)
        if not runs:
            sched.notify_alerts()  # late notebooks alert even when nothing ran
    finally:
        sched.stop_workers()
        sched.close()  # waits for the alert check, bounded (ALERT_FLUSH_S, SIGTERM)
    _raise_unrecorded(sched)
    if (why := sched.write_failures.failing.get("history")) is not None:
        # e.g. a full disk: due runs could not start (their RUNNING row), or bookkeeping failed
        raise HistoryError(f"the history in {sched.output} cannot be written: {why}")
    return runs


def _raise_unrecorded(sched: Scheduler) -> None:
    """A pass whose outcomes could not all be written fails visibly (exit 4)."""
    if sched.given_up:
        raise HistoryError("the outcome of " + ", ".join(
            f"run {r.run_id} of {r.notebook} ({r.status})" for r in sched.given_up)
            + " could not be written to the history (disk full?); the next pass marks it "
            "interrupted")


def run_forever(settings: Settings, stop_event: threading.Event) -> None:
    """The daemon: run notebooks at their slots until ``stop_event`` is set.

    Sleeps until the next slot, a finished run or the next rescan (every :data:`RESCAN_S`
    seconds, which is how added, edited and deleted notebooks are noticed, and
    :data:`PREPARE_S` before each slot). At a slot only the history is read before the due
    runs are started. On stop, queued runs are dropped and running kernels are killed (their
    runs recorded ``interrupted``), then the kernel pool's idle kernels; returns once every
    run has been recorded.
    """
    sched = Scheduler(settings, "daemon", stop_event)
    cache = discovery.ScanCache.for_output(sched.output)  # a restarted daemon starts warm
    next_scan = 0.0
    started = False
    log.info("daemon: watching %s (output %s), up to %d at once, memory caps via %s",
             settings.notebooks, sched.output, sched.cap, limits.describe_method())
    try:
        sched.start_pool()
        threading.Thread(target=_warm_exporters, args=(sched.cap,), daemon=True,
                         name="jupycron-warm").start()
        while not stop_event.is_set():
            now = datetime.now(UTC)
            done = sched.any_finished()
            scanned = time.monotonic() >= next_scan
            if scanned:
                sched.scan(now, cache)
                next_scan = time.monotonic() + RESCAN_S
            at_slot = sched.next_wake is not None and now >= sched.next_wake
            late = sched.outcome_written.is_set()  # a run ended (or was recorded late): due again?
            sched.outcome_written.clear()
            if scanned or done or at_slot or late:
                sched.tick_once(now)
                if started:
                    sched.request_refresh()
                else:  # the heartbeat exists as soon as the daemon is up
                    sched.refresh(now)
                    started = True
            if sched.next_wake is not None:  # rescan just before the next slot
                to_slot = (sched.next_wake - now).total_seconds()
                if to_slot > PREPARE_S:
                    next_scan = min(next_scan, time.monotonic() + to_slot - PREPARE_S)
            wait = max(0.01, min(1.0, next_scan - time.monotonic()))
            if sched.next_wake is not None:
                wait = min(wait, max(0.01, (sched.next_wake - datetime.now(UTC)).total_seconds()))
            stop_event.wait(wait)
    finally:
        stop_event.set()
        log.info("daemon: stopping (%d run(s) in flight)", len(sched.running))
        sched.stop_workers()
        sched.mode = "stopped"
        sched.queue.clear()
        sched.close()


def _warm_exporters(count: int) -> None:
    try:
        warm_exporters(count)
    except Exception:
        log.exception("could not prepare the HTML exporters (runs build their own)")


def resolve_notebook(settings: Settings, rel: str) -> Notebook:
    """The autorun notebook at ``rel`` (relative to the notebooks folder), or NotebookNotFound."""
    try:
        # "./x.ipynb" or "a//x.ipynb" name the notebook the scan knows as "x.ipynb" and
        # "a/x.ipynb": record the run under that name, not beside it
        rel = validate_rel(rel).as_posix()
    except ValueError as exc:
        raise NotebookNotFound(str(exc)) from None
    root = settings.notebooks.resolve()
    path = root / rel
    if not path.parent.resolve().is_relative_to(root):
        raise NotebookNotFound(f"{rel!r} is outside the notebooks folder {root}")
    if not path.is_file():
        raise NotebookNotFound(f"no notebook {rel!r} in {root}")
    if "autorun" not in path.name or path.name.startswith("."):
        raise NotebookNotFound(f"{rel!r} is not an autorun notebook "
                               "(its file name must contain 'autorun')")
    return discovery.read_notebook(path, rel)


def run_now(settings: Settings, rel: str, stop_event: threading.Event | None = None) -> Run:
    """Run one notebook now (trigger ``manual``), waiting for a global slot; returns the run.

    Raises NotebookNotFound for a bad path and AlreadyRunning when it is running elsewhere.
    A disabled notebook (no or invalid jupycron line) still runs, with the default limits.
    """
    notebook = resolve_notebook(settings, rel)
    sched = Scheduler(settings, "run-now", stop_event)
    sched.notebooks = discovery.scan(settings.notebooks, sched.output,
                                     discovery.ScanCache.for_output(sched.output))
    try:
        run = sched.run_job(notebook, Trigger.MANUAL, None, strict=True)
    finally:
        sched.close()
    _raise_unrecorded(sched)
    if run is None:
        raise AlreadyRunning(f"{rel} was not started: the scheduler is stopping")
    return run

