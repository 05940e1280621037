"""Prometheus metrics, computed at scrape time from the history and the scheduler heartbeat.

:class:`JupycronCollector` is a prometheus-client custom collector: every scrape scans the
notebooks (through a shared :class:`~jupycron.discovery.ScanCache`, so unchanged notebooks
are not re-read), reads the run ledger (runs and the scheduler's heartbeat, :mod:`jupycron.ledger`) and
builds the same rows as the dashboard (:func:`jupycron.status.build_rows`, the one status model). Each collector
keeps one ledger view, read again only where the ledger changed, so the values are right
whichever process (daemon, tick from cron, run-now) wrote it, and a scrape between runs
costs one query.

Metrics (label ``notebook`` = path relative to the notebooks folder):

==============================================  ===============================================
``jupycron_notebook_info``                      1, labels ``schedule`` and ``enabled``
``jupycron_notebook_state``                     1 for the current state (label ``state``:
                                                success, failed, timeout, oom, crashed,
                                                interrupted, never, disabled, running), 0 else
``jupycron_notebook_last_run_timestamp_seconds``   start of the newest finished run
``jupycron_notebook_last_success_timestamp_seconds``  start of the newest successful run
``jupycron_notebook_last_duration_seconds``     duration of the newest finished run
``jupycron_notebook_last_peak_memory_bytes``    its peak memory
``jupycron_notebook_next_run_timestamp_seconds``   next (or due) slot
``jupycron_notebook_consecutive_failures``      failed runs since the last success
``jupycron_notebook_late``                      1 when late (see :func:`jupycron.status.late_since`)
``jupycron_notebook_running``                   1 while a run is in progress
``jupycron_notebook_finding``                   1 for the latest finding's level (label
                                                ``level``: ok, warning, alarm, no_data), 0 for
                                                the others; all 0 when the notebook never
                                                reported a finding
``jupycron_notebook_finding_timestamp_seconds``    start of the run that reported it
``jupycron_scheduler_heartbeat_timestamp_seconds``  the daemon's last heartbeat (absent if none)
``jupycron_scheduler_queue_length``             notebooks waiting for a run slot
``jupycron_scheduler_running``                  notebooks running according to the scheduler
``jupycron_scheduler_info``                     1, labels ``mode``, ``memory_limit``
``jupycron_pool_size``                          kernels the scheduler's pool keeps ready
``jupycron_pool_idle_kernels``                  ready kernels waiting for a run
``jupycron_pool_idle_memory_bytes``             their memory (PSS: a page shared with their
                                                template is split between the sharers)
``jupycron_kernel_templates_memory_bytes``      the fork-server templates' memory (PSS; the
                                                two add up to what kernels and templates hold)
``jupycron_collector_errors``                   1 when the history could not be read this scrape
==============================================  ===============================================

Timestamps are Unix seconds; an absent value (never run, no success) leaves the series out
rather than exporting 0, so ``time() - metric`` alerts do not fire on new notebooks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import Settings
from .discovery import ScanCache
from .exceptions import HistoryError, JupycronError
from .ledger import RunStore, open_store
from .models import FindingLevel
from .status import NotebookState, current_rows

log = logging.getLogger(__name__)

MB = 1024 * 1024

__all__ = ["FINDING_LEVELS", "STATES", "JupycronCollector", "make_registry", "read_heartbeat",
           "render_metrics"]

STATES = tuple(str(s) for s in NotebookState)
FINDING_LEVELS = tuple(str(level) for level in FindingLevel)


def read_heartbeat(settings: Settings, store: RunStore | None = None) -> dict[str, Any] | None:
    """The scheduler's last heartbeat (kept in the run ledger), or None when absent or
    unreadable. ``store``: an open ledger (else one is opened for the call)."""
    own = store is None
    store = store if store is not None else open_store(settings)
    try:
        return store.heartbeat()
    except HistoryError as exc:
        log.warning("cannot read the scheduler heartbeat: %s", exc)
        return None
    finally:
        if own:
            store.close()


def _timestamp(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v)
        except ValueError:
            return None
        return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    return None


def _count(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list | dict):
        return float(len(v))
    return None


class JupycronCollector(Collector):
    """Collects the metrics listed in the module docstring at each scrape.

    Example::

        registry = CollectorRegistry()
        registry.register(JupycronCollector(settings))
        text = generate_latest(registry)
    """

    def __init__(self, settings: Settings, cache: ScanCache | None = None) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else ScanCache()
        self.history = open_store(settings)

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        nb = ["notebook"]
        info = GaugeMetricFamily("jupycron_notebook_info", "Autorun notebooks found",
                                 labels=["notebook", "schedule", "enabled"])
        state = GaugeMetricFamily("jupycron_notebook_state",
                                  "1 for the notebook's current state, 0 for the others",
                                  labels=["notebook", "state"])
        last_run = GaugeMetricFamily("jupycron_notebook_last_run_timestamp_seconds",
                                     "Start of the newest finished run (Unix time)", labels=nb)
        last_ok = GaugeMetricFamily("jupycron_notebook_last_success_timestamp_seconds",
                                    "Start of the newest successful run (Unix time)", labels=nb)
        duration = GaugeMetricFamily("jupycron_notebook_last_duration_seconds",
                                     "Duration of the newest finished run", labels=nb)
        peak = GaugeMetricFamily("jupycron_notebook_last_peak_memory_bytes",
                                 "Peak memory of the newest finished run", labels=nb)
        next_run = GaugeMetricFamily("jupycron_notebook_next_run_timestamp_seconds",
                                     "Next slot, or the due slot not yet served (Unix time)",
                                     labels=nb)
        failures = GaugeMetricFamily("jupycron_notebook_consecutive_failures",
                                     "Failed runs (failed/timeout/oom/crashed) since the last success",
                                     labels=nb)
        late = GaugeMetricFamily("jupycron_notebook_late",
                                 "1 when the latest slot passed more than late_grace_s ago "
                                 "without a run", labels=nb)
        running = GaugeMetricFamily("jupycron_notebook_running", "1 while a run is in progress",
                                    labels=nb)
        finding = GaugeMetricFamily("jupycron_notebook_finding",
                                    "1 for the level of the notebook's latest finding, 0 for the "
                                    "others (all 0: it never reported one)",
                                    labels=["notebook", "level"])
        finding_at = GaugeMetricFamily("jupycron_notebook_finding_timestamp_seconds",
                                       "Start of the run that reported the latest finding "
                                       "(Unix time)", labels=nb)
        errors = GaugeMetricFamily("jupycron_collector_errors",
                                   "1 when the history could not be read during this scrape")
        try:
            rows = current_rows(self.settings, now, self.cache, history=self.history)
            errors.add_metric([], 0)
        except (JupycronError, OSError) as exc:
            log.error("metrics: cannot read the history: %s", exc)
            rows = []
            errors.add_metric([], 1)
        for r in rows:
            info.add_metric([r.path, r.schedule, "true" if r.notebook.schedulable else "false"], 1)
            for s in STATES:
                state.add_metric([r.path, s], 1 if r.state == s else 0)
            last = r.last_run
            if last is not None:
                last_run.add_metric([r.path], last.started_at.timestamp())
                if last.duration_s is not None:
                    duration.add_metric([r.path], last.duration_s)
                if last.peak_mem_mb is not None:
                    peak.add_metric([r.path], last.peak_mem_mb * MB)
            if r.last_success is not None:
                last_ok.add_metric([r.path], r.last_success.started_at.timestamp())
            if r.next_run is not None:
                next_run.add_metric([r.path], r.next_run.timestamp())
            failures.add_metric([r.path], r.consecutive_failures)
            late.add_metric([r.path], 1 if r.late else 0)
            running.add_metric([r.path], 1 if r.running is not None else 0)
            level = str(r.finding.level) if r.finding is not None else None
            for lv in FINDING_LEVELS:
                finding.add_metric([r.path, lv], 1 if level == lv else 0)
            if r.finding_run is not None:
                finding_at.add_metric([r.path], r.finding_run.started_at.timestamp())
        yield from (info, state, last_run, last_ok, duration, peak, next_run, failures, late,
                    running, finding, finding_at, errors)
        yield from self._scheduler()

    def _scheduler(self) -> Iterator[Metric]:
        beat = read_heartbeat(self.settings, self.history)
        heartbeat = GaugeMetricFamily("jupycron_scheduler_heartbeat_timestamp_seconds",
                                      "Last heartbeat of the scheduler (Unix time)")
        queue = GaugeMetricFamily("jupycron_scheduler_queue_length",
                                  "Notebooks waiting for a free run slot")
        running = GaugeMetricFamily("jupycron_scheduler_running",
                                    "Notebooks running according to the scheduler")
        info = GaugeMetricFamily("jupycron_scheduler_info", "The scheduler's mode and memory "
                                 "limit method", labels=["mode", "memory_limit"])
        if beat is not None:
            if (ts := _timestamp(beat.get("heartbeat"))) is not None:
                heartbeat.add_metric([], ts)
            if (n := _count(beat.get("queue"))) is not None:
                queue.add_metric([], n)
            if (n := _count(beat.get("running"))) is not None:
                running.add_metric([], n)
            info.add_metric([str(beat.get("mode") or ""), str(beat.get("memory_limit") or "")], 1)
        yield from (heartbeat, queue, running, info)
        yield from self._pool(beat.get("pool") if beat is not None else None)

    @staticmethod
    def _pool(pool: Any) -> Iterator[Metric]:
        """The pool's gauges, from the heartbeat (absent without a pool)."""
        if not isinstance(pool, dict) or not pool.get("size"):
            return
        for name, doc, key, scale in (
                ("jupycron_pool_size", "Kernels the pool keeps ready", "size", 1),
                ("jupycron_pool_idle_kernels", "Ready kernels waiting for a run", "idle", 1),
                ("jupycron_pool_idle_memory_bytes", "Memory of the idle kernels (PSS)", "idle_pss_mb", MB),
                ("jupycron_kernel_templates_memory_bytes", "Memory of the fork-server templates (PSS)",
                 "templates_pss_mb", MB)):
            if (n := _count(pool.get(key))) is not None:
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], n * scale)
                yield gauge


def make_registry(settings: Settings, cache: ScanCache | None = None) -> CollectorRegistry:
    """A fresh registry holding only the jupycron collector (no process/GC metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JupycronCollector(settings, cache))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``text/plain; version=0.0.4``)."""
    return generate_latest(registry)
