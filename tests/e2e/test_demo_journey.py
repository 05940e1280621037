"""The operator's journey from the README, end to end (issue 11 part 1).

1. ``scripts/demo.py --small`` (the code path of ``make demo``, with a 30-day world) into a
   temporary folder: it exits 0, every shipped notebook succeeded, every incident of
   ``ground_truth.json`` that falls in a notebook's window is flagged in that notebook's
   output, the summary page lists every autorun notebook, and the log is free of the noise
   an operator would chase.
2. The dashboard started exactly as the README says (``jupycron --config
   <relative path>/jupycron.toml serve``, working directory = the clone, no ``OONI_*``
   variable in the environment), logged in with headless Chromium: Run now on the hourly
   flow-alarm notebook finishes and its new output counts the demo's measurements (the
   run read the demo's store, not an empty one).

Which notebook sees which incident (and its window) is in :data:`DETECTORS`. Short drops
(``short_drop_*``) are not in any notebook's window: the generator injects them to measure
the detectors' recall (generator/truth.py), and the hourly notebooks only alarm on series
with enough history and volume, so none of them promises to flag a given short drop.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jupycron.ledger import SqliteRunStore
from jupycron.models import RunStatus
from tests.support.chromium import chromium_driver, set_basic_auth
from tests.support.services import REPO, free_port, running, wait_for_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FLOW = "autorun_incoming_measurements_prediction_alarming"
PER_COUNTRY = "autorun_incoming_measurements_prediction_alarming_per_country"
LONG_TERM = "autorun_incoming_measurements_prediction_long_term_alarming"
HELPERS = "autorun_test_helper_failure_rate_alarm"
ANDROID = "autorun_android_probe_release"
EVENTS = "autorun_event_detector_alerts"
NOISE = ("Alternative text is missing", "Kernel is running over TCP without encryption")
MEASUREMENTS = re.compile(r"([\d,]+) measurements, \d+ series")


def _clean_env() -> dict[str, str]:
    """A new shell's environment: nothing of this test session's OONI_/JUPYCRON_ settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OONI_", "JUPYCRON_")) and k != "AUTORUN"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("journey")
    folder = base / "demo"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--small",
                           "--dir", str(folder)], cwd=REPO, env=_clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    log = proc.stdout.decode("utf-8", "replace")
    (base / "demo.log").write_text(log)
    return {"dir": folder, "code": proc.returncode, "log": log, "seconds": time.monotonic() - t0,
            "output": folder / "notebooks" / "jupycron", "base": base,
            "truth": json.loads((folder / "ground_truth.json").read_text())
            if (folder / "ground_truth.json").exists() else {}}


def _ok(demo: dict) -> dict:
    if demo["code"] != 0:
        pytest.fail(f"scripts/demo.py --small exited {demo['code']}; end of its log:\n{demo['log'][-6000:]}")
    return demo


def output_text(html: str) -> str:
    """The text of a notebook's HTML output areas (not its code), one table row per line
    with cells separated by `` | ``."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    parts = []
    for area in soup.select(".jp-OutputArea-output"):
        for tr in area.find_all("tr"):
            cells = [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
            tr.replace_with(soup.new_string("\n" + " | ".join(cells) + "\n"))
        parts.append(area.get_text("\n"))
    return "\n".join(line for part in parts for line in part.splitlines() if line.strip())


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp(text: str) -> str:
    return _when(text).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Detector:
    notebook: str
    in_window: Callable[[dict, dict], bool]   # (incident, truth) -> must be flagged
    flagged: Callable[[dict, str], bool]      # (incident, output text) -> it is


def _history_days(days: int, warm_up_days: float = 0.0) -> Callable[[dict, dict], bool]:
    """Incidents starting within the notebook's last ``days`` and after the data's first
    ``warm_up_days`` (a series needs that much history before it may alarm)."""
    def check(inc: dict, truth: dict) -> bool:
        end, start = _when(truth["end"]), _when(truth["start"])
        when = _when((inc.get("details") or {}).get("changepoint_ts") or inc["start"])
        return when >= max(end - timedelta(days=days), start + timedelta(days=warm_up_days))
    return check


def _row_with(*needles: str) -> Callable[[dict, str], bool]:
    return lambda inc, text: any(all(n.format(**inc["keys"], start=_stamp(inc["start"]),
                                                day=inc["start"][:10]) in line for n in needles)
                                 for line in text.splitlines())


STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?")


def _alarm_overlaps(series: Callable[[dict], str]) -> Callable[[dict, str], bool]:
    """An alarm row (``... | <series> | <start> | <end> | ...``) of a series whose name
    starts with ``series(incident)`` and whose interval overlaps the incident's."""
    def check(inc: dict, text: str) -> bool:
        lo, hi = _when(inc["start"]), _when(inc["end"])
        for line in text.splitlines():
            cells = [c.strip() for c in line.split("|")]
            stamps = [datetime.fromisoformat(c).replace(tzinfo=UTC) for c in cells if STAMP.fullmatch(c)]
            if (len(stamps) >= 2 and any(c.startswith(series(inc)) for c in cells)
                    and stamps[0] < hi and stamps[1] >= lo):
                return True
        return False
    return check


