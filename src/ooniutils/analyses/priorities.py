"""Test-list URL prioritisation, as OONI's API computes it, and how measurements follow it.

OONI hands each probe a list of test-list URLs ordered by ``priority / max(msmt_cnt, 0.1)``
(``msmt_cnt``: the URL's measurements in the probe's country over the last week), where a
URL's priority is the sum of the ``priority`` of every ``url_priorities`` rule it matches.
A rule matches when each of its ``category_code``, ``domain`` and ``url`` is ``*`` (or
empty) or equal to the URL's, and its ``cc`` is ``*``/empty or the probe's country. URLs
with a priority of 0 or less are never handed out. The ordering balances counts towards
priorities, so over time a country's measurements of its listed URLs should be shared out in
proportion to their priorities: that is the yardstick of :func:`coverage_vs_priority`.

Country codes are compared case-insensitively: OONI stores a country list's ``cc`` as the
lower-case file name (``br``) and rules with upper-case codes (``BR``). (OONI's own match
compares them as written, so a country rule there only reaches the global list's URLs; we
apply it to both, which is what the rule editor promises.)

All functions are pure (DataFrames in, DataFrames out); the queries are in
:mod:`ooniutils.datasets.priorities`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..exceptions import AnalysisError

if TYPE_CHECKING:
    import altair as alt

log = logging.getLogger(__name__)

WILDCARDS = ("*", "")
RULE_COLUMNS = ("category_code", "cc", "domain", "url", "priority")
ENTRY_COLUMNS = ("url", "domain", "cc", "category_code")
GLOBAL_CC = "ZZ"


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AnalysisError(f"{what} lacks column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))}")


def active_rules(rules: pd.DataFrame) -> pd.DataFrame:
    """Collapse ``url_priorities`` rows by ``sign`` as ClickHouse's CollapsingMergeTree does:
    identical rules add up their signs; a rule whose signs sum to n > 0 counts n times
    (column ``copies``), one that sums to 0 is gone. A negative sum (more cancellations than
    insertions: a damaged table) is dropped and logged. Without a ``sign`` column every row
    is one rule. Strings are stripped; ``cc`` is upper-cased."""
    _require(rules, RULE_COLUMNS, "url_priorities rules")
    df = rules.copy()
    if "sign" not in df.columns:
        df["sign"] = 1
    for c in ("category_code", "cc", "domain", "url"):
        df[c] = df[c].fillna("").astype(str).str.strip()
    df["cc"] = df["cc"].str.upper()
    try:
        df["priority"] = pd.to_numeric(df["priority"], errors="raise").astype("int64")
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"url_priorities rules: priority must be an integer ({exc})") from exc
    out = df.groupby(list(RULE_COLUMNS), as_index=False, sort=True)["sign"].sum().rename(columns={"sign": "copies"})
    bad = out[out.copies < 0]
    if not bad.empty:
        log.warning("%d url_priorities rule(s) cancelled more often than added; ignored", len(bad))
    return out[out.copies > 0].reset_index(drop=True)


def _is_wild(values: pd.Series) -> np.ndarray:
    return values.isin(WILDCARDS).to_numpy()


def effective_priorities(entries: pd.DataFrame, rules: pd.DataFrame, countries: Iterable[str]) -> pd.DataFrame:
    """Each URL's priority for a probe in each of ``countries``.

    ``entries``: the test list (``citizenlab``: url, domain, cc, category_code); a country's
    candidates are its own list's URLs and the global list's (``cc`` ZZ), a URL in both
    counted once (its country entry). ``rules``: ``url_priorities`` rows (collapsed here).

    Returns cc, url, domain, category_code, list (``country`` or ``global``), priority and
    rules (how many rules matched), sorted by country then priority (highest first).
    """
    _require(entries, ENTRY_COLUMNS, "test list")
    rules = active_rules(rules)
    ent = entries[list(ENTRY_COLUMNS)].copy()
    for c in ENTRY_COLUMNS:
        ent[c] = ent[c].fillna("").astype(str).str.strip()
    ent["cc"] = ent["cc"].str.upper()
    frames = []
    for cc in sorted({str(c).strip().upper() for c in countries}):
        if not cc:
            continue
        cand = ent[(ent.cc == cc) | (ent.cc == GLOBAL_CC)].copy()
        cand["list"] = np.where(cand.cc == GLOBAL_CC, "global", "country")
        cand = cand.sort_values(["url", "list"]).drop_duplicates("url", keep="first")
        cand = cand.reset_index(drop=True)
        cc_rules = rules[rules.cc.isin((*WILDCARDS, cc))]
        prio = np.zeros(len(cand), np.int64)
        n_rules = np.zeros(len(cand), np.int64)
        for r in cc_rules.itertuples(index=False):
            m = np.ones(len(cand), bool)
            for col in ("category_code", "domain", "url"):
                val = getattr(r, col)
                if val not in WILDCARDS:
                    m &= (cand[col] == val).to_numpy()
            prio += np.where(m, r.priority * r.copies, 0)
            n_rules += np.where(m, r.copies, 0)
        cand["cc"] = cc
        cand["priority"] = prio
        cand["rules"] = n_rules
        frames.append(cand)
    cols = ["cc", "url", "domain", "category_code", "list", "priority", "rules"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)[cols]
    return out.sort_values(["cc", "priority", "url"], ascending=[True, False, True]).reset_index(drop=True)


def coverage_vs_priority(priorities: pd.DataFrame, counts: pd.DataFrame, *, low: float = 0.5,
                         high: float = 2.0, min_expected: float = 5.0) -> pd.DataFrame:
    """Compare each URL's measurements with its share of its country's priority.

    ``priorities``: from :func:`effective_priorities`. ``counts``: cc (or probe_cc), url (or
    input), n — measurements per URL over a window. For each country the measurements of its
    listed URLs are shared out in proportion to the positive priorities (``expected``);
    ``ratio`` = n / expected. ``status``: ``under`` (ratio < ``low`` with at least
    ``min_expected`` expected), ``over`` (ratio > ``high`` with at least ``min_expected``
    measured), ``excluded`` (priority ≤ 0, never handed out, yet measured), else ``ok``.
    URLs measured in a country but on none of its lists are left out (see
    :func:`unlisted_measurements`).
    """
    _require(priorities, ("cc", "url", "priority"), "priorities")
    c = counts.rename(columns={"probe_cc": "cc", "input": "url"})
    _require(c, ("cc", "url", "n"), "counts")
    c = c.assign(cc=c.cc.astype(str).str.upper()).groupby(["cc", "url"], as_index=False)["n"].sum()
    df = priorities.merge(c, on=["cc", "url"], how="left")
    df["n"] = df["n"].fillna(0).astype("int64")
    pos = df.priority.clip(lower=0).astype(float)
    prio_total = pos.groupby(df.cc).transform("sum")
    n_total = df.n.where(df.priority > 0, 0).groupby(df.cc).transform("sum")
    df["expected_share"] = np.where(prio_total > 0, pos / prio_total.where(prio_total > 0, 1), 0.0)
    df["expected"] = df.expected_share * n_total
    df["ratio"] = np.where(df.expected > 0, df.n / df.expected.where(df.expected > 0, 1), np.nan)
    status = np.full(len(df), "ok", dtype=object)
    status[(df.priority <= 0) & (df.n > 0)] = "excluded"
    status[(df.priority > 0) & (df.expected >= min_expected) & (df.ratio < low)] = "under"
    status[(df.priority > 0) & (df.n >= min_expected) & (df.ratio > high)] = "over"
    df["status"] = status
    return df


def country_summary(coverage: pd.DataFrame) -> pd.DataFrame:
    """Per country: listed URLs, URLs with positive priority, measurements, how many are
    under/over-tested or excluded-but-measured, the share of listed URLs never measured, and
    the Spearman rank correlation of priority with measurements (1: counts follow priority)."""
    rows = []
    for cc, g in coverage.groupby("cc", sort=True):
        live = g[g.priority > 0]
        corr = np.nan
        if len(live) >= 3 and live.priority.nunique() > 1 and live.n.nunique() > 1:
            corr = float(live.priority.rank().corr(live.n.rank()))
        rows.append({
            "cc": cc, "urls": len(g), "prioritised": len(live), "measurements": int(g.n.sum()),
            "under": int((g.status == "under").sum()), "over": int((g.status == "over").sum()),
            "excluded_measured": int((g.status == "excluded").sum()),
            "never_measured": float((live.n == 0).mean()) if len(live) else np.nan,
            "spearman": corr,
        })
    return pd.DataFrame(rows, columns=["cc", "urls", "prioritised", "measurements", "under", "over",
                                       "excluded_measured", "never_measured", "spearman"])


def unlisted_measurements(priorities: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Measured (cc, url) pairs on none of the country's lists: cc, url, n (most first)."""
    c = counts.rename(columns={"probe_cc": "cc", "input": "url"})
    c = c.assign(cc=c.cc.astype(str).str.upper()).groupby(["cc", "url"], as_index=False)["n"].sum()
    c = c[c.cc.isin(set(priorities.cc)) & (c.url != "")]
    known = priorities[["cc", "url"]].drop_duplicates()
    out = c.merge(known, on=["cc", "url"], how="left", indicator=True)
    out = out[out["_merge"] == "left_only"].drop(columns="_merge")
    return out.sort_values(["n", "cc", "url"], ascending=[False, True, True]).reset_index(drop=True)


