"""Build the analysis notebooks (test helpers, probe releases, duplicate test-list URLs,
blocking events, logs, heavy queries, TLS certificate expiry) from the cell sources below.

    .venv/bin/python notebooks/tools/build_analysis_notebooks.py [--check]

The .ipynb files are committed without outputs; edit this file and rebuild rather than
editing the notebooks by hand, so the shared cells stay identical. Alarm notifications live
in ``ooniutils.alarm_notify`` (tested without a kernel); the notebooks only call it.
``--check`` exits 1 when a committed notebook differs from what this script builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbbuild  # noqa: E402  (the builders' shared helpers, beside this file)


def header(every: str | None, imports: str) -> str:
    lines = [f'# jupycron: {{"every": "{every}"}}'] if every else []
    lines.append("from ooniutils import *")
    return "\n".join(lines) + "\n" + imports.strip()


def slack_cell(condition: str, title: str, message: str, color: str, on_success: str = "") -> str:
    """Send to Slack only under jupycron; a missing webhook is reported, not an error."""
    success = f"\n        {on_success}" if on_success else ""
    return f'''from ooniutils.exceptions import ConfigError

if not ({condition}):
    print("nothing to alert on")
elif not autorun:
    print("alert not sent: not running under jupycron (AUTORUN unset)")
else:
    try:
        send_slack_msg({title}, {message}, color="{color}")
    except ConfigError as exc:
        print(f"alert not sent: {{exc.setting or 'OONI_SLACK_WEBHOOK_URL'}} not configured")
    else:
        print("alert sent to Slack"){success}'''


def test_helper_alarm() -> list:
    return [
        new_code_cell(header("1 hour", """
from ooniutils.alarm_notify import send_helper_alerts
from ooniutils.analyses.flow import total_outage
from ooniutils.analyses.verdicts import helper_finding
from ooniutils.analyses.test_helpers import (
    AlarmParams, alarm_episodes, country_heatmap, failure_rate_chart, helper_alarms,
    helper_inventory, helper_summary, hourly_rates, network_problems)
from ooniutils.datasets.flow import utcnow
from ooniutils.datasets.source import require_rows
from ooniutils.datasets.test_helpers import fetch_helper_counts, fetch_helper_instances

import pandas as pd

HISTORY_DAYS = 21   # hours shown and searched for past alarm episodes
PARAMS = AlarmParams(recent_hours=3, baseline_hours=7 * 24, min_recent=30, min_baseline=200,
                     alpha=1e-4, min_increase=0.10)
until = utcnow().floor("h")               # exclusive: the current hour is incomplete
now = until - pd.Timedelta(hours=1)       # the last complete hour is evaluated
since = until - pd.Timedelta(days=HISTORY_DAYS)
print(f"evaluating the hour {now:%Y-%m-%d %H:00} UTC; history since {since:%Y-%m-%d %H:00}")""")),
        new_markdown_cell("""# Test helper failure rate

