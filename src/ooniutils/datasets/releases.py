"""Queries behind the probe release notebooks: per-version counts and runtime samples."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..clickhouse import click_query_fsn
from .flow import time_range
from .source import require_rows

log = logging.getLogger(__name__)

TRUE_SQL = "('t', 'true', '1')"


def _names(software_name: str | Sequence[str]) -> list[str]:
    return [software_name] if isinstance(software_name, str) else list(software_name)


def fetch_release_stats(software_name: str | Sequence[str], since: Any = "60 days",
                        until: Any = None) -> pd.DataFrame:
    """Per (software_version, test_name) in ``[since, until)``: total, failures (msm_failure),
    anomalies, first_seen, last_seen — the input of
    :func:`ooniutils.analyses.releases.compare_release`."""
    start, stop = time_range(since, until)
    df = click_query_fsn(
        "SELECT software_version, test_name, count() AS total, "
        f"countIf(lower(msm_failure) IN {TRUE_SQL}) AS failures, "
        f"countIf(lower(anomaly) IN {TRUE_SQL}) AS anomalies, "
        "min(measurement_start_time) AS first_seen, max(measurement_start_time) AS last_seen "
        "FROM fastpath WHERE software_name IN %(names)s "
        "AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "GROUP BY software_version, test_name ORDER BY software_version, test_name",
        names=_names(software_name), since=start.to_pydatetime(), until=stop.to_pydatetime(),
    )
    for c in ("total", "failures", "anomalies"):
        if c in df.columns:
            df[c] = df[c].astype("int64")
    return df


def fetch_runtime_sample(software_name: str | Sequence[str], versions: Sequence[str],
                         since: Any = "60 days", until: Any = None, per_group: int = 2000
                         ) -> pd.DataFrame:
    """Up to ``per_group`` ``test_runtime`` values per (software_version, test_name) of the
    given versions (successful measurements only, so failures do not skew runtimes)."""
    if not versions:
        return pd.DataFrame(columns=["software_version", "test_name", "test_runtime"])
    start, stop = time_range(since, until)
    return click_query_fsn(
        "SELECT software_version, test_name, test_runtime FROM fastpath "
        "WHERE software_name IN %(names)s AND software_version IN %(versions)s "
        "AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        f"AND lower(msm_failure) NOT IN {TRUE_SQL} "
        "ORDER BY cityHash64(measurement_uid) LIMIT %(per_group)s BY software_version, test_name",
        names=_names(software_name), versions=list(versions), since=start.to_pydatetime(),
        until=stop.to_pydatetime(), per_group=int(per_group),
    )


def release_report(software_name: str | Sequence[str], since: Any = "60 days", previous: int = 3,
                   send_alert: bool = False, **thresholds: Any) -> pd.DataFrame:
    """The body of the ``autorun_*_probe_release`` notebooks: fetch, compare, display, alert.

    Shows the per-version summary (semantic order), a chart, and the newest-vs-previous
    comparison of :func:`ooniutils.analyses.releases.compare_release` (``thresholds`` are
    passed on). No measurement of ``software_name`` at all in the window raises
    :class:`~ooniutils.exceptions.NoDataError` (the run fails). With ``send_alert`` (the notebooks pass ``autorun``) regressions go to Slack;
    an unset ``OONI_SLACK_WEBHOOK_URL`` prints "alert not sent: ... not configured" instead,
    and a failed delivery raises AlertError so the run fails visibly. The finding (alarm on a
    regression, no_data when there is nothing to compare) is reported with
    :func:`ooniutils.report_finding` before any alert is sent. Returns the comparison.
    """
    from IPython.display import display

    from ..analyses.releases import (
        compare_release,
        rates_chart,
        regression_message,
        version_summary,
    )
    from ..analyses.verdicts import release_finding
    from ..exceptions import ConfigError
    from ..findings import report_finding

    label = software_name if isinstance(software_name, str) else ", ".join(software_name)
    start, stop = time_range(since)
    stats_df = fetch_release_stats(software_name, start, stop)
    # a probe type that sent nothing for the whole window: wrong data source or empty table
    # (an outage of the probe type alone is the flow notebooks' alarm), never "no regression"
    require_rows(stats_df, "fastpath", start, stop, f"measurements from {label}")
    summary = version_summary(stats_df)
    print(f"{label}: {len(summary)} version(s) measured since {since}")  # noqa: T201
    display(summary)
    display(rates_chart(stats_df, f"{label}: failure and anomaly rate per version"))
    versions = list(summary["software_version"])
    if len(versions) < 2:
        print(f"only one version ({versions[0]}) was measured: no previous version to compare with")  # noqa: T201
    compared = versions[-(previous + 1):]
    runtimes = fetch_runtime_sample(software_name, compared, start, stop)
    result = compare_release(stats_df, runtimes, previous=previous, **thresholds)
    newest = versions[-1]
    base = versions[-(previous + 1):-1]
    print(f"newest version {newest} vs {', '.join(base) or 'nothing'}")  # noqa: T201
    display(result)
    report_finding(*release_finding(label, result, versions))  # what the run found, for jupycron
    msg = regression_message(label, result)
    if not msg:
        print(f"no regression flagged for {label} {newest}")  # noqa: T201
        return result
    print("REGRESSION FLAGGED\n" + msg)  # noqa: T201
    if not send_alert:
        print("alert not sent: not running under jupycron (AUTORUN unset)")  # noqa: T201
        return result
    from ..alerts import send_slack_msg

    try:
        send_slack_msg(f"{label} {newest}: regression vs previous versions", msg, color="danger")
        print("alert sent to Slack")  # noqa: T201
    except ConfigError as exc:
        print(f"alert not sent: {exc.setting or 'OONI_SLACK_WEBHOOK_URL'} not configured")  # noqa: T201
    return result
