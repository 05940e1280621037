"""summary.html: one row per present notebook, each status rendered with its details and
its latest finding. The HTML is parsed and the cells of each row are checked; the rows come
from the one status model (:func:`jupycron.status.build_rows`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from jupycron.config import Settings
from jupycron.formatting import path_breaks
from jupycron.ledger import NotebookHistory, SqliteRunStore
from jupycron.models import Finding, FindingLevel, JobSpec, Notebook, Run, RunStatus, Trigger
from jupycron.status import NotebookState, build_rows
from jupycron.summary import write_summary

NOW = datetime(2024, 5, 1, 10, 40, tzinfo=UTC)
HOURLY = JobSpec(every="1 hour", raw='{"every": "1 hour"}')
ODD = "odd/q'uote <b>&amp; $(rm -rf)_autorun.ipynb"


class Rows(HTMLParser):
    """Collects every <tr data-path> as {class: text} plus {class: [hrefs]} and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.row: dict | None = None
        self.cell: str | None = None
        self.generated: str | None = None
        self.memory_limit: str | None = None
        self._capture: str | None = None
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag in ("link", "img", "script") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src"))
        if tag == "time" and a.get("class") == "generated":
            self.generated = a["datetime"]
        if tag == "span" and a.get("class") == "memory-limit":
            self._capture = "memory"
        if tag == "tr" and "data-path" in a:
            self.row = {"state": a["data-state"], "finding": a.get("data-finding"), "text": {},
                        "links": {}, "icon": None, "finding_icon": None}
            self.rows[a["data-path"]] = self.row
        elif tag == "td" and self.row is not None:
            self.cell = a["class"]
            self.row["text"][self.cell] = ""
        elif tag == "svg" and self.row is not None:  # an icon: (shape, accessible name)
            key = "finding_icon" if "finding-icon" in a.get("class", "") else "icon"
            assert self.row[key] is None, f"one {key} per row"
            self.row[key] = (a.get("data-shape"), a.get("aria-label"))
        elif tag == "a" and self.row is not None and self.cell:
            self.row["links"].setdefault(self.cell, []).append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.cell = None
        elif tag == "tr":
            self.row = None
        elif tag == "span":
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture == "memory":
            self.memory_limit = (self.memory_limit or "") + data
        if self.row is not None and self.cell:
            self.row["text"][self.cell] += data


def run(nb: str, i: int, status: RunStatus, **kw) -> Run:
    start = NOW - timedelta(hours=i, minutes=40)
    fields = dict(notebook=nb, run_id=f"{start:%Y%m%dT%H%M%S}-{i:06x}", started_at=start,
                  status=status, slot=start.replace(minute=0), trigger=Trigger.SCHEDULE)
    if status is not RunStatus.RUNNING:
        fields.update(finished_at=start + timedelta(seconds=75), duration_s=75.0)
    fields.update(kw)
    return Run(**fields)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(notebooks=tmp_path / "nb", output=tmp_path / "out",
                    jupyter_base_url="https://lab.example.org/jupyter/")


def nb(path: str, spec: JobSpec | None = HOURLY, reason: str | None = None) -> Notebook:
    return Notebook(path=path, mtime=0.0, size=10, spec=spec, disabled_reason=reason)


