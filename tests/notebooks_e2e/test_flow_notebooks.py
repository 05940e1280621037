"""End to end: the measurement-flow notebooks run against a generated 28-day world and find
the incidents the generator injected (ooniprobe-android uploads halved for 6 h, an 8-hour
outage in IR, a slow decline of ooniprobe-desktop); the hourly notebook under AUTORUN sends
its alarm to local Alertmanager/Slack stand-ins, and a second run re-fires Alertmanager but
sends nothing new to Slack. Absence is an alarm: on an initialised but empty store every
flow notebook fails (red) with a message naming the data source, and with the window moved
past the end of the data (a silent pipeline) the hourly notebook raises the total-outage
alarm through its alert path.

One world per session; notebooks run in real kernels through nbclient, three at a time.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tests.support.fake_webhooks import FakeWebhook, fake_webhook_server
from tests.support.services import REPO

NOTEBOOKS = REPO / "notebooks"
pytestmark = pytest.mark.integration

FLOW = "autorun_incoming_measurements_prediction_alarming"
PER_COUNTRY = "autorun_incoming_measurements_prediction_alarming_per_country"
LONG_TERM = "autorun_incoming_measurements_prediction_long_term_alarming"
MSMTS = "autorun_incoming_msmts"
EASY = "easy_charts"
ALL = [FLOW, PER_COUNTRY, LONG_TERM, MSMTS, EASY]


def _recorded(hook: FakeWebhook) -> list[tuple[str, object]]:
    """(path, JSON body) of every request the stand-in received so far."""
    return [(r.path, r.json()) for r in hook.requests]


def run_notebook(name: str, env: dict[str, str], overrides: str | None = None) -> dict:
    """Execute notebooks/<name>.ipynb in a fresh kernel with ``env``; ``overrides`` is a code
    cell inserted after the cell tagged ``parameters``. Returns text and output MIME types."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if overrides:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(at + 1, new_code_cell(overrides))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)  # raises CellExecutionError with the traceback if a cell fails
    parts, mimes = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                data = out.get("data", {})
                mimes |= set(data)
                parts.append(data.get("text/plain", ""))
                parts.append(data.get("text/markdown", ""))
    return {"text": "\n".join(parts), "mimes": mimes, "nb": nb}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from ooniutils.store import get_store, reset_stores
    from ooniutils.store.generator import generate

    base = tmp_path_factory.mktemp("flow-world")
    cfg = base / "config.toml"
    cfg.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OONI_MONITORING_CONFIG", str(cfg))
        mp.setenv("OONI_DATA_DIR", str(base / "data"))
        store = get_store(create=True)
        store.init()
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        truth = generate(store, days=28, seed=0, end=end, truth_path=base / "truth.json")
        mp.setenv("OONI_DATA_DIR", str(base / "empty"))
        get_store(create=True)  # an initialised store without rows: the notebooks must fail
        reset_stores()
    return {"data": base / "data", "config": cfg, "truth": truth, "empty": base / "empty",
            "state": base / "state", "end": end}


