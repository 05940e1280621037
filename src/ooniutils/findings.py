"""``report_finding``: tell jupycron what a notebook found, beside whether it ran.

    from ooniutils import report_finding
    report_finding("alarm", "IR: measurements down 40 % since 14:00", detail=alarms_df)

Levels: ``ok`` (looked, nothing wrong), ``warning``, ``alarm``, ``no_data`` (could not
see: the query returned nothing). The call displays one output with the MIME type
``application/vnd.jupycron.finding+json`` (read by jupycron when the run ends, the last
report in a run wins, see :mod:`jupycron.findings`) and a readable banner (``text/html``,
``text/plain``), so the same notebook opened in Jupyter shows what it found.

Limits (the same ones jupycron applies): the summary is made one line (whitespace runs
collapsed) of at most ``MAX_SUMMARY`` (200) characters, ending in "…" when cut; the detail
(a DataFrame or a list of dicts, one per row) keeps its first ``MAX_DETAIL_ROWS`` (50)
rows (sort it most severe first) and its first ``MAX_DETAIL_COLUMNS`` (20) columns (put
the telling ones first), column names at most 60 characters, each value at most 200. Timestamps become
ISO 8601 text (``2026-12-06 14:00:00``) and NaN becomes empty.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from jupycron.findings import (
    FINDING_MIME,
    LEVELS,
    MAX_DETAIL_COLUMNS,
    MAX_DETAIL_ROWS,
    MAX_SUMMARY,
    capped_detail,
    finding_from_payload,
    finding_html,
    one_line,
)

from .exceptions import AnalysisError

log = logging.getLogger(__name__)

__all__ = ["FINDING_MIME", "LEVELS", "MAX_DETAIL_COLUMNS", "MAX_DETAIL_ROWS", "MAX_SUMMARY",
           "Verdict",
           "finding_payload", "report_finding"]


class Verdict(NamedTuple):
    """A finding computed by an analysis, to pass on: ``report_finding(*verdict)``."""

    level: str
    summary: str
    detail: Any = None


def _rows(detail: Any) -> tuple[list[dict[str, Any]], int, int | None]:
    """The first rows and columns of ``detail`` (a DataFrame or a sequence of mappings) as
    JSON-safe rows, with its row count and (for a frame) its column count: a frame is cut
    before it is converted, so a huge one costs no more than a small one."""
    import pandas as pd

    if isinstance(detail, pd.Series):
        detail = detail.to_frame()
    if isinstance(detail, pd.DataFrame):
        named = any(name is not None for name in detail.index.names)  # a named index is data
        frame = detail.head(MAX_DETAIL_ROWS).reset_index(drop=not named)
        columns = frame.shape[1]
        frame = frame.iloc[:, :MAX_DETAIL_COLUMNS]
        rows = [{_text(str(k)): _json_safe(v) for k, v in r.items()}
                for r in frame.to_dict(orient="records")]
        return rows, len(detail), columns
    if isinstance(detail, Mapping) or isinstance(detail, str | bytes) \
            or not isinstance(detail, Sequence):
        raise AnalysisError(f"report_finding: detail must be a DataFrame or a list of dicts "
                            f"(one per row), not a {type(detail).__name__}")
    given: list[Mapping[Any, Any]] = []
    for i, row in enumerate(detail[:MAX_DETAIL_ROWS]):
        if not isinstance(row, Mapping):
            raise AnalysisError(f"report_finding: detail row {i} is a {type(row).__name__}, "
                                "not a dict")
        given.append(row)
    return [{_text(str(k)): _json_safe(v) for k, v in r.items()} for r in given], len(detail), None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """``value`` with lone surrogates (text decoded with ``surrogateescape``, or broken
    data) as U+FFFD: the kernel cannot send them, and the run would fail on its report."""
    return _SURROGATE.sub("\ufffd", value)


def _json_safe(value: Any) -> Any:
    """A detail cell as JSON: numbers, text, booleans or None (NaN, NaT)."""
    import pandas as pd

    missing = pd.isna(value) if not isinstance(value, list | tuple | dict) else False
    if missing is True or (not isinstance(missing, bool) and getattr(missing, "shape", 1) == ()
                           and bool(missing)):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if hasattr(value, "isoformat"):
        return str(value.isoformat(sep=" ")) if hasattr(value, "hour") else str(value.isoformat())
    return _text(str(value))


def finding_payload(level: str, summary: str, detail: Any = None) -> tuple[dict[str, Any], int]:
    """The checked payload of a finding and the detail's row count before truncation.

    Raises :class:`~ooniutils.exceptions.AnalysisError` naming the valid levels when
    ``level`` is not one, or when ``summary``/``detail`` have the wrong type."""
    payload, total, _ = _payload(level, summary, detail)
    return payload, total


def _payload(level: str, summary: str, detail: Any) -> tuple[dict[str, Any], int, int]:
    """:func:`finding_payload`, with the detail's column count before truncation too."""
    level = str(level)
    if level not in LEVELS:
        raise AnalysisError(f"report_finding: level {level!r} is not one of "
                            f"{', '.join(LEVELS)}")
    if not isinstance(summary, str):
        raise AnalysisError(f"report_finding: summary must be a string, not a "
                            f"{type(summary).__name__}")
    summary = _text(summary)
    if detail is None:
        return {"level": level, "summary": one_line(summary, MAX_SUMMARY), "detail": None}, 0, 0
    rows, total, frame_columns = _rows(detail)
    if total > MAX_DETAIL_ROWS:
        log.info("report_finding: detail has %d rows, keeping the first %d", total,
                 MAX_DETAIL_ROWS)
    kept, columns = capped_detail(rows)
    columns = frame_columns if frame_columns is not None else columns
    if columns > MAX_DETAIL_COLUMNS:
        log.info("report_finding: detail has %d columns, keeping the first %d", columns,
                 MAX_DETAIL_COLUMNS)
    return ({"level": level, "summary": one_line(summary, MAX_SUMMARY), "detail": kept},
            total, columns)


