"""Build the measurement-flow notebooks (committed without outputs).

    python notebooks/tools/build_flow_notebooks.py          # writes notebooks/*.ipynb
    python notebooks/tools/build_flow_notebooks.py --check  # exit 1 if one is stale

Edit the cells here, not in the .ipynb files, then re-run: the notebooks are generated so
that the cells shared by the hourly notebooks have one source. Alert sending lives in
``ooniutils.alarm_notify`` (tested without a kernel); the notebooks only call it. Each notebook's
first code cell holds its ``# jupycron:`` schedule line and ``from ooniutils import *``; a
cell tagged ``parameters`` holds the knobs (papermill convention: a runner or a test may
insert a cell after it to override them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent

IMPORTS = """from ooniutils import *
import pandas as pd
import altair as alt
from IPython.display import display, Markdown
from ooniutils import config"""

def code(src: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(src.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def md(src: str) -> nbformat.NotebookNode:
    return new_markdown_cell(src.strip("\n"))


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding does not churn the diff
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def hourly_alarm_notebook(per_country: bool) -> nbformat.NotebookNode:
    name = ("autorun_incoming_measurements_prediction_alarming_per_country" if per_country
            else "autorun_incoming_measurements_prediction_alarming")
    keys = '["probe_cc", "software_name"]' if per_country else '"software_name"'
    fetch = "hourly_counts_by_country_software" if per_country else "hourly_counts_by_software"
    what = "country/probe type" if per_country else "probe type"
    alertname = "IncomingMeasurementsDropPerCountry" if per_country else "IncomingMeasurementsDrop"
    episode = "country (every probe type)" if per_country else "probe type"
    intro = (
        f"# Incoming measurements: prediction and alarms per {what}\n\n"
        "Every hour: the hourly measurement counts of the last `DAYS` days, "
        + ("per (probe_cc, software_name), " if per_country else "per probe type (`software_name`), ")
        + "are compared with a prediction from the same hours of the previous weeks "
        "(robust seasonal baseline, `ooniutils.analyses.flow`). An hour alarms when fewer than "
        "`THRESHOLD` × the prediction arrived *and* the shortfall is not noise (Poisson and the "
        "series' own noise level); two such hours in a row, or one very unlikely hour, make an alarm.\n\n"
        "A series needs 9 days of history before it may alarm (warm-up: a brand-new country or "
        "probe type is never alarmed on). Alarms still open in the last `ALERT_HOURS` complete hours "
        "are current. When the notebook runs under jupycron, every current alarm is (re-)fired to "
        "Alertmanager on each run (`OONI_ALERTMANAGER_URL`), while Slack and ntfy "
        "(`OONI_SLACK_WEBHOOK_URL`, `OONI_NTFY_URL`) get one message when an episode starts "
        "and one \"recovered\" message once it has had no alarmed hour for `ALERT_HOURS` hours; "
        "what was announced is kept under `$JUPYCRON_STATE_DIR` (`ooniutils.alarm_notify`). "
        "A channel that is not configured is skipped with a note and the notebook still succeeds.\n\n"
        + ("**One episode per country outage.** Alarms of one country's probe types that overlap in "
           "time are folded into one episode (`ooniutils.analyses.flow_episodes`; the probe types are "
           "listed in its detail), episodes are ranked by measurements missing, and each gets one "
           "message. Each country's total (`CC/*`, every probe type) is checked beside its probe "
           "types, and the evidence needed is stricter than in the global notebook (`ALPHA`): it "
           "checks ~36x more series, so the same per-series alpha would give ~36x more false alarms. "
           "The charts show every series alarmed in the alert window first.\n\n"
           if per_country else "")
        + "**Absence is an alarm.** No measurement at all in the last `ALERT_HOURS` hours while the "
        "history had some is a *total outage* of the pipeline: the most severe alarm "
        "(`IncomingMeasurementsTotalOutage`, severity critical), shown at the top and sent first. "
        "No measurement in the whole `DAYS`-day window is not a quiet world but a data-path error "
        "(empty table, wrong data source): the run fails with a message naming the data source."
    )
    params = (
        ("DAYS = 58            # history fetched; the model uses up to WEEKS weeks + 1 day\n"
         "WEEKS = 8            # weeks of history the prediction learns from (fewer while the data has fewer)\n"
         if per_country else "DAYS = 36            # history fetched; the model uses up to 4 weeks + 1 day\n")
        + "UNTIL = None         # end of the window (exclusive); None = the current hour's start\n"
        "ALERT_HOURS = 3      # alarms open within the latest complete hours are alerted\n"
        "THRESHOLD = 0.8      # alarm when actual < THRESHOLD x expected (and significant)\n"
        + ("MIN_HOURLY = 2.0     # skip series averaging fewer measurements per hour\n"
           "ALPHA = 1e-6         # evidence needed for a run of hours (~36x more series than the global\n"
           "ALPHA_SINGLE = 1e-8  # notebook; bench/flow_notebooks_quality.py), and for a single hour\n"
           "NOISE_CLIP = 2.0     # a series' noise level is learnt robustly: odd hours count at most 2 sigma\n"
           "PEAK_NOISE = True    # a daily upload batch hour has a noise level of its own (FlowParams.peak_noise)\n"
           "MAX_CHARTS = 12\n" if per_country else "MAX_CHARTS = 20\n")
        + "CHART_DAYS = 7"
    )
    cells = [
        code('# jupycron: {"every": "1 hour"}\n' + IMPORTS + "\n"
             "from ooniutils.alarm_notify import send_flow_alerts\n"
             "from ooniutils.analyses.flow import (FlowParams, alarms_from_predictions, latest_alarms, pivot_hourly,\n"
             "                                     predict_many, total_outage)\n"             "from ooniutils.analyses.flow_episodes import episode_series, fold_episodes, with_country_totals\n"
             "from ooniutils.charts import flow_chart\n"
             f"from ooniutils.datasets.flow import {fetch}, last_complete_hour, newest_measurement_time\n"
             "from ooniutils.datasets.source import require_rows"),
        md(intro),
        code(params, tags=["parameters"]),
        code(f"""# exclusive: the current hour is incomplete