Failure rate of web_connectivity measurements per test helper (a measurement *failed* when
`control_failure` is set or `msm_failure` is true), hour by hour. For each helper the last
`recent_hours` are compared with the `baseline_hours` before them (one-sided two-proportion
z-test with a quasi-binomial dispersion factor, Bonferroni over helpers, plus a minimum rise
of `min_increase`). A rise is then
*scoped*: leaving out the country with the most excess failures, is the rest of the world
still failing? If so the helper is failing **for all probes** and an alert goes out; if not,
the failures are **concentrated** in that country — a network problem there, shown in the
network table below but not alerted as a helper problem. A rise shared by every helper (the
hour's country mix, a global event) is not an alarm either.

Helpers are joined with `test_helper_instances` on `rdn.dns_zone` (e.g. `2.th.ooni.org`),
the host of fastpath's `test_helper_address`; a rotated rdn's hours are split between its
old and new droplet at the old one's `draining_at`."""),
        new_code_cell("""counts = fetch_helper_counts(since, until)
# no history at all: a data-path error (the run fails); silent recent hours: an alarm
require_rows(counts, "fastpath", since, until, "web_connectivity measurements with a test helper address")
silence = total_outage(counts, until - pd.Timedelta(hours=PARAMS.recent_hours), until,
                       time_col="hour", value_col="total")
if silence:
    print("ALARM:", silence.describe("web_connectivity measurements with a test helper"))
instances = fetch_helper_instances()
inventory = helper_inventory(instances, now)
if inventory.empty:
    print("test_helper_instances is empty: provider/region/state unknown")
print(f"{len(counts)} hourly rows, {counts['helper'].nunique()} helpers, "
      f"{counts['probe_cc'].nunique()} countries; {len(inventory)} helper instances")"""),
        new_markdown_cell("## Live and rotated helpers"),
        new_code_cell("""summary = helper_summary(counts, inventory)
summary"""),
        new_markdown_cell("## Status of each helper in the last complete hour"),
        new_code_cell("""alarms = helper_alarms(counts, now=now, params=PARAMS)
current = alarms[alarms["hour"] == now] if not alarms.empty else alarms
if current.empty:
    print("no helper has data up to this hour")
current"""),
        new_markdown_cell("## Alarm episodes in the history (helper failing for all probes)"),
        new_code_cell("""episodes = alarm_episodes(alarms)
if episodes.empty:
    print(f"no helper alarm in the last {HISTORY_DAYS} days")
for e in episodes.itertuples():
    print(f"flagged helper {e.helper}: {e.start:%Y-%m-%d %H:00} to {e.end:%Y-%m-%d %H:00} UTC, "
          f"{e.hours} h, peak failure rate {e.peak_rate:.1%} vs baseline {e.baseline_rate:.1%} ({e.scope})")
episodes"""),
        new_markdown_cell("""## Rises concentrated in one place (network problems, not the helper)

Helper rises whose excess failures come from one country, and countries failing across
helpers."""),
        new_code_cell("""concentrated = alarm_episodes(
    alarms.assign(conc=(alarms["status"] == "elevated") & (alarms["scope"] != "all probes")),
    flag="conc") if not alarms.empty else alarms
networks = network_problems(counts, now=now, params=PARAMS)
net_episodes = alarm_episodes(networks, key="probe_cc", flag="problem")
if net_episodes.empty:
    print(f"no country failing across helpers in the last {HISTORY_DAYS} days")
for e in net_episodes.itertuples():
    print(f"network problem in {e.probe_cc}: {e.start:%Y-%m-%d %H:00} to {e.end:%Y-%m-%d %H:00} UTC, "
          f"peak {e.peak_rate:.1%} vs baseline {e.baseline_rate:.1%}")
display(concentrated)
net_episodes"""),
        new_markdown_cell("## Charts"),
        new_code_cell("""if counts.empty:
    print("no data to chart")
else:
    display(failure_rate_chart(hourly_rates(counts[counts["hour"] >= until - pd.Timedelta(days=7)])))
    display(country_heatmap(counts, since=until - pd.Timedelta(hours=24),
                            title="Failure rate by probe country and helper, last 24 hours"))"""),
        new_markdown_cell("""## Alert

Under jupycron, each helper failing for all probes is fired to Alertmanager on every run
(`TestHelperFailing`, `instance` = the helper); Slack and ntfy get one message when it starts
failing and one "recovered" message once it has not alarmed for two runs in a row (what was
announced is kept under `$JUPYCRON_STATE_DIR`, see `ooniutils.alarm_notify`)."""),
        new_code_cell("""report_finding(*helper_finding(current, silence))  # what this run found, first
report = send_helper_alerts(current, inventory, "autorun_test_helper_failure_rate_alarm.html",
                            send=autorun, silence=silence)
print(report)
report.raise_for_errors()  # a lost alert fails the run, so the dashboard shows it"""),
    ]


