"""The CLI: argument mapping with the library patched (CliRunner), exit codes, `list`, and
run-now against real kernels. The public API of the package is checked here too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import jupycron
from jupycron import cli, scheduler
from jupycron.exceptions import AlreadyRunning, HistoryError, NotebookNotFound
from jupycron.models import Run, RunStatus


def _run(status: RunStatus) -> Run:
    return Run(notebook="a_autorun.ipynb", run_id="20240101T000000-abcdef",
               started_at=datetime(2024, 1, 1, tzinfo=UTC), status=status, duration_s=1.0,
               output="a_autorun.html", error_name=None if status is RunStatus.SUCCESS else "ValueError",
               error_value=None if status is RunStatus.SUCCESS else "boom")


@pytest.fixture
def calls(monkeypatch):
    """Patch the scheduler entry points; record (name, settings, args)."""
    seen: list[tuple] = []

    def fake_tick(settings, now=None, stop_event=None):
        seen.append(("tick", settings, stop_event))
        return [_run(RunStatus.SUCCESS)]

    def fake_forever(settings, stop_event):
        seen.append(("daemon", settings, stop_event))

    monkeypatch.setattr(scheduler, "tick", fake_tick)
    monkeypatch.setattr(scheduler, "run_forever", fake_forever)
    return seen


def test_flags_map_to_settings(calls, tmp_path):
    res = CliRunner().invoke(cli.main, [
        "--notebooks", str(tmp_path / "nb"), "--output", str(tmp_path / "out"),
        "--concurrency", "3", "--max-mem", "700", "--default-max-mem", "200",
        "--max-runtime", "90", "--default-max-runtime", "30", "--kernel", "python3", "tick"])
    assert res.exit_code == 0, res.output
    name, s, stop = calls[0]
    assert name == "tick" and stop is not None
    assert (s.notebooks, s.output_dir, s.concurrency) == (tmp_path / "nb", tmp_path / "out", 3)
    assert (s.max_mem_mb, s.default_max_mem_mb, s.max_runtime_s, s.default_max_runtime_s) == (700, 200, 90, 30)
    assert "a_autorun.ipynb: success" in res.output


def test_env_and_toml_fill_what_flags_leave_out(calls, tmp_path, monkeypatch):
    cfg = tmp_path / "jupycron.toml"
    cfg.write_text(f'notebooks = "{tmp_path}"\nconcurrency = 5\nmax_mem_mb = 800\n')
    monkeypatch.setenv("JUPYCRON_CONCURRENCY", "4")
    res = CliRunner().invoke(cli.main, ["--config", str(cfg), "daemon"])
    assert res.exit_code == 0, res.output
    _, s, _ = calls[0]
    assert (s.notebooks, s.concurrency, s.max_mem_mb) == (tmp_path, 4, 800)  # env beats TOML


@pytest.mark.parametrize("args, code, text", [
    (["--config", "/nonexistent/jupycron.toml", "tick"], 2, "does not exist"),
    (["--concurrency", "-1", "tick"], 2, "Invalid value"),
    (["tick", "--bogus"], 2, "No such option"),
])
def test_usage_and_config_errors_exit_2(calls, args, code, text):
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == code and text in res.output
    assert calls == []


@pytest.mark.parametrize("outcome, code", [
    (_run(RunStatus.SUCCESS), 0), (_run(RunStatus.FAILED), 1), (_run(RunStatus.TIMEOUT), 1),
    (NotebookNotFound("no notebook 'x_autorun.ipynb'"), 2), (AlreadyRunning("busy"), 3),
    (HistoryError("disk full"), 4),
])
def test_run_now_exit_codes(monkeypatch, tmp_path, outcome, code):
    seen = []

    def fake(settings, rel, stop_event=None):
        seen.append(rel)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(scheduler, "run_now", fake)
    res = CliRunner().invoke(cli.main, ["--notebooks", str(tmp_path), "run-now", "sub/a_autorun.ipynb"])
    assert res.exit_code == code, res.output
    assert seen == ["sub/a_autorun.ipynb"]
    if isinstance(outcome, Exception):
        assert f"Error: {outcome}" in res.output


def test_list_shows_method_and_notebooks(settings, jc):
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "team/ok_autorun.ipynb")
    (settings.notebooks / "broken_autorun.ipynb").write_text("{not json")
    from jupycron import limits

    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks),
                                        "--output", str(settings.output_dir), "list"])
    assert res.exit_code == 0, res.output
    assert f"memory limit method: {limits.describe_method()}" in res.output
    assert "team/ok_autorun.ipynb" in res.output and "every 1 minute" in res.output
    assert "broken_autorun.ipynb" in res.output
    assert "scheduler: no heartbeat in" in res.output  # none yet, and it says so


def test_list_shows_the_latest_finding(settings, jc):
    """`jupycron list` has a finding column: level and summary, "—" when never reported."""
    from datetime import timedelta

    from jupycron.ledger import SqliteRunStore
    from jupycron.models import Finding, FindingLevel

    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "flow_autorun.ipynb",
                     line='{"every": "1 day"}')
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "quiet_autorun.ipynb",
                     line='{"every": "1 day"}')
    start = datetime.now(UTC) - timedelta(hours=1)
    SqliteRunStore(settings.output_dir).record(Run(
        "flow_autorun.ipynb", f"{start:%Y%m%dT%H%M%S}-000001", start, RunStatus.SUCCESS,
        finished_at=start, duration_s=2.0,
        finding=Finding(FindingLevel.ALARM, "IR: measurements down 40 %")))
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks),
                                        "--output", str(settings.output_dir), "list"])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[1]: ln for ln in res.output.splitlines() if "_autorun.ipynb" in ln}
    assert "alarm: IR: measurements down 40 %" in lines["flow_autorun.ipynb"]
    assert "│ —" in lines["quiet_autorun.ipynb"] and "never run" in lines["quiet_autorun.ipynb"]
    header = next(ln for ln in res.output.splitlines() if "last status" in ln)
    assert "finding" in header


def test_list_shows_the_scheduler_heartbeat_and_pool(settings):
    from tests.support.ledger import write_heartbeat

    settings.output_dir.mkdir(parents=True, exist_ok=True)
    write_heartbeat(settings.output_dir, {
        "pid": 4242, "mode": "daemon", "heartbeat": "2026-11-28T22:00:00+00:00",
        "pool": {"size": 2, "idle": 1, "idle_rss_mb": 148.2, "idle_pss_mb": 48.2, "templates": 2,
                 "templates_pss_mb": 80.4, "preimport": [], "died_idle": 3, "refused": 0}})
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks),
                                        "--output", str(settings.output_dir), "list"])
    assert res.exit_code == 0, res.output
    assert "scheduler: daemon pid 4242, heartbeat 2026-11-28T22:00:00+00:00" in res.output
    assert "pool: 1/2 ready, 48 MB idle + 80 MB in 2 kernel template(s), preimport off (died idle 3)" \
        in res.output


@pytest.mark.integration
def test_run_now_for_real(settings, jc):
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    jc.copy_notebook("raises_autorun.ipynb", settings.notebooks)
    base = ["--notebooks", str(settings.notebooks), "--output", str(settings.output_dir), "run-now"]
    ok = CliRunner().invoke(cli.main, [*base, "ok_autorun.ipynb"])
    assert ok.exit_code == 0, ok.output
    assert "ok_autorun.ipynb: success" in ok.output
    assert Path(settings.output_dir / "ok_autorun.html").is_file()
    bad = CliRunner().invoke(cli.main, [*base, "raises_autorun.ipynb"])
    assert bad.exit_code == 1 and "ValueError: boom from cell 2" in bad.output
    escape = CliRunner().invoke(cli.main, [*base, "../ok_autorun.ipynb"])
    assert escape.exit_code == 2 and "'..'" in escape.output
    outside = settings.notebooks.parent / "elsewhere_autorun.ipynb"
    outside.write_bytes((settings.notebooks / "ok_autorun.ipynb").read_bytes())
    absolute = CliRunner().invoke(cli.main, [*base, str(outside)])
    assert absolute.exit_code == 2 and "relative" in absolute.output


def test_public_api_is_sorted_and_resolves():
    assert jupycron.__all__ == sorted(jupycron.__all__)
    for name in jupycron.__all__:
        assert getattr(jupycron, name) is not None, name
    with pytest.raises(AttributeError):
        jupycron.no_such_name  # noqa: B018


def test_python_dash_m_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "jupycron", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for command in ("tick", "daemon", "list", "run-now", "serve", "passwd"):
        assert command in out


def test_daemon_serve_and_serve_map_to_the_web_module(calls, monkeypatch, tmp_path):
    import jupycron.web as web
    import jupycron.web.server as web_server

    events: list[tuple] = []

    class Handle:
        def stop(self) -> None:
            events.append(("stopped",))

    monkeypatch.setattr(web, "start_in_thread", lambda s, host, port: events.append(("thread", host, port)) or Handle())
    monkeypatch.setattr(web_server, "serve", lambda s, host, port, **kw: events.append(("serve", host, port)))
    res = CliRunner().invoke(cli.main, ["--notebooks", str(tmp_path), "daemon", "--serve", "--port", "9099"])
    assert res.exit_code == 0, res.output
    assert events == [("thread", "127.0.0.1", 9099), ("stopped",)] and calls[0][0] == "daemon"
    res = CliRunner().invoke(cli.main, ["--notebooks", str(tmp_path), "serve", "--host", "0.0.0.0"])
    assert res.exit_code == 0, res.output
    assert events[-1] == ("serve", "0.0.0.0", 8080)


def test_list_shows_hostile_text_as_written(settings, jc):
    """Found by using the product: `jupycron list` read errors, findings and paths as rich
    markup — an error naming "[/srv/x]" crashed it (MarkupError) and "[red]" hid text — and
    passed ESC sequences to the terminal. Now they are shown as written, controls as �."""
    from datetime import timedelta

    from jupycron.ledger import SqliteRunStore
    from jupycron.models import Finding, FindingLevel

    rel = "[red]x[/red]_autorun.ipynb"
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, rel, line='{"every": "1 day"}')
    start = datetime.now(UTC) - timedelta(hours=1)
    SqliteRunStore(settings.output_dir).record(Run(
        rel, f"{start:%Y%m%dT%H%M%S}-000001", start, RunStatus.FAILED,
        finished_at=start, duration_s=2.0, error_name="FileNotFoundError",
        error_value="no such file: [/srv/x] \x1b]0;pwned\x07",
        finding=Finding(FindingLevel.ALARM, "[bold]IR[/bold] down \x1b[2J")))
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks),
                                        "--output", str(settings.output_dir), "list"])
    assert res.exit_code == 0, res.output
    assert "[red]x[/red]_autorun.ipynb" in res.output
    assert "[/srv/x]" in res.output and "[bold]IR[/bold]" in res.output
    assert "\x1b" not in res.output and "\x07" not in res.output and "\ufffd" in res.output


def test_run_now_prints_an_error_without_its_control_characters(settings, jc):
    """An error message carrying an ESC sequence is printed with it shown as �."""
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "esc_autorun.ipynb")
    nb = settings.notebooks / "esc_autorun.ipynb"
    import nbformat

    book = nbformat.read(nb, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell('raise ValueError("bad \\x1b]0;pwned\\x07 [/x]")'))
    nbformat.write(book, nb)
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks),
                                        "--output", str(settings.output_dir), "run-now",
                                        "esc_autorun.ipynb"])
    assert res.exit_code == 1, res.output
    assert "ValueError: bad \ufffd]0;pwned\ufffd [/x]" in res.output
    assert "\x1b" not in res.output