def probe_list(priorities: pd.DataFrame, counts: pd.DataFrame, limit: int = 100) -> pd.DataFrame:
    """The list OONI's API would hand a probe in each country: URLs with priority > 0
    ordered by ``priority / max(n, 0.1)`` (n: the URL's recent measurements there), the
    first ``limit`` per country. Columns cc, url, category_code, priority, n, weight, rank."""
    if limit < 1:
        raise AnalysisError(f"limit must be at least 1, got {limit}")
    c = counts.rename(columns={"probe_cc": "cc", "input": "url"})
    c = c.assign(cc=c.cc.astype(str).str.upper()).groupby(["cc", "url"], as_index=False)["n"].sum()
    df = priorities[priorities.priority > 0].merge(c, on=["cc", "url"], how="left")
    df["n"] = df["n"].fillna(0).astype("int64")
    df["weight"] = df.priority / np.maximum(df.n, 0.1)
    df = df.sort_values(["cc", "weight", "url"], ascending=[True, False, True])
    df["rank"] = df.groupby("cc").cumcount() + 1
    return df[df["rank"] <= limit][["cc", "url", "category_code", "priority", "n", "weight", "rank"]].reset_index(drop=True)


def compare_weightings(entries: pd.DataFrame, counts: pd.DataFrame, weightings: Mapping[str, pd.DataFrame],
                       countries: Iterable[str], *, days: Iterable[pd.Timestamp] | None = None,
                       window_days: int = 7, limit: int = 100, baseline: str | None = None,
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay alternative rule sets on past data.

    ``counts``: day, cc (or probe_cc), url (or input), n — daily measurements per URL.
    For each replay day (default: every day of ``counts`` after its first ``window_days``)
    and country, each weighting's probe list (:func:`probe_list`, ``limit`` URLs) is built
    from the ``window_days`` before that day, as the API would have built it then.

    Returns ``(summary, categories)``. ``summary`` per weighting and country, averaged over
    the replay days: ``listed`` (URLs with priority > 0), ``list_size``, ``unmeasured_share``
    (share of the handed-out list not measured in the window: coverage the list adds),
    ``mean_recent`` (mean recent count of listed URLs), ``overlap`` (Jaccard index with the
    ``baseline`` weighting's list, default the first one) and ``top_category``.
    ``categories``: weighting, cc, category_code, share — the category mix of the lists.
    """
    if not weightings:
        raise AnalysisError("compare_weightings needs at least one weighting")
    names = list(weightings)
    baseline = baseline or names[0]
    if baseline not in weightings:
        raise AnalysisError(f"baseline {baseline!r} is not one of the weightings {names}")
    c = counts.rename(columns={"probe_cc": "cc", "input": "url"})
    _require(c, ("day", "cc", "url", "n"), "daily counts")
    c = c.assign(day=pd.to_datetime(c["day"]).dt.normalize(), cc=c.cc.astype(str).str.upper())
    countries = sorted({str(x).upper() for x in countries})
    prios = {name: effective_priorities(entries, rules, countries) for name, rules in weightings.items()}
    if days is None:
        all_days = sorted(c["day"].unique())
        days = [pd.Timestamp(d) for d in all_days[window_days:]]
    days = [pd.Timestamp(d).normalize() for d in days]
    if not days:
        raise AnalysisError(
            f"no day to replay: the counts cover {c['day'].nunique()} day(s), "
            f"the window needs more than {window_days}")
    rows: list[dict[str, object]] = []
    cats: list[dict[str, object]] = []
    for day in days:
        window = c[(c["day"] < day) & (c["day"] >= day - pd.Timedelta(days=window_days))]
        lists = {name: probe_list(p, window, limit) for name, p in prios.items()}
        for name, lst in lists.items():
            for cc in countries:
                mine = lst[lst.cc == cc]
                base = set(lists[baseline].loc[lists[baseline].cc == cc, "url"])
                urls = set(mine.url)
                union = urls | base
                rows.append({
                    "weighting": name, "cc": cc,
                    "listed": int(((prios[name].cc == cc) & (prios[name].priority > 0)).sum()),
                    "list_size": len(mine),
                    "unmeasured_share": float((mine.n == 0).mean()) if len(mine) else np.nan,
                    "mean_recent": float(mine.n.mean()) if len(mine) else np.nan,
                    "overlap": len(urls & base) / len(union) if union else np.nan,
                })
                if len(mine):
                    mix = mine.category_code.value_counts(normalize=True)
                    cats.extend({"weighting": name, "cc": cc, "category_code": k, "share": float(v)}
                                for k, v in mix.items())
    summary = pd.DataFrame(rows).groupby(["weighting", "cc"], as_index=False, sort=False).mean(numeric_only=True)
    cat = pd.DataFrame(cats, columns=["weighting", "cc", "category_code", "share"])
    if not cat.empty:
        cat = cat.groupby(["weighting", "cc", "category_code"], as_index=False)["share"].sum()
        cat["share"] = cat["share"] / len(days)
        top = cat.sort_values("share", ascending=False).drop_duplicates(["weighting", "cc"])
        summary = summary.merge(top[["weighting", "cc", "category_code"]].rename(
            columns={"category_code": "top_category"}), on=["weighting", "cc"], how="left")
    else:
        summary["top_category"] = None
    return summary, cat


def scale_rules(rules: pd.DataFrame, factors: Mapping[str, float]) -> pd.DataFrame:
    """A copy of ``rules`` with the priority of every rule of a category multiplied by
    ``factors[category]`` (rounded), for building alternative weightings."""
    _require(rules, RULE_COLUMNS, "url_priorities rules")
    out = rules.copy()
    f = out.category_code.map(lambda c: factors.get(c, 1.0)).astype(float)
    out["priority"] = np.rint(out.priority.astype(float) * f).astype("int64")
    return out


def priority_chart(coverage: pd.DataFrame, title: str = "Measurements against priority, per URL") -> alt.Chart:
    """Altair scatter of :func:`coverage_vs_priority` output: priority (x) against
    measurements (y) per URL, coloured by status, one panel per country. Counts that follow
    priorities rise from left to right; under-tested URLs sit low on the right."""
    import altair as alt

    data = coverage[["cc", "url", "category_code", "priority", "n", "expected", "status"]]
    drawn = data[(data.n > 0) | (data.status != "ok")]
    if len(drawn) < len(data):  # thousands of unmeasured, unremarkable URLs make a huge SVG
        title = f"{title} ({len(data) - len(drawn):,} unmeasured URLs with status ok not drawn)"
    return alt.Chart(drawn, title=title).mark_circle(size=40, opacity=0.7).encode(
        x=alt.X("priority:Q", title="effective priority (sum of matching rules)"),
        y=alt.Y("n:Q", title="measurements in the window"),
        color=alt.Color("status:N", title="status",
                        scale=alt.Scale(domain=["ok", "under", "over", "excluded"],
                                        range=["#9e9e9e", "#d62728", "#1f77b4", "#ff7f0e"])),
        tooltip=["cc", "url", "category_code", "priority", "n", alt.Tooltip("expected:Q", format=".1f"), "status"],
    ).properties(width=280, height=220).facet(facet=alt.Facet("cc:N", title="probe country"), columns=3)


def category_mix_chart(categories: pd.DataFrame,
                       title: str = "Category mix of the URL list each weighting hands out") -> alt.Chart:
    """Altair stacked bars of :func:`compare_weightings`' category shares: one bar per
    weighting, one panel per country."""
    import altair as alt

    return alt.Chart(categories, title=title).mark_bar().encode(
        x=alt.X("share:Q", title="share of the handed-out list", axis=alt.Axis(format="%"), stack="normalize"),
        y=alt.Y("weighting:N", title=None),
        color=alt.Color("category_code:N", title="category"),
        tooltip=["weighting", "cc", "category_code", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=520, height=alt.Step(22)).facet(row=alt.Row("cc:N", title="probe country"))