def test_helpers_overview() -> list:
    return [
        new_code_cell(header(None, """
import pandas as pd

from ooniutils.analyses.test_helpers import (
    country_heatmap, failure_rate_chart, helper_inventory, helper_summary, hourly_rates)
from ooniutils.datasets.flow import utcnow
from ooniutils.datasets.test_helpers import fetch_helper_counts, fetch_helper_instances

DAYS = 30
until = utcnow().floor("h")
since = until - pd.Timedelta(days=DAYS)""")),
        new_markdown_cell("""# Test helpers

Every test helper instance (live, draining, destroyed) from `test_helper_instances`, with
its measurements and failure rate over the last `DAYS` days. The hourly alarm lives in
`autorun_test_helper_failure_rate_alarm`; this notebook is the longer view for humans.
Instances are matched to measurements on `rdn.dns_zone` = host of `test_helper_address`."""),
        new_code_cell("""inventory = helper_inventory(fetch_helper_instances(), until)
if inventory.empty:
    print("test_helper_instances is empty")
live = inventory[~inventory["rotated"]]
rotated = inventory[inventory["rotated"]]
print(f"{len(live)} live instance(s), {len(rotated)} rotated (draining or destroyed)")
inventory"""),
        new_code_cell("""counts = fetch_helper_counts(since, until)
if counts.empty:
    print(f"no web_connectivity measurements with a test helper in the last {DAYS} days")
helper_summary(counts, inventory)"""),
        new_code_cell("""if not counts.empty:
    daily = counts.assign(hour=counts["hour"].dt.floor("D"))
    display(failure_rate_chart(hourly_rates(daily), title="Failure rate per test helper (daily)"))
    display(country_heatmap(counts, since=until - pd.Timedelta(days=7),
                            title="Failure rate by probe country and helper, last 7 days"))"""),
    ]


def release(software: str, label: str) -> list:
    return [
        new_code_cell(header("1 day", "from ooniutils.datasets.releases import release_report")),
        new_markdown_cell(f"""# {label} probe release

The newest `{software}` version against the three versions before it (semantic version
order), per test: failure rate and anomaly rate (one-sided Fisher exact test), runtime
(one-sided Mann-Whitney U), Benjamini-Hochberg correction over all the tests, and a minimum
material effect (+2 points of rate, +20 % median runtime). Regressions go to Slack when run
by jupycron."""),
        new_code_cell(f'result = release_report("{software}", since="60 days", send_alert=autorun)'),
    ]


def duplicates() -> list:
    return [
        new_code_cell(header("1 day", "from ooniutils.testlists import find_duplicate_test_list_urls")),
        new_markdown_cell("""# Duplicate test-list URLs

URLs listed more than once in the `citizenlab` table: **exact** (the same string in two
places, or twice in one list) and **near** (different strings equal after folding http/https,
`www.`, case of scheme and host, default ports, a trailing `/` and the `#fragment`, which
never reaches the server). A row can be both (`kind` `exact+near`; columns `exact` and
`near`). The table has no `date_added` (it is empty here; the CSV folders have it:
`find_duplicate_test_list_urls("/path/to/lists")`)."""),
        new_code_cell("""import pandas as pd

from ooniutils.analyses.verdicts import duplicates_finding
from ooniutils.datasets.source import require_rows

n_lists = int(click_query_fsn("SELECT count() AS n FROM citizenlab")["n"].iloc[0])
# an empty table is not "no duplicate": load the test lists (ooniutils.store.loaders.load_test_lists)
require_rows(n_lists, "citizenlab", what="test-list entries")
dups = find_duplicate_test_list_urls()
if dups.empty:
    print(f"no duplicate among {n_lists} test-list entries")
else:
    print(f"{dups['normalized_url'].nunique()} URLs listed more than once "
          f"({dups['exact'].sum()} exact rows, {dups['near'].sum()} near rows) "
          f"among {n_lists} entries")
    display(dups.groupby(["cc", "kind"]).size().unstack(fill_value=0))
report_finding(*duplicates_finding(dups, n_lists))
dups"""),
    ]


def events() -> list:
    return [
        new_code_cell(header("1 hour", """
from ooniutils import config
from ooniutils.analyses.events import (
    SentLog, default_state_dir, new_changepoints, slack_message, summary_table, table_html)
from ooniutils.analyses.verdicts import events_finding
from ooniutils.datasets.events import fetch_changepoints, newest_changepoint_time
from ooniutils.datasets.flow import parse_when
from ooniutils.datasets.source import require_recent

LOOKBACK = "7 days"
state = SentLog(default_state_dir() / "event_detector_alerts.json")""")),
        new_markdown_cell("""# Blocking event detections

Recent changepoints found by the event detector (`event_detector_changepoints`), newest
first, each with a link to the OONI Explorer chart of that network and domain. Changepoints
not announced before are sent to Slack (when run by jupycron); what was sent is recorded in
the state file below only after Slack accepted it, so nothing is repeated on the next run.
No changepoint at all in `LOOKBACK` is not a quiet world but a stopped detector (or an empty
table, or the wrong data source): the run fails with the newest changepoint's time."""),
        new_code_cell("""from IPython.display import HTML

changepoints = fetch_changepoints(LOOKBACK)
if changepoints.empty:  # fails the run: the detector stopped, or this is the wrong table
    require_recent(newest_changepoint_time(), "event_detector_changepoints", parse_when(LOOKBACK),
                   "changepoints", "the event detector")
table = summary_table(changepoints, config.get("OONI_EXPLORER_URL"))
sent = state.load()
new = new_changepoints(table, sent)
print(f"{len(table)} changepoint(s) in the last {LOOKBACK}, {len(new)} new; state file {state.path}")
report_finding(*events_finding(table, new, LOOKBACK))
if table.empty:
    print("no changepoint in this period (the event detector found nothing, or has not run)")
else:
    display(HTML(table_html(table.assign(new=table["key"].isin(new["key"])))))"""),
        new_code_cell(slack_cell(
            "len(new)", 'f"{len(new)} new blocking event(s)"', "slack_message(new)", "warning",
            on_success='state.record(new["key"])\n        print(f"recorded {len(new)} sent changepoint(s)")')),
    ]


