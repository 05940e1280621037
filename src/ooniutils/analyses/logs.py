"""Journald log summaries for the log dashboards (pure functions over
:mod:`ooniutils.datasets.logs` output).

Priorities are syslog's: 0 emerg, 1 alert, 2 crit, 3 err, 4 warning, 5 notice, 6 info,
7 debug; "errors" are priority <= 3 and "warnings" priority 4. Lines without a priority
count as ``unknown`` and are neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..exceptions import AnalysisError

if TYPE_CHECKING:  # altair is imported where a chart is drawn: analyses stay light
    import altair as alt

PRIORITY_NAMES = {0: "emerg", 1: "alert", 2: "crit", 3: "err", 4: "warning", 5: "notice",
                  6: "info", 7: "debug"}
ERROR_MAX_PRIORITY = 3


def priority_name(priority: object) -> str:
    """``3`` → ``"err"``; missing or out of range → ``"unknown"``."""
    if priority is None or pd.isna(priority):
        return "unknown"
    try:
        return PRIORITY_NAMES.get(int(priority), "unknown")  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "unknown"


def _check(counts: pd.DataFrame) -> pd.DataFrame:
    missing = {"t", "host", "unit", "priority", "n"} - set(counts.columns)
    if missing:
        raise AnalysisError(f"log counts lack column(s) {sorted(missing)}")
    df = counts.copy()
    df["priority"] = pd.to_numeric(df["priority"], errors="coerce")
    df["unit"] = df["unit"].fillna("").replace("", "(no unit)")
    df["priority_name"] = [priority_name(p) for p in df["priority"]]
    return df


def unit_summary(counts: pd.DataFrame) -> pd.DataFrame:
    """Per (host, unit): lines, errors, warnings, first and last bucket; most errors first."""
    df = _check(counts)
    cols = ["host", "unit", "lines", "errors", "warnings", "first", "last"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["errors"] = df["n"].where(df["priority"] <= ERROR_MAX_PRIORITY, 0)
    df["warnings"] = df["n"].where(df["priority"] == 4, 0)
    out = df.groupby(["host", "unit"], as_index=False).agg(
        lines=("n", "sum"), errors=("errors", "sum"), warnings=("warnings", "sum"),
        first=("t", "min"), last=("t", "max"))
    return out.sort_values(["errors", "warnings", "lines"], ascending=False)[cols].reset_index(drop=True)


def error_counts(counts: pd.DataFrame, max_priority: int = ERROR_MAX_PRIORITY) -> pd.DataFrame:
    """Lines with priority <= ``max_priority`` per t, unit and priority_name (host summed)."""
    df = _check(counts)
    df = df[df["priority"] <= max_priority]
    return (df.groupby(["t", "unit", "priority_name"], as_index=False)["n"].sum()
            .sort_values(["t", "unit"]).reset_index(drop=True))


def errors_chart(errors: pd.DataFrame, title: str = "Errors by unit and priority") -> alt.Chart:
    """Altair stacked bars of :func:`error_counts`: time × lines, colour = unit, one row per
    priority."""
    import altair as alt

    # the priority names head their row (a row title beside the y title overlapped it)
    return alt.Chart(errors, title=title).mark_bar().encode(
        x=alt.X("t:T", title="time (UTC)"), y=alt.Y("n:Q", title="lines"),
        color=alt.Color("unit:N", title="unit", legend=alt.Legend(labelLimit=400)),
        row=alt.Row("priority_name:N", title=None,
                    header=alt.Header(labelAngle=0, labelOrient="top", labelAnchor="start",
                                      labelFontWeight="bold", labelExpr="'priority ' + datum.value")),
        tooltip=["t:T", "unit", "priority_name", "n"],
    ).properties(width=700, height=120).resolve_scale(y="independent")  # one crit line shows


def recent_by_unit(lines: pd.DataFrame, per_unit: int = 5) -> pd.DataFrame:
    """The newest ``per_unit`` lines of each (host, unit) of :func:`fetch_recent_logs`
    output, with a readable ``priority_name``, grouped by host and unit."""
    missing = {"time", "host", "unit", "priority", "message"} - set(lines.columns)
    if missing:
        raise AnalysisError(f"log lines lack column(s) {sorted(missing)}")
    df = lines.copy()
    df["unit"] = df["unit"].fillna("").replace("", "(no unit)")
    df["priority_name"] = [priority_name(p) for p in df["priority"]]
    df = df.sort_values("time", ascending=False).groupby(["host", "unit"], sort=False).head(per_unit)
    return (df.sort_values(["host", "unit", "time"], ascending=[True, True, False])
            [["host", "unit", "time", "priority_name", "message"]].reset_index(drop=True))
