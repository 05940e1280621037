"""The findings the shipped notebooks report: pure functions from their results."""

from __future__ import annotations

import pandas as pd

from ooniutils.analyses.flow import TotalOutage
from ooniutils.analyses.flow_findings import decline_finding, flow_finding
from ooniutils.analyses.verdicts import (
    duplicates_finding,
    events_finding,
    helper_finding,
    logs_finding,
    release_finding,
    tls_finding,
)
from ooniutils.findings import finding_payload

T0 = pd.Timestamp("2026-12-06 14:00")
OUTAGE = TotalOutage(since=T0, until=T0 + pd.Timedelta(hours=3), last_seen=T0 - pd.Timedelta(hours=1),
                     expected=1200.0)


def _episodes(*rows):
    return pd.DataFrame([{"series": s, "start": T0, "end": T0 + pd.Timedelta(hours=2), "hours": 2,
                          "expected": 1000.0, "actual": 1000.0 * (1 - sev), "missing": 1000 * sev,
                          "severity": sev, "alarms": 2, "probe_types": types, "members": ""}
                         for s, sev, types in rows])


def _status(*states):
    return pd.DataFrame({"series": [f"s{i}" for i in range(len(states))], "state": list(states)})


def test_flow_alarm_names_the_country_drop_and_time():
    v = flow_finding(_episodes(("IR", 0.4, "ooniprobe-android, ooniprobe-ios"), ("RU", 0.3, "")),
                     None, _status("ALARM", "ok"), what="country")
    assert v.level == "alarm"
    assert v.summary.startswith("IR: measurements down 40 % since 2026-12-06 14:00 UTC "
                                "(ooniprobe-android, ooniprobe-ios); RU: measurements down 30 %")
    assert list(v.detail["series"]) == ["IR", "RU"] and list(v.detail["severity"]) == ["40 %", "30 %"]
    payload, total = finding_payload(*v)  # a valid finding for report_finding
    assert total == 2 and payload["detail"][0]["start"] == "2026-12-06 14:00:00"


def test_flow_outage_first_ok_and_no_data():
    v = flow_finding(_episodes(("IR", 0.4, "")), OUTAGE, _status("ALARM"))
    assert v.level == "alarm" and v.summary.startswith("TOTAL OUTAGE") and "1 probe type episode" in v.summary
    ok = flow_finding(_episodes(), None, _status("ok", "ok", "warming up (no history yet)"),
                      what="probe type", alert_hours=3)
    assert ok == ("ok", "all 2 probe type series within their expected flow in the last 3 complete hours", None)
    blind = flow_finding(_episodes(), None, _status("warming up (no history yet)", "no data"))
    assert blind.level == "no_data" and "none past its warm-up" in blind.summary


def test_decline_finding():
    table = pd.DataFrame({"series": ["a", "b"], "level": [100.0, 50.0], "decline": [0.25, 0.01],
                          "slope_per_day": [-1.0, 0.0], "p_value": [0.001, 0.5], "alarm": [True, False],
                          "note": ["", ""]})
    v = decline_finding(table[table["alarm"]], None, table, weeks=8)
    assert v.level == "alarm" and v.summary == "sustained decline: a down 25 % over 8 weeks"
    ok = decline_finding(table.iloc[:0], None, table, weeks=8)
    assert ok.level == "ok" and "2 probe types" in ok.summary
    blind = decline_finding(table.iloc[:0], None, table.assign(p_value=float("nan")), weeks=8)
    assert blind.level == "no_data"
    assert decline_finding(table.iloc[:0], OUTAGE, table, weeks=8).level == "alarm"


def _helpers(**over):
    base = {"helper": ["1.th.ooni.org", "2.th.ooni.org"], "recent_rate": [0.02, 0.03],
            "baseline_rate": [0.02, 0.02], "recent_total": [500, 400], "status": ["ok", "ok"],
            "alarm": [False, False], "scope": ["", ""], "top_cc": ["", ""]}
    base.update(over)
    return pd.DataFrame(base)


def test_helper_finding_levels():
    assert helper_finding(_helpers()).level == "ok"
    alarm = helper_finding(_helpers(status=["elevated", "ok"], alarm=[True, False],
                                    recent_rate=[0.4, 0.03], scope=["all probes", ""]))
    assert alarm.level == "alarm" and "1.th.ooni.org fails 40 % vs 2 % usually" in alarm.summary
    warn = helper_finding(_helpers(status=["elevated", "ok"], top_cc=["IR", ""], scope=["IR", ""]))
    assert warn.level == "warning" and "concentrated in IR" in warn.summary
    assert helper_finding(_helpers().iloc[:0]).level == "no_data"
    assert helper_finding(_helpers(status=["too few recent measurements"] * 2)).level == "no_data"
    assert helper_finding(_helpers(), silence=OUTAGE).level == "alarm"


