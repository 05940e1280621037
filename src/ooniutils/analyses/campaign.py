"""Test-campaign investigation: did a campaign (a period when volunteers in some countries
were asked to run OONI Probe on some URLs) grow the number of measurements and the URL
coverage, per country and per network, compared with the same length of time before it?

Input is a frame of daily counts (:func:`ooniutils.datasets.campaign.fetch_campaign_counts`):
day, probe_cc, probe_asn, input, n. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..exceptions import AnalysisError

if TYPE_CHECKING:
    import altair as alt

COUNT_COLUMNS = ("day", "probe_cc", "probe_asn", "input", "n")


@dataclass(frozen=True)
class CampaignWindow:
    """The campaign ``[start, end)`` and the baseline ``[baseline_start, start)`` before it
    (as long as the campaign unless given), all at day precision (UTC, naive)."""

    start: pd.Timestamp
    end: pd.Timestamp
    baseline_start: pd.Timestamp

    @classmethod
    def of(cls, start: object, end: object, baseline_days: int | None = None) -> CampaignWindow:
        try:
            s = pd.Timestamp(start)
            e = pd.Timestamp(end)
        except (TypeError, ValueError) as exc:
            raise AnalysisError(f"campaign start/end must be dates, got {start!r} and {end!r}") from exc
        s, e = (x.tz_convert("UTC").tz_localize(None) if x.tzinfo else x for x in (s, e))
        s, e = s.normalize(), e.normalize()
        if e <= s:
            raise AnalysisError(f"campaign end {e:%Y-%m-%d} must be after its start {s:%Y-%m-%d}")
        days = (e - s).days if baseline_days is None else int(baseline_days)
        if days < 1:
            raise AnalysisError(f"baseline_days must be at least 1, got {baseline_days}")
        return cls(s, e, s - pd.Timedelta(days=days))

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def baseline_days(self) -> int:
        return (self.start - self.baseline_start).days


def _prepare(counts: pd.DataFrame, window: CampaignWindow) -> pd.DataFrame:
    missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
    if missing:
        raise AnalysisError(f"campaign counts lack column(s) {', '.join(missing)}")
    df = counts.copy()
    day = pd.to_datetime(df["day"])
    if getattr(day.dt, "tz", None) is not None:
        day = day.dt.tz_convert("UTC").dt.tz_localize(None)
    df["day"] = day.dt.normalize()
    df["period"] = np.select([(df.day >= window.baseline_start) & (df.day < window.start),
                              (df.day >= window.start) & (df.day < window.end)],
                             ["before", "during"], default="")
    return df[df.period != ""]


def _compare(df: pd.DataFrame, keys: list[str], window: CampaignWindow, targets: set[str]) -> pd.DataFrame:
    days = {"before": window.baseline_days, "during": window.days}
    out = None
    for period in ("before", "during"):
        part = df[df.period == period]
        g = part.groupby(keys, as_index=False).agg(n=("n", "sum"))
        urls = part[part.input != ""].groupby(keys)["input"].nunique().rename("urls").reset_index()
        g = g.merge(urls, on=keys, how="left")
        if targets:
            cov = part[part.input.isin(targets)].groupby(keys)["input"].nunique().rename("covered").reset_index()
            g = g.merge(cov, on=keys, how="left")
        g = g.rename(columns={c: f"{c}_{period}" for c in g.columns if c not in keys})
        g[f"per_day_{period}"] = g[f"n_{period}"] / days[period]
        out = g if out is None else out.merge(g, on=keys, how="outer")
    assert out is not None
    for c in out.columns:
        if c not in keys:
            out[c] = out[c].fillna(0)
    for c in ("n", "urls", "covered"):
        for p in ("before", "during"):
            if f"{c}_{p}" in out.columns:
                out[f"{c}_{p}"] = out[f"{c}_{p}"].astype("int64")
    before, during = out.per_day_before, out.per_day_during
    out["growth"] = np.where(before > 0, during / before.where(before > 0, 1), np.inf)
    out.loc[(before == 0) & (during == 0), "growth"] = np.nan
    if targets:
        out["coverage_before"] = out.covered_before / len(targets)
        out["coverage_during"] = out.covered_during / len(targets)
    out["new"] = (out.n_before == 0) & (out.n_during > 0)
    return out.sort_values(["per_day_during", *keys], ascending=[False] + [True] * len(keys)).reset_index(drop=True)


def campaign_report(counts: pd.DataFrame, window: CampaignWindow,
                    target_urls: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Measurement quantity and URL coverage before and during the campaign.

    Returns a dict of frames:

    * ``countries``: per probe_cc — n_before/n_during (measurements), per_day_before/
      per_day_during, ``growth`` (per-day ratio, inf when there was nothing before, NaN when
      nothing either time), urls_before/urls_during (distinct URLs measured), and with
      ``target_urls``: covered_before/covered_during and coverage_before/coverage_during
      (share of the target URLs measured at least once), ``new`` (no measurement before);
    * ``networks``: the same per (probe_cc, probe_asn), ``new`` marking networks that
      appeared during the campaign;
    * ``daily``: day, probe_cc, n, urls — the series to chart;
    * ``untested``: target URLs not measured during the campaign in any selected country.

    Raises :class:`AnalysisError` when nothing at all was measured in either period (a
    wrong country list, URL list or data source), since no comparison can be made.
    """
    targets = {str(u) for u in (target_urls or ()) if str(u)}
    df = _prepare(counts, window)
    if df.empty or df.n.sum() == 0:
        raise AnalysisError(
            f"no measurement at all between {window.baseline_start:%Y-%m-%d} and {window.end:%Y-%m-%d} "
            "for the selected countries, URLs and probe types: check the parameters and the data source")
    daily = df.groupby(["day", "probe_cc"], as_index=False).agg(n=("n", "sum"))
    daily_urls = df[df.input != ""].groupby(["day", "probe_cc"])["input"].nunique().rename("urls").reset_index()
    daily = daily.merge(daily_urls, on=["day", "probe_cc"], how="left").fillna({"urls": 0})
    daily["urls"] = daily["urls"].astype("int64")
    tested = set(df.loc[df.period == "during", "input"])
    return {
        "countries": _compare(df, ["probe_cc"], window, targets),
        "networks": _compare(df, ["probe_cc", "probe_asn"], window, targets),
        "daily": daily.sort_values(["probe_cc", "day"]).reset_index(drop=True),
        "untested": pd.DataFrame({"url": sorted(targets - tested)}),
    }


def campaign_chart(daily: pd.DataFrame, window: CampaignWindow, value: str = "n") -> alt.Chart:
    """Altair line chart of ``campaign_report(...)["daily"]``: measurements (``value="n"``)
    or distinct URLs (``value="urls"``) per day and country, the campaign shaded."""
    import altair as alt

    if value not in ("n", "urls"):
        raise AnalysisError(f"value must be 'n' or 'urls', got {value!r}")
    label = {"n": "measurements per day", "urls": "distinct URLs measured per day"}[value]
    band = alt.Chart(pd.DataFrame({"start": [window.start], "end": [window.end]})).mark_rect(
        opacity=0.12, color="#1f77b4").encode(x="start:T", x2="end:T")
    lines = alt.Chart(daily).mark_line(point=True).encode(
        x=alt.X("day:T", title="day (UTC); shaded: the campaign"),
        y=alt.Y(f"{value}:Q", title=label),
        color=alt.Color("probe_cc:N", title="probe country"),
        tooltip=["probe_cc", alt.Tooltip("day:T", format="%Y-%m-%d"), "n", "urls"],
    )
    return (band + lines).properties(width=700, height=260, title=f"{label.capitalize()}, before and during the campaign")