DETECTORS: dict[str, Detector] = {
    # the hourly flow notebook lists every alarm of its 36 days (after 9 days of warm-up)
    "probe_type_drop": Detector(FLOW, _history_days(36, warm_up_days=9),
                                _alarm_overlaps(lambda inc: inc["keys"]["software_name"])),
    # per country/probe type: a country's series too thin to be checked are listed as skipped
    "country_outage": Detector(PER_COUNTRY, _history_days(36, warm_up_days=9),
                               lambda inc, text: _alarm_overlaps(lambda i: i["keys"]["probe_cc"] + "/")(inc, text)
                               or _all_series_skipped(inc["keys"]["probe_cc"], text)),
    "slow_decline": Detector(LONG_TERM, _history_days(8 * 7),
                             _row_with("{software_name}", "significant sustained decrease")),
    "test_helper_failure": Detector(HELPERS, _history_days(21),
                                    _row_with("flagged helper {test_helper_host}:", "{day}")),
    "version_regression": Detector(ANDROID, _history_days(60),
                                   _row_with("ooniprobe-android {software_version} regressed")),
    "blocking_change": Detector(EVENTS, _history_days(7), _row_with("{domain}")),
}


def _all_series_skipped(cc: str, text: str) -> bool:
    """Every ``<cc>/...`` series of the per-country notebook is listed as skipped (too few
    measurements): the notebook says it cannot see that country, it does not hide it."""
    rows = [line for line in text.splitlines() if f"| {cc}/" in line]
    return bool(rows) and all("too few measurements" in line for line in rows)


def test_demo_runs_every_notebook_and_its_log_is_quiet(demo):
    demo = _ok(demo)
    log = demo["log"]
    assert "all 17 notebooks succeeded" in log or re.search(r"all \d+ notebooks succeeded", log)
    history = SqliteRunStore(demo["output"]).load()
    shipped = sorted(p.name for p in (REPO / "notebooks").glob("*autorun*.ipynb"))
    assert sorted(history) == shipped
    for name, entry in history.items():
        assert entry.runs[0].status is RunStatus.SUCCESS, (name, entry.runs[0])
    interactive = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb") if "autorun" not in p.name)
    assert sorted(p.stem for p in (demo["dir"] / "interactive").glob("*.html")) == interactive
    for noise in NOISE:
        assert noise not in log, noise
    assert "logship.cursor" not in log or "cannot open" not in log
    print(f"demo --small took {demo['seconds']:.0f} s")


def test_every_incident_in_a_notebook_window_is_flagged(demo):
    demo = _ok(demo)
    truth = demo["truth"]
    texts: dict[str, str] = {}
    checked, missed = [], []
    for inc in truth["incidents"]:
        det = DETECTORS.get(inc["type"])
        if det is None:
            assert inc["type"] == "short_drop", f"no detector declared for {inc['type']}"
            continue
        if not det.in_window(inc, truth):
            continue
        if "test_helper" in inc["keys"]:
            inc = {**inc, "keys": {**inc["keys"],
                                   "test_helper_host": inc["keys"]["test_helper"].split("//")[-1]}}
        if det.notebook not in texts:
            texts[det.notebook] = output_text((demo["output"] / f"{det.notebook}.html").read_text())
        (checked if det.flagged(inc, texts[det.notebook]) else missed).append(inc["id"])
    assert not missed, f"not flagged: {missed} (flagged: {checked})"
    kinds = {next(i["type"] for i in truth["incidents"] if i["id"] == c) for c in checked}
    assert kinds == set(DETECTORS), f"some detectors had no incident in their window: {kinds}"


