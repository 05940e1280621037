"""Value types shared by discovery, the runner, the run ledger, the summary and the web app.

Runs are kept in the run ledger (:mod:`jupycron.ledger`). Versions before it kept them in
``<output>/.history.json`` (format 1, imported once by :mod:`jupycron.ledger.importer`)::

    {
      "version": 1,
      "notebooks": {
        "<relative/path_autorun.ipynb>": {
          "runs": [<Run.to_json()>, ...],          # newest first, capped (Settings.history_runs)
          "deleted_at": null | "<ISO UTC>",        # set when the notebook vanished from the folder
          "last_success_output": null | "<rel>",   # kept HTML of the latest successful run
          "first_seen": null | "<ISO UTC>"         # when discovery first saw it (due rule)
        }
      }
    }

All datetimes are timezone-aware UTC and serialised as ISO 8601 with ``+00:00``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"          # a cell raised
    TIMEOUT = "timeout"        # MaxRuntime exceeded, process group killed
    OOM = "oom"                # killed by the memory cap
    CRASHED = "crashed"        # kernel died otherwise (os._exit, segfault, signal)
    INTERRUPTED = "interrupted"  # scheduler shut down (SIGTERM) or the run was orphaned by kill -9

    @property
    def is_failure(self) -> bool:
        return self in FAILURE_STATUSES


ALERT_CHANNELS = ("alertmanager", "slack", "ntfy")
"""The alert channels jupycron can send to (``alert_channels``, ``AlertOnFinding``)."""

FAILURE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.OOM, RunStatus.CRASHED})


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"      # run-now (CLI or web)


@dataclass(frozen=True)
class JobSpec:
    """A parsed ``# jupycron: {...}`` line. Exactly one of ``every`` / ``cron`` is set."""

    every: str | None = None          # normalised "N unit", e.g. "30 minute", "1.5 hour"
    cron: str | None = None           # 5-field cron expression
    tz: str | None = None             # IANA zone for cron (default UTC)
    max_mem_mb: int | None = None     # MaxMem
    max_runtime_s: float | None = None  # MaxRuntime
    enabled: bool = True
    run_at_once: bool | None = None   # RunAtOnce: a new notebook runs at once (None: the setting)
    # AlertOnFinding: send finding level changes to every alert channel (True), to these
    # channels (a tuple of ALERT_CHANNELS names), to none (False); None: the alert_on_finding setting
    alert_on_finding: bool | tuple[str, ...] | None = None
    raw: str = ""                     # the JSON text as written, for display

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron}" + (f" ({self.tz})" if self.tz else " (UTC)")
        return f"every {self.every}"


@dataclass(frozen=True)
class Notebook:
    """A discovered autorun notebook. ``spec`` is None when disabled/invalid/missing."""

    path: str                         # POSIX path relative to the notebooks folder
    mtime: float
    size: int
    spec: JobSpec | None
    disabled_reason: str | None = None  # e.g. "no jupycron line", "invalid jupycron line: ..."

    @property
    def schedulable(self) -> bool:
        return self.spec is not None and self.spec.enabled and self.disabled_reason is None


def _dt(v: str | None) -> datetime | None:
    if v is None:
        return None
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


class FindingLevel(StrEnum):
    """What a notebook found (its second axis beside the run status), mildest first."""

    OK = "ok"
    WARNING = "warning"
    ALARM = "alarm"
    NO_DATA = "no_data"    # the notebook could not see: no rows, no connection


