"""Test helper failure rates: is a helper failing for everyone, or is one network failing?

Input is hourly counts (see :func:`ooniutils.datasets.test_helpers.fetch_helper_counts`):
one row per (``hour``, ``helper``, ``probe_cc``, ``probe_asn``) with ``total`` measurements
and ``failures`` among them.

Method (:func:`helper_alarms`): for every helper and every hour ``t`` the *recent window* is
the ``recent_hours`` hours ending at ``t`` and the *baseline* the ``baseline_hours`` before
it. The recent failure rate is tested against the baseline with a one-sided pooled
two-proportion z-test (it accounts for the baseline's own sampling error, unlike a binomial
test against the baseline estimate), its variance scaled by a quasi-binomial dispersion
factor estimated from the baseline hours (measurements of one report fail together, so
hourly counts are overdispersed; without this, busy helpers alarm on noise); an hour is
flagged when

* the recent window has at least ``min_recent`` measurements and the baseline at least
  ``min_baseline`` (a new helper, a gap in the data or a brand-new country never alarms);
* the p-value is below ``alpha`` divided by the number of helpers (Bonferroni);
* the recent rate exceeds the baseline rate by at least ``min_increase`` (so a tiny but
  "significant" wobble on millions of measurements does not page anyone).

Each flagged hour then gets a *scope*: leave out the country contributing the most excess
failures and test the rest again. If the rest of the world is still significantly above the
baseline the helper is failing for everyone (``scope='all probes'``); if not, the failures
are concentrated in that country (``scope='concentrated'``) — a network problem there, not
the helper. Finally the helper must also be above the *other helpers* in the same window
(significantly, by ``min_increase``); a rise they all share is ``shared by all helpers``
(the hour's country mix, a global event), not one helper failing. Only ``all probes``
rows are alarms. :func:`network_problems` is the mirror image: per country, across all helpers,
flagged when the country's own failure rate rises and it does so on several helpers.

The reported ``baseline_rate`` gets a half count (``(f + 0.5) / (n + 1)``) so a helper
with zero baseline failures still has a usable reference for the "excess failures" maths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import AnalysisError

if TYPE_CHECKING:  # altair is imported only where a chart is drawn
    import altair as alt

log = logging.getLogger(__name__)

COUNT_COLUMNS = ["hour", "helper", "probe_cc", "probe_asn", "total", "failures"]


@dataclass(frozen=True)
class AlarmParams:
    """Thresholds of :func:`helper_alarms` and :func:`network_problems` (see module doc)."""

    recent_hours: int = 3
    baseline_hours: int = 7 * 24
    min_recent: int = 30
    min_baseline: int = 200
    alpha: float = 1e-4
    """Per-run false-alarm probability (before Bonferroni over helpers). The alarm is
    evaluated every hour, so 1e-4 is about one false alarm a year; a helper that really
    stops answering gives p-values far below 1e-10."""
    min_increase: float = 0.10
    min_country_samples: int = 10


def helper_host(address: str | None) -> str:
    """Host name of a test helper address: ``"https://2.th.ooni.org"`` → ``"2.th.ooni.org"``.

    This is the join key with ``test_helper_instances`` (see :func:`helper_inventory`).
    Bare host names are returned lower-cased; empty/None give ``""``.
    """
    if not address:
        return ""
    text = str(address).strip()
    host = urlsplit(text if "//" in text else "//" + text).hostname
    return (host or "").lower()


def _check_counts(counts: pd.DataFrame) -> pd.DataFrame:
    missing = set(COUNT_COLUMNS) - set(counts.columns)
    if missing:
        raise AnalysisError(
            f"helper counts lack column(s) {sorted(missing)}; expected {COUNT_COLUMNS}"
        )
    df = counts[COUNT_COLUMNS].copy()
    df["hour"] = pd.to_datetime(df["hour"]).dt.floor("h")
    if getattr(df["hour"].dt, "tz", None) is not None:
        df["hour"] = df["hour"].dt.tz_convert("UTC").dt.tz_localize(None)
    df["total"] = pd.to_numeric(df["total"], errors="coerce").fillna(0).astype("int64")
    df["failures"] = pd.to_numeric(df["failures"], errors="coerce").fillna(0).astype("int64")
    df["failures"] = df[["failures", "total"]].min(axis=1)
    df["helper"] = df["helper"].fillna("").astype(str)
    return df[df["helper"] != ""]


def hourly_rates(counts: pd.DataFrame, by: Sequence[str] = ("helper",)) -> pd.DataFrame:
    """Failure rate per hour and ``by`` (default per helper): hour, *by, total, failures, rate."""
    df = _check_counts(counts)
    keys = ["hour", *by]
    out = df.groupby(keys, as_index=False)[["total", "failures"]].sum()
    out["rate"] = out["failures"] / out["total"].where(out["total"] > 0)
    return out.sort_values(keys).reset_index(drop=True)


def _grid(df: pd.DataFrame, key: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Hourly totals per ``key`` on a complete hour grid (missing hours are zeros)."""
    hours = pd.date_range(start, end, freq="h")
    agg = df.groupby([key, "hour"])[["total", "failures"]].sum()
    idx = pd.MultiIndex.from_product([agg.index.get_level_values(0).unique(), hours],
                                     names=[key, "hour"])
    return agg.reindex(idx, fill_value=0)


