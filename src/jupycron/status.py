"""One status model: what every page, command and alert says about each notebook.

:func:`build_rows` is the one function that turns the notebooks (a discovery scan), their
runs (the run ledger's read model, :class:`~jupycron.ledger.NotebookHistory` per notebook)
and the time into one :class:`StatusRow` per present notebook. summary.html, the dashboard,
``jupycron list``, ``/metrics`` and the run alerts all read these rows, so a new state is
added here (:class:`NotebookState`, with its icon shape), and nowhere else. :func:`current_rows` is its I/O edge: scan, read the ledger, build.

States (first match wins):

======================  ===========================================================
state                   when
======================  ===========================================================
running                 a RUNNING row exists (also for a disabled notebook run by hand)
disabled                no/invalid jupycron line, ``"enabled": false``, unreadable,
                        or a schedule that cannot be computed
success                 the newest finished run succeeded
failed/timeout/oom/     the newest finished run failed (``failure_kind`` is error,
crashed                 timeout, oom or crashed)
interrupted             the newest finished run was interrupted (shutdown, orphaned,
                        or rebuilt from outputs with an unknown outcome)
never                   no run yet (a new notebook waits for its first slot)
======================  ===========================================================

Beside the state, a row says whether the notebook is *late* (:func:`late_since`) and what it
last *found* (:attr:`StatusRow.finding`: the finding of the newest finished run that
reported one with ``ooniutils.report_finding``; None - shown "—" - when it never did).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .config import Settings
from .discovery import ScanCache, scan
from .exceptions import SpecError
from .ledger import NotebookHistory, RunStore, open_store
from .models import Finding, FindingLevel, JobSpec, Notebook, Run, RunStatus
from .paths import output_html
from .schedule import due_slot, next_slot

__all__ = ["FINDING_ORDER", "FINDING_SHAPES", "NotebookState", "StatusRow", "build_rows", "current_rows",
           "finding_word", "jupyter_url", "late_since"]


class NotebookState(StrEnum):
    """A notebook's state as every page, command, metric and alert names it.

    Declared most urgent first: the dashboard sorts and lists its filters in this order.
    """

    RUNNING = "running"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OOM = "oom"
    CRASHED = "crashed"
    INTERRUPTED = "interrupted"
    NEVER = "never"
    SUCCESS = "success"
    DISABLED = "disabled"

    @property
    def is_failure(self) -> bool:
        return self in _FAILURES

    @property
    def shape(self) -> str:
        """Its icon's shape (a :data:`jupycron.status_icons.SHAPES` name)."""
        return _SHAPES[self]


_SHAPES = {"running": "play", "disabled": "off", "success": "ok", "failed": "fail",
           "timeout": "fail", "oom": "fail", "crashed": "fail", "interrupted": "stop",
           "never": "wait"}
FINDING_SHAPES = {FindingLevel.OK: "ok", FindingLevel.WARNING: "warn",
                  FindingLevel.ALARM: "alarm", FindingLevel.NO_DATA: "nodata"}
"""Finding level -> icon shape (:data:`jupycron.status_icons.SHAPES`)."""


_FAILURES = frozenset({NotebookState.FAILED, NotebookState.TIMEOUT, NotebookState.OOM,
                       NotebookState.CRASHED})
_FAILURE_KIND = {RunStatus.FAILED: "error", RunStatus.TIMEOUT: "timeout",
                 RunStatus.OOM: "oom", RunStatus.CRASHED: "crashed"}

FINDING_ORDER = (FindingLevel.ALARM, FindingLevel.NO_DATA, FindingLevel.WARNING, FindingLevel.OK)
"""Finding levels, most urgent first (the dashboard's sort and filter order)."""


def finding_word(level: FindingLevel | str) -> str:
    """The level as a word for people: ``no_data`` -> ``no data``."""
    return str(level).replace("_", " ")