until = last_complete_hour() if UNTIL is None else pd.Timestamp(UNTIL).floor("h")
since = until - pd.Timedelta(days=DAYS)
counts = {fetch}(since=since, until=until)
# no history at all: the run fails, saying whether the table is empty or stopped before `since`
require_rows(counts, "fastpath", since, until, "measurements", newest=newest_measurement_time)
wide = pivot_hourly(counts, "t", {keys}, start=since, end=until)
outage = total_outage(counts, until - pd.Timedelta(hours=ALERT_HOURS), until)
print(f"{{len(counts):,}} (hour, series) rows, {{counts['n'].sum():,}} measurements, "
      f"{{wide.shape[1]}} series, {{since:%Y-%m-%d %H:%M}} to {{until:%Y-%m-%d %H:%M}} UTC")
if outage:
    print(outage.describe())
    display(Markdown(f"## {{outage.describe()}}"))"""),
    ]
    if per_country:
        cells.append(code("""params = FlowParams(threshold=THRESHOLD, alpha=ALPHA, alpha_single=ALPHA_SINGLE, noise_clip=NOISE_CLIP,
                    weeks=WEEKS, peak_noise=PEAK_NOISE)
history_h = (wide > 0).cumsum().iloc[-1] if len(wide) else pd.Series(dtype=float)
mean_h = wide.mean() if len(wide) else pd.Series(dtype=float)
first_seen = {c: (wide.index[(wide[c] > 0).to_numpy()].min() if (wide[c] > 0).any() else None) for c in wide.columns}
reasons = {}
for c in wide.columns:
    if mean_h[c] < MIN_HOURLY:
        reasons[c] = f"too few measurements: {mean_h[c]:.2f}/hour on average (< {MIN_HOURLY})"
    elif first_seen[c] is None or (until - first_seen[c]) < pd.Timedelta(hours=params.warmup_hours):
        reasons[c] = f"too little history: first seen {first_seen[c]}, warm-up needs {params.warmup_hours} h"