def render(settings: Settings, notebooks: list[Notebook], history: dict, **kw) -> Rows:
    rows = build_rows(settings, notebooks, history, NOW)
    path = write_summary(settings, rows, NOW, **kw)
    assert path == settings.output_dir / "summary.html"
    assert not list(settings.output_dir.glob(".summary.html.*")), "temp file left behind"
    parser = Rows()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_status(settings: Settings) -> None:
    out = settings.output_dir
    h = SqliteRunStore(out)
    (out / "ok_autorun.html").parent.mkdir(parents=True)
    (out / "ok_autorun.html").write_text("<p>ok</p>")
    h.record(run("ok_autorun.ipynb", 1, RunStatus.FAILED, error_name="E", error_value="x"))
    h.record(run("ok_autorun.ipynb", 0, RunStatus.SUCCESS, output="ok_autorun.html"))
    for i, st in enumerate([RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.FAILED]):
        h.record(run("fail_autorun.ipynb", 4 - i, st, error_name="ZeroDivisionError",
                     error_value="division by zero", error_cell=2))
    h.record(run("timeout_autorun.ipynb", 0, RunStatus.TIMEOUT, error_name="Timeout",
                 error_value="MaxRuntime 60 s exceeded"))
    h.record(run("oom_autorun.ipynb", 0, RunStatus.OOM, error_name="MemoryError",
                 error_value="killed by the 500 MB memory cap"))
    h.record(run("crash_autorun.ipynb", 0, RunStatus.CRASHED, error_name="DeadKernelError",
                 error_value="kernel died (signal 11)"))
    h.record(run("intr_autorun.ipynb", 0, RunStatus.INTERRUPTED, error_name="Interrupted",
                 error_value="scheduler shut down"))
    h.record(run("busy_autorun.ipynb", 0, RunStatus.RUNNING, finished_at=None, pid=1))
    h.record(run("late_autorun.ipynb", 30, RunStatus.SUCCESS))
    h.record(run("deleted_autorun.ipynb", 0, RunStatus.SUCCESS))
    h.mark_deleted(["ok_autorun.ipynb", "fail_autorun.ipynb", "timeout_autorun.ipynb",
                    "oom_autorun.ipynb", "crash_autorun.ipynb", "intr_autorun.ipynb",
                    "busy_autorun.ipynb", "late_autorun.ipynb", "new_autorun.ipynb"],
                   NOW - timedelta(minutes=5))
    notebooks = [
        nb("ok_autorun.ipynb"), nb("fail_autorun.ipynb"), nb("timeout_autorun.ipynb"),
        nb("oom_autorun.ipynb"), nb("crash_autorun.ipynb"), nb("intr_autorun.ipynb"),
        nb("busy_autorun.ipynb"), nb("late_autorun.ipynb"), nb("new_autorun.ipynb"),
        nb("nospec_autorun.ipynb", None, "no jupycron line"),
        nb("bad_autorun.ipynb", None, "invalid jupycron line: \"every\": unknown unit 'x'"),
        nb("off_autorun.ipynb", replace(HOURLY, enabled=False), "disabled in its jupycron line"),
        nb("cron_autorun.ipynb", JobSpec(cron="0 6 * * *", tz="Europe/Berlin")),
    ]
    page = render(settings, notebooks, h.load(), memory_limit="cgroup-v2")

    assert page.generated == NOW.isoformat()
    assert page.memory_limit == "cgroup-v2"
    assert page.scripts == 0 and page.external == []
    assert "deleted_autorun.ipynb" not in page.rows
    assert list(page.rows) == [n.path for n in notebooks]
    r = page.rows

    ok = r["ok_autorun.ipynb"]
    assert (ok["state"], ok["icon"], ok["text"]["label"]) == ("success", ("ok", "success"), "success")
    assert ok["text"]["last-run"] == "2024-05-01 10:00 UTC"
    assert ok["text"]["duration"] == "1 min 15 s"
    assert ok["text"]["next-run"] == "2024-05-01 11:00 UTC"
    assert ok["text"]["failures"] == "0"
    assert ok["text"]["schedule"] == "every 1 hour"
    assert ok["text"]["finding"] == "—" and ok["finding"] == "" and ok["finding_icon"] is None
    kept = h.load()["ok_autorun.ipynb"].last_success_output
    assert ok["links"]["output"] == ["ok_autorun.html", kept]
    assert ok["links"]["notebook"] == ["https://lab.example.org/jupyter/notebooks/ok_autorun.ipynb"]

    fail = r["fail_autorun.ipynb"]
    assert (fail["state"], fail["icon"]) == ("failed", ("fail", "failed"))
    assert fail["text"]["label"] == "failed (error)ZeroDivisionError: division by zero"
    assert fail["text"]["failures"] == "2"
    assert fail["text"]["output"] == "—" and "output" not in fail["links"]

    for path, state, label, err in [
        ("timeout_autorun.ipynb", "timeout", "failed (timeout)", "Timeout: MaxRuntime 60 s exceeded"),
        ("oom_autorun.ipynb", "oom", "failed (oom)", "MemoryError: killed by the 500 MB memory cap"),
        ("crash_autorun.ipynb", "crashed", "failed (crashed)", "DeadKernelError: kernel died (signal 11)"),
    ]:
        row = r[path]
        assert (row["state"], row["icon"]) == (state, ("fail", state))
        assert row["text"]["label"] == label + err
        assert row["text"]["failures"] == "1"

    intr = r["intr_autorun.ipynb"]
    assert (intr["state"], intr["icon"]) == ("interrupted", ("stop", "interrupted"))
    assert intr["text"]["label"] == "interruptedInterrupted: scheduler shut down"
    assert intr["text"]["failures"] == "0"

    busy = r["busy_autorun.ipynb"]
    assert (busy["state"], busy["icon"]) == ("running", ("play", "running"))
    assert busy["text"]["label"] == "running since 2024-05-01 10:00 UTC"
    assert busy["text"]["next-run"] == "2024-05-01 11:00 UTC"

    late = r["late_autorun.ipynb"]
    assert late["state"] == "success"
    assert late["text"]["next-run"] == "due now (slot 2024-05-01 10:00 UTC)"

    new = r["new_autorun.ipynb"]
    assert (new["state"], new["icon"], new["text"]["label"]) == ("never", ("wait", "never"), "never run")
    assert (new["text"]["last-run"], new["text"]["duration"]) == ("—", "—")
    assert new["text"]["next-run"] == "2024-05-01 11:00 UTC"

    for path, reason in [("nospec_autorun.ipynb", "no jupycron line"),
                         ("bad_autorun.ipynb", "invalid jupycron line: \"every\": unknown unit 'x'"),
                         ("off_autorun.ipynb", "disabled in its jupycron line")]:
        row = r[path]
        assert (row["state"], row["icon"]) == ("disabled", ("off", "disabled"))
        assert row["text"]["label"] == "disabled" + reason
        assert row["text"]["next-run"] == "—"

    assert r["nospec_autorun.ipynb"]["text"]["schedule"] == "—"
    assert r["off_autorun.ipynb"]["text"]["schedule"] == "every 1 hour"
    cron = r["cron_autorun.ipynb"]
    assert cron["text"]["schedule"] == "cron 0 6 * * * (Europe/Berlin)"
    assert cron["text"]["next-run"] == "2024-05-02 04:00 UTC"