@dataclass(frozen=True)
class StatusRow:
    """Everything shown for one notebook; built only by :func:`build_rows`."""

    path: str                       # relative to the notebooks folder
    state: NotebookState
    label: str                      # short text, e.g. "failed (timeout)", "never run"
    reason: str | None              # disabled reason, "<ErrorName>: <message>", interruption
    failure_kind: str | None        # error/timeout/oom/crashed, else None
    schedule: str                   # JobSpec.describe(), "" when there is no spec
    notebook: Notebook
    history: NotebookHistory | None
    runs: tuple[Run, ...] = ()      # newest first
    running: Run | None = None      # the RUNNING run, if any
    last_run: Run | None = None     # newest finished run
    last_success: Run | None = None
    next_run: datetime | None = None      # UTC; a past slot when due_now
    due_now: bool = False
    late_since: datetime | None = None    # the first missed slot when late (see late_since)
    consecutive_failures: int = 0
    finding: Finding | None = None        # the newest reported finding (None: never reported)
    finding_run: Run | None = None        # the run that reported it
    output_href: str | None = None        # latest HTML, relative to the output folder (quoted)
    last_success_href: str | None = None  # kept copy of the latest success
    jupyter_url: str | None = None        # <jupyter_base_url>/notebooks/<path>

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def spec(self) -> JobSpec | None:
        return self.notebook.spec

    @property
    def last_run_at(self) -> datetime | None:
        return self.last_run.started_at if self.last_run else None

    @property
    def duration_s(self) -> float | None:
        return self.last_run.duration_s if self.last_run else None

    @property
    def late(self) -> bool:
        return self.late_since is not None

    @property
    def finding_level(self) -> FindingLevel | None:
        return self.finding.level if self.finding else None


def _error_text(run: Run) -> str | None:
    if run.error_name and run.error_value:
        return f"{run.error_name}: {run.error_value}"
    return run.error_name or run.error_value