@pytest.fixture(scope="session")
def outputs(world):
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("OONI_", "JUPYCRON_")) and k != "AUTORUN"}
    env = {**base_env, "OONI_MONITORING_CONFIG": str(world["config"]), "OONI_DATA_DIR": str(world["data"])}
    empty_env = {**env, "OONI_DATA_DIR": str(world["empty"])}
    drop = world["truth"].get("probe_type_drop")
    # make the injected android drop "current" so that the autorun run alerts on it
    hours = int((datetime.now(UTC) - drop.start).total_seconds() // 3600) + 2
    results: dict[str, object] = {}
    with fake_webhook_server() as rec, fake_webhook_server() as rec_outage, \
            ThreadPoolExecutor(max_workers=3) as pool:
        autorun_env = {**env, "AUTORUN": "1", "OONI_ALERTMANAGER_URL": rec.url("/am"),
                       "OONI_SLACK_WEBHOOK_URL": rec.url("/slack"),
                       "OONI_OUTPUT_BASE_URL": "https://monitoring.example/outputs/",
                       "JUPYCRON_STATE_DIR": str(world["state"])}

        def autorun_twice() -> dict:
            """Two hourly runs seeing the same alarm: the requests after each are kept."""
            first = run_notebook(FLOW, autorun_env, f"ALERT_HOURS = {hours}")
            first["requests"] = _recorded(rec)
            second = run_notebook(FLOW, autorun_env, f"ALERT_HOURS = {hours}")
            second["requests"] = _recorded(rec)
            return {"first": first, "second": second}

        # the data ends at world["end"]: 6 hours later the pipeline has been silent for 6 hours
        silent_until = pd.Timestamp(world["end"]).tz_convert(None) + pd.Timedelta(hours=6)
        outage_env = {**autorun_env, "JUPYCRON_STATE_DIR": str(world["state"] / "outage"),
                      "OONI_ALERTMANAGER_URL": rec_outage.url("/am"),
                      "OONI_SLACK_WEBHOOK_URL": rec_outage.url("/slack")}
        futures = {"autorun": pool.submit(autorun_twice)}  # the longest chain starts first
        futures["outage"] = pool.submit(run_notebook, FLOW, outage_env,
                                        f"UNTIL = '{silent_until}'\nALERT_HOURS = 3")
        # the daily notebooks, two days after the end of the data (not under jupycron)
        futures |= {f"outage:{name}": pool.submit(run_notebook, name, env, until)
                    for name, until in ((PER_COUNTRY, f"UNTIL = '{silent_until}'"),
                                        (LONG_TERM, f"UNTIL = '{silent_until + pd.Timedelta(days=2)}'"),
                                        (MSMTS, f"UNTIL = '{silent_until + pd.Timedelta(days=2)}'"))}
        futures |= {name: pool.submit(run_notebook, name, env) for name in ALL}
        futures |= {f"empty:{name}": pool.submit(run_notebook, name, {**empty_env, "AUTORUN": "1"})
                    for name in ALL if name != EASY}  # easy_charts is not scheduled
        for key, fut in futures.items():
            try:
                results[key] = fut.result()
            except Exception as exc:  # reported per test, with the notebook's traceback
                results[key] = exc
        results["requests"] = _recorded(rec)
        results["outage_requests"] = _recorded(rec_outage)
    return results


def _ok(outputs, key: str) -> dict:
    res = outputs[key]
    if isinstance(res, Exception):
        pytest.fail(f"{key} failed:\n{res}")
    return res


def _stamp(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").tz_localize(None).strftime("%Y-%m-%d %H:%M:%S")


def test_every_chart_is_static_svg(outputs):
    for name in ALL:
        res = _ok(outputs, name)
        assert "image/svg+xml" in res["mimes"], name
        assert not {m for m in res["mimes"] if "vega" in m or "javascript" in m}, (name, res["mimes"])


def test_exported_html_is_offline(outputs, tmp_path):
    """jupycron's HTML of an executed flow notebook holds the charts as SVG and loads no
    script from the network."""
    from jupycron.export import export_html

    dest = tmp_path / "out.html"
    export_html(_ok(outputs, FLOW)["nb"], dest, title=FLOW, folder=NOTEBOOKS)
    html = dest.read_text()
    assert "<svg" in html or "data:image/svg+xml" in html
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", html)


def test_hourly_notebook_finds_the_probe_type_drop(outputs, world):
    text = _ok(outputs, FLOW)["text"]
    drop = world["truth"].get("probe_type_drop")
    rows = [line for line in text.splitlines() if "ooniprobe-android" in line and _stamp(drop.start)[:13] in line]
    assert rows, text
    assert "not running under jupycron (AUTORUN unset): alerts not sent" in text or "no current alarm" in text


def test_hourly_notebook_under_autorun_sends_the_alarm_once(outputs, world):
    """Two runs seeing the same drop: Alertmanager is fired on both (the re-fire keeps the
    alert active), Slack gets one message (the second run finds it already announced)."""
    runs = _ok(outputs, "autorun")
    first, second = runs["first"], runs["second"]
    assert "alert: probe type ooniprobe-android" in first["text"], first["text"]

    def split(requests):
        am = [a for path, body in requests if path == "/am/api/v2/alerts" for a in body
              if a["labels"].get("instance") == "ooniprobe-android"]
        return am, [body for path, body in requests if path == "/slack"]

    fired, slack = split(first["requests"])
    assert fired and fired[0]["labels"]["alertname"] == "IncomingMeasurementsDrop"
    assert fired[0]["annotations"]["link"] == (
        "https://monitoring.example/outputs/autorun_incoming_measurements_prediction_alarming.html")
    assert int(fired[0]["annotations"]["expected"]) > int(fired[0]["annotations"]["actual"])
    assert len(slack) == 1 and "ooniprobe-android" in json.dumps(slack[0])
    assert re.search(r"slack: [1-9]\d* announced", first["text"]), first["text"]

    fired2, slack2 = split(second["requests"])
    assert len(fired2) == 2 * len(fired)  # re-fired
    assert len(slack2) == 1  # nothing new on Slack
    assert "slack: 0 announced" in second["text"] and "already announced (not repeated)" in second["text"]
    state = world["state"] / "autorun_incoming_measurements_prediction_alarming.slack.json"
    sent = json.loads(state.read_text())["sent"]
    assert sent["IncomingMeasurementsDrop|ooniprobe-android"]["open"] is True


def test_per_country_notebook_finds_the_outage_and_lists_skipped_series(outputs, world):
    text = _ok(outputs, PER_COUNTRY)["text"]
    outage = world["truth"].get("country_outage")
    cc = outage.keys["probe_cc"]
    rows = [line for line in text.splitlines() if f"{cc}/" in line and _stamp(outage.start) in line]
    assert rows, text
    # one episode for the country outage, its probe types folded in and listed
    end = outage.end.astimezone(UTC).replace(tzinfo=None)
    episodes = [line for line in text.splitlines() if line.startswith(f"episode {cc}: ")
                and pd.Timestamp(line.split(": ")[1][:19]) < end]
    eps = [e for e in episodes if pd.Timestamp(e.split(" to ")[1][:19]) > pd.Timestamp(_stamp(outage.start))]
    assert len(eps) == 1, episodes
    types = eps[0].split("probe types: ")[1].split(", ")
    assert len(types) >= 3 and "ooniprobe-android" in types, eps
    assert "too few measurements" in text and "skipped" in text


def test_long_term_notebook_finds_the_slow_decline(outputs, world):
    text = _ok(outputs, LONG_TERM)["text"]
    decline = world["truth"].get("slow_decline")
    sw = decline.keys["software_name"]
    assert any(sw in line and "significant sustained decrease" in line for line in text.splitlines()), text
    other = [line for line in text.splitlines() if "significant sustained decrease" in line and sw not in line]
    assert len(other) <= 1  # the (alarms-only) table repeats the row; no other probe type alarms


def test_flow_and_easy_chart_notebooks(outputs):
    assert "probe types" in _ok(outputs, MSMTS)["text"]
    assert "AnalysisError: unknown dimension 'colour'" in _ok(outputs, EASY)["text"]


@pytest.mark.parametrize("name", [FLOW, PER_COUNTRY, LONG_TERM, MSMTS])
def test_an_empty_store_turns_the_notebooks_red(outputs, world, name):
    """No history at all is a data-path error, not "nothing to check": the run fails and
    the error names the table and the data source."""
    res = outputs[f"empty:{name}"]
    assert isinstance(res, Exception), f"{name} succeeded on an empty store"
    text = str(res)
    assert "NoDataError" in text and "no measurements at all in the fastpath table" in text
    assert f"embedded store {world['empty']} (OONI_DATA_DIR)" in text and "the table is empty" in text


def test_silent_pipeline_raises_the_total_outage_alarm(outputs, world):
    """The history has measurements, the last hours none: the most severe alarm, shown at
    the top and sent to Alertmanager (critical) and Slack before any per-series drop."""
    res = _ok(outputs, "outage")
    text = res["text"]
    assert "TOTAL OUTAGE: no measurements at all since" in text and "6 hours" in text, text[-3000:]
    assert "alert: *TOTAL OUTAGE" in text
    fired = [a for path, body in outputs["outage_requests"] if path == "/am/api/v2/alerts" for a in body
             if a["labels"]["alertname"] == "IncomingMeasurementsTotalOutage"]
    assert fired and fired[0]["labels"]["severity"] == "critical"
    slack = [json.dumps(body) for path, body in outputs["outage_requests"]
             if path == "/slack" and "TOTAL OUTAGE" in json.dumps(body)]
    assert len(slack) == 1 and "Measurement outage" in slack[0]


def test_committed_notebooks_are_built_from_the_script():
    import subprocess
    import sys

    script = NOTEBOOKS / "tools" / "build_flow_notebooks.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("name", [PER_COUNTRY, LONG_TERM, MSMTS])
def test_other_flow_notebooks_flag_the_total_outage(outputs, name):
    text = _ok(outputs, f"outage:{name}")["text"]
    assert "TOTAL OUTAGE: no measurements at all since" in text, text[-3000:]
    if name != MSMTS:  # the alarm notebooks list it among their alerts (not sent: no AUTORUN)
        assert "alert: *TOTAL OUTAGE" in text and "(AUTORUN unset): alerts not sent" in text


def test_flow_notebooks_report_their_finding(outputs, world):
    """What each run reported with report_finding (read as jupycron reads it): the current
    drop, the silent pipeline and the slow decline are alarms; the summary names them."""
    from jupycron.findings import last_finding
    from jupycron.models import FindingLevel

    def finding(key):
        found = last_finding(_ok(outputs, key)["nb"]) if key != "autorun" else \
            last_finding(_ok(outputs, key)["first"]["nb"])
        assert found is not None, f"{key} reported no finding"
        return found

    drop = finding("autorun")
    assert drop.level is FindingLevel.ALARM and drop.summary.startswith(
        "ooniprobe-android: measurements down "), drop
    assert any(row["series"] == "ooniprobe-android" for row in drop.detail or [])
    outage = finding("outage")
    assert outage.level is FindingLevel.ALARM and outage.summary.startswith("TOTAL OUTAGE"), outage
    for name in (PER_COUNTRY, LONG_TERM):
        assert finding(f"outage:{name}").summary.startswith("TOTAL OUTAGE")
    decline = finding(LONG_TERM)
    sw = world["truth"].get("slow_decline").keys["software_name"]
    assert decline.level is FindingLevel.ALARM and f"{sw} down " in decline.summary, decline
    assert finding(PER_COUNTRY).level in (FindingLevel.OK, FindingLevel.ALARM)
    incoming = finding(MSMTS)  # the multi-year view: a week-over-week drop or all well
    assert incoming.level in (FindingLevel.OK, FindingLevel.WARNING), incoming
    assert ("measurements in the last 7 days" in incoming.summary
            or incoming.summary.startswith("down week over week")), incoming