@dataclass(frozen=True)
class Finding:
    """What a run reported with ``ooniutils.report_finding`` (the last report in a run wins)."""

    level: FindingLevel
    summary: str                                      # one line, e.g. "IR: measurements down 40 %"
    detail: list[dict[str, Any]] | None = None        # an optional short table (rows of columns)

    def to_json(self) -> dict[str, Any]:
        return {"level": str(self.level), "summary": self.summary, "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        return cls(FindingLevel(d["level"]), str(d.get("summary", "")), d.get("detail"))


@dataclass(frozen=True)
class KernelInfo:
    """Who ran a notebook's cells, recorded while the run is RUNNING so that a scheduler
    that finds the row orphaned (its runner died) can kill exactly what was left behind."""

    pid: int
    pgid: int
    create_time: float                # the pid's start time: a reused pid is never killed
    sockets: str | None = None        # the kernel's private socket folder (<tmp>/jupycron-kernel-*)
    marker: str | None = None         # a pooled kernel's own JUPYCRON_RUN_ID
    cgroup: str | None = None         # the memory cgroup folder (cgroup memory caps only)
    forked: bool = False              # started by the fork server

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KernelInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    #: Where rows written before ``Run.kernel`` existed kept these fields in ``Run.extra``.
    LEGACY_EXTRA_KEYS: ClassVar[dict[str, str]] = {
        "kernel_pid": "pid", "kernel_pgid": "pgid", "kernel_create_time": "create_time",
        "sockets": "sockets", "kernel_marker": "marker", "cgroup": "cgroup",
        "kernel_forked": "forked"}

    @classmethod
    def from_legacy_extra(cls, extra: dict[str, Any]) -> KernelInfo | None:
        """The kernel of a row written before ``Run.kernel`` existed (its ids were ``extra``
        keys, see :data:`LEGACY_EXTRA_KEYS`); None when it names no kernel pid. A missing
        start time stays 0: such a kernel is never killed by process group."""
        pid = extra.get("kernel_pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            return None
        pgid = extra.get("kernel_pgid")
        ctime = extra.get("kernel_create_time")

        def text(key: str) -> str | None:
            v = extra.get(key)
            return v if isinstance(v, str) and v else None

        return cls(pid=pid, pgid=pgid if isinstance(pgid, int) and not isinstance(pgid, bool) else pid,
                   create_time=float(ctime) if isinstance(ctime, int | float) else 0.0,
                   sockets=text("sockets"), marker=text("kernel_marker"), cgroup=text("cgroup"),
                   forked=extra.get("kernel_forked") is True)


@dataclass
class Run:
    """One execution of one notebook (a history row)."""

    notebook: str
    run_id: str                        # unique, sortable: "<UTC yyyymmddTHHMMSS>-<6 hex>"
    started_at: datetime
    status: RunStatus = RunStatus.RUNNING
    trigger: Trigger = Trigger.SCHEDULE
    slot: datetime | None = None       # the schedule slot this run serves (None for manual)
    finished_at: datetime | None = None
    duration_s: float | None = None
    error_name: str | None = None      # first error: exception class, or "Timeout"/"MemoryError"...
    error_value: str | None = None     # its message (truncated to 2,000 chars)
    error_cell: int | None = None      # index of the first failing code cell
    peak_mem_mb: float | None = None
    output: str | None = None          # HTML output path relative to the output folder
    pid: int | None = None             # runner process while RUNNING (to detect orphans)
    host: str | None = None
    memory_limit: str | None = None    # how the cap was enforced: cgroup-v1/cgroup-v2/systemd-run/rlimit/none
    kernel: KernelInfo | None = None   # set while RUNNING (orphan reaping kills by it)
    finding: Finding | None = None     # what the notebook reported (None: it never reported)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("started_at", "slot", "finished_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        d["status"] = str(self.status)
        d["trigger"] = str(self.trigger)
        d["kernel"] = self.kernel.to_json() if self.kernel else None
        d["finding"] = self.finding.to_json() if self.finding else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        d = dict(d)
        d["started_at"] = _dt(d["started_at"])
        d["slot"] = _dt(d.get("slot"))
        d["finished_at"] = _dt(d.get("finished_at"))
        d["status"] = RunStatus(d.get("status", "running"))
        d["trigger"] = Trigger(d.get("trigger", "schedule"))
        d["kernel"] = KernelInfo.from_json(d["kernel"]) if d.get("kernel") else None
        if d["kernel"] is None and isinstance(d.get("extra"), dict) and "kernel_pid" in d["extra"]:
            legacy = dict(d["extra"])  # a row written before Run.kernel existed
            d["kernel"] = KernelInfo.from_legacy_extra(legacy)
            for key in KernelInfo.LEGACY_EXTRA_KEYS:
                legacy.pop(key, None)
            d["extra"] = legacy
        d["finding"] = Finding.from_json(d["finding"]) if d.get("finding") else None
        known = set(cls.__dataclass_fields__)
        extra = {k: v for k, v in d.items() if k not in known}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("extra", {}).update(extra)
        return cls(**d)
