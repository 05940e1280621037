"""What a notebook found: read from the executed notebook's outputs (stdlib only).

A notebook reports its finding with ``ooniutils.report_finding(level, summary, detail)``,
which displays one output carrying the MIME type :data:`FINDING_MIME` (a JSON object
``{"level", "summary", "detail"}``) beside a readable ``text/html`` banner. jupycron never
imports ooniutils: this module holds the MIME type and the pure extraction,
:func:`last_finding`, which the runner calls on the executed notebook when a run finishes.

Rules, so that a notebook can never break its own run through a finding:

* the LAST valid finding output in the notebook wins (cells in order, outputs in order);
* a malformed payload (not an object, unknown level, summary not a string, detail not a
  list of objects) is skipped with a logged reason, and an earlier valid one still counts;
* the summary is kept to one line of at most :data:`MAX_SUMMARY` characters and the
  detail to :data:`MAX_DETAIL_ROWS` rows of :data:`MAX_DETAIL_COLUMNS` columns (the first
  ones, in the order they appear), column names to :data:`MAX_COLUMN_NAME` characters and
  cells to :data:`MAX_CELL` (the sender enforces the same limits; this side re-applies them
  because the payload comes from user code). A finding therefore stays a few hundred KB at
  most, whatever frame a notebook passes: it is kept with every run.

Example::

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> out = nbformat.v4.new_output("display_data", data={
    ...     FINDING_MIME: {"level": "alarm", "summary": "IR: down 40 %", "detail": None}})
    >>> nb.cells.append(nbformat.v4.new_code_cell("...", outputs=[out]))
    >>> last_finding(nb)
    Finding(level=<FindingLevel.ALARM: 'alarm'>, summary='IR: down 40 %', detail=None)
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from .models import Finding, FindingLevel

log = logging.getLogger(__name__)

__all__ = [
    "FINDING_MIME",
    "LEVELS",
    "MAX_COLUMN_NAME",
    "MAX_DETAIL_COLUMNS",
    "MAX_DETAIL_ROWS",
    "MAX_SUMMARY",
    "capped_detail",
    "finding_from_payload",
    "finding_html",
    "last_finding",
    "one_line",
]

#: The MIME type of a finding output (a JSON object).
FINDING_MIME = "application/vnd.jupycron.finding+json"
#: The valid levels, mildest first.
LEVELS: tuple[str, ...] = tuple(str(level) for level in FindingLevel)
#: Longest summary kept, in characters (a longer one ends with "…").
MAX_SUMMARY = 200
#: Most detail rows kept; each cell value is kept to :data:`MAX_CELL` characters.
MAX_DETAIL_ROWS = 50
MAX_CELL = 200
#: Most detail columns kept (the first ones), and the longest column name kept.
MAX_DETAIL_COLUMNS = 20
MAX_COLUMN_NAME = 60


def one_line(text: str, limit: int = MAX_SUMMARY) -> str:
    """``text`` on one line (whitespace runs collapsed) of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return one_line(str(value), MAX_CELL)


def capped_detail(rows: list[dict[Any, Any]]) -> tuple[list[dict[str, Any]], int]:
    """``rows`` within the limits: the first :data:`MAX_DETAIL_ROWS` rows, the first
    :data:`MAX_DETAIL_COLUMNS` columns (in the order they first appear), each name one line
    of at most :data:`MAX_COLUMN_NAME` characters (made unique again when cutting made two
    alike) and each cell at most :data:`MAX_CELL` characters. Also returns how many columns
    there were."""
    rows = rows[:MAX_DETAIL_ROWS]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(str(k) for k in row))
    names: dict[str, str] = {}
    for key in list(columns)[:MAX_DETAIL_COLUMNS]:
        short, n = one_line(key, MAX_COLUMN_NAME), 1
        while short in names.values():
            n += 1
            suffix = f" ({n})"
            short = one_line(key, MAX_COLUMN_NAME - len(suffix)) + suffix
        names[key] = short
    kept = [{names[str(k)]: _cell(v) for k, v in r.items() if str(k) in names} for r in rows]
    return kept, len(columns)


