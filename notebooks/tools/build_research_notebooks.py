"""Build the research notebooks (URL prioritisation, weighting experiments, campaign
investigation) from the cell sources below.

    .venv/bin/python notebooks/tools/build_research_notebooks.py [--check]

These notebooks are interactive (no ``autorun`` in their names, never scheduled): an operator
copies one, edits the parameters cell and runs it. The analyses are tested functions in
``ooniutils.analyses.priorities`` / ``ooniutils.analyses.campaign``; the notebooks only call
them. ``--check`` exits 1 when a committed notebook differs from what this script builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbbuild  # noqa: E402  (the builders' shared helpers, beside this file)


def prioritisation() -> list:
    return [
        new_markdown_cell("""# Test-list URL prioritisation

Which URLs OONI asks probes to test, and whether the measurements follow. A URL's
**priority** in a country is the sum of the `url_priorities` rules it matches (`*` matches
anything; rules are per category, country, domain or URL). OONI's API hands probes the URLs
with the highest `priority / recent measurements`, so over time each country's measurements
should be shared out in proportion to priority: a URL is **under-tested** when it got less
than half its share, **over-tested** above twice its share, **excluded** when its priority is
0 or less (never handed out) yet it was measured.

Copy this notebook and edit the parameters cell to look at other countries or windows."""),
        new_code_cell("""# Parameters
COUNTRIES = ["BR", "RU", "IR", "IT"]   # probe countries (upper case)
SINCE = "7 days"                         # the window of measurements compared with priorities
LOW, HIGH = 0.5, 2.0                     # under/over-tested thresholds (share of the expected)
MIN_EXPECTED = 5                         # ignore URLs expected to get fewer measurements"""),
        new_code_cell("""from ooniutils import *
from ooniutils.analyses.priorities import (
    active_rules, country_summary, coverage_vs_priority, effective_priorities, priority_chart,
    unlisted_measurements)
from ooniutils.datasets.priorities import fetch_priority_rules, fetch_test_list, fetch_url_counts

entries = fetch_test_list(COUNTRIES)
rules = fetch_priority_rules()
counts = fetch_url_counts(COUNTRIES, since=SINCE)
print(f"{len(entries):,} test-list entries, {len(active_rules(rules))} active rules, "
      f"{int(counts.n.sum()):,} web_connectivity measurements in the last {SINCE}")"""),
        new_markdown_cell("## The rules in force (after cancellations)"),
        new_code_cell("active_rules(rules).sort_values('priority', ascending=False)"),
        new_markdown_cell("## Each URL's effective priority (top 15 per country)"),
        new_code_cell("""priorities = effective_priorities(entries, rules, COUNTRIES)
priorities.groupby("cc").head(15)"""),
        new_markdown_cell("## Do measurements follow priorities?"),
        new_code_cell("""coverage = coverage_vs_priority(priorities, counts, low=LOW, high=HIGH, min_expected=MIN_EXPECTED)
country_summary(coverage)"""),
        new_code_cell("priority_chart(coverage)"),
        new_markdown_cell("## Under-tested URLs (largest shortfall first)"),
        new_code_cell("""under = coverage[coverage.status == "under"].assign(shortfall=lambda d: d.expected - d.n)
under.sort_values("shortfall", ascending=False).groupby("cc").head(10)[
    ["cc", "url", "category_code", "priority", "n", "expected", "ratio"]]"""),
        new_markdown_cell("## Over-tested and excluded-but-measured URLs"),
        new_code_cell("""coverage[coverage.status.isin(["over", "excluded"])].sort_values("ratio", ascending=False).groupby("cc").head(10)[
    ["cc", "url", "category_code", "priority", "n", "expected", "ratio", "status"]]"""),
        new_markdown_cell("## Measured URLs on none of the country's lists"),
        new_code_cell("unlisted_measurements(priorities, counts).head(20)"),
    ]