skipped = pd.DataFrame([{"series": c, "mean_per_hour": round(mean_h[c], 2), "reason": r} for c, r in reasons.items()],
                       columns=["series", "mean_per_hour", "reason"])
# each country's total ("CC/*", every probe type) is checked too: a country-wide drop shows there first
checked = with_country_totals(wide[[c for c in wide.columns if c not in reasons]], counts, since, until)
print(f"{checked.shape[1]} series checked, {len(skipped)} skipped (too little data, listed below)")
display(skipped.sort_values("mean_per_hour", ascending=False).head(50) if len(skipped) else Markdown("No series skipped."))"""))
    else:
        cells.append(code("""params = FlowParams(threshold=THRESHOLD)
checked = wide"""))
    cells += [
        code("""preds = predict_many(checked, params)       # one vectorised pass over every series
alarms = alarms_from_predictions(preds)
# one episode per {episode}: alarms of its series overlapping in time folded together
episodes = fold_episodes(alarms)
current = latest_alarms(episodes, now=until, hours=ALERT_HOURS)
alarmed_now = set(episode_series(current))
status = []
for c, p in preds.items():
    last = p.iloc[-1] if len(p) else None
    state = ("no data" if last is None else "warming up (no history yet)" if pd.isna(last["expected"])
             else "ALARM" if c in alarmed_now else "ok")
    status.append({"series": c, "state": state,
                   "last_hour": None if last is None else last.name,
                   "actual": None if last is None else last["actual"],
                   "expected": None if last is None or pd.isna(last["expected"]) else round(last["expected"], 1),
                   "mean_per_hour": round(p["actual"].mean(), 1) if len(p) else None,
                   "alarms_in_window": int((alarms["series"] == c).sum())})
status = pd.DataFrame(status, columns=["series", "state", "last_hour", "actual", "expected",
                                       "mean_per_hour", "alarms_in_window"])
display(Markdown(f"### Series ({len(status)})"))
display(status.sort_values(["state", "mean_per_hour"], ascending=[True, False]) if len(status)
        else Markdown("No series to check."))""".replace("{episode}", episode)),
        code("""display(Markdown(f"### Current alarms (episodes open in the last {ALERT_HOURS} complete hours, most severe first)"))
if outage:
    display(Markdown(f"**{outage.describe()}**"))
display(current if len(current) else Markdown("None." if not outage else "No per-series alarm."))
for ep in episodes[pd.to_datetime(episodes["end"]) > until - pd.Timedelta(days=CHART_DAYS)].itertuples():
    print(f"episode {ep.series}: {ep.start:%Y-%m-%d %H:%M:%S} to {ep.end:%Y-%m-%d %H:%M:%S} UTC, "
          f"{ep.missing:,.0f} of {ep.expected:,.0f} measurements missing ({ep.severity:.0%}), "
          f"{ep.alarms} series alarm(s)" + (f", probe types: {ep.probe_types}" if ep.probe_types else ""))
display(Markdown(f"### All alarm episodes in the last {DAYS} days ({len(episodes)} episodes from {len(alarms)} series alarms)"))
display(episodes if len(episodes) else Markdown("No alarm in the window."))
if len(alarms):
    display(Markdown("### The series alarms folded into those episodes"))
    display(alarms)"""),
        code("""# every series alarmed in the alert window is charted (most severe episode first), then series
