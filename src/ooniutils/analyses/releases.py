"""Probe release comparison: is the newest version of a probe worse than the previous ones?

Input (see :mod:`ooniutils.datasets.releases`): per (``software_version``, ``test_name``)
counts — ``total``, ``failures`` (``msm_failure``), ``anomalies`` — and optionally a sample of
``test_runtime`` values per (version, test).

:func:`compare_release` takes the newest version (semantic order, :func:`version_key`) and
pools the ``previous`` versions before it as the baseline. Per test_name it tests

* failure rate and anomaly rate: one-sided Fisher exact test (newest > baseline);
* runtime: one-sided Mann-Whitney U (newest stochastically larger).

All p-values of one comparison are corrected together with Benjamini-Hochberg
(``scipy.stats.false_discovery_control``). A row is a **regression** when the adjusted
p-value is below ``alpha`` *and* the effect is material (rates up by at least
``min_increase`` absolute; median runtime up by ``min_runtime_ratio``). Tests with fewer than
``min_samples`` measurements on either side are not tested ("too few measurements"); a
test_name new in this version has "no baseline" — neither ever counts as a regression.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import AnalysisError

if TYPE_CHECKING:  # altair is imported where a chart is drawn: analyses stay light
    import altair as alt

log = logging.getLogger(__name__)

STAT_COLUMNS = ["software_version", "test_name", "total", "failures", "anomalies"]
RESULT_COLUMNS = ["test_name", "metric", "new_version", "new_n", "new_value", "baseline_n",
                  "baseline_value", "test", "p_value", "p_adjusted", "status", "regression"]

try:  # packaging is nearly always present (pip, nbconvert depend on it)
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - exercised only without packaging
    Version = None  # type: ignore[assignment,misc]
    InvalidVersion = ValueError  # type: ignore[assignment,misc]

_TOKEN = re.compile(r"\d+|[A-Za-z]+")


def _fallback_key(version: str) -> tuple[tuple[int, Any], ...]:
    """Tuple key from numeric and alphabetic runs: "3.10.0-beta.3" → (3, 10, 0, "beta", 3).

    Numbers compare as numbers; a pre-release word sorts before the plain release
    ("3.10.0-beta" < "3.10.0"), mirroring semantic versioning.
    """
    parts: list[tuple[int, Any]] = []
    for tok in _TOKEN.findall(version):
        parts.append((2, int(tok)) if tok.isdigit() else (0, tok.lower()))
    parts.append((1, ""))  # end marker: sorts after pre-release words, before more numbers
    return tuple(parts)


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key for probe versions: semantic, so "3.10.0" > "3.9.1".

    Uses :class:`packaging.version.Version` when it parses the string ("3.10.0-beta.3" is
    the pre-release 3.10.0b3, which sorts before 3.10.0); anything else ("3.8.5.1-rc",
    "nightly") falls back to :func:`_fallback_key`. Keys of both kinds compare without
    errors: first by the numeric release parts, then parseable before unparseable, then by
    the parsed version, then by the text.
    """
    text = str(version).strip()
    if Version is not None:
        try:
            v = Version(text)
        except InvalidVersion:
            pass
        else:
            return (tuple((2, n) for n in v.release), 1, v, text)
    return (_fallback_key(text), 0, 0, text)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Distinct versions, oldest first (see :func:`version_key`); blanks dropped."""
    distinct = {str(v) for v in versions if v is not None and str(v).strip()}
    return sorted(distinct, key=version_key)


def _check(stats_df: pd.DataFrame) -> pd.DataFrame:
    missing = set(STAT_COLUMNS) - set(stats_df.columns)
    if missing:
        raise AnalysisError(f"release stats lack column(s) {sorted(missing)}; expected {STAT_COLUMNS}")
    df = stats_df[STAT_COLUMNS].copy()
    for c in ("total", "failures", "anomalies"):
        df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype("int64")
    df["software_version"] = df["software_version"].fillna("").astype(str)
    return df[df["software_version"].str.strip() != ""]


def version_summary(stats_df: pd.DataFrame) -> pd.DataFrame:
    """Per version (oldest first): measurements, tests run, failure and anomaly rates."""
    df = _check(stats_df)
    g = df.groupby("software_version").agg(total=("total", "sum"), failures=("failures", "sum"),
                                           anomalies=("anomalies", "sum"),
                                           tests=("test_name", "nunique"))
    g["failure_rate"] = g["failures"] / g["total"].where(g["total"] > 0)
    g["anomaly_rate"] = g["anomalies"] / g["total"].where(g["total"] > 0)
    order = sort_versions(g.index)
    return g.loc[order].reset_index()


def _fisher_greater(k1: int, n1: int, k0: int, n0: int) -> float:
    table = [[k1, n1 - k1], [k0, n0 - k0]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def compare_release(stats_df: pd.DataFrame, runtimes: pd.DataFrame | None = None,
                    newest: str | None = None, previous: int = 3, alpha: float = 0.05,
                    min_samples: int = 50, min_increase: float = 0.02,
                    min_runtime_ratio: float = 1.2) -> pd.DataFrame:
    """Compare the newest version with the ``previous`` versions before it, per test_name.

    Returns one row per (test_name, metric) with columns :data:`RESULT_COLUMNS`; metric is
    ``failure_rate``, ``anomaly_rate`` or ``runtime_median`` (seconds). ``status`` is one of
    ``regression``, ``ok``, ``too few measurements``, ``no baseline`` (test new in this
    version) or ``not run`` (in the baseline but not in the newest version). With one version
    only, every row is ``no baseline``. Empty input → empty result. See the module doc for
    the tests and thresholds.
    """
    df = _check(stats_df)
    if df.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    versions = sort_versions(df["software_version"])
    if newest is None:
        newest = versions[-1]
    elif newest not in versions:
        raise AnalysisError(f"version {newest!r} has no measurements; known: {versions}")
    base_versions = versions[: versions.index(newest)][-previous:] if previous > 0 else []
    new = df[df["software_version"] == newest].groupby("test_name")[["total", "failures", "anomalies"]].sum()
    base = df[df["software_version"].isin(base_versions)].groupby("test_name")[
        ["total", "failures", "anomalies"]].sum()
    rt_new, rt_base = _runtime_samples(runtimes, newest, base_versions)

    rows: list[dict[str, Any]] = []
    for test in sorted(set(new.index) | set(base.index)):
        n1 = int(new["total"].get(test, 0))
        n0 = int(base["total"].get(test, 0))
        for metric, col in (("failure_rate", "failures"), ("anomaly_rate", "anomalies")):
            k1 = int(new[col].get(test, 0))
            k0 = int(base[col].get(test, 0))
            row = dict(test_name=test, metric=metric, new_version=newest, new_n=n1,
                       new_value=k1 / n1 if n1 else np.nan, baseline_n=n0,
                       baseline_value=k0 / n0 if n0 else np.nan, test="fisher exact (one-sided)",
                       p_value=np.nan, status=_pre_status(n1, n0, min_samples))
            if row["status"] == "":
                row["p_value"] = _fisher_greater(k1, n1, k0, n0)
            rows.append(row)
        r1 = rt_new.get(test, np.array([]))
        r0 = rt_base.get(test, np.array([]))
        row = dict(test_name=test, metric="runtime_median", new_version=newest, new_n=len(r1),
                   new_value=float(np.median(r1)) if len(r1) else np.nan, baseline_n=len(r0),
                   baseline_value=float(np.median(r0)) if len(r0) else np.nan,
                   test="mann-whitney u (one-sided)", p_value=np.nan,
                   status=_pre_status(len(r1), len(r0), min_samples))
        if runtimes is None:
            row["status"] = "no runtime sample"
        if row["status"] == "":
            row["p_value"] = float(stats.mannwhitneyu(r1, r0, alternative="greater").pvalue)
        rows.append(row)
    out = pd.DataFrame(rows)
    tested = out["p_value"].notna()
    out["p_adjusted"] = np.nan
    if tested.any():
        out.loc[tested, "p_adjusted"] = stats.false_discovery_control(out.loc[tested, "p_value"])
    material = np.where(
        out["metric"] == "runtime_median",
        out["new_value"] >= out["baseline_value"] * min_runtime_ratio,
        out["new_value"] - out["baseline_value"] >= min_increase,
    )
    out["regression"] = tested & (out["p_adjusted"] < alpha) & material
    out.loc[tested, "status"] = np.where(out.loc[tested, "regression"], "regression", "ok")
    log.info("compared %s with %s: %d regression(s)", newest, base_versions, int(out["regression"].sum()))
    return out[RESULT_COLUMNS]


def _pre_status(n_new: int, n_base: int, min_samples: int) -> str:
    if n_new == 0:
        return "not run"
    if n_base == 0:
        return "no baseline"
    if n_new < min_samples or n_base < min_samples:
        return "too few measurements"
    return ""


def _runtime_samples(runtimes: pd.DataFrame | None, newest: str, base_versions: list[str]
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if runtimes is None or runtimes.empty:
        return {}, {}
    missing = {"software_version", "test_name", "test_runtime"} - set(runtimes.columns)
    if missing:
        raise AnalysisError(f"runtime sample lacks column(s) {sorted(missing)}")
    rt = runtimes.copy()
    rt["test_runtime"] = pd.to_numeric(rt["test_runtime"], errors="coerce")
    rt = rt[np.isfinite(rt["test_runtime"])]
    new = {t: g.to_numpy() for t, g in rt[rt["software_version"] == newest].groupby("test_name")["test_runtime"]}
    base = {t: g.to_numpy() for t, g in
            rt[rt["software_version"].isin(base_versions)].groupby("test_name")["test_runtime"]}
    return new, base


def regression_message(software_name: str, result: pd.DataFrame) -> str:
    """Slack text listing the regressions of :func:`compare_release` (empty when none)."""
    reg = result[result["regression"]]
    if reg.empty:
        return ""
    lines = [f"{software_name} {reg['new_version'].iloc[0]} regressed vs previous versions:"]
    for _, r in reg.iterrows():
        fmt = "{:.1%}" if r["metric"] != "runtime_median" else "{:.2f}s"
        lines.append(f"• {r['test_name']} {r['metric']}: {fmt.format(r['new_value'])} "
                     f"(n={r['new_n']}) vs {fmt.format(r['baseline_value'])} (n={r['baseline_n']}),"
                     f" adjusted p={r['p_adjusted']:.1e}")
    return "\n".join(lines)


def rates_chart(stats_df: pd.DataFrame, title: str) -> alt.FacetChart:
    """Altair chart: failure and anomaly rate per version (semantic order) and test_name."""
    import altair as alt

    df = _check(stats_df)
    g = df.groupby(["software_version", "test_name"], as_index=False)[["total", "failures", "anomalies"]].sum()
    g = g[g["total"] > 0]
    g["failure_rate"] = g["failures"] / g["total"]
    g["anomaly_rate"] = g["anomalies"] / g["total"]
    g = g.rename(columns={"failure_rate": "failure rate", "anomaly_rate": "anomaly rate"})
    long = g.melt(id_vars=["software_version", "test_name", "total"],
                  value_vars=["failure rate", "anomaly rate"], var_name="metric", value_name="rate")
    order = sort_versions(g["software_version"])
    # one title over the whole facet (a title on the inner chart repeats over each panel and
    # overlapped the panel headers); the panel headers say which rate they show
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("software_version:N", sort=order, title="version"),
        y=alt.Y("rate:Q", axis=alt.Axis(format="%"), title="share of measurements"),
        color=alt.Color("test_name:N", title="test", legend=alt.Legend(labelLimit=400)),
        tooltip=["software_version", "test_name", "metric", "total", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(width=300, height=220).facet(
        column=alt.Column("metric:N", title=None, sort=["failure rate", "anomaly rate"],
                          header=alt.Header(labelFontSize=13, labelFontWeight="bold")),
    ).properties(title=title)