def experiments() -> list:
    return [
        new_markdown_cell("""# URL priority experiments

Replays alternative `url_priorities` weightings on past data: for every day of the window
and every country, each weighting's probe list (what OONI's API would have handed a probe,
`LIMIT` URLs ordered by `priority / measurements in the previous 7 days`) is built from the
measurements before that day. The table compares them: how many of the handed-out URLs had
no recent measurement (coverage a list adds), their mean recent count, the overlap with the
rules in force, and the category mix.

Add your own weighting to `WEIGHTINGS` (a rules frame: category_code, cc, domain, url,
priority; `scale_rules` rescales categories of the current rules)."""),
        new_code_cell("""# Parameters
COUNTRIES = ["BR", "RU", "IR"]
SINCE = "21 days"      # past data replayed (the first 7 days only feed the first replay day)
LIMIT = 50             # URLs per probe list"""),
        new_code_cell("""from ooniutils import *
from ooniutils.analyses.priorities import active_rules, category_mix_chart, compare_weightings, scale_rules
from ooniutils.datasets.priorities import fetch_daily_url_counts, fetch_priority_rules, fetch_test_list

import pandas as pd

entries = fetch_test_list(COUNTRIES)
current = active_rules(fetch_priority_rules())
daily = fetch_daily_url_counts(COUNTRIES, since=SINCE)
flat = current[current.cc.isin(["*", ""]) & (current.domain.isin(["*", ""])) & (current.url.isin(["*", ""]))]
WEIGHTINGS = {
    "in force": current,
    "news and rights x2": scale_rules(current, {"NEWS": 2, "HUMR": 2, "FEXP": 2}),
    "circumvention x3": scale_rules(current, {"ANON": 3}),
    "categories only": flat,  # no country, domain or URL rule
    "all equal": current.assign(priority=50).query("cc in ['*', ''] and domain in ['*', ''] and url in ['*', '']"),
}
print(f"{len(entries):,} test-list entries; {int(daily.n.sum()):,} measurements over {daily.day.nunique()} days")"""),
        new_code_cell("""summary, categories = compare_weightings(entries, daily, WEIGHTINGS, COUNTRIES, limit=LIMIT)
summary.round(3)"""),
        new_code_cell("category_mix_chart(categories)"),
    ]


def campaign() -> list:
    return [
        new_markdown_cell("""# Test campaign investigation

Did a test campaign grow the number of measurements and the coverage of its URLs? The
campaign period is compared with the same number of days before it (or `BASELINE_DAYS`),
per country and per network (ASN): measurements per day, distinct URLs measured, the share
of the campaign's URLs measured at least once, and networks seen only during the campaign.

Copy this notebook for each campaign and edit the parameters cell: dates (UTC, end
exclusive), countries, the campaign's URLs (or test-list categories, or neither for every
URL) and probe types (`software_name`, or `None` for all)."""),
        new_code_cell("""# Parameters
import pandas as pd

today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
CAMPAIGN_START = today - pd.Timedelta(days=7)
CAMPAIGN_END = today                     # exclusive
BASELINE_DAYS = None                     # None: as long as the campaign
COUNTRIES = ["BR", "RU", "IR"]
URLS = None                              # e.g. ["https://www.bbc.com/news", ...]
CATEGORIES = ["NEWS", "HUMR"]            # used when URLS is None; None for every URL
PROBE_TYPES = None                       # e.g. ["ooniprobe-android", "ooniprobe-ios"]"""),
        new_code_cell("""from ooniutils import *
from ooniutils.analyses.campaign import CampaignWindow, campaign_chart, campaign_report
from ooniutils.datasets.campaign import campaign_target_urls, fetch_campaign_counts

window = CampaignWindow.of(CAMPAIGN_START, CAMPAIGN_END, BASELINE_DAYS)
targets = campaign_target_urls(COUNTRIES, URLS, CATEGORIES)
counts = fetch_campaign_counts(window, COUNTRIES, targets, PROBE_TYPES)
report = campaign_report(counts, window, targets)
print(f"campaign {window.start:%Y-%m-%d} to {window.end:%Y-%m-%d} ({window.days} days), baseline from "
      f"{window.baseline_start:%Y-%m-%d} ({window.baseline_days} days); {len(targets) or 'all'} target URLs")"""),
        new_markdown_cell("## Per country"),
        new_code_cell("report['countries'].round(3)"),
        new_code_cell("campaign_chart(report['daily'], window)"),
        new_code_cell("campaign_chart(report['daily'], window, value='urls')"),
        new_markdown_cell("## Per network (largest first; `new`: no measurement before the campaign)"),
        new_code_cell("report['networks'].head(30).round(3)"),
        new_markdown_cell("## Target URLs nobody measured during the campaign"),
        new_code_cell("report['untested']"),
    ]


BUILDERS: nbbuild.Builders = {
    "url_prioritisation.ipynb": prioritisation,
    "url_priority_experiments.ipynb": experiments,
    "campaign_investigation.ipynb": campaign,
}


if __name__ == "__main__":
    sys.exit(nbbuild.main(BUILDERS, Path(__file__).name, __doc__.splitlines()[0]))