# alarmed in the charted days, then the busiest series, up to MAX_CHARTS
chart_from = until - pd.Timedelta(days=CHART_DAYS)
recent = episodes[pd.to_datetime(episodes["end"]) > chart_from] if len(episodes) else episodes
shown = episode_series(current)
shown += [c for c in episode_series(recent)
          + list(checked.sum().sort_values(ascending=False).index if checked.shape[1] else [])
          if c not in shown][:max(0, MAX_CHARTS - len(shown))]
charts = []
for c in shown:
    p = preds[c].loc[preds[c].index >= chart_from]
    a = alarms[(alarms["series"] == c) & (alarms["end"] > chart_from)]
    charts.append(flow_chart(p, a, title=f"{c}: actual (blue), predicted (dashed), alarm band, alarms (red)"))
if charts:
    display(alt.vconcat(*charts))
else:
    display(Markdown("No chart: no series."))"""),
        code(f"""report = send_flow_alerts(current, "{"country" if per_country else what}", "{name}.html", "{alertname}", send=autorun,
                          outage=outage)
print(report)
report.raise_for_errors()  # a lost alert fails the run, so the dashboard shows it"""),
        code(f"""from ooniutils.analyses.flow_findings import flow_finding
report_finding(*flow_finding(current, outage, status, what="{what}", alert_hours=ALERT_HOURS))"""),
    ]
    return notebook(cells)


def long_term_notebook() -> nbformat.NotebookNode:
    return notebook([
        code('# jupycron: {"every": "1 day"}\n' + IMPORTS + "\n"
             "from ooniutils.alarm_notify import send_decline_alerts\n"
             "from ooniutils.analyses.flow import total_outage\n"
             "from ooniutils.analyses.trend import decline_table\n"
             "from ooniutils.charts import stacked_counts_chart\n"
             "from ooniutils.datasets.flow import daily_counts_by_software, newest_measurement_time, utcnow\n"
             "from ooniutils.datasets.source import require_rows"),
        md("""# Incoming measurements: slow declines over weeks

The hourly alarms compare each hour with the previous weeks, so a decline spread over many
weeks becomes their new normal. Here the **daily** totals per probe type over the last
`WEEKS` weeks go through a seasonal Mann-Kendall test (each weekday compared with the same
weekday; no distribution assumed) and a seasonal Theil-Sen slope. A probe type alarms when
the decrease is significant (`p < ALPHA`) **and** large (`decline ≥ MIN_DECLINE` of its level
over the window). Fewer than `MIN_WEEKS` weeks of data → no verdict (never an alarm on
missing history). Alerts as in the hourly notebook, only under jupycron with endpoints set:
Alertmanager on every run, Slack/ntfy once when a probe type starts declining and once when
it no longer does.

**Absence is an alarm.** No measurement at all on the last `OUTAGE_DAYS` complete day(s)
while the weeks before had some is a *total outage* (`IncomingMeasurementsTotalOutage`,
severity critical), announced first. No measurement in the whole window is a data-path error
(empty table, wrong data source): the run fails with a message naming the data source."""),
        code("""WEEKS = 8
UNTIL = None        # end of the window (exclusive, a day); None = today 00:00 UTC
OUTAGE_DAYS = 1     # no measurement at all on these last complete days = total outage
MIN_WEEKS = 3
ALPHA = 0.01
MIN_DECLINE = 0.15""", tags=["parameters"]),
        code("""until = (utcnow() if UNTIL is None else pd.Timestamp(UNTIL)).floor("D")   # complete days only
since = until - pd.Timedelta(weeks=WEEKS)
daily = daily_counts_by_software(since=since, until=until)
# no history at all: the run fails, saying whether the table is empty or stopped before `since`
require_rows(daily, "fastpath", since, until, "measurements", newest=newest_measurement_time)
outage = total_outage(daily, until - pd.Timedelta(days=OUTAGE_DAYS), until, unit="day")
wide = daily.pivot_table(index="t", columns="software_name", values="n", aggfunc="sum") if len(daily) else pd.DataFrame()
if len(wide):
    wide = wide.reindex(pd.date_range(since, until - pd.Timedelta(days=1), freq="D"))
    first = wide.notna().idxmax()          # days before a probe type's first day are missing, not 0
    for c in wide.columns:
        wide.loc[wide.index >= first[c], c] = wide.loc[wide.index >= first[c], c].fillna(0)
print(f"{daily['n'].sum() if len(daily) else 0:,} measurements, {wide.shape[1]} probe types, "
      f"{since:%Y-%m-%d} to {until:%Y-%m-%d}")
if outage:
    print(outage.describe())
    display(Markdown(f"## {outage.describe()}"))"""),
        code("""table = decline_table(wide, weeks=WEEKS, min_weeks=MIN_WEEKS, alpha=ALPHA, min_decline=MIN_DECLINE)
declining = table[table["alarm"]]
display(Markdown(f"### Significant sustained decreases ({len(declining)})"))
display(declining if len(declining) else Markdown("None."))
display(Markdown("### All probe types"))
display(table if len(table) else Markdown("No probe type with data."))"""),
        code("""if len(daily):
    display(stacked_counts_chart(daily.assign(t=pd.to_datetime(daily["t"])), "t", "software_name", "n",
                                 title=f"Daily measurements by probe type, last {WEEKS} weeks"))
    for c in declining["series"]:
        s = wide[c].rename("n").rename_axis("t").reset_index().dropna()  # the trend spans the data only
        line = alt.Chart(s).mark_line(point=True).encode(x=alt.X("t:T", title="day (UTC)"),
                                                         y=alt.Y("n:Q", title="measurements/day"))
        trend = line.transform_regression("t", "n").mark_line(color="red", strokeDash=[4, 3])
        display((line + trend).properties(title=f"{c}: daily totals and linear trend", width=760, height=200))
else:
    display(Markdown("No chart: no data."))"""),
        code("""report = send_decline_alerts(declining, WEEKS, "autorun_incoming_measurements_prediction_long_term_alarming.html",
                             send=autorun, outage=outage)
print(report)
report.raise_for_errors()  # a lost alert fails the run, so the dashboard shows it"""),
        code("""from ooniutils.analyses.flow_findings import decline_finding
report_finding(*decline_finding(declining, outage, table, weeks=WEEKS))"""),
    ])