def report_finding(level: str, summary: str, detail: Any = None) -> None:
    """Report what this notebook found (the last report in a run wins).

    ``level``: ``"ok"``, ``"warning"``, ``"alarm"`` or ``"no_data"``; ``summary``: one line
    an operator reads first, e.g. ``"IR: measurements down 40 % since 14:00"``; ``detail``:
    an optional short table (DataFrame or list of dicts; first 50 rows kept).

    Example::

        if alarms.empty:
            report_finding("ok", "no country below its expected measurement flow")
        else:
            report_finding("alarm", f"{len(alarms)} countries below their expected flow",
                           detail=alarms[["cc", "drop_pct", "since"]])
    """
    payload, total, columns = _payload(level, summary, detail)
    finding = finding_from_payload(payload)  # the same checks jupycron applies
    text = f"{finding.level.upper()}: {finding.summary}"
    if finding.detail:
        text += f" ({total} detail rows)"
    bundle = {
        FINDING_MIME: payload,
        "text/html": finding_html(finding, total_rows=total, total_columns=columns),
        "text/plain": text,
    }
    import IPython
    from IPython.display import display

    shell = IPython.get_ipython()
    if shell is None:  # a plain script: its one line, not the bundle's repr
        print(text)  # noqa: T201 - what the call shows in a plain script
        return
    display(bundle, raw=True)
    if hasattr(shell, "display_pub") and hasattr(shell, "events"):  # an IPython shell
        _Keeper.for_shell(shell).reported(bundle)


class _Keeper:
    """Shows a cell's finding again when ``clear_output`` removed it.

    jupycron reads the finding from the notebook's outputs, and ``clear_output()`` (a
    progress display, a loop that redraws) empties the cell's outputs: an alarm reported
    before it vanished and the run read as "never reported". The keeper notes each
    ``clear_output`` after a report and, when the cell ends, displays the cell's last
    finding once more (in the same cell: the kernel still runs its request)."""

    def __init__(self, shell: Any) -> None:
        self.bundle: dict[str, Any] | None = None
        self.cleared = False
        pub = shell.display_pub
        original = pub.clear_output

        def clear_output(*args: Any, **kwargs: Any) -> Any:
            self.cleared = True
            return original(*args, **kwargs)

        pub.clear_output = clear_output
        shell.events.register("post_run_cell", self.post_run_cell)

    @classmethod
    def for_shell(cls, shell: Any) -> _Keeper:
        keeper = getattr(shell, "_ooniutils_finding_keeper", None)
        if not isinstance(keeper, _Keeper):
            keeper = cls(shell)
            shell._ooniutils_finding_keeper = keeper
        return keeper

    def reported(self, bundle: dict[str, Any]) -> None:
        self.bundle, self.cleared = bundle, False

    def post_run_cell(self, *_: Any) -> None:
        bundle, cleared = self.bundle, self.cleared
        self.bundle, self.cleared = None, False  # another cell's clear_output cannot touch it
        if bundle is not None and cleared:
            from IPython.display import display

            display(bundle, raw=True)
