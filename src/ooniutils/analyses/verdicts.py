"""The finding of each analysis notebook (test helpers, releases, duplicates, events, logs,
TLS): pure functions from what the notebook computed to a :class:`~ooniutils.findings.Verdict`
``(level, summary, detail)``, passed on as ``report_finding(*verdict)``.

The rule everywhere: ``alarm`` when the notebook alerts (or would, under jupycron),
``warning`` for what an operator should look at but is not alerted, ``no_data`` when the
notebook could not judge (a monitoring notebook that cannot see never says ``ok``), ``ok``
otherwise, with the count of what was checked.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from ..findings import Verdict

__all__ = ["duplicates_finding", "events_finding", "helper_finding", "incoming_finding",
           "logs_finding", "release_finding", "tls_finding"]

#: A probe type whose last 7 days fell by at least this much against the 7 days before, from
#: at least :data:`WEEKLY_FLOOR` measurements, is worth a look (the hourly flow notebooks
#: alarm on sharper drops; this is the slow, week-scale view).
WEEKLY_DROP = 0.5
WEEKLY_FLOOR = 100

_SHOWN = 3


def _pct(x: float) -> str:
    return f"{x:.0%}".replace("%", " %")


def _more(n: int) -> str:
    return f"; {n - _SHOWN} more" if n > _SHOWN else ""


def helper_finding(current: pd.DataFrame, silence: Any = None) -> Verdict:
    """The hourly test-helper notebook: ``current`` = :func:`helper_alarms` rows of the hour
    evaluated; ``silence`` = the total outage over the helper counts, or None."""
    cols = [c for c in ("helper", "recent_rate", "baseline_rate", "recent_total", "status",
                        "scope", "top_cc") if c in current.columns]
    if silence:
        return Verdict("alarm", silence.describe("web_connectivity measurements with a test "
                                                 "helper") + ": helper failures cannot be judged")
    if current.empty:
        return Verdict("no_data", "no test helper has measurements up to the hour evaluated")
    alarmed = current[current["alarm"].astype(bool)]
    if len(alarmed):
        parts = [f"{r.helper} fails {_pct(r.recent_rate)} vs {_pct(r.baseline_rate)} usually"
                 for r in alarmed.head(_SHOWN).itertuples()]
        return Verdict("alarm", "test helper failing for all probes: " + "; ".join(parts)
                       + _more(len(alarmed)), alarmed[cols])
    elevated = current[current["status"] == "elevated"]
    if len(elevated):
        parts = [f"{r.helper} {_pct(r.recent_rate)} vs {_pct(r.baseline_rate)}, concentrated in "
                 f"{r.top_cc}" for r in elevated.head(_SHOWN).itertuples()]
        return Verdict("warning", "failure rise from one place (a network, not the helper): "
                       + "; ".join(parts) + _more(len(elevated)), elevated[cols])
    judged = current[current["status"] == "ok"]
    if judged.empty:
        return Verdict("no_data", f"{len(current)} test helpers, none with enough measurements "
                       "to judge", current[cols])
    return Verdict("ok", f"{len(judged)} test helpers at their usual failure rate")


def release_finding(label: str, result: pd.DataFrame, versions: list[str]) -> Verdict:
    """A probe release notebook: ``result`` = :func:`compare_release` rows, ``versions`` the
    versions measured in semantic order (the newest last)."""
    if len(versions) < 2:
        only = versions[0] if versions else "none"
        return Verdict("no_data", f"{label}: only one version measured ({only}), nothing to "
                       "compare with")
    newest = versions[-1]
    reg = result[result["regression"].astype(bool)] if len(result) else result
    cols = [c for c in ("test_name", "metric", "new_value", "baseline_value", "p_adjusted")
            if c in result.columns]
    if len(reg):
        parts = [f"{r.test_name} {r.metric}" for r in reg.head(_SHOWN).itertuples()]
        return Verdict("alarm", f"{label} {newest}: regression in " + ", ".join(parts)
                       + _more(len(reg)), reg[cols])
    tested = result[result["status"] == "ok"] if len(result) else result
    if tested.empty:
        return Verdict("no_data", f"{label} {newest}: too few measurements to compare with "
                       "the previous versions")
    return Verdict("ok", f"{label} {newest}: no regression in {len(tested)} test/metric "
                   "comparisons with the previous versions")


def duplicates_finding(dups: pd.DataFrame, n_lists: int) -> Verdict:
    """The duplicate test-list URLs notebook (:func:`find_duplicate_test_list_urls`)."""
    if dups.empty:
        return Verdict("ok", f"no duplicate among {n_lists} test-list entries")
    n_urls = dups["normalized_url"].nunique()
    by_cc = dups.groupby("cc")["normalized_url"].nunique().sort_values(ascending=False)
    detail = by_cc.rename("urls listed twice").reset_index().head(20)
    return Verdict("warning", f"{n_urls} URLs listed more than once ({int(dups['exact'].sum())} "
                   f"exact rows, {int(dups['near'].sum())} near rows) among {n_lists} entries",
                   detail)


def incoming_finding(outage: Any, weekly: pd.DataFrame) -> Verdict:
    """The multi-year incoming measurements notebook: ``outage`` is
    :func:`ooniutils.analyses.flow.total_outage` of the last complete day (None when there
    was any measurement), ``weekly`` has per ``software_name`` (index) the columns
    ``last_7_days`` and ``previous_7_days``. Alarm on a total outage; warning when a probe
    type fell by :data:`WEEKLY_DROP` or more week over week; no_data without a recent week."""
    if outage:
        return Verdict("alarm", outage.describe())
    if weekly.empty:
        return Verdict("no_data", "no measurements in the recent weeks to compare")
    prev = weekly["previous_7_days"]
    change = weekly["last_7_days"] / prev.where(prev > 0) - 1
    # assign first: a column set on an empty frame would bring its own index back
    marked = weekly.assign(change=change.round(3))
    drops = marked[(prev >= WEEKLY_FLOOR) & (change <= -WEEKLY_DROP)]
    total = int(weekly["last_7_days"].sum())
    if drops.empty:
        return Verdict("ok", f"{total:,} measurements in the last 7 days from {len(weekly)} probe "
                       f"types; none fell by {_pct(WEEKLY_DROP)} or more week over week")
    drops = drops.sort_values("change")
    names = [f"{name} {_pct(-c)}" for name, c in drops["change"].items()]
    return Verdict("warning", "down week over week: " + ", ".join(names[:_SHOWN]) + _more(len(names)),
                   drops.reset_index().rename(columns={"index": "software_name"}))


def events_finding(table: pd.DataFrame, new: pd.DataFrame, lookback: str) -> Verdict:
    """The blocking events notebook: ``table`` = every changepoint of the lookback,
    ``new`` = those not announced before (:func:`new_changepoints`)."""
    cols = [c for c in ("ts", "probe_cc", "probe_asn", "domain", "change", "block_type")
            if c in new.columns]
    if len(new):
        started = new[new["change"] == "blocking started"] if "change" in new else new
        parts = [f"{r.probe_cc} AS{int(r.probe_asn)} {r.domain}: {r.change}"
                 for r in new.head(_SHOWN).itertuples()]
        level = "alarm" if len(started) else "warning"
        return Verdict(level, f"{len(new)} new blocking event(s): " + "; ".join(parts)
                       + _more(len(new)), new[cols])
    return Verdict("ok", f"no new blocking event ({len(table)} changepoint(s) in the last "
                   f"{lookback}, all announced before)")


def logs_finding(counts: pd.DataFrame, window: str, alarm_priority: int = 2) -> Verdict:
    """The log notebooks: ``counts`` = :func:`fetch_log_counts` rows (t, unit, priority, n).
    Lines at ``alarm_priority`` (crit) or worse → alarm; error lines → warning."""
    if counts.empty:
        return Verdict("no_data", f"no log line in the last {window}")
    total = int(counts["n"].sum())
    severe = counts[counts["priority"] <= alarm_priority]
    errors = counts[counts["priority"] <= 3]
    by_unit = errors.groupby("unit")["n"].sum().sort_values(ascending=False)
    detail = by_unit.rename("error lines").reset_index().head(20) if len(by_unit) else None
    if len(severe):
        units = severe.groupby("unit")["n"].sum().sort_values(ascending=False)
        top = ", ".join(f"{u} ({n})" for u, n in units.head(_SHOWN).items())
        n = int(severe["n"].sum())
        return Verdict("alarm", f"{n} log line{'' if n == 1 else 's'} at priority crit or worse "
                       f"in the last {window}: {top}", detail)
    if len(errors):
        top = ", ".join(f"{u} ({n})" for u, n in by_unit.head(_SHOWN).items())
        return Verdict("warning", f"{int(errors['n'].sum())} error lines of {total} in the last "
                       f"{window}: {top}", detail)
    return Verdict("ok", f"{total} log lines in the last {window}, no error")


def tls_finding(certs: pd.DataFrame, problems: pd.DataFrame, unreachable: pd.DataFrame,
                expected_offline: Collection[tuple[str, int]] = ()) -> Verdict:
    """The TLS certificate notebook: ``problems``/``unreachable`` from :func:`cert_problems`;
    ``expected_offline`` the (host, port) pairs that may be unreachable without alerting."""
    from ..tls import describe_cert_problem, describe_unreachable

    down = unreachable[[(h, p) not in expected_offline
                        for h, p in zip(unreachable["host"], unreachable["port"], strict=True)]]
    cols = [c for c in ("host", "port", "status", "days_left", "not_after", "error")
            if c in certs.columns]
    bad = pd.concat([problems, down])[cols] if len(problems) or len(down) else None
    lines = [describe_cert_problem(r) for r in problems.itertuples()]
    summary = "; ".join(lines[:_SHOWN]) + _more(len(lines))
    if len(down) == 1:
        summary = "; ".join(filter(None, [describe_unreachable(next(down.itertuples())), summary]))
    elif len(down):  # the reasons are in the detail table
        names = ", ".join(f"{h}:{p}" for h, p in zip(down["host"], down["port"], strict=True))
        summary = "; ".join(filter(None, [f"{len(down)} of {len(certs)} hosts UNREACHABLE, "
                                          f"certificates not checked: {names}", summary]))
    if len(down) or (problems["status"] != "expiring").any():
        return Verdict("alarm", summary, bad)
    if len(problems):
        return Verdict("warning", summary, bad)
    checked = len(certs) - len(unreachable)
    if checked == 0:
        return Verdict("no_data", f"no certificate could be read ({len(certs)} hosts, all "
                       "expected offline)")
    offline = f", {len(unreachable)} expected offline" if len(unreachable) else ""
    return Verdict("ok", f"{checked} certificates valid for more than the warning window"
                   f"{offline}")