def test_rows_carry_raw_runs(settings: Settings) -> None:
    runs = [run("a_autorun.ipynb", 0, RunStatus.SUCCESS), run("a_autorun.ipynb", 1, RunStatus.FAILED)]
    history = {"a_autorun.ipynb": NotebookHistory(runs=runs, first_seen=NOW - timedelta(days=1))}
    (row,) = build_rows(settings, [nb("a_autorun.ipynb")], history, NOW)
    assert row.runs == tuple(runs) and row.last_run is runs[0] and row.running is None
    assert row.history is history["a_autorun.ipynb"] and row.name == "a_autorun.ipynb"
    assert row.notebook.path == "a_autorun.ipynb" and row.spec == HOURLY


def test_names_are_escaped_and_quoted(settings: Settings) -> None:
    out = settings.output_dir / "odd" / "q'uote <b>&amp; $(rm -rf)_autorun.html"
    out.parent.mkdir(parents=True)
    out.write_text("x")
    h = SqliteRunStore(settings.output_dir)
    h.record(run(ODD, 0, RunStatus.FAILED, error_name="ValueError", error_value="<script>alert(1)</script>"))
    page = render(settings, [nb(ODD)], h.load())
    row = page.rows[ODD]
    assert page.scripts == 0, "error text must be escaped, not executed"
    assert row["text"]["label"] == "failed (error)ValueError: <script>alert(1)</script>"
    assert row["text"]["notebook"] == ODD
    assert row["links"]["output"] == ["odd/q%27uote%20%3Cb%3E%26amp%3B%20%24%28rm%20-rf%29_autorun.html"]
    assert row["links"]["notebook"] == [
        "https://lab.example.org/jupyter/notebooks/"
        "odd/q%27uote%20%3Cb%3E%26amp%3B%20%24%28rm%20-rf%29_autorun.ipynb"]


def test_no_jupyter_link_without_base_url(settings: Settings) -> None:
    page = render(replace(settings, jupyter_base_url=""), [nb("a_autorun.ipynb")], {})
    row = page.rows["a_autorun.ipynb"]
    assert row["links"] == {} and row["text"]["notebook"] == "a_autorun.ipynb"
    assert page.memory_limit is None
    # not yet seen by the scheduler: waits for the next slot instead of "due now"
    assert row["text"]["next-run"] == "2024-05-01 11:00 UTC"