def logs(every: str | None, recent: str, window: str, title: str) -> list:
    return [
        new_code_cell(header(every, f"""
from ooniutils.analyses.logs import error_counts, errors_chart, recent_by_unit, unit_summary
from ooniutils.analyses.verdicts import logs_finding
from ooniutils.datasets.flow import parse_when
from ooniutils.datasets.logs import fetch_log_counts, fetch_recent_logs, newest_log_time
from ooniutils.datasets.source import require_recent

RECENT = "{recent}"   # newest lines shown
WINDOW = "{window}"   # error counts and per-unit summary""")),
        new_markdown_cell(f"""# {title}

Journald lines shipped into the `logs` table (by Vector or `ooniutils logs ship`), in
journald's own time order (`__REALTIME_TIMESTAMP`): the newest lines of each host and unit,
then errors (priority err and worse) by unit and priority over time. No line at all in
`WINDOW` means log shipping stopped (or the wrong data source): the run fails, naming the time
of the newest line."""),
        new_code_cell("""lines = fetch_recent_logs(RECENT, limit=5000, per_unit=50)
counts = fetch_log_counts(WINDOW, granularity="hour")
if counts.empty:  # fails the run: an empty dashboard is not "no errors"
    require_recent(newest_log_time(), "logs", parse_when(WINDOW), "log lines",
                   "log shipping (Vector or `ooniutils logs ship`)")
report_finding(*logs_finding(counts, WINDOW))
unit_summary(counts)"""),
        new_code_cell("""if lines.empty:
    print(f"no log line in the last {RECENT}")
recent_by_unit(lines, per_unit=10)"""),
        new_code_cell("""errors = error_counts(counts)
if errors.empty:
    print(f"no error-level line in the last {WINDOW}")
else:
    display(errors_chart(errors))"""),
    ]