def test_summary_page_lists_every_autorun_notebook(demo):
    demo = _ok(demo)
    page = (demo["output"] / "summary.html").read_text()
    for nb in (REPO / "notebooks").glob("*autorun*.ipynb"):
        assert nb.name in page, nb.name
    failing = re.findall(r'data-path="([^"]*)" data-state="(?:failed|timeout|oom|crashed)"', page)
    assert not failing, f"failing notebooks on the demo: {failing}"


def _measurements(html: str) -> int:
    m = MEASUREMENTS.search(output_text(html))
    assert m, "no measurement count in the flow notebook's output"
    return int(m.group(1).replace(",", ""))


def test_dashboard_as_in_the_readme_runs_now_on_the_demo_data(demo, tmp_path):
    from selenium.webdriver.common.by import By

    demo = _ok(demo)
    first_count = _measurements((demo["output"] / f"{FLOW}.html").read_text())
    assert first_count > 100_000
    config = os.path.relpath(demo["dir"] / "jupycron.toml", REPO)  # relative, as in the README
    assert not Path(config).is_absolute()
    env = _clean_env()
    jupycron = str(BIN / "jupycron")
    subprocess.run([jupycron, "--config", config, "passwd", "admin", "--password-stdin"],
                   input=b"demo-pw\n", cwd=REPO, env=env, check=True, timeout=60)
    port = free_port()
    log = tmp_path / "serve.log"
    with running([jupycron, "--config", config, "serve", "--port", str(port)], log,
                 cwd=REPO, env=env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for_port(port, timeout=60, proc=proc)  # (no HTTP client: nothing TLS-related needed)
        with chromium_driver(tmp_path) as driver:
            set_basic_auth(driver, "admin", "demo-pw")
            driver.get(base + "/")
            source = driver.find_element(By.CSS_SELECTOR, "p.data-source").text
            assert str(demo["dir"] / "data") in source and "NOT" not in source and "MISSING" not in source
            driver.get(f"{base}/notebook/{FLOW}.ipynb")
            before = {r.get_attribute("data-run") for r in driver.find_elements(By.CSS_SELECTOR, "tr.run-row")}
            driver.find_element(By.ID, "run-now").click()
            assert driver.current_url.endswith(f"/notebook/{FLOW}.ipynb")

            def finished() -> str | None:
                driver.get(f"{base}/notebook/{FLOW}.ipynb")
                failure = driver.find_elements(By.CSS_SELECTOR, ".launch-failure")
                if failure:
                    pytest.fail("Run now failed: " + failure[0].text)
                for row in driver.find_elements(By.CSS_SELECTOR, "tr.run-row"):
                    rid, status = row.get_attribute("data-run"), row.get_attribute("data-status")
                    if rid not in before and status != "running":
                        return f"{rid} {status}"
                return None

            deadline = time.monotonic() + 240
            while (done := finished()) is None:
                assert time.monotonic() < deadline, f"Run now did not finish; log:\n{log.read_text()[-3000:]}"
                time.sleep(1)
            assert done.endswith(" success"), done
            # the new output, read through the dashboard as the user would
            driver.find_element(By.CSS_SELECTOR, "dd.output a.latest").click()
            assert "/output/" in driver.current_url
    newest = SqliteRunStore(demo["output"]).get(f"{FLOW}.ipynb").runs[0]
    assert (newest.run_id, str(newest.status)) == tuple(done.split())
    assert _measurements((demo["output"] / f"{FLOW}.html").read_text()) == first_count
    # "0 measurements" on its own (not the end of "199,480 measurements")
    assert not re.search(r"(?<![\d,])0 measurements", output_text((demo["output"] / f"{FLOW}.html").read_text()))
