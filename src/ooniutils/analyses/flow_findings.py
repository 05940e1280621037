"""The finding of each flow notebook: one line an operator reads first, and a short table.

Pure: the notebooks compute their alarms, these functions turn them into
``(level, summary, detail)`` for :func:`ooniutils.report_finding`::

    report_finding(*flow_finding(current, outage, status, what="country", alert_hours=3))

* a total outage, or any episode open in the alert window → ``alarm`` (the outage first,
  then the episodes most severe first as the notebooks rank them);
* nothing could be checked (no series past its warm-up) → ``no_data``: a notebook that cannot
  see never says "ok";
* otherwise ``ok``, saying how many series were checked.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..findings import Verdict

__all__ = ["decline_finding", "flow_finding"]

_SHOWN = 3   # episodes named in the summary line; the rest are counted ("2 more")


def _pct(x: Any) -> str:
    return "?" if x is None or pd.isna(x) else f"{float(x):.0%}".replace("%", " %")


def _when(t: Any) -> str:
    return f"{pd.Timestamp(t):%Y-%m-%d %H:%M} UTC"


def _episode_line(ep: Any) -> str:
    types = f" ({ep.probe_types})" if getattr(ep, "probe_types", "") else ""
    return f"{ep.series}: measurements down {_pct(ep.severity)} since {_when(ep.start)}{types}"


def flow_finding(current: pd.DataFrame, outage: Any, status: pd.DataFrame | None = None, *,
                 what: str = "probe type", alert_hours: int = 3) -> Verdict:
    """The hourly flow notebooks' finding.

    ``current``: the episodes open in the alert window (``fold_episodes`` then
    ``latest_alarms``: series, start, severity, expected, actual, probe_types …), most
    severe first; ``outage``: :func:`~ooniutils.analyses.flow.total_outage`'s result or
    None; ``status``: the per-series table with a ``state`` column (``ok``, ``ALARM``,
    ``warming up …``, ``no data``), to tell "nothing wrong" from "nothing checked"."""
    detail = None
    if len(current):
        cols = [c for c in ("series", "start", "end", "hours", "expected", "actual", "severity",
                            "probe_types") if c in current.columns]
        detail = current[cols].assign(
            **({"severity": current["severity"].map(_pct)} if "severity" in cols else {}),
            **{c: current[c].round(0) for c in ("expected", "actual") if c in cols})
    if outage:
        more = f"; {len(current)} {what} episode(s) open as well" if len(current) else ""
        return Verdict("alarm", f"{outage.describe()}{more}", detail)
    if len(current):
        lines = [_episode_line(ep) for ep in current.head(_SHOWN).itertuples()]
        more = f"; {len(current) - _SHOWN} more" if len(current) > _SHOWN else ""
        return Verdict("alarm", "; ".join(lines) + more, detail)
    if status is not None:
        judged = status[status["state"].isin(["ok", "ALARM"])] if "state" in status else status
        if judged.empty:
            return Verdict("no_data", f"no {what} series could be checked "
                           f"({len(status)} series, none past its warm-up)", None)
        return Verdict("ok", f"all {len(judged)} {what} series within their expected flow in "
                       f"the last {alert_hours} complete hours", None)
    return Verdict("ok", f"no {what} below its expected flow in the last {alert_hours} "
                   "complete hours", None)


def decline_finding(declining: pd.DataFrame, outage: Any, table: pd.DataFrame, *,
                    weeks: int) -> Verdict:
    """The long-term notebook's finding: ``declining`` = the alarmed rows of
    :func:`~ooniutils.analyses.trend.decline_table` (``table`` = all of them)."""
    cols = [c for c in ("series", "level", "decline", "slope_per_day", "p_value", "note")
            if c in declining.columns]
    detail = declining[cols].assign(decline=declining["decline"].map(_pct)) \
        if len(declining) and "decline" in cols else (declining[cols] if len(declining) else None)
    if outage:
        return Verdict("alarm", outage.describe(), detail)
    if len(declining):
        parts = [f"{r.series} down {_pct(r.decline)} over {weeks} weeks"
                 for r in declining.head(_SHOWN).itertuples()]
        more = f"; {len(declining) - _SHOWN} more" if len(declining) > _SHOWN else ""
        return Verdict("alarm", "sustained decline: " + "; ".join(parts) + more, detail)
    judged = table[table["p_value"].notna()] if "p_value" in table.columns else table
    if judged.empty:
        return Verdict("no_data", f"no probe type has enough weeks of data for a verdict "
                       f"({len(table)} probe types)", None)
    return Verdict("ok", f"no sustained decline over {weeks} weeks among {len(judged)} "
                   "probe types", None)