def incoming_msmts_notebook() -> nbformat.NotebookNode:
    return notebook([
        code('# jupycron: {"every": "1 day"}\n' + IMPORTS + "\n"
             "from ooniutils.analyses.flow import total_outage\n"
             "from ooniutils.charts import stacked_counts_chart\n"
             "from ooniutils.analyses.verdicts import incoming_finding\n"
             "from ooniutils.datasets.flow import daily_counts_by_software, newest_measurement_time, utcnow\n"
             "from ooniutils.datasets.source import require_rows"),
        md("""# Measurement flow by probe type, multi-year

Daily measurement counts stacked by `software_name` over the last `YEARS` years (whatever the
store holds), then the last weeks in detail with the week-over-week change per probe type.
No measurement at all in the window fails the run (empty table or wrong data source); no
measurement on the last complete day is shown as a total outage (the alarm notebooks send it)."""),
        code("""YEARS = 3
DETAIL_WEEKS = 6
UNTIL = None        # end of the window (exclusive, a day); None = today 00:00 UTC""", tags=["parameters"]),
        code("""until = (utcnow() if UNTIL is None else pd.Timestamp(UNTIL)).floor("D")
since = until - pd.DateOffset(years=YEARS)
daily = daily_counts_by_software(since=since, until=until)
# no history at all: the run fails, saying whether the table is empty or stopped before `since`
require_rows(daily, "fastpath", since, until, "measurements", newest=newest_measurement_time)
outage = total_outage(daily, until - pd.Timedelta(days=1), until, unit="day")
if outage:
    print(outage.describe())
    display(Markdown(f"## {outage.describe()}"))
print(f"{daily['n'].sum():,} measurements from {daily['t'].min():%Y-%m-%d} to {daily['t'].max():%Y-%m-%d}, "
      f"{daily['software_name'].nunique()} probe types")
display(stacked_counts_chart(daily, "t", "software_name", "n", title=f"Daily measurements by probe type (last {YEARS} years)"))"""),
        code("""recent = daily[daily["t"] >= until - pd.Timedelta(weeks=DETAIL_WEEKS)]
table = pd.DataFrame(columns=["last_7_days", "previous_7_days"])
if recent.empty:
    display(Markdown(f"No measurements in the last {DETAIL_WEEKS} weeks."))
else:
    display(stacked_counts_chart(recent, "t", "software_name", "n", title=f"Last {DETAIL_WEEKS} weeks"))
    this_week = recent[recent["t"] >= until - pd.Timedelta(days=7)].groupby("software_name")["n"].sum()
    last_week = recent[(recent["t"] < until - pd.Timedelta(days=7)) & (recent["t"] >= until - pd.Timedelta(days=14))] \\
        .groupby("software_name")["n"].sum()
    table = pd.DataFrame({"last_7_days": this_week, "previous_7_days": last_week}).fillna(0).astype(int)
    table["change"] = (table["last_7_days"] / table["previous_7_days"].where(table["previous_7_days"] > 0) - 1).round(3)
    table["note"] = ["new: no measurements the week before" if p == 0 else "" for p in table["previous_7_days"]]
    display(table.sort_values("last_7_days", ascending=False))
report_finding(*incoming_finding(outage, table))  # what this run found"""),
    ])


