"""The static status page ``<output>/summary.html`` and the rows the web dashboard reuses.

:func:`build_rows` is pure apart from checking which output files exist; it gives one
:class:`SummaryRow` per *present* autorun notebook (history of deleted notebooks is not
shown). :func:`write_summary` renders ``templates/summary.html`` (Jinja, autoescaped, CSS
inline, no JavaScript, no external resources) and writes it atomically.

States and icon shapes (first match wins; HTML draws them as inline SVG, see
:mod:`jupycron.status_icons`, next to the state word):

======================  =====  ===========================================================
state                   shape  when
======================  =====  ===========================================================
running                 play   a RUNNING row exists (also for a disabled notebook run by hand)
disabled                off    no/invalid jupycron line, ``"enabled": false``, unreadable
success                 ok     the newest finished run succeeded
failed/timeout/oom/     fail   the newest finished run failed; ``kind`` is error, timeout,
crashed                        oom or crashed
interrupted             stop   the newest finished run was interrupted (shutdown, orphaned,
                               or rebuilt from outputs with an unknown outcome)
never                   wait   no run yet (a new notebook waits for its first slot)
======================  =====  ===========================================================
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import jinja2

from safefiles.atomic import atomic_write_bytes

from .config import Settings
from .exceptions import SpecError
from .formatting import fmt_duration, fmt_time, path_breaks
from .ledger import NotebookHistory
from .models import JobSpec, Notebook, Run, RunStatus
from .paths import output_html, summary_file
from .schedule import due_slot, next_slot
from .status_icons import STATE_SHAPES, status_icon

__all__ = ["ICONS", "SummaryRow", "build_rows", "jupyter_url", "render_summary", "restamp_summary",
           "write_summary"]

ICONS = STATE_SHAPES
"""State -> icon shape name (:data:`jupycron.status_icons.SHAPES`)."""
_FAILURE_KIND = {RunStatus.FAILED: "error", RunStatus.TIMEOUT: "timeout",
                 RunStatus.OOM: "oom", RunStatus.CRASHED: "crashed"}
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class SummaryRow:
    """Everything the summary page and the dashboard show for one notebook."""

    path: str                       # relative to the notebooks folder
    state: str                      # see the module docstring
    icon: str                       # shape name, see jupycron.status_icons
    label: str                      # short text, e.g. "failed (timeout)", "never run"
    reason: str | None              # disabled reason, "<ErrorName>: <message>", interruption
    kind: str | None                # failure kind: error/timeout/oom/crashed, else None
    schedule: str                   # JobSpec.describe(), "" when there is no spec
    notebook: Notebook
    spec: JobSpec | None
    history: NotebookHistory | None
    runs: list[Run] = field(default_factory=list)   # raw runs, newest first
    running: Run | None = None      # the RUNNING run, if any
    last_run: Run | None = None     # newest finished run
    last_run_at: datetime | None = None   # its start (UTC)
    duration_s: float | None = None
    next_run: datetime | None = None      # UTC; a past slot when due_now
    due_now: bool = False
    consecutive_failures: int = 0
    output_href: str | None = None        # latest HTML, relative to summary.html
    last_success_href: str | None = None  # kept copy of the latest success
    jupyter_url: str | None = None        # <jupyter_base_url>/notebooks/<path>

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def _error_text(run: Run) -> str | None:
    if run.error_name and run.error_value:
        return f"{run.error_name}: {run.error_value}"
    return run.error_name or run.error_value


def _href(rel_to_output: PurePosixPath | str) -> str:
    return quote(str(rel_to_output))


def jupyter_url(base_url: str, rel: str) -> str | None:
    """``<base>/notebooks/<url-quoted path>``; None when no Jupyter URL is configured."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/notebooks/{quote(rel)}"