def jupyter_url(base_url: str, rel: str) -> str | None:
    """``<base>/notebooks/<url-quoted path>``; None when no Jupyter URL is configured."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/notebooks/{quote(rel)}"


def late_since(nb: Notebook, entry: NotebookHistory | None, state: NotebookState,
               next_run: datetime | None, due_now: bool, now: datetime,
               grace_s: float) -> datetime | None:
    """The first missed slot when the notebook is late, else None.

    Late: the latest slot is due (not yet served by a scheduled run, see
    :func:`jupycron.schedule.due_slot`) and the *first* slot missed since the last served
    one passed more than ``grace_s`` ago - so an hourly notebook that missed four slots is
    late at every minute of the hour, not only once the newest slot is old enough. A running
    or disabled notebook is never late; a new notebook is not late before its first slot.
    """
    if not due_now or next_run is None or state in (NotebookState.RUNNING, NotebookState.DISABLED):
        return None
    first_missed = next_run
    served = entry.last_scheduled_slot if entry else None
    if served is not None and nb.spec is not None:
        try:
            first_missed = min(first_missed, next_slot(nb.spec, served))
        except SpecError:  # the row is shown disabled with the reason; not "late"
            return None
    elif served is None and entry and entry.first_seen:
        # A new notebook run at once (RunAtOnce) is due from when it was seen, not from
        # its latest slot, which may be older.
        first_missed = max(first_missed, entry.first_seen)
    return first_missed if (now - first_missed).total_seconds() > grace_s else None


def _state(nb: Notebook, running: Run | None,
           last: Run | None) -> tuple[NotebookState, str, str | None, str | None]:
    """(state, label, reason, failure kind) before the schedule is looked at."""
    if running is not None:
        label = f"running since {running.started_at:%Y-%m-%d %H:%M} UTC"
        return NotebookState.RUNNING, label, None if nb.schedulable else nb.disabled_reason, None
    if not nb.schedulable:
        return NotebookState.DISABLED, "disabled", nb.disabled_reason or "disabled", None
    if last is None:
        return NotebookState.NEVER, "never run", None, None
    if last.status is RunStatus.SUCCESS:
        return NotebookState.SUCCESS, "success", None, None
    if last.status.is_failure:
        kind = _FAILURE_KIND[last.status]
        return NotebookState(str(last.status)), f"failed ({kind})", _error_text(last), kind
    return (NotebookState.INTERRUPTED, "interrupted",
            _error_text(last) or "the run was interrupted", None)


def _build_row(settings: Settings, nb: Notebook, entry: NotebookHistory | None, now: datetime,
               output_exists: Callable[[str], bool]) -> StatusRow:
    runs = tuple(entry.runs) if entry else ()
    running = next((r for r in runs if r.status is RunStatus.RUNNING), None)
    finished = [r for r in runs if r.status is not RunStatus.RUNNING]
    last = finished[0] if finished else None
    state, label, reason, kind = _state(nb, running, last)

    next_run, due_now = None, False
    if nb.schedulable and nb.spec is not None:
        # Not yet reconciled by the scheduler: it will record first_seen=now at its next tick.
        first_seen = entry.first_seen if entry and entry.first_seen else now
        last_slot = entry.last_scheduled_slot if entry else None
        try:
            slot = (due_slot(nb.spec, now, last_slot, first_seen, settings.run_new_at_once)
                    if running is None else None)
            if slot is not None:
                next_run, due_now = slot, True
            else:
                next_run = next_slot(nb.spec, now)
        except SpecError as exc:  # a schedule that cannot be computed: only this row
            next_run, due_now = None, False
            if state is not NotebookState.RUNNING:
                state, label, kind = NotebookState.DISABLED, "disabled", None
            reason = f"invalid schedule: {exc}"

    latest_rel = output_html(Path("."), nb.path).as_posix()
    kept = entry.last_success_output if entry else None
    finding_run = next((r for r in finished if r.finding is not None), None)
    return StatusRow(
        path=nb.path, state=state, label=label, reason=reason, failure_kind=kind,
        schedule=nb.spec.describe() if nb.spec else "", notebook=nb, history=entry,
        runs=runs, running=running, last_run=last,
        last_success=next((r for r in finished if r.status is RunStatus.SUCCESS), None),
        next_run=next_run, due_now=due_now,
        late_since=late_since(nb, entry, state, next_run, due_now, now, settings.late_grace_s),
        consecutive_failures=entry.consecutive_failures if entry else 0,
        finding=finding_run.finding if finding_run else None, finding_run=finding_run,
        output_href=quote(latest_rel) if output_exists(latest_rel) else None,
        last_success_href=quote(kept) if kept and output_exists(kept) else None,
        jupyter_url=jupyter_url(settings.jupyter_base_url, nb.path),
    )


def build_rows(settings: Settings, notebooks: Sequence[Notebook],
               runs: Mapping[str, NotebookHistory], now: datetime, *,
               output_exists: Callable[[str], bool] | None = None) -> list[StatusRow]:
    """One row per notebook in ``notebooks`` (as returned by discovery.scan), same order.

    ``runs``: each notebook's runs (the run ledger's read model, newest first); ``now``
    must be aware. Of ``settings`` only ``late_grace_s``, ``run_new_at_once`` and
    ``jupyter_base_url`` are read, and ``output_dir`` by the default ``output_exists``
    (whether an output file, relative to the output folder, exists: the only I/O; pass your
    own to keep the call pure).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    if output_exists is None:
        out = Path(settings.output_dir)

        def output_exists(rel: str) -> bool:
            return (out / rel).is_file()

    return [_build_row(settings, nb, runs.get(nb.path), now, output_exists) for nb in notebooks]


def current_rows(settings: Settings, now: datetime, cache: ScanCache | None = None, *,
                 history: RunStore | None = None,
                 notebooks: Sequence[Notebook] | None = None) -> list[StatusRow]:
    """Scan the notebooks folder, read the runs and :func:`build_rows`.

    ``notebooks`` (a scan the caller just made) skips the scan; ``history`` is read instead
    of opening the ledger - pass a long-lived one (the scheduler's, the web app's) whose view
    is only read again where the ledger changed.
    """
    if notebooks is None:
        notebooks = scan(settings.notebooks, settings.output_dir, cache)
    if history is not None:
        return build_rows(settings, notebooks, history.load(), now)
    store = open_store(settings)
    try:
        return build_rows(settings, notebooks, store.load(), now)
    finally:
        store.close()