def easy_charts_notebook() -> nbformat.NotebookNode:
    return notebook([
        code(IMPORTS),
        md("""# Easy charts

`easy_msm_count_chart` draws measurement counts over time as stacked bands of one column;
values beyond `dimension_limit` are summed into an `(other)` band, so the top of the stack is
always the total. Filters take one value or a list. `help(easy_msm_count_chart)` lists all
arguments; a wrong one raises an `AnalysisError` that lists what is allowed."""),
        code("""easy_msm_count_chart(since="4 weeks", dimension="software_name")"""),
        code("""easy_msm_count_chart(since="2 weeks", granularity="hour", dimension="probe_cc", dimension_limit=8,
                     filter_test_name="web_connectivity")"""),
        code("""chart, df = easy_msm_count_chart(since="3 weeks", dimension="software_version",
                                 filter_software_name=["ooniprobe-android", "ooniprobe-ios"], return_data=True)
display(chart)
df.groupby("software_version")["n"].sum().sort_values(ascending=False)"""),
        code("""easy_msm_count_chart(title="Weekly measurements from IR, RU and CN by test", since="4 weeks", granularity="week",
                     dimension="test_name", filter_probe_cc=["IR", "RU", "CN"])"""),
        code("""try:
    easy_msm_count_chart(dimension="colour")
except AnalysisError as exc:
    print("AnalysisError:", exc)"""),
    ])


def build() -> dict[str, nbformat.NotebookNode]:
    return {
        "autorun_incoming_measurements_prediction_alarming.ipynb": hourly_alarm_notebook(False),
        "autorun_incoming_measurements_prediction_alarming_per_country.ipynb": hourly_alarm_notebook(True),
        "autorun_incoming_measurements_prediction_long_term_alarming.ipynb": long_term_notebook(),
        "autorun_incoming_msmts.ipynb": incoming_msmts_notebook(),
        "easy_charts.ipynb": easy_charts_notebook(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed notebook is stale")
    ap.add_argument("out", nargs="?", type=Path, default=NOTEBOOKS, help="output folder")
    args = ap.parse_args(argv)
    stale = []
    for name, nb in build().items():
        nbformat.validate(nb)
        text = nbformat.writes(nb) + "\n"
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")  # noqa: T201 - a command-line tool
    if stale:
        print("stale notebooks (rebuild with notebooks/tools/build_flow_notebooks.py):", *stale)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