def _build_row(settings: Settings, nb: Notebook, entry: NotebookHistory | None,
               now: datetime) -> SummaryRow:
    runs = list(entry.runs) if entry else []
    running = next((r for r in runs if r.status is RunStatus.RUNNING), None)
    last = next((r for r in runs if r.status is not RunStatus.RUNNING), None)
    kind = None
    reason = None
    if running is not None:
        state, label = "running", f"running since {running.started_at:%Y-%m-%d %H:%M} UTC"
    elif not nb.schedulable:
        state, label, reason = "disabled", "disabled", nb.disabled_reason or "disabled"
    elif last is None:
        state, label = "never", "never run"
    elif last.status is RunStatus.SUCCESS:
        state, label = "success", "success"
    elif last.status.is_failure:
        state, kind = str(last.status), _FAILURE_KIND[last.status]
        label, reason = f"failed ({kind})", _error_text(last)
    else:
        state, label = "interrupted", "interrupted"
        reason = _error_text(last) or "the run was interrupted"
    if state == "running" and not nb.schedulable:
        reason = nb.disabled_reason

    next_run, due_now = None, False
    if nb.schedulable and nb.spec is not None:
        # Not yet reconciled by the scheduler: it will record first_seen=now at its next tick.
        first_seen = entry.first_seen if entry and entry.first_seen else now
        last_slot = entry.last_scheduled_slot if entry else None
        try:
            slot = due_slot(nb.spec, now, last_slot, first_seen, settings.run_new_at_once) if running is None else None
            if slot is not None:
                next_run, due_now = slot, True
            else:
                next_run = next_slot(nb.spec, now)
        except SpecError as exc:  # a schedule that cannot be computed: only this row
            next_run, due_now = None, False
            if state != "running":
                state, label, kind = "disabled", "disabled", None
            reason = f"invalid schedule: {exc}"

    out_rel = output_html(settings.output_dir, nb.path).relative_to(settings.output_dir)
    output_href = _href(out_rel.as_posix()) if (settings.output_dir / out_rel).is_file() else None
    kept = entry.last_success_output if entry else None
    last_success_href = _href(kept) if kept and (settings.output_dir / kept).is_file() else None
    return SummaryRow(
        path=nb.path, state=state, icon=ICONS[state], label=label, reason=reason, kind=kind,
        schedule=nb.spec.describe() if nb.spec else "", notebook=nb, spec=nb.spec,
        history=entry, runs=runs, running=running, last_run=last,
        last_run_at=last.started_at if last else None,
        duration_s=last.duration_s if last else None,
        next_run=next_run, due_now=due_now,
        consecutive_failures=entry.consecutive_failures if entry else 0,
        output_href=output_href, last_success_href=last_success_href,
        jupyter_url=jupyter_url(settings.jupyter_base_url, nb.path),
    )


def build_rows(settings: Settings, notebooks: Sequence[Notebook],
               history: Mapping[str, NotebookHistory], now: datetime) -> list[SummaryRow]:
    """One row per notebook in ``notebooks`` (as returned by discovery.scan), same order.

    ``history`` is :meth:`jupycron.ledger.RunStore.load`'s result; ``now`` is aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    return [_build_row(settings, nb, history.get(nb.path), now) for nb in notebooks]


@functools.cache
def _environment() -> jinja2.Environment:
    # One per process: the template is compiled once (jinja2 renders are thread-safe).
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = fmt_time
    env.filters["duration"] = fmt_duration
    env.globals.update(status_icon=status_icon, wrap_path=path_breaks)
    return env


def render_summary(rows: Sequence[SummaryRow], now: datetime,
                   memory_limit: str | None = None) -> str:
    """The summary page as a string."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return _environment().get_template("summary.html").render(
        rows=rows, now=now, memory_limit=memory_limit, counts=counts)


_GENERATED_RE = re.compile(r'<time class="generated" datetime="[^"]*">[^<]*</time>')
_GENERATED = '<time class="generated" datetime="{{ now.isoformat() }}">{{ now | utc }}</time>'


@functools.cache
def _generated_template() -> jinja2.Template:
    return _environment().from_string(_GENERATED)


def restamp_summary(page: str, now: datetime) -> str | None:
    """``page`` (a :func:`render_summary` result) with its "Generated at" time set to ``now``;
    None when the page has no such line.

    The daemon rewrites an unchanged page every minute for that line alone: this costs a
    string copy instead of building and rendering every row again.
    """
    m = _GENERATED_RE.search(page)
    if m is None:
        return None
    stamp = _generated_template().render(now=now)
    return page[:m.start()] + stamp + page[m.end():]


def write_summary(settings: Settings, rows: Sequence[SummaryRow], now: datetime,
                  memory_limit: str | None = None) -> Path:
    """Render and atomically write ``<output>/summary.html``; return its path.

    ``memory_limit`` is how memory caps are enforced (limits.detect_method()), shown when given.
    """
    target = summary_file(settings.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = render_summary(rows, now, memory_limit).encode("utf-8")
    atomic_write_bytes(target, payload, durable=False)
    return target
