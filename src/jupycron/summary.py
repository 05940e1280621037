"""The static status page ``<output>/summary.html``.

:func:`render_summary` renders the rows of :func:`jupycron.status.build_rows` (the one
status model, shared with the dashboard, ``jupycron list``, ``/metrics`` and the alerts)
with ``templates/summary.html`` (Jinja, autoescaped, CSS inline, no JavaScript, no external
resources); :func:`write_summary` writes it atomically. Each state is drawn as an inline SVG
icon beside its word, and the latest finding (level word, icon and summary; "—" when the
notebook never reported one) has its own column (see :mod:`jupycron.status_icons`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import jinja2

from safefiles.atomic import atomic_write_bytes

from .config import Settings
from .formatting import fmt_duration, fmt_time, path_breaks
from .paths import summary_file
from .status import StatusRow, finding_word
from .status_icons import finding_icon, status_icon

__all__ = ["render_summary", "restamp_summary", "write_summary"]

_TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    # One per process: the template is compiled once (jinja2 renders are thread-safe).
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = fmt_time
    env.filters["duration"] = fmt_duration
    env.globals.update(status_icon=status_icon, finding_icon=finding_icon,
                       finding_word=finding_word, wrap_path=path_breaks)
    return env


def render_summary(rows: Sequence[StatusRow], now: datetime,
                   memory_limit: str | None = None) -> str:
    """The summary page as a string."""
    counts: dict[str, int] = {}
    findings: dict[str, int] = {}
    for r in rows:
        counts[str(r.state)] = counts.get(str(r.state), 0) + 1
        if r.finding is not None:
            word = finding_word(r.finding.level)
            findings[word] = findings.get(word, 0) + 1
    return _environment().get_template("summary.html").render(
        rows=rows, now=now, memory_limit=memory_limit, counts=counts, findings=findings)


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


def write_summary(settings: Settings, rows: Sequence[StatusRow], now: datetime,
                  memory_limit: str | None = None) -> Path:
    """Render and atomically write ``<output>/summary.html``; return its path.

    ``memory_limit`` is how memory caps are enforced (limits.detect_method()), shown when given.
    """
    target = summary_file(settings.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = render_summary(rows, now, memory_limit).encode("utf-8")
    atomic_write_bytes(target, payload, durable=False)
    return target
