"""Prometheus metrics: the collector's values, the alert rules (promtool), the Grafana
dashboard's metric names, and the real Prometheus scraping /metrics."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jupycron.config import Settings
from jupycron.ledger import SqliteRunStore
from jupycron.ledger.sqlite import ledger_file
from jupycron.metrics import JupycronCollector, make_registry, render_metrics
from jupycron.models import JobSpec, Run, RunStatus, Trigger
from jupycron.schedule import latest_slot
from jupycron.web import start_in_thread
from tests.support.ledger import write_heartbeat, write_history_doc
from tests.support.prometheus import prometheus_server, wait_for_value
from tests.support.services import REPO, require_program

NOW = datetime.now(UTC).replace(microsecond=0)
RULES = REPO / "deploy" / "prometheus" / "jupycron-rules.yml"
GRAFANA = REPO / "deploy" / "grafana" / "jupycron.json"


def at(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


@pytest.fixture
def site(tmp_path: Path, jc) -> Settings:
    """good: succeeded; bad: success then 2 failures; late: hourly, last run 5 h ago;
    busy: running now; off: disabled."""
    s = jc.make_settings(tmp_path)
    for name, line in (("good", '{"every": "1 day"}'), ("bad", '{"every": "1 day"}'),
                       ("late", '{"every": "1 hour"}'), ("busy", '{"every": "1 day"}'),
                       ("off", '{"every": "1 day", "enabled": false}')):
        jc.copy_notebook("ok_autorun.ipynb", s.notebooks, f"{name}_autorun.ipynb", line=line)

    def r(nb: str, i: int, hours: float, status: RunStatus, **kw) -> dict:
        return Run(f"{nb}_autorun.ipynb", f"{at(hours):%Y%m%dT%H%M%S}-{i:06x}", at(hours), status,
                   trigger=Trigger.MANUAL, finished_at=at(hours) + timedelta(seconds=30),
                   **kw).to_json()

    runs = {
        "good": [r("good", 1, 1, RunStatus.SUCCESS, duration_s=12.5, peak_mem_mb=100.0)],
        "bad": [r("bad", 3, 1, RunStatus.TIMEOUT, duration_s=60.0),
                r("bad", 2, 2, RunStatus.FAILED, duration_s=3.0),
                r("bad", 1, 3, RunStatus.SUCCESS, duration_s=2.0)],
        "late": [r("late", 1, 5, RunStatus.SUCCESS, duration_s=1.0)],
        "busy": [r("busy", 1, 0.01, RunStatus.RUNNING)],
    }
    # scheduled runs: the daily ones served today's slot, the hourly one a slot 5 h ago
    today = latest_slot(JobSpec(every="1 day"), NOW)
    for name, docs in runs.items():
        for doc in docs:
            slot = at(5).replace(minute=0, second=0) if name == "late" else today
            doc["trigger"], doc["slot"] = "schedule", slot.isoformat()
    s.output_dir.mkdir(parents=True)
    write_history_doc(s.output_dir, {"version": 1, "notebooks": {
        f"{nb}_autorun.ipynb": {"runs": rs, "deleted_at": None, "last_success_output": None,
                                "first_seen": at(48).isoformat()} for nb, rs in runs.items()}})
    write_heartbeat(s.output_dir, {
        "pid": 123, "mode": "daemon", "heartbeat": (NOW - timedelta(seconds=30)).isoformat(),
        "queue": ["x_autorun.ipynb", "y_autorun.ipynb"], "running": ["busy_autorun.ipynb"],
        "memory_limit": "cgroup-v2", "pool": {"size": 2, "idle": 1, "idle_rss_mb": 112.0,
                                              "idle_pss_mb": 40.5, "templates": 1,
                                              "templates_pss_mb": 90.25}})
    return s


def samples(settings: Settings) -> dict[tuple[str, tuple], float]:
    text = render_metrics(make_registry(settings)).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def nb(name: str, **extra: str) -> tuple:
    return tuple(sorted({"notebook": f"{name}_autorun.ipynb", **extra}.items()))


def test_collector_values(site: Settings) -> None:
    m = samples(site)
    assert m[("jupycron_notebook_last_run_timestamp_seconds", nb("bad"))] == at(1).timestamp()
    assert m[("jupycron_notebook_last_success_timestamp_seconds", nb("bad"))] == at(3).timestamp()
    assert m[("jupycron_notebook_consecutive_failures", nb("bad"))] == 2
    assert m[("jupycron_notebook_last_duration_seconds", nb("bad"))] == 60.0
    assert m[("jupycron_notebook_state", nb("bad", state="timeout"))] == 1
    assert m[("jupycron_notebook_state", nb("bad", state="success"))] == 0
    assert m[("jupycron_notebook_state", nb("good", state="success"))] == 1
    assert m[("jupycron_notebook_last_peak_memory_bytes", nb("good"))] == 100 * 1024 * 1024
    assert m[("jupycron_notebook_consecutive_failures", nb("good"))] == 0
    assert m[("jupycron_notebook_late", nb("late"))] == 1
    assert m[("jupycron_notebook_late", nb("good"))] == 0
    assert m[("jupycron_notebook_late", nb("off"))] == 0
    assert m[("jupycron_notebook_running", nb("busy"))] == 1
    assert m[("jupycron_notebook_state", nb("off", state="disabled"))] == 1
    assert m[("jupycron_notebook_info", nb("off", schedule="every 1 day", enabled="false"))] == 1
    # never-run notebooks and runs without a success leave the series out (no fake zeros)
    assert ("jupycron_notebook_last_success_timestamp_seconds", nb("off")) not in m
    assert ("jupycron_notebook_last_run_timestamp_seconds", nb("busy")) not in m
    assert m[("jupycron_scheduler_heartbeat_timestamp_seconds", ())] == (NOW - timedelta(seconds=30)).timestamp()
    assert m[("jupycron_scheduler_queue_length", ())] == 2
    assert m[("jupycron_scheduler_running", ())] == 1
    assert m[("jupycron_scheduler_info", (("memory_limit", "cgroup-v2"), ("mode", "daemon")))] == 1
    assert m[("jupycron_collector_errors", ())] == 0
    assert m[("jupycron_pool_size", ())] == 2 and m[("jupycron_pool_idle_kernels", ())] == 1
    assert m[("jupycron_pool_idle_memory_bytes", ())] == 40.5 * 1024 * 1024
    assert m[("jupycron_kernel_templates_memory_bytes", ())] == 90.25 * 1024 * 1024


def test_heartbeat_absent_or_corrupt(site: Settings) -> None:
    with sqlite3.connect(ledger_file(site.output_dir)) as conn:
        conn.execute("DELETE FROM state WHERE key = 'heartbeat'")
    m = samples(site)
    assert not any(k[0].startswith(("jupycron_scheduler_", "jupycron_pool_")) for k in m)
    with sqlite3.connect(ledger_file(site.output_dir)) as conn:
        conn.execute("INSERT INTO state (key, value) VALUES ('heartbeat', '{not json')")
    m = samples(site)
    assert not any(k[0].startswith("jupycron_scheduler_") for k in m)
    write_heartbeat(site.output_dir, {"heartbeat": 1700000000, "queue": 4, "running": 0})
    m = samples(site)
    assert m[("jupycron_scheduler_heartbeat_timestamp_seconds", ())] == 1700000000
    assert m[("jupycron_scheduler_queue_length", ())] == 4
    assert not any(k[0].startswith("jupycron_pool_") for k in m)  # no pool in this heartbeat


def test_unreadable_history_is_reported(site: Settings) -> None:
    with sqlite3.connect(ledger_file(site.output_dir)) as conn:  # a jupycron from the future
        conn.execute("UPDATE schema_version SET version = version + 1")
    m = samples(site)
    assert m[("jupycron_collector_errors", ())] == 1
    assert not any(k[0] == "jupycron_notebook_state" for k in m)


def test_scrapes_parse_the_history_only_when_it_changed(site: Settings, monkeypatch) -> None:
    """One collector keeps the parsed history between scrapes while the file is unchanged,
    and a run recorded by any process shows at the next scrape."""
    collector = JupycronCollector(site)
    registry = CollectorRegistry()
    registry.register(collector)

    def scrape() -> dict[tuple[str, tuple], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(render_metrics(registry).decode())
                for s in fam.samples}

    assert scrape()[("jupycron_notebook_consecutive_failures", nb("bad"))] == 2
    parses = collector.history.parses
    scrape()
    assert collector.history.parses == parses
    SqliteRunStore(site.output_dir).record(Run("bad_autorun.ipynb", "later", NOW, RunStatus.OOM,
                                        finished_at=NOW))
    assert scrape()[("jupycron_notebook_consecutive_failures", nb("bad"))] == 3
    assert collector.history.parses == parses   # only the changed notebook was read again


def test_alert_rules_pass_promtool() -> None:
    promtool = require_program("promtool", "/usr/bin/promtool", package="prometheus")
    for args in (["check", "rules", RULES.name], ["test", "rules", "jupycron-rules.test.yml"],
                 ["check", "config", "prometheus.example.yml"]):
        r = subprocess.run([promtool, *args], cwd=RULES.parent, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    names = re.findall(r"- alert: (\w+)", RULES.read_text())
    assert {"JupycronSchedulerDown", "JupycronNotebookFailing", "JupycronNotebookLate"} <= set(names)


def exported_names(settings: Settings) -> set[str]:
    text = render_metrics(make_registry(settings)).decode()
    return set(re.findall(r"^# TYPE (\w+) ", text, re.M))


def test_every_metric_in_rules_and_grafana_is_exported(site: Settings) -> None:
    exported = exported_names(site)
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs.append(dash["templating"]["list"][1]["definition"])
    assert len(exprs) > 10
    used = {n for e in exprs for n in re.findall(r"\bjupycron_\w+", e)}
    used |= set(re.findall(r"\bjupycron_\w+", RULES.read_text()))
    assert used and used <= exported, used - exported
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "jupycron"


def test_real_prometheus_scrapes_metrics(site: Settings, tmp_path: Path) -> None:
    handle = start_in_thread(site, "127.0.0.1", 0)
    try:
        with prometheus_server(tmp_path, [f"127.0.0.1:{handle.port}"],
                               rule_files=[str(RULES)]) as prom:
            q = 'jupycron_notebook_consecutive_failures{notebook="bad_autorun.ipynb"}'
            assert wait_for_value(prom, q) == 2
            assert wait_for_value(prom, 'jupycron_notebook_late{notebook="late_autorun.ipynb"}') == 1
            assert wait_for_value(prom, "jupycron_scheduler_queue_length") == 2
            assert wait_for_value(prom, "jupycron_pool_idle_memory_bytes") == 40.5 * 1024 * 1024
            assert wait_for_value(prom, 'up{job="jupycron"}') == 1
            # the failing rule is evaluated by Prometheus itself (no "for:" delay)
            assert wait_for_value(
                prom, 'ALERTS{alertname="JupycronNotebookFailing",notebook="bad_autorun.ipynb"}') == 1
    finally:
        handle.stop()