def test_running_disabled_notebook_shows_running_with_reason(settings: Settings) -> None:
    history = {"m_autorun.ipynb": NotebookHistory(runs=[run("m_autorun.ipynb", 0, RunStatus.RUNNING,
                                                            trigger=Trigger.MANUAL, slot=None)])}
    (row,) = build_rows(settings, [nb("m_autorun.ipynb", None, "no jupycron line")], history, NOW)
    assert (row.state, row.state.shape, row.reason, row.next_run) == (
        NotebookState.RUNNING, "play", "no jupycron line", None)


def test_empty_page(settings: Settings) -> None:
    page = render(settings, [], {})
    assert page.rows == {}
    assert "No autorun notebooks found" in (settings.output_dir / "summary.html").read_text()


@given(hs.lists(hs.text(alphabet=hs.sampled_from("ab_/<&'\" ."), max_size=6), min_size=1, max_size=5))
def test_path_breaks_keeps_the_text_and_breaks_only_after_slash_and_underscore(parts) -> None:
    path = "/".join(parts)
    html = str(path_breaks(path))
    assert html_unescape(html.replace("<wbr>", "")) == path
    assert "<" not in html.replace("<wbr>", "")
    assert html.count("<wbr>") == path.count("/") + path.count("_")


def test_the_latest_finding_is_shown_beside_the_status(settings: Settings) -> None:
    """The newest finished run that reported a finding gives the column (a newer run that
    did not report, e.g. one that failed first, keeps it); a RUNNING run does not count."""
    h = SqliteRunStore(settings.output_dir)
    alarm = Finding(FindingLevel.ALARM, "IR: measurements down 40 % since 14:00",
                    [{"country": "IR", "drop": "40 %"}])
    h.record(run("flow_autorun.ipynb", 2, RunStatus.SUCCESS,
                 finding=Finding(FindingLevel.OK, "all quiet")))
    h.record(run("flow_autorun.ipynb", 1, RunStatus.SUCCESS, finding=alarm))
    h.record(run("flow_autorun.ipynb", 0, RunStatus.FAILED, error_name="E", error_value="x"))
    h.record(run("quiet_autorun.ipynb", 0, RunStatus.SUCCESS,
                 finding=Finding(FindingLevel.NO_DATA, "no rows since 08:00")))
    h.record(run("warn_autorun.ipynb", 0, RunStatus.SUCCESS,
                 finding=Finding(FindingLevel.WARNING, "")))
    h.record(run("old_autorun.ipynb", 0, RunStatus.SUCCESS))
    notebooks = [nb(p) for p in ("flow_autorun.ipynb", "quiet_autorun.ipynb",
                                 "warn_autorun.ipynb", "old_autorun.ipynb")]
    rows = build_rows(settings, notebooks, h.load(), NOW)
    assert [r.finding_level for r in rows] == [FindingLevel.ALARM, FindingLevel.NO_DATA,
                                               FindingLevel.WARNING, None]
    assert rows[0].finding == alarm and rows[0].finding_run is not None
    assert rows[0].finding_run.started_at == NOW - timedelta(hours=1, minutes=40)

    page = render(settings, notebooks, h.load())
    flow = page.rows["flow_autorun.ipynb"]
    assert flow["state"] == "failed" and flow["finding"] == "alarm"
    assert flow["finding_icon"] == ("alarm", "alarm")
    assert flow["text"]["finding"] == "alarmIR: measurements down 40 % since 14:00"
    quiet = page.rows["quiet_autorun.ipynb"]
    assert quiet["finding_icon"] == ("nodata", "no data")
    assert quiet["text"]["finding"] == "no datano rows since 08:00"
    assert page.rows["warn_autorun.ipynb"]["text"]["finding"] == "warning"
    assert page.rows["warn_autorun.ipynb"]["finding_icon"] == ("warn", "warning")
    old = page.rows["old_autorun.ipynb"]
    assert old["text"]["finding"] == "—" and old["finding_icon"] is None
    text = (settings.output_dir / "summary.html").read_text()
    assert "findings: · 1 alarm · 1 no data · 1 warning" in " ".join(text.split())


def test_every_state_and_level_has_an_icon() -> None:
    from jupycron.status_icons import finding_icon, status_icon

    for state in NotebookState:
        assert f'data-shape="{state.shape}"' in status_icon(state)
    for level in FindingLevel:
        assert "finding-icon" in finding_icon(level)
    with pytest.raises(ValueError):
        status_icon("late")