def tls_cert_expiry() -> list:
    return [
        new_code_cell(header("1 day", """
from ooniutils import config
from ooniutils.alarm_notify import send_tls_alerts
from ooniutils.analyses.verdicts import tls_finding
from ooniutils.exceptions import ConfigError
from ooniutils.tls import cert_problems, expected_offline_targets, host_list

# Hosts to check: the setting OONI_TLS_HOSTS (comma- or space-separated "host" or "host:port",
# port 443 by default; default: the public OONI hosts). OONI_TLS_EXPECTED_OFFLINE lists the
# ones that may be unreachable without alerting (e.g. a host in maintenance).
WARN_DAYS = 30
hosts = host_list(config.get("OONI_TLS_HOSTS"))
expected_offline = config.get("OONI_TLS_EXPECTED_OFFLINE") or ""
offline = expected_offline_targets(expected_offline)
if not hosts:
    raise ConfigError("OONI_TLS_HOSTS is empty: no host to check", "OONI_TLS_HOSTS")
print(f"checking {len(hosts)} hosts, warning {WARN_DAYS} days before expiry"
      + (f"; expected offline: {', '.join(f'{h}:{p}' for h, p in sorted(offline))}" if offline else ""))""")),
        new_markdown_cell("""# TLS certificate expiry

Each host is checked once with certificate verification (the reason is kept when it fails)
and, if needed, once more without it, so expired or untrusted certificates still show their
dates. `status`: **expired**, **expiring** (fewer than `WARN_DAYS` days left), **error**
(the certificate is invalid for another reason, or it could not be fetched at all), **ok**.

When run by jupycron (`AUTORUN` set), expired, expiring and invalid certificates fire an
Alertmanager alert on every run (`TLSCertExpiry`, one per host, active 25 hours so it stays
up until the next daily run and resolves by itself once fixed). Slack and ntfy are not told
daily: one message when a certificate enters the warning window, one when fewer than 7 and
than 1 days are left, one when it expires, and one when it is valid again (what was announced
is kept under `$JUPYCRON_STATE_DIR`, see `ooniutils.alarm_notify`).

A host that **cannot be reached** is not "no alarm": it is announced with the reason
(`TLSHostUnreachable` to Alertmanager, once to Slack/ntfy, and "fixed" once it answers with a
valid certificate), unless `OONI_TLS_EXPECTED_OFFLINE` lists it (then it is listed below as
expected offline and neither alerted nor resolved)."""),
        new_code_cell("""certs = check_tls_certs(hosts, warn_days=WARN_DAYS, timeout=5)
order = {"expired": 0, "expiring": 1, "error": 2, "ok": 3}
certs = certs.sort_values(["status", "days_left"], key=lambda s: s.map(order) if s.name == "status" else s,
                          na_position="last").reset_index(drop=True)
certs"""),
        new_code_cell("""problems, unreachable = cert_problems(certs)
print(f"{len(certs)} hosts: {(certs.status == 'ok').sum()} ok, {len(problems)} with a certificate problem, "
      f"{len(unreachable)} whose certificate cannot be fetched")
for row in unreachable.itertuples():
    note = "expected offline, not alerted" if (row.host, row.port) in offline else "ALERT"
    print(f"  [{note}] {row.error}")
report_finding(*tls_finding(certs, problems, unreachable, offline))"""),
        new_code_cell("""report = send_tls_alerts(certs, "autorun_tls_cert_expiry.html", send=autorun,
                         expected_offline=expected_offline)
print(report)
report.raise_for_errors()  # a lost alert fails the run, so the dashboard shows it"""),
    ]


def heavy_queries() -> list:
    return [
        new_code_cell(header(None, """
from ooniutils.datasets.logs import fetch_heavy_queries, query_log_available
from ooniutils.store import get_store

SINCE = "1 day"
""")),
        new_markdown_cell("""# Heavy queries

The most expensive queries of the last day from ClickHouse's `system.query_log`, grouped by
normalised query (total time, peak memory, bytes read). Only a ClickHouse server with query
logging has that table; the embedded chDB store does not."""),
        new_code_cell("""store = get_store()
if not query_log_available():
    print(f"system.query_log is not available on this engine ({store.kind} store"
          f"{': chDB keeps no query log' if store.kind == 'embedded' else ''}); "
          "heavy queries cannot be listed. Point OONI_CLICKHOUSE_URL at a server with "
          "log_queries enabled to use this dashboard.")
    heavy = None
else:
    heavy = fetch_heavy_queries(SINCE, limit=25)
    if heavy.empty:
        print(f"no finished query logged since {SINCE}")
heavy"""),
        new_code_cell("""if heavy is not None and not heavy.empty:
    display(fetch_heavy_queries(SINCE, limit=10, order_by="peak_memory"))"""),
    ]


BUILDERS: nbbuild.Builders = {
    "autorun_test_helper_failure_rate_alarm.ipynb": test_helper_alarm,
    "test_helpers.ipynb": test_helpers_overview,
    "autorun_android_probe_release.ipynb": lambda: release("ooniprobe-android", "Android"),
    "autorun_ios_probe_release.ipynb": lambda: release("ooniprobe-ios", "iOS"),
    "autorun_cli_probe_release.ipynb": lambda: release("ooniprobe-cli", "CLI"),
    "autorun_duplicate_test_list_urls.ipynb": duplicates,
    "autorun_event_detector_alerts.ipynb": events,
    "autorun_fsn_logs.ipynb": lambda: logs("1 hour", "2 hours", "24 hours", "FSN logs"),
    "centralized_logs.ipynb": lambda: logs(None, "1 day", "7 days", "Centralized logs"),
    "heavy_queries.ipynb": heavy_queries,
    "autorun_tls_cert_expiry.ipynb": tls_cert_expiry,
}


if __name__ == "__main__":
    sys.exit(nbbuild.main(BUILDERS, Path(__file__).name, __doc__.splitlines()[0]))