def finding_from_payload(payload: Any) -> Finding:
    """A :class:`Finding` from a finding output's payload; ``ValueError`` naming the problem."""
    if isinstance(payload, str):  # a JSON MIME bundle may arrive as text
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"payload is a {type(payload).__name__}, not an object")
    level = payload.get("level")
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    summary = payload.get("summary")
    if not isinstance(summary, str):
        raise ValueError(f"summary is a {type(summary).__name__}, not a string")
    detail = payload.get("detail")
    rows: list[dict[str, Any]] | None = None
    if detail is not None:
        if not isinstance(detail, list) or not all(isinstance(r, dict) for r in detail):
            raise ValueError("detail is not a list of objects (rows)")
        rows = capped_detail(detail)[0]
    return Finding(FindingLevel(level), one_line(summary), rows)


def last_finding(nb: Any) -> Finding | None:
    """The last valid finding reported in the executed notebook ``nb`` (an nbformat
    notebook or the equivalent dict), or None when it reported none."""
    found: Finding | None = None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for index, cell in enumerate(cells if isinstance(cells, list) else ()):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs")
        for out in outputs if isinstance(outputs, list) else ():
            data = out.get("data") if isinstance(out, dict) else None
            if not isinstance(data, dict) or FINDING_MIME not in data:
                continue
            try:
                found = finding_from_payload(data[FINDING_MIME])
            except ValueError as exc:
                log.warning("cell %d: finding output ignored: %s", index, exc)
    return found


# Words beside colours (a colour-blind reader, a black-and-white print): level -> (label,
# border colour, background). Inline styles: the banner shows the same in Jupyter (no page
# CSS there) and in the output page.
_LOOK: dict[str, tuple[str, str, str]] = {
    "ok": ("OK", "#2e7d32", "#e8f5e9"),
    "warning": ("WARNING", "#b26a00", "#fff4e0"),
    "alarm": ("ALARM", "#c62828", "#fdecea"),
    "no_data": ("NO DATA", "#546e7a", "#eceff1"),
}


def _shown(value: Any) -> str:
    """A detail cell as text: empty for None, 4 significant digits for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2g}"
    return str(value)


def finding_html(finding: Finding, total_rows: int | None = None,
                 total_columns: int | None = None) -> str:
    """A self-contained HTML banner for ``finding``: the level in words, the summary and
    the detail table (which scrolls sideways inside its box when wide). ``total_rows`` and
    ``total_columns``: the detail's size before it was cut, shown when some was left out."""
    label, border, background = _LOOK[str(finding.level)]
    parts = [
        f'<div class="jupycron-finding jupycron-finding-{html.escape(str(finding.level))}" '
        f'role="status" style="border:1px solid {border};border-left:6px solid {border};'
        f'background:{background};padding:8px 12px;margin:8px 0;border-radius:4px;'
        f'font-family:system-ui,sans-serif;color:#1a1a1a;max-width:100%;box-sizing:border-box">',
        f'<div style="font-size:15px"><strong style="color:{border};margin-right:8px">'
        f'{label}</strong><span class="jupycron-finding-summary">'
        f'{html.escape(finding.summary)}</span></div>',
    ]
    rows = finding.detail or []
    if rows:
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        head = "".join(f'<th style="text-align:left;padding:2px 8px;border-bottom:1px solid '
                       f'#999">{html.escape(c)}</th>' for c in columns)
        body = "".join(
            "<tr>" + "".join(f'<td style="padding:2px 8px;white-space:nowrap">'
                             f'{html.escape(_shown(r.get(c)))}</td>' for c in columns) + "</tr>"
            for r in rows)
        parts.append(f'<div style="overflow-x:auto;margin-top:6px"><table class="jupycron-'
                     f'finding-detail" style="border-collapse:collapse;font-size:13px">'
                     f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        cut = []
        if total_rows is not None and total_rows > len(rows):
            cut.append(f"the first {len(rows)} of {total_rows} rows")
        if total_columns is not None and total_columns > len(columns):
            cut.append(f"the first {len(columns)} of {total_columns} columns")
        if cut:
            parts.append(f'<div style="font-size:12px;margin-top:4px">{"; ".join(cut)}</div>')
    parts.append("</div>")
    return "".join(parts)
