"""Fold per-series flow alarms into episodes: one per country outage, ranked by severity.

The per-country notebook watches one series per (probe_cc, software_name). A country
outage drops every probe type at once, so :func:`~ooniutils.analyses.flow.detect_many`
returns one alarm per probe type; an operator wants one line (and one message) per
outage. :func:`fold_episodes` groups alarms by the first part of the series name (the
country, ``"IR/ooniprobe-android"`` → ``"IR"``) and merges the alarms of a group whose
time ranges overlap or are at most ``gap_hours`` apart. Each episode keeps the sums of
its alarms' expected and actual measurements, the series and probe types it spans, and
its ``severity`` (1 − actual/expected over the whole episode). Episodes are ranked by
``missing`` (expected − actual measurements), the size of the hole an operator sees,
then by severity.

Example::

    alarms = alarms_from_predictions(predict_many(wide))
    episodes = fold_episodes(alarms)            # columns: EPISODE_COLUMNS
    current = latest_alarms(episodes, now=until, hours=3)
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

EPISODE_COLUMNS = ["series", "start", "end", "hours", "expected", "actual", "missing", "severity",
                   "alarms", "probe_types", "members"]
"""``series``: the group (country); ``alarms``: alarms folded in; ``probe_types``: the second
parts of the member series' names, comma-separated; ``members``: the member series, comma-separated."""


TOTAL = "*"
"""Second part of the name of a country's total series (``"IR/*"``, see :func:`with_country_totals`)."""


def with_country_totals(wide: pd.DataFrame, counts: pd.DataFrame, since: Any, until: Any,
                        time_col: str = "t", cc_col: str = "probe_cc", value_col: str = "n") -> pd.DataFrame:
    """``wide`` (per-country series ``"CC/probe type"``) plus one total series per country,
    ``"CC/*"``, summed over *every* probe type of ``counts`` (also those too small to be
    checked alone). A country-wide drop of 30 % is much more significant on the total than on
    each probe type; the total's alarms fold into the country's episode."""
    from .flow import pivot_hourly

    totals = pivot_hourly(counts, time_col, cc_col, value_col=value_col, start=since, end=until)
    totals.columns = [f"{c}/{TOTAL}" for c in totals.columns]
    ccs = {str(c).split("/")[0] for c in wide.columns}
    keep = [c for c in totals.columns if c.split("/")[0] in ccs]
    return pd.concat([wide, totals[keep].reindex(wide.index).fillna(0.0)], axis=1)


def _split(series: str) -> tuple[str, str]:
    group, _, rest = str(series).partition("/")
    return group, rest


def fold_episodes(alarms: pd.DataFrame, gap_hours: int = 0) -> pd.DataFrame:
    """One row per episode (see the module doc): alarms of the same group (the series name
    before the first "/") overlapping in time, or separated by at most ``gap_hours`` hours,
    become one episode. Rows are ranked most severe first (measurements missing, then
    severity). ``alarms`` needs the columns series, start, end, expected, actual (the output
    of :func:`~ooniutils.analyses.flow.detect_many`); raises :class:`AnalysisError` otherwise."""
    missing_cols = [c for c in ("series", "start", "end", "expected", "actual") if c not in alarms.columns]
    if missing_cols:
        raise AnalysisError(f"missing column(s) {missing_cols}; the alarms have {list(alarms.columns)}")
    if gap_hours < 0:
        raise AnalysisError(f"gap_hours must be >= 0, got {gap_hours}")
    if alarms.empty:
        return pd.DataFrame(columns=EPISODE_COLUMNS).astype(
            {"hours": int, "expected": float, "actual": float, "missing": float, "severity": float, "alarms": int})
    gap = pd.Timedelta(hours=gap_hours)
    a = alarms.assign(start=pd.to_datetime(alarms["start"]), end=pd.to_datetime(alarms["end"]))
    a["_group"] = [_split(s)[0] for s in a["series"]]
    rows = []
    for group, part in a.sort_values(["start", "end"]).groupby("_group", sort=True):
        current: list[Any] = []
        cur_end = None
        for r in part.itertuples():
            if current and r.start > cur_end + gap:
                rows.append(_episode(str(group), current))
                current = []
            cur_end = r.end if not current else max(cur_end, r.end)
            current.append(r)
        rows.append(_episode(str(group), current))
    out = pd.DataFrame(rows, columns=EPISODE_COLUMNS)
    return out.sort_values(["missing", "severity", "start"], ascending=[False, False, True], ignore_index=True)


def _episode(group: str, members: list[Any]) -> dict[str, Any]:
    start = min(r.start for r in members)
    end = max(r.end for r in members)
    expected = float(sum(float(r.expected) for r in members))
    actual = float(sum(float(r.actual) for r in members))
    series = list(dict.fromkeys(str(r.series) for r in members))
    types = list(dict.fromkeys(_split(s)[1] for s in series if _split(s)[1] not in ("", TOTAL)))
    return {"series": group, "start": start, "end": end,
            "hours": int((end - start) / pd.Timedelta(hours=1)),
            "expected": round(expected, 1), "actual": actual, "missing": round(max(expected - actual, 0.0), 1),
            "severity": round(1 - actual / expected, 3) if expected > 0 else 0.0,
            "alarms": len(members), "probe_types": ", ".join(sorted(types)), "members": ", ".join(sorted(series))}


def episode_series(episodes: pd.DataFrame) -> list[str]:
    """Every member series of ``episodes``, most severe episode first (for charts)."""
    out: list[str] = []
    for members in episodes.get("members", pd.Series(dtype=str)):
        out += [m.strip() for m in str(members).split(",") if m.strip()]
    return list(dict.fromkeys(out))
