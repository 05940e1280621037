"""How times, durations, memory and paths are shown on the summary page and the dashboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from markupsafe import Markup, escape


def fmt_time(d: datetime | None, seconds: bool = False) -> str:
    """UTC wall time, e.g. ``2026-11-28 21:40 UTC`` (``—`` for None)."""
    if d is None:
        return "—"
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def fmt_time_s(d: datetime | None) -> str:
    return fmt_time(d, seconds=True)


def fmt_duration(s: float | None) -> str:
    """``4.2 s``, ``3 min 07 s``, ``2 h 05 min`` (``—`` for None)."""
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def fmt_mem(mb: float | None) -> str:
    return "—" if mb is None else (f"{mb:.0f} MB" if mb >= 100 else f"{mb:.1f} MB")


def path_breaks(path: str) -> Markup:
    """``path`` escaped for HTML with a line-break opportunity (``<wbr>``) after each ``/``
    and ``_``, so a narrow column wraps a notebook path between folders or words rather than
    at any letter."""
    return Markup(re.sub(r"([/_])", r"\1<wbr>", str(escape(path))))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` for a terminal: control characters (an ESC sequence from an error message
    or a file name could retitle or repaint the operator's terminal) and bidirectional
    overrides/isolates (U+202A-U+202E, U+2066-U+2069: a finding's summary could show
    "alarm" reversed or reorder the columns after it) shown as ``�``; tabs and line breaks
    kept."""
    return _CONTROL.sub("\ufffd", text)
