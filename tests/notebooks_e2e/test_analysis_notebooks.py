"""End to end: the analysis notebooks run against a generated 21-day world and find the
incidents the generator injected (a test helper failing for every probe, a regressing
android version, blocking changepoints), announce new changepoints to a local Slack
stand-in once, and handle a missing query_log. Absence is not green: on an initialised but
empty store every autorun analysis notebook fails with a message naming the empty table.

One world is generated per session; notebooks execute in real kernels through nbclient,
each once (three at a time), and the tests check their outputs.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from jupycron.findings import last_finding
from jupycron.models import Finding, FindingLevel
from tests.support.fake_webhooks import fake_webhook_server
from tests.support.notebooks import execute, output_text
from tests.support.services import REPO, require_shared_data

NOTEBOOKS = REPO / "notebooks"
pytestmark = pytest.mark.integration


def _set_env(mp: pytest.MonkeyPatch, world: dict) -> None:
    mp.setenv("OONI_DATA_DIR", str(world["data"]))
    mp.setenv("JUPYCRON_STATE_DIR", str(world["state"]))
    mp.setenv("AUTORUN", "1")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """21 days of generated data + the test-list sample + a few journald lines."""
    from ooniutils.analyses.test_helpers import helper_host
    from ooniutils.store import get_store
    from ooniutils.store.generator import generate
    from ooniutils.store.loaders import load_test_lists

    base = tmp_path_factory.mktemp("analysis-world")
    world = {"data": base / "data", "state": base / "state", "truth": base / "truth.json"}
    lists = require_shared_data("test-lists-sample")
    with pytest.MonkeyPatch.context() as mp:
        cfg = base / "config.toml"
        cfg.write_text("")
        mp.setenv("OONI_MONITORING_CONFIG", str(cfg))
        _set_env(mp, world)
        store = get_store(create=True)
        store.init()
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        truth = generate(store, days=21, rows=400_000, seed=0, end=end, truth_path=world["truth"])
        load_test_lists(store, lists)
        now_us = int(pd.Timestamp.now(tz="UTC").value // 1000)
        store.insert("logs", pd.DataFrame([
            {"host": "fsn-1", "_HOSTNAME": "fsn-1", "_MACHINE_ID": "m" * 32,
             "_SYSTEMD_UNIT": unit, "PRIORITY": prio, "MESSAGE": msg,
             "__REALTIME_TIMESTAMP": now_us - i * 60_000_000}
            for i, (unit, prio, msg) in enumerate([
                ("nginx.service", 3, "upstream timed out (110)"),
                ("nginx.service", 6, "GET /api/v1/measurements 200"),
                ("clickhouse-server.service", 2, "Memory limit (total) exceeded"),
                ("jupycron.service", 4, "notebook autorun_x.ipynb is late"),
            ])]))
    world["helper_incident"] = next(i for i in truth.incidents if i.type == "test_helper_failure")
    world["helper"] = helper_host(world["helper_incident"].keys["test_helper"])
    world["regression"] = next(i for i in truth.incidents if i.type == "version_regression")
    world["blocking"] = truth.of_type("blocking_change")
    return world


#: notebook -> what its last run reported with report_finding (read as jupycron reads it)
FINDINGS: dict[str, Finding | None] = {}


def run_notebook(name: str, env: dict[str, str] | None = None) -> str:
    """Execute notebooks/<name>.ipynb in a fresh kernel (see tests.support.notebooks) and
    return its text output. Fails with the traceback when a cell raises."""
    nb = execute(name, env)  # raises when a cell fails (the empty-store runs): nothing recorded
    FINDINGS[name] = last_finding(nb)
    return output_text(nb, chart="<svg chart>")


EMPTY_FAILS = {  # autorun notebook -> what its error names
    "autorun_test_helper_failure_rate_alarm":
        "no web_connectivity measurements with a test helper address at all in the fastpath table",
    "autorun_android_probe_release": "no measurements from ooniprobe-android at all in the fastpath table",
    "autorun_duplicate_test_list_urls": "no test-list entries at all in the citizenlab table",
    "autorun_event_detector_alerts": "no changepoints at all in the event_detector_changepoints table",
    "autorun_fsn_logs": "no log lines at all in the logs table",
}
WORLD_NOTEBOOKS = ["autorun_test_helper_failure_rate_alarm", "test_helpers",
                   "autorun_android_probe_release", "autorun_ios_probe_release",
                   "autorun_cli_probe_release", "autorun_duplicate_test_list_urls",
                   "autorun_fsn_logs", "centralized_logs", "heavy_queries"]


@pytest.fixture(scope="session")
def outputs(world, tmp_path_factory):
    """Every notebook executed once against the world, three kernels at a time (kernel
    start-up dominates). The event notebook runs twice in a row with a Slack stand-in;
    the autorun analysis notebooks also run once on an empty store."""
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("OONI_", "JUPYCRON_")) and k != "AUTORUN"}
    cfg = tmp_path_factory.mktemp("nb-config") / "config.toml"
    cfg.write_text("")
    env = {**base_env, "OONI_MONITORING_CONFIG": str(cfg), "OONI_DATA_DIR": str(world["data"]),
           "JUPYCRON_STATE_DIR": str(world["state"]), "AUTORUN": "1"}
    empty_dir = tmp_path_factory.mktemp("empty-store")
    from ooniutils.store.embedded import EmbeddedStore

    EmbeddedStore(empty_dir)  # an initialised store without rows (`ooniutils data init`)
    empty_env = {**env, "OONI_DATA_DIR": str(empty_dir)}
    results: dict[str, object] = {}
    with fake_webhook_server() as slack, ThreadPoolExecutor(max_workers=3) as pool:
        slack_env = {**env, "OONI_SLACK_WEBHOOK_URL": slack.url("/hook")}

        def events_twice() -> tuple[str, list, str, list]:
            first = run_notebook("autorun_event_detector_alerts", slack_env)
            after_first = [r.json() for r in slack.requests]
            second = run_notebook("autorun_event_detector_alerts", slack_env)
            return first, after_first, second, [r.json() for r in slack.requests]

        futures = {"events": pool.submit(events_twice)}
        futures |= {f"empty:{name}": pool.submit(run_notebook, name, empty_env) for name in EMPTY_FAILS}
        futures |= {name: pool.submit(run_notebook, name, env) for name in WORLD_NOTEBOOKS}
        for key, fut in futures.items():
            try:
                results[key] = fut.result()
            except Exception as exc:  # reported by the test that needs this notebook
                results[key] = exc
    return results


def output(outputs: dict, key: str):
    value = outputs[key]
    if isinstance(value, Exception):
        raise value
    return value


def test_helper_alarm_finds_the_injected_helper_failure(world, outputs):
    out = output(outputs, "autorun_test_helper_failure_rate_alarm")
    flagged = [line for line in out.splitlines() if line.startswith("flagged helper ")]
    assert any(line.startswith(f"flagged helper {world['helper']}:") and "(all probes)" in line
               for line in flagged), out[-3000:]
    start = world["helper_incident"].start.strftime("%Y-%m-%d")
    assert any(start in line for line in flagged if world["helper"] in line)
    # the injected failure is the only one: no other helper flagged for everyone
    assert {line.split()[2].rstrip(":") for line in flagged} == {world["helper"]}
    assert "destroyed" in out and "Digital Ocean" in out  # the inventory table
    # the injected failure is over (50 hours ago): nothing current; no endpoint is configured
    assert "no current alarm" in out or "not sent to slack: OONI_SLACK_WEBHOOK_URL not configured" in out
    assert "<svg chart>" in out
    finding = FINDINGS["autorun_test_helper_failure_rate_alarm"]
    assert finding is not None and finding.level is FindingLevel.OK, finding
    assert finding.summary.endswith("test helpers at their usual failure rate")


def test_test_helpers_overview(outputs):
    out = output(outputs, "test_helpers")
    assert "live instance(s)" in out and "rotated" in out
    assert "roaming-th-" in out


def test_android_release_regression_is_flagged(world, outputs):
    out = output(outputs, "autorun_android_probe_release")
    version = world["regression"].keys["software_version"]
    assert f"newest version {version}" in out
    assert "REGRESSION FLAGGED" in out and f"ooniprobe-android {version} regressed" in out
    assert "web_connectivity failure_rate" in out
    assert "alert not sent: OONI_SLACK_WEBHOOK_URL not configured" in out
    finding = FINDINGS["autorun_android_probe_release"]
    assert finding is not None and finding.level is FindingLevel.ALARM, finding
    assert finding.summary.startswith(f"ooniprobe-android {version}: regression in ")
    assert {"test_name": "web_connectivity", "metric": "failure_rate"}.items() <= \
        next(r for r in finding.detail or [] if r["test_name"] == "web_connectivity").items()


@pytest.mark.parametrize("name, software", [("autorun_ios_probe_release", "ooniprobe-ios"),
                                            ("autorun_cli_probe_release", "ooniprobe-cli")])
def test_healthy_releases_are_not_flagged(outputs, name, software):
    out = output(outputs, name)
    assert f"no regression flagged for {software}" in out, out[-3000:]
    assert "REGRESSION FLAGGED" not in out
    finding = FINDINGS[name]
    assert finding is not None and finding.level is FindingLevel.OK, finding
    assert finding.summary.startswith(software) and "no regression" in finding.summary


def test_duplicate_test_list_urls(outputs):
    out = output(outputs, "autorun_duplicate_test_list_urls")
    assert "URLs listed more than once" in out
    assert "exact" in out and "near" in out
    finding = FINDINGS["autorun_duplicate_test_list_urls"]
    assert finding is not None and finding.level is FindingLevel.WARNING
    assert "URLs listed more than once" in finding.summary and finding.detail


def test_event_alerts_sent_once(world, outputs):
    first, after_first, second, after_second = output(outputs, "events")
    recent = [i for i in world["blocking"] if i.start >= datetime.now(UTC) - pd.Timedelta(days=7)]
    assert recent, "the generated world should have changepoints in the last 7 days"
    assert f"{len(recent)} new" in first and "alert sent to Slack" in first
    for incident in recent:
        assert incident.keys["domain"] in first
    assert "explorer.ooni.org/chart/mat?" in first
    assert len(after_first) == 1
    body = json.dumps(after_first[0])
    assert all(i.keys["domain"] in body for i in recent)
    # the next run finds nothing new and sends nothing
    assert "0 new" in second and "nothing to alert on" in second
    assert len(after_second) == 1
    state = json.loads((world["state"] / "event_detector_alerts.json").read_text())
    assert len(state["sent"]) == len(recent)
    # the first run reported the new events (its banner), the second one (recorded) nothing new
    assert "ALARM</strong>" in first and f"{len(recent)} new blocking event(s)" in first
    assert FINDINGS["autorun_event_detector_alerts"] == Finding(
        FindingLevel.OK, f"no new blocking event ({len(recent)} changepoint(s) in the last 7 days, "
        "all announced before)", None)


@pytest.mark.parametrize("name", ["autorun_fsn_logs", "centralized_logs"])
def test_log_dashboards(outputs, name):
    out = output(outputs, name)
    assert "nginx.service" in out and "upstream timed out" in out
    assert "clickhouse-server.service" in out
    assert "<svg chart>" in out  # the errors chart
    finding = FINDINGS[name]  # the world's logs hold one crit line
    assert finding is not None and finding.level is FindingLevel.ALARM, finding
    assert finding.summary.startswith("1 log line at priority crit or worse in the last ")
    assert "clickhouse-server.service (1)" in finding.summary


@pytest.mark.parametrize("name", EMPTY_FAILS)
def test_an_empty_store_turns_the_notebooks_red(outputs, name):
    """Before: "nothing to analyse, no alarm" / "nothing to compare" / "no changepoint" /
    "the logs table has no line" — green. Now the run fails and says which table is empty."""
    res = outputs[f"empty:{name}"]
    assert isinstance(res, Exception), f"{name} succeeded on an empty store"
    text = str(res)
    assert "NoDataError" in text and EMPTY_FAILS[name] in text, text[-2000:]
    assert "embedded store " in text and "(OONI_DATA_DIR)" in text


def test_heavy_queries_says_query_log_is_missing(outputs):
    out = output(outputs, "heavy_queries")
    assert "system.query_log is not available on this engine (embedded store" in out


def test_committed_notebooks_are_built_from_the_script():
    import subprocess
    import sys

    script = NOTEBOOKS / "tools" / "build_analysis_notebooks.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for path in Path(NOTEBOOKS).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        if path.name.startswith("autorun_"):
            assert nb.cells[0].source.startswith("# jupycron: ")
