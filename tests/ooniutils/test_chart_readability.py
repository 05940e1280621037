"""What the chart fixes of issue 14 §2 promise, checked on the rendered SVG or the spec:
uncut legend labels, one title over the release facets, a heatmap scale that is grey for
a healthy rate, priority headers that do not sit on the y title."""

from __future__ import annotations

import re

import pandas as pd
import vl_convert as vlc

from ooniutils.analyses.logs import errors_chart
from ooniutils.analyses.releases import rates_chart
from ooniutils.analyses.test_helpers import HEATMAP_COLOURS, HEATMAP_STEPS, country_heatmap
from ooniutils.display import CHART_FONT, setup_notebook


def _svg(chart) -> str:
    setup_notebook()
    return vlc.vegalite_to_svg(chart.to_dict())


def test_release_facets_have_one_title_and_readable_headers():
    stats = pd.DataFrame({"software_version": ["3.8.0", "3.9.0"] * 2,
                          "test_name": ["web_connectivity"] * 2 + ["facebook_messenger"] * 2,
                          "total": [100] * 4, "failures": [5, 10, 1, 2], "anomalies": [1, 2, 3, 4]})
    title = "ooniprobe-android: failure and anomaly rate per version"
    spec = rates_chart(stats, title).to_dict()
    assert spec["title"] == title and "title" not in spec["spec"]  # not repeated per panel
    assert spec["facet"]["column"]["title"] is None
    svg = _svg(rates_chart(stats, title))
    assert svg.count(f">{title}<") == 1  # drawn once (aria labels aside)
    assert ">failure rate<" in svg and ">anomaly rate<" in svg and "failure_rate" not in svg


def test_heatmap_is_grey_for_healthy_rates_and_red_only_for_high_ones():
    counts = pd.DataFrame({"hour": pd.to_datetime(["2026-12-06 10:00"] * 4),
                           "probe_cc": ["IT", "IT", "DE", "DE"], "probe_asn": [1] * 4,
                           "helper": ["0.th.ooni.org", "1.th.ooni.org"] * 2,
                           "total": [100] * 4, "failures": [5, 70, 12, 20]})
    scale = country_heatmap(counts).to_dict()["encoding"]["color"]["scale"]
    assert scale == {"type": "threshold", "domain": list(HEATMAP_STEPS), "range": list(HEATMAP_COLOURS)}
    fills = re.findall(r'fill="(#[0-9a-f]{6})"', _svg(country_heatmap(counts)))
    assert fills.count(HEATMAP_COLOURS[0]) >= 2        # 5 % and 12 %: grey, not red
    assert HEATMAP_COLOURS[-1] in fills                # 70 %: dark red


def test_legend_labels_and_font_are_not_cut():
    errors = pd.DataFrame({"t": pd.to_datetime(["2026-12-06 10:00", "2026-12-06 11:00"]),
                           "unit": ["clickhouse-server.service", "nginx.service"],
                           "priority_name": ["crit", "err"], "n": [1, 5]})
    svg = _svg(errors_chart(errors))
    assert ">clickhouse-server.service<" in svg       # whole, not "clickhouse-server.servic…"
    assert f'font-family="{CHART_FONT}"' in svg
    assert ">priority crit<" in svg and ">priority err<" in svg