def _rolling_windows(grid: pd.DataFrame, p: AlarmParams) -> pd.DataFrame:
    g = grid.groupby(level=0, group_keys=False)
    out = pd.DataFrame(index=grid.index)
    out["recent_total"] = g["total"].transform(lambda s: s.rolling(p.recent_hours, min_periods=1).sum())
    out["recent_failures"] = g["failures"].transform(lambda s: s.rolling(p.recent_hours, min_periods=1).sum())
    out["baseline_total"] = g["total"].transform(
        lambda s: s.shift(p.recent_hours).rolling(p.baseline_hours, min_periods=1).sum())
    out["baseline_failures"] = g["failures"].transform(
        lambda s: s.shift(p.recent_hours).rolling(p.baseline_hours, min_periods=1).sum())
    out = out.fillna(0).astype("int64").reset_index()
    out["recent_rate"] = out["recent_failures"] / out["recent_total"].where(out["recent_total"] > 0)
    out["baseline_rate"] = (out["baseline_failures"] + 0.5) / (out["baseline_total"] + 1)
    out.loc[out["baseline_total"] == 0, "baseline_rate"] = np.nan
    # Overdispersion: measurements come in reports from one probe and fail together, and
    # bad networks stay bad for hours, so window counts vary more than a binomial. The
    # squared Pearson residuals of past windows (same length as the recent one) against
    # their own baselines estimate the dispersion factor (quasi-binomial) — through their
    # median over the baseline period divided by 0.455 (the median of chi-square(1)), so an
    # earlier incident inside the baseline does not inflate it. It scales the z-test's
    # variance and is never below 1.
    n_w = out["recent_total"].to_numpy(dtype=float)
    f_w = out["recent_failures"].to_numpy(dtype=float)
    ref = out["baseline_rate"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = (f_w - n_w * ref) ** 2 / (n_w * ref * (1 - ref))
    r2[~np.isfinite(r2) | (n_w == 0)] = np.nan
    resid = pd.Series(r2, index=grid.index)
    disp = resid.groupby(level=0, group_keys=False).apply(
        lambda s: s.shift(p.recent_hours).rolling(p.baseline_hours, min_periods=24).median())
    disp = disp / stats.chi2.median(1)
    out["dispersion"] = np.maximum(disp.to_numpy(), 1.0)
    out["dispersion"] = out["dispersion"].fillna(1.0)
    return out


def _rise_p(rf: np.ndarray, rn: np.ndarray, bf: np.ndarray, bn: np.ndarray,
            dispersion: float | np.ndarray = 1.0) -> np.ndarray:
    """One-sided p-value that the recent rate ``rf/rn`` exceeds the baseline ``bf/bn``.

    Pooled two-proportion z-test, vectorised; it accounts for the uncertainty of a short
    baseline (a binomial test against the baseline *estimate* does not, and over-alarms when
    the baseline is small). The variance is multiplied by ``dispersion`` (quasi-binomial).
    NaN where either side is empty.
    """
    rf, rn, bf, bn = (np.asarray(x, dtype=float) for x in (rf, rn, bf, bn))
    dispersion = np.asarray(dispersion, dtype=float)
    p = np.full(np.broadcast(rf, rn, bf, bn).shape, np.nan)
    ok = (rn > 0) & (bn > 0)
    pooled = np.where(ok, (rf + bf) / np.where(ok, rn + bn, 1), 0.0)
    se = np.sqrt(dispersion * pooled * (1 - pooled) * (1 / np.where(ok, rn, 1) + 1 / np.where(ok, bn, 1)))
    diff = np.where(ok, rf / np.where(ok, rn, 1) - bf / np.where(ok, bn, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / se, np.where(diff > 0, np.inf, 0.0))
    p[ok] = stats.norm.sf(z[ok])
    return p


def _status(w: pd.DataFrame, p: AlarmParams, alpha: float) -> pd.Series:
    status = pd.Series("ok", index=w.index, dtype=object)
    status[w["recent_total"] < p.min_recent] = "too few recent measurements"
    status[w["baseline_total"] < p.min_baseline] = "no baseline yet"
    testable = status == "ok"
    rise = (w["recent_rate"] - w["baseline_rate"]) >= p.min_increase
    status[testable & (w["p_value"] < alpha) & rise] = "elevated"
    return status


def _window_bounds(df: pd.DataFrame, start: datetime | None, now: datetime | None
                   ) -> tuple[pd.Timestamp, pd.Timestamp]:
    last = pd.Timestamp(now).floor("h") if now is not None else df["hour"].max()
    if getattr(last, "tzinfo", None) is not None:
        last = last.tz_convert("UTC").tz_localize(None)
    first = df["hour"].min() if start is None else pd.Timestamp(start).floor("h")
    if getattr(first, "tzinfo", None) is not None:
        first = first.tz_convert("UTC").tz_localize(None)
    return first, last


def _tested_windows(df: pd.DataFrame, key: str, now: datetime | None,
                    p: AlarmParams) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Counts up to the last complete hour, and per (``key``, hour) the recent vs baseline
    windows with the one-sided rise p-value; None when there is nothing to test."""
    if df.empty:
        return None
    first, last = _window_bounds(df, None, now)
    df = df[df["hour"] <= last]
    if df.empty:
        return None
    w = _rolling_windows(_grid(df, key, first, last), p)
    w["p_value"] = _rise_p(w["recent_failures"], w["recent_total"], w["baseline_failures"],
                           w["baseline_total"], w["dispersion"])
    return df, w


def helper_alarms(counts: pd.DataFrame, now: datetime | None = None,
                  params: AlarmParams | None = None) -> pd.DataFrame:
    """Per helper and hour: recent vs baseline failure rate, p-value, status and scope.

    Returns columns helper, hour, recent_total, recent_failures, recent_rate, baseline_total,
    baseline_rate, p_value, status (``ok`` / ``elevated`` / ``too few recent measurements`` /
    ``no baseline yet``), alarm (elevated *and* scope ``all probes``), scope, top_cc,
    top_asn, rest_rate, rest_p_value. ``now`` (UTC) closes the hour grid — hours without
    data up to ``now`` count as empty, so a helper that stopped reporting shows as
    "too few recent measurements", never as an alarm. Empty input → empty result.
    """
    p = params or AlarmParams()
    df = _check_counts(counts)
    cols = ["helper", "hour", "recent_total", "recent_failures", "recent_rate", "baseline_total",
            "baseline_rate", "dispersion", "p_value", "status", "alarm", "scope", "top_cc", "top_asn",
            "rest_rate", "rest_p_value", "others_rate"]
    windows = _tested_windows(df, "helper", now, p)
    if windows is None:
        return pd.DataFrame(columns=cols)
    df, w = windows
    n_helpers = max(df["helper"].nunique(), 1)
    w["status"] = _status(w, p, p.alpha / n_helpers)
    w["scope"] = ""
    w["top_cc"] = ""
    w["top_asn"] = pd.array([pd.NA] * len(w), dtype="Int64")
    w["rest_rate"] = np.nan
    w["rest_p_value"] = np.nan
    w["others_rate"] = np.nan
    flagged = w.index[w["status"] == "elevated"]
    if len(flagged):
        _add_scope(w, flagged, df, p, p.alpha / n_helpers)
    _versus_other_helpers(w, p, p.alpha / n_helpers)
    w["alarm"] = (w["status"] == "elevated") & (w["scope"] == "all probes")
    return w[cols].sort_values(["helper", "hour"]).reset_index(drop=True)


def _versus_other_helpers(w: pd.DataFrame, p: AlarmParams, alpha: float) -> None:
    """A rise every helper shares (the day's country mix, a global network event) is not a
    helper failing: flagged rows must also be above the other helpers' pooled recent rate,
    by ``min_increase`` and significantly. Otherwise the scope becomes ``shared by all
    helpers``. Skipped when there is a single helper."""
    if w["helper"].nunique() < 2:
        return
    per_hour = w.groupby("hour")[["recent_failures", "recent_total"]].transform("sum")
    other_f = per_hour["recent_failures"] - w["recent_failures"]
    other_n = per_hour["recent_total"] - w["recent_total"]
    w["others_rate"] = other_f / other_n.where(other_n > 0)
    pv = _rise_p(w["recent_failures"], w["recent_total"], other_f, other_n, w["dispersion"])
    above = (pv < alpha) & (w["recent_rate"] - w["others_rate"] >= p.min_increase)
    shared = (w["scope"] == "all probes") & ~above & (other_n >= p.min_recent)
    w.loc[shared, "scope"] = "shared by all helpers"


def _add_scope(w: pd.DataFrame, flagged: pd.Index, df: pd.DataFrame, p: AlarmParams,
               alpha: float) -> None:
    """Leave-one-country-out test for each flagged (helper, hour) — see module doc."""
    span = pd.Timedelta(hours=p.recent_hours)
    for i in flagged:
        helper, hour, base = w.at[i, "helper"], w.at[i, "hour"], w.at[i, "baseline_rate"]
        bf, bn, disp = w.at[i, "baseline_failures"], w.at[i, "baseline_total"], w.at[i, "dispersion"]
        recent = df[(df["helper"] == helper) & (df["hour"] > hour - span) & (df["hour"] <= hour)]
        by_cc = recent.groupby("probe_cc")[["total", "failures"]].sum()
        excess = by_cc["failures"] - by_cc["total"] * base
        top_cc = excess.idxmax()
        rest = by_cc.drop(index=top_cc).sum()
        rest_rate = rest["failures"] / rest["total"] if rest["total"] else np.nan
        rest_p = float(_rise_p(rest["failures"], rest["total"], bf, bn, disp))
        in_cc = recent[recent["probe_cc"] == top_cc]
        by_asn = in_cc.groupby("probe_asn")[["total", "failures"]].sum()
        top_asn = (by_asn["failures"] - by_asn["total"] * base).idxmax()
        broad = (rest["total"] >= p.min_recent and rest_p < alpha
                 and rest_rate - base >= p.min_increase)
        if rest["total"] < p.min_recent:
            scope = "only one country observed"
        else:
            scope = "all probes" if broad else "concentrated"
        w.at[i, "scope"] = scope
        w.at[i, "top_cc"] = top_cc
        w.at[i, "top_asn"] = int(top_asn)
        w.at[i, "rest_rate"] = rest_rate
        w.at[i, "rest_p_value"] = rest_p


def network_problems(counts: pd.DataFrame, now: datetime | None = None,
                     params: AlarmParams | None = None, by: str = "probe_cc") -> pd.DataFrame:
    """Per country (or ``by='probe_asn'``) and hour, across all helpers: is it failing?

    Same windows and test as :func:`helper_alarms` but grouped by probe location. A row is
    ``problem`` when the location is significantly above its own baseline *and* still is
    after leaving out the helper contributing the most excess failures — failures concentrated
    in one place across all helpers, not one broken helper seen from there. A location whose
    probes used a single helper cannot be told apart and is never a ``problem``.
    ``helpers_elevated`` counts helpers individually significant (``alpha``) and up by
    ``min_increase`` there. Columns: ``by``, hour,
    recent_total, recent_failures, recent_rate, baseline_total, baseline_rate, p_value,
    status, helpers_seen, helpers_elevated, problem.
    """
    if by not in ("probe_cc", "probe_asn"):
        raise AnalysisError(f"by must be 'probe_cc' or 'probe_asn', got {by!r}")
    p = params or AlarmParams()
    df = _check_counts(counts)
    cols = [by, "hour", "recent_total", "recent_failures", "recent_rate", "baseline_total",
            "baseline_rate", "dispersion", "p_value", "status", "helpers_seen", "helpers_elevated", "problem"]
    windows = _tested_windows(df, by, now, p)
    if windows is None:
        return pd.DataFrame(columns=cols)
    df, w = windows
    alpha = p.alpha / max(df[by].nunique(), 1)
    w["status"] = _status(w, p, alpha)
    w["helpers_seen"] = 0
    w["helpers_elevated"] = 0
    w["problem"] = False
    span = pd.Timedelta(hours=p.recent_hours)
    for i in w.index[w["status"] == "elevated"]:
        loc, hour, base = w.at[i, by], w.at[i, "hour"], w.at[i, "baseline_rate"]
        bf, bn, disp = w.at[i, "baseline_failures"], w.at[i, "baseline_total"], w.at[i, "dispersion"]
        recent = df[(df[by] == loc) & (df["hour"] > hour - span) & (df["hour"] <= hour)]
        per_helper = recent.groupby("helper")[["total", "failures"]].sum()
        seen = per_helper[per_helper["total"] >= p.min_country_samples]
        pv = _rise_p(seen["failures"], seen["total"], bf, bn, disp)
        rise = seen["failures"] / seen["total"] - base >= p.min_increase
        w.at[i, "helpers_seen"] = len(seen)
        w.at[i, "helpers_elevated"] = int(((pv < p.alpha) & rise).sum())
        # leave out the helper with the most excess failures: is the rest still failing?
        excess = per_helper["failures"] - per_helper["total"] * base
        rest = per_helper.drop(index=excess.idxmax()).sum()
        if rest["total"] >= p.min_recent:
            rest_p = _rise_p(rest["failures"], rest["total"], bf, bn, disp)
            w.at[i, "problem"] = bool(rest_p < alpha
                                      and rest["failures"] / rest["total"] - base >= p.min_increase)
    return w[cols].sort_values([by, "hour"]).reset_index(drop=True)


def alarm_episodes(alarms: pd.DataFrame, key: str = "helper", flag: str = "alarm") -> pd.DataFrame:
    """Collapse consecutive flagged hours into episodes.

    ``alarms`` is the output of :func:`helper_alarms` (``key='helper'``, ``flag='alarm'``)
    or of :func:`network_problems` (``key='probe_cc'``, ``flag='problem'``). Returns one row
    per episode: key, start, end (last flagged hour), hours, peak_rate, baseline_rate (at the
    start), plus scope/top_cc when present.
    """
    cols = [key, "start", "end", "hours", "peak_rate", "baseline_rate"]
    extra = [c for c in ("scope", "top_cc") if c in alarms.columns]
    if alarms.empty or not alarms[flag].any():
        return pd.DataFrame(columns=cols + extra)
    a = alarms.sort_values([key, "hour"]).copy()
    a[flag] = a[flag].astype(bool)
    new_run = a[flag] & ~a.groupby(key)[flag].shift(1, fill_value=False).astype(bool)
    a["episode"] = new_run.cumsum()
    a = a[a[flag]]
    agg = {"start": ("hour", "min"), "end": ("hour", "max"), "hours": ("hour", "size"),
           "peak_rate": ("recent_rate", "max"), "baseline_rate": ("baseline_rate", "first")}
    for c in extra:
        agg[c] = (c, "first")
    out = a.groupby([key, "episode"], as_index=False).agg(**agg)
    return out[cols + extra].sort_values("start", ascending=False).reset_index(drop=True)


def helper_inventory(instances: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Test helper instances from ``test_helper_instances`` (a CollapsingMergeTree).

    Rows are collapsed by summing ``sign`` over identical rows (a ``-1`` cancels the ``+1``
    it updates), keeping rows whose sum is positive; rows lacking ``sign`` count as ``+1``.

    **Join key.** ``host`` is ``rdn + '.' + dns_zone`` (e.g. ``2.th.ooni.org``), the DNS name
    probes use, which equals :func:`helper_host` of fastpath's ``test_helper_address``
    (``https://2.th.ooni.org``). ``name`` cannot be the key: OONI's roaming droplets are
    named ``roaming-th-<timestamp>``, and a rotation gives the same rdn a new instance. When
    ``rdn`` or ``dns_zone`` is blank, ``name`` is used as the host.

    ``state`` is ``destroyed`` (``destroyed_at <= now``), ``draining`` (``draining_at <=
    now``) or ``live``; ``rotated`` is True for the first two. Sorted by host, then
    draining time (the current instance of a host last).
    """
    cols = ["host", "name", "provider", "region", "ipaddr", "draining_at", "destroyed_at",
            "state", "rotated"]
    if instances.empty:
        return pd.DataFrame(columns=cols)
    df = instances.copy()
    text_cols = ["rdn", "dns_zone", "name", "provider", "region", "ipaddr"]
    for c in text_cols:
        if c not in df.columns:
            df[c] = ""
    for c in ("draining_at", "destroyed_at"):
        if c not in df.columns:
            df[c] = pd.NaT
        df[c] = pd.to_datetime(df[c], utc=True)
    if "sign" not in df.columns:
        df["sign"] = 1
    df[text_cols] = df[text_cols].fillna("").astype(str)
    key = [*text_cols, "draining_at", "destroyed_at"]
    df = df.groupby(key, dropna=False, as_index=False)["sign"].sum()
    df = df[df["sign"] > 0]
    has_dns = (df["rdn"] != "") & (df["dns_zone"] != "")
    df["host"] = np.where(has_dns, df["rdn"] + "." + df["dns_zone"], df["name"])
    df["host"] = df["host"].str.lower().str.strip(".")
    now_ts = pd.Timestamp(now)
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    df["state"] = np.where(df["destroyed_at"].notna() & (df["destroyed_at"] <= now_ts), "destroyed",
                           np.where(df["draining_at"].notna() & (df["draining_at"] <= now_ts),
                                    "draining", "live"))
    df["rotated"] = df["state"] != "live"
    df = df.sort_values(["host", "draining_at"], na_position="last")
    return df[cols].reset_index(drop=True)


def helper_summary(counts: pd.DataFrame, inventory: pd.DataFrame, since: datetime | None = None
                   ) -> pd.DataFrame:
    """One row per helper instance (and per host seen only in measurements): measurements,
    failure rate and countries over the counts (from ``since``), with provider, region and
    state from :func:`helper_inventory`.

    A host served by several instances over time (a rotation) has its hours split between
    them: an instance answers from the previous instance's ``draining_at`` until its own
    ``draining_at`` (the DNS name moves when an instance starts draining). Hosts seen in
    measurements but absent from the inventory get state ``unknown``; instances without
    measurements get zero counts.
    """
    df = _check_counts(counts)
    if since is not None:
        s = pd.Timestamp(since)
        df = df[df["hour"] >= (s.tz_convert("UTC").tz_localize(None) if s.tzinfo else s)]
    inv = inventory if not inventory.empty else pd.DataFrame(columns=[
        "host", "name", "provider", "region", "draining_at", "state", "rotated"])
    df = df.assign(instance="")
    for host, group in inv.groupby("host", sort=False):
        start = pd.Timestamp.min
        for _, inst in group.iterrows():
            end = inst["draining_at"]
            end = pd.Timestamp.max if pd.isna(end) else pd.Timestamp(end).tz_convert("UTC").tz_localize(None)
            sel = (df["helper"] == host) & (df["hour"] >= start) & (df["hour"] < end)
            df.loc[sel, "instance"] = inst["name"]
            start = end
    per = df.groupby(["helper", "instance"]).agg(
        total=("total", "sum"), failures=("failures", "sum"), countries=("probe_cc", "nunique"),
        first_seen=("hour", "min"), last_seen=("hour", "max")).reset_index()
    meta = inv.rename(columns={"host": "helper", "name": "instance"})[
        ["helper", "instance", "provider", "region", "state", "rotated"]]
    out = per.merge(meta, on=["helper", "instance"], how="outer")
    out["state"] = out["state"].fillna("unknown")
    out[["total", "failures", "countries"]] = out[["total", "failures", "countries"]].fillna(0).astype("int64")
    out["failure_rate"] = out["failures"] / out["total"].where(out["total"] > 0)
    out[["provider", "region", "instance"]] = out[["provider", "region", "instance"]].fillna("")
    cols = ["helper", "instance", "provider", "region", "state", "total", "failures",
            "failure_rate", "countries", "first_seen", "last_seen"]
    return out[cols].sort_values(["helper", "first_seen"], na_position="last").reset_index(drop=True)


def failure_rate_chart(rates: pd.DataFrame,
                       title: str = "Failure rate per test helper (hourly)") -> alt.Chart:
    """Altair line chart of :func:`hourly_rates` output (hour × rate, one line per helper)."""
    import altair as alt

    data = rates.dropna(subset=["rate"])
    return alt.Chart(data, title=title).mark_line().encode(
        x=alt.X("hour:T", title="hour (UTC)"),
        y=alt.Y("rate:Q", title="failure rate", axis=alt.Axis(format="%")),
        color=alt.Color("helper:N"),
        tooltip=["helper", "hour:T", "total", "failures", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(width=700, height=260)


#: Failure-rate thresholds of :func:`country_heatmap`'s colours (< 15 %, 15-25 %, …, ≥ 60 %).
HEATMAP_STEPS = (0.15, 0.25, 0.4, 0.6)
HEATMAP_COLOURS = ("#e8e8e8", "#fde68a", "#f59e0b", "#dc2626", "#7f1d1d")


def country_heatmap(counts: pd.DataFrame, since: datetime | None = None, top: int = 25,
                    title: str = "Failure rate by probe country and helper") -> alt.Chart:
    """Altair heatmap country × helper of the failure rate from ``since`` (top countries by
    measurements). A helper failing for everyone is a full column; a country's network
    problem is a full row.

    The colour is a threshold scale (:data:`HEATMAP_STEPS`): up to 15 % (the usual rate of a
    healthy helper is 5-10 %) is grey, then yellow, orange, red and dark red, so only
    unusual cells catch the eye (a continuous red scale coloured every cell)."""
    import altair as alt

    df = _check_counts(counts)
    if since is not None:
        s = pd.Timestamp(since)
        df = df[df["hour"] >= (s.tz_convert("UTC").tz_localize(None) if s.tzinfo else s)]
    g = df.groupby(["probe_cc", "helper"], as_index=False)[["total", "failures"]].sum()
    keep = g.groupby("probe_cc")["total"].sum().nlargest(top).index
    g = g[g["probe_cc"].isin(keep) & (g["total"] > 0)]
    g["rate"] = g["failures"] / g["total"]
    return alt.Chart(g, title=title).mark_rect().encode(
        x=alt.X("helper:N", title="test helper"), y=alt.Y("probe_cc:N", title="probe country"),
        color=alt.Color("rate:Q", title="failure rate",
                        scale=alt.Scale(type="threshold", domain=list(HEATMAP_STEPS),
                                        range=list(HEATMAP_COLOURS)),
                        legend=alt.Legend(format=".0%", titleLimit=300, labelLimit=300)),
        tooltip=["probe_cc", "helper", "total", "failures", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(width=max(120, 60 * g["helper"].nunique()))


def alarm_lines(current: pd.DataFrame, inventory: pd.DataFrame | None = None) -> dict[str, str]:
    """One Slack line per helper alarmed in ``current`` (rows of :func:`helper_alarms`),
    by helper host, in the order of ``current``: rate, baseline, p-value, the rate outside
    the top country, and where the helper runs when ``inventory`` knows it."""
    lines: dict[str, str] = {}
    inv = None
    if inventory is not None and not inventory.empty:
        # the current instance of each host is the last one (see helper_inventory)
        inv = inventory.drop_duplicates("host", keep="last").set_index("host")
    for _, r in current[current["alarm"].astype(bool)].iterrows():
        where = ""
        if inv is not None and r["helper"] in inv.index:
            i = inv.loc[r["helper"]]
            where = f" ({i['provider']} {i['region']}, {i['state']})"
        lines[str(r["helper"])] = (
            f"{r['helper']}{where}: {r['recent_rate']:.1%} of {r['recent_total']} measurements "
            f"failed in the last hours vs baseline {r['baseline_rate']:.1%} "
            f"(p={r['p_value']:.1e}); still {r['rest_rate']:.1%} outside {r['top_cc']}"
        )
    return lines


def alarm_message(current: pd.DataFrame, inventory: pd.DataFrame | None = None) -> str:
    """Slack text for the helpers alarmed in ``current``: the :func:`alarm_lines` as bullets."""
    return "\n".join(f"• {line}" for line in alarm_lines(current, inventory).values())