def test_release_finding():
    result = pd.DataFrame({"test_name": ["web_connectivity", "ndt"], "metric": ["failure_rate"] * 2,
                           "new_value": [0.2, 0.01], "baseline_value": [0.05, 0.01],
                           "p_adjusted": [1e-6, 0.9], "status": ["regression", "ok"],
                           "regression": [True, False]})
    v = release_finding("Android", result, ["3.8.0", "3.9.0"])
    assert v.level == "alarm" and v.summary == "Android 3.9.0: regression in web_connectivity failure_rate"
    ok = release_finding("Android", result.assign(regression=False, status="ok"), ["3.8.0", "3.9.0"])
    assert ok.level == "ok" and "2 test/metric comparisons" in ok.summary
    assert release_finding("iOS", result.iloc[:0], ["1.0"]).level == "no_data"
    assert release_finding("iOS", result.assign(regression=False, status="no baseline"),
                           ["1.0", "1.1"]).level == "no_data"


def test_duplicates_events_logs_tls():
    dups = pd.DataFrame({"normalized_url": ["a", "a", "b"], "cc": ["IR", "IR", "RU"],
                         "exact": [True, True, False], "near": [False, False, True]})
    assert duplicates_finding(dups, 100).summary.startswith("2 URLs listed more than once")
    assert duplicates_finding(dups.iloc[:0], 100).level == "ok"

    table = pd.DataFrame({"ts": [T0], "probe_cc": ["IR"], "probe_asn": [197207], "domain": ["x.org"],
                          "change": ["blocking started"], "block_type": ["dns"], "key": ["k"]})
    assert events_finding(table, table, "7 days").level == "alarm"
    assert events_finding(table, table.assign(change="blocking ended"), "7 days").level == "warning"
    assert events_finding(table, table.iloc[:0], "7 days").level == "ok"

    counts = pd.DataFrame({"t": [T0] * 3, "unit": ["api", "api", "nginx"], "priority": [6, 3, 6],
                           "n": [100, 5, 50]})
    assert logs_finding(counts, "24 hours").summary == "5 error lines of 155 in the last 24 hours: api (5)"
    crit = logs_finding(counts.assign(priority=[6, 2, 6]), "24 hours")
    assert crit == ("alarm", "5 log lines at priority crit or worse in the last 24 hours: api (5)",
                    crit.detail)
    assert logs_finding(counts.assign(priority=6), "24 hours").level == "ok"
    assert logs_finding(counts.iloc[:0], "24 hours").level == "no_data"

    certs = pd.DataFrame({"host": ["a.org", "b.org", "c.org"], "port": [443] * 3,
                          "status": ["ok", "expiring", "error"], "days_left": pd.array([90, 5, None], dtype="Int64"),
                          "not_after": [T0, T0, None], "error": ["", "", "connection refused"]})
    problems, unreachable = certs.iloc[[1]], certs.iloc[[2]]
    one = tls_finding(certs, problems, unreachable)
    assert one.level == "alarm" and one.summary.startswith(
        "c.org:443: UNREACHABLE, certificate not checked (connection refused); b.org:443: ")
    many = tls_finding(certs, problems, certs.iloc[[0, 2]].assign(error="refused"))
    assert many.summary.startswith("2 of 3 hosts UNREACHABLE, certificates not checked: "
                                   "a.org:443, c.org:443; b.org:443: certificate expires in 5 days")
    v = tls_finding(certs, problems, unreachable, {("c.org", 443)})
    assert v.level == "warning" and "b.org:443: certificate expires in 5 days" in v.summary
    ok = tls_finding(certs.iloc[[0]], certs.iloc[:0], certs.iloc[:0])
    assert ok.level == "ok" and ok.summary.startswith("1 certificates valid")


def test_incoming_finding_alarm_warning_ok_and_no_data():
    from ooniutils.analyses.verdicts import WEEKLY_DROP, WEEKLY_FLOOR, incoming_finding

    weekly = pd.DataFrame({"last_7_days": [900, 40, 10], "previous_7_days": [1000, 400, 30]},
                          index=pd.Index(["ooniprobe-cli", "ooniprobe-ios", "ooniprobe-web"],
                                         name="software_name"))
    v = incoming_finding(None, weekly)
    # ios fell 90 % from 400 (above the floor); web fell 67 % but from 30 (below it)
    assert v.level == "warning" and v.summary == "down week over week: ooniprobe-ios 90 %"
    assert list(v.detail["software_name"]) == ["ooniprobe-ios"]
    assert incoming_finding(OUTAGE, weekly).level == "alarm"
    assert incoming_finding(OUTAGE, weekly).summary == OUTAGE.describe()
    assert incoming_finding(None, weekly.iloc[:0]).level == "no_data"
    steady = weekly.assign(previous_7_days=weekly["last_7_days"])
    ok = incoming_finding(None, steady)
    assert ok.level == "ok" and ok.summary.startswith("950 measurements in the last 7 days from 3")
    # exactly at the threshold counts as a drop; just above it does not
    edge = pd.DataFrame({"last_7_days": [int(WEEKLY_FLOOR * (1 - WEEKLY_DROP))],
                         "previous_7_days": [WEEKLY_FLOOR]}, index=["x"])
    assert incoming_finding(None, edge).level == "warning"
    assert incoming_finding(None, edge.assign(last_7_days=edge["last_7_days"] + 1)).level == "ok"
    payload, total = finding_payload(*v)  # a valid finding for report_finding
    assert payload["level"] == "warning" and total == 1
