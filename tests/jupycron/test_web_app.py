"""The dashboard app through Starlette's test client (in-process), plus raw-HTTP traversal
attempts against a real uvicorn server (a client library would normalise the paths)."""

from __future__ import annotations

import base64
import os
import re
import socket
import sys
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette recommends httpx2; httpx is what the project uses
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from jupycron.config import Settings
from jupycron.exceptions import HistoryError
from jupycron.ledger import SqliteRunStore
from jupycron.models import Finding, FindingLevel, Run, RunStatus, Trigger
from jupycron.paths import kept_html
from jupycron.web import app as web_app
from jupycron.web import create_app, hash_password, start_in_thread
from tests.support.ledger import write_history_doc

AUTH = ("alice", "s3cret pw")
NOW = datetime.now(UTC)
HASH = hash_password(AUTH[1])  # argon2 is slow on purpose: hash once per module
BOB_HASH = hash_password("pw")


def rid(i: int) -> str:
    return f"{(NOW - timedelta(hours=i)):%Y%m%dT%H%M%S}-{i:06x}"


@pytest.fixture
def site(tmp_path: Path, jc) -> Settings:
    """ok (2 successes), raises (25 runs, newest 3 failed), a disabled one, a never-run one."""
    s = jc.make_settings(tmp_path, web_users={AUTH[0]: HASH})
    jc.copy_notebook("ok_autorun.ipynb", s.notebooks, line='{"every": "1 hour", "MaxMem": 300}')
    jc.copy_notebook("raises_autorun.ipynb", s.notebooks, "sub/raises_autorun.ipynb",
                     line='{"every": "1 day", "MaxRuntime": 120}')
    jc.copy_notebook("ok_autorun.ipynb", s.notebooks, "off_autorun.ipynb", line='{"every": "1 hour", "enabled": false}')
    jc.copy_notebook("ok_autorun.ipynb", s.notebooks, "new_autorun.ipynb", line='{"every": "1 hour"}')
    out = s.output_dir
    (out / "sub").mkdir(parents=True)
    (out / "ok_autorun.html").write_text("<html><body>ok run 1</body></html>")
    (out / "sub/raises_autorun.html").write_text("<html>raises run 1</html>")
    ok = [Run("ok_autorun.ipynb", rid(i), NOW - timedelta(hours=i), RunStatus.SUCCESS,
              finished_at=NOW, duration_s=3.0 + i, peak_mem_mb=42.0, output="ok_autorun.html")
          for i in (1, 2)]
    raises = [Run("sub/raises_autorun.ipynb", rid(i), NOW - timedelta(hours=i),
                  RunStatus.FAILED if i <= 3 else RunStatus.SUCCESS, finished_at=NOW,
                  duration_s=float(i), error_name="ValueError" if i <= 3 else None,
                  error_value=f"boom <{i}>" if i <= 3 else None, error_cell=2 if i <= 3 else None,
                  output="sub/raises_autorun.html", peak_mem_mb=12.5) for i in range(1, 26)]
    kept = {}
    for rel, run in (("ok_autorun.ipynb", ok[0]), ("sub/raises_autorun.ipynb", raises[3])):
        copy = kept_html(out, rel, run.run_id)
        copy.write_text(f"<html>kept {run.run_id}</html>")
        kept[rel] = copy.relative_to(out).as_posix()
    doc = {"version": 1, "notebooks": {
        rel: {"runs": [r.to_json() for r in runs], "deleted_at": None,
              "last_success_output": kept[rel], "first_seen": (NOW - timedelta(days=2)).isoformat()}
        for rel, runs in (("ok_autorun.ipynb", ok), ("sub/raises_autorun.ipynb", raises))}}
    write_history_doc(out, doc)
    return s


def client(settings: Settings, **kw) -> TestClient:
    return TestClient(create_app(settings, **kw), base_url="http://dash.test")


def rows_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class="[^"]*" data-path="([^"]+)" data-state="([^"]+)"', html))


# --- auth ----------------------------------------------------------------------------------

def test_pages_need_credentials(site: Settings) -> None:
    c = client(site)
    for path in ("/", "/notebook/ok_autorun.ipynb", "/output/ok_autorun.html"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert c.get("/", auth=("alice", "wrong")).status_code == 401
    assert c.get("/", auth=("mallory", AUTH[1])).status_code == 401
    assert c.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    assert c.get("/", auth=AUTH).status_code == 200


def test_anonymous_read_is_read_only(site: Settings) -> None:
    c = client(replace(site, web_anonymous_read=True))
    r = c.get("/")
    assert r.status_code == 200 and "anonymous (read-only)" in r.text
    page = c.get("/notebook/ok_autorun.ipynb")
    assert page.status_code == 200 and 'id="run-now"' not in page.text
    r = c.post("/run", data={"notebook": "ok_autorun.ipynb", "csrf_token": "x"})
    assert r.status_code == 401
    # wrong credentials are refused even though anonymous reads are allowed
    assert c.get("/", auth=("alice", "nope")).status_code == 401


def test_proxy_header_trusted_only_when_configured(site: Settings) -> None:
    hdr = {"X-Remote-User": "bob"}
    assert client(site).get("/", headers=hdr).status_code == 401
    c = client(replace(site, web_proxy_auth_header="X-Remote-User"))
    r = c.get("/", headers=hdr)
    assert r.status_code == 200 and '<span class="user">bob</span>' in r.text
    assert c.get("/").status_code == 401


def test_metrics_open_by_default_and_protectable(site: Settings) -> None:
    r = client(site).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'jupycron_notebook_consecutive_failures{notebook="sub/raises_autorun.ipynb"} 3.0' in r.text
    c = client(site, metrics_auth=True)
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", auth=AUTH).status_code == 200


# --- pages ---------------------------------------------------------------------------------

def test_dashboard_states_strip_and_links(site: Settings) -> None:
    r = client(site).get("/", auth=AUTH)
    assert r.status_code == 200
    assert rows_of(r.text) == {"new_autorun.ipynb": "never", "off_autorun.ipynb": "disabled",
                               "ok_autorun.ipynb": "success", "sub/raises_autorun.ipynb": "failed"}
    assert "ValueError: boom &lt;1&gt;" in r.text  # the reason, escaped
    raises = r.text.split('data-path="sub/raises_autorun.ipynb"')[1].split("</tr>")[0]
    strip = re.findall(r'<span class="run run-(\w+)"', raises)
    assert len(strip) == 20 and strip[-3:] == ["failed"] * 3 and strip[0] == "success"
    assert 'href="/output/sub/raises_autorun.html"' in raises
    assert 'href="/notebook/sub/raises_autorun.ipynb"' in raises
    assert '<meta http-equiv="refresh" content="30">' in r.text
    assert "<script" not in r.text and "http://" not in r.text.replace('href="http://dash.test', "")


def test_filter_by_state_without_js(site: Settings) -> None:
    c = client(site)
    assert set(rows_of(c.get("/?state=failing", auth=AUTH).text)) == {"sub/raises_autorun.ipynb"}
    assert set(rows_of(c.get("/?state=success", auth=AUTH).text)) == {"ok_autorun.ipynb"}
    assert set(rows_of(c.get("/?state=disabled", auth=AUTH).text)) == {"off_autorun.ipynb"}
    empty = c.get("/?state=running", auth=AUTH)
    assert rows_of(empty.text) == {} and "No notebook matches status running" in empty.text
    bad = c.get("/?state=<script>", auth=AUTH)
    assert bad.status_code == 400 and "<script>" not in bad.text


def with_findings(site: Settings) -> None:
    """ok: its newest run found an alarm; raises: its newest runs failed before reporting,
    an older success found a warning; the others never reported."""
    store = SqliteRunStore(site.output_dir)
    try:
        data = store.load()
        store.record(replace(data["ok_autorun.ipynb"].runs[0], finding=Finding(
            FindingLevel.ALARM, "IR: measurements down 40 % <since 14:00>", [{"country": "IR"}])))
        store.record(replace(data["sub/raises_autorun.ipynb"].runs[3], finding=Finding(
            FindingLevel.WARNING, "RU: down 18 %")))
    finally:
        store.close()


def findings_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class="[^"]*" data-path="([^"]+)" data-state="[^"]+" '
                           r'data-finding="([^"]*)"', html))


def test_finding_column_filter_and_sort(site: Settings) -> None:
    with_findings(site)
    c = client(site)
    html = c.get("/", auth=AUTH).text
    assert findings_of(html) == {"new_autorun.ipynb": "", "off_autorun.ipynb": "",
                                 "ok_autorun.ipynb": "alarm", "sub/raises_autorun.ipynb": "warning"}
    ok = html.split('data-path="ok_autorun.ipynb"')[1].split("</tr>")[0]
    cell = ok.split('<td class="finding">')[1].split("</td>")[0]
    assert 'class="finding-icon shape-alarm"' in cell and 'aria-label="alarm"' in cell
    assert "IR: measurements down 40 % &lt;since 14:00&gt;" in cell   # escaped
    new = html.split('data-path="new_autorun.ipynb"')[1].split("</tr>")[0]
    assert '<td class="finding">—</td>' in new
    assert 'data-finding-filter="alarm">alarm (1)' in html
    assert 'data-finding-filter="none">none reported (2)' in html

    assert set(findings_of(c.get("/?finding=alarm", auth=AUTH).text)) == {"ok_autorun.ipynb"}
    assert set(findings_of(c.get("/?finding=none", auth=AUTH).text)) == {
        "new_autorun.ipynb", "off_autorun.ipynb"}
    # combined with the state filter; the links keep the other filter
    both = c.get("/?state=failing&finding=warning", auth=AUTH).text
    assert set(findings_of(both)) == {"sub/raises_autorun.ipynb"}
    assert 'href="?state=failing&amp;finding=alarm&amp;sort=path"' in both
    assert findings_of(c.get("/?state=success&finding=warning", auth=AUTH).text) == {}
    order = list(findings_of(c.get("/?sort=finding", auth=AUTH).text))
    assert order == ["ok_autorun.ipynb", "sub/raises_autorun.ipynb", "new_autorun.ipynb",
                     "off_autorun.ipynb"]
    bad = c.get("/?finding=<b>", auth=AUTH)
    assert bad.status_code == 400 and "<b>" not in bad.text

    page = c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text
    assert '<dd class="finding" data-finding="alarm">' in page
    never = c.get("/notebook/new_autorun.ipynb", auth=AUTH).text
    assert "— (the notebook never reported one)" in never

    metrics = c.get("/metrics").text
    assert 'jupycron_notebook_finding{level="alarm",notebook="ok_autorun.ipynb"} 1.0' in metrics
    assert 'jupycron_notebook_finding{level="ok",notebook="ok_autorun.ipynb"} 0.0' in metrics
    assert 'jupycron_notebook_finding{level="warning",notebook="sub/raises_autorun.ipynb"} 1.0' in metrics
    assert 'jupycron_notebook_finding{level="alarm",notebook="new_autorun.ipynb"} 0.0' in metrics
    from prometheus_client.parser import text_string_to_metric_families

    stamps = {smp.labels["notebook"]: smp.value for f in text_string_to_metric_families(metrics)
              for smp in f.samples if smp.name == "jupycron_notebook_finding_timestamp_seconds"}
    assert stamps == {"ok_autorun.ipynb": (NOW - timedelta(hours=1)).timestamp(),
                      "sub/raises_autorun.ipynb": (NOW - timedelta(hours=4)).timestamp()}
    assert 'jupycron_notebook_finding_timestamp_seconds{notebook="new_autorun.ipynb"}' not in metrics


def test_sort_by_query_string(site: Settings) -> None:
    c = client(site)
    order = list(rows_of(c.get("/?sort=failures&desc=1", auth=AUTH).text))
    assert order[0] == "sub/raises_autorun.ipynb"
    order = list(rows_of(c.get("/?sort=state", auth=AUTH).text))
    assert order == ["sub/raises_autorun.ipynb", "new_autorun.ipynb", "ok_autorun.ipynb",
                     "off_autorun.ipynb"]
    assert c.get("/?sort=evil", auth=AUTH).status_code == 400


def test_notebook_page(site: Settings) -> None:
    r = client(site).get("/notebook/sub/raises_autorun.ipynb", auth=AUTH)
    assert r.status_code == 200
    html = r.text
    assert '<dd class="max-mem">1000 MB</dd>' in html          # default MaxMem
    assert '<dd class="max-runtime">2 min 00 s</dd>' in html   # its MaxRuntime
    assert '<dd class="finding-alerts">not sent</dd>' in html  # alert_on_finding off
    assert "every 1 day" in html and "# jupycron: {&#34;every&#34;: &#34;1 day&#34;" in html
    runs = re.findall(r'data-run="([^"]+)" data-status="(\w+)"', html)
    assert len(runs) == 25 and runs[0] == (rid(1), "failed") and runs[3][1] == "success"
    assert '<span class="ename">ValueError</span> <span class="cell">(cell 2)</span>' in html
    assert "boom &lt;1&gt;" in html and "12.5 MB" in html
    assert html.count('class="latest"') == 2   # facts + the newest run
    kept = SqliteRunStore(site.output_dir).get("sub/raises_autorun.ipynb").last_success_output
    assert kept and f'href="/output/{kept}"' in html
    assert '<iframe class="output-frame"' in html and 'name="csrf_token"' in html
    ok = client(site).get("/notebook/ok_autorun.ipynb", auth=AUTH).text
    assert '<dd class="max-mem">300 MB</dd>' in ok
    missing = client(site).get("/notebook/nope_autorun.ipynb", auth=AUTH)
    assert missing.status_code == 404 and "nope_autorun.ipynb" in missing.text


def test_output_served_sandboxed(site: Settings) -> None:
    r = client(site).get("/output/ok_autorun.html", auth=AUTH)
    assert r.status_code == 200 and "ok run 1" in r.text
    assert r.headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_hidden_and_outside_files_are_404(site: Settings, tmp_path: Path) -> None:
    out = site.output_dir
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (out / "link_out.html").symlink_to(secret)
    (out / "link_hist.html").symlink_to(out / ".history.json")
    (out / "inside.html").symlink_to(out / "ok_autorun.html")
    (out / "sub" / "dir").mkdir()
    c = client(site)
    for path in ("/output/.history.json", "/output/.scheduler.json", "/output/.locks/x",
                 "/output/.alert-state.json", "/output/sub/.hidden", "/output/link_out.html",
                 "/output/link_hist.html", "/output/sub/dir", "/output/", "/output/missing.html"):
        r = c.get(path, auth=AUTH)
        assert r.status_code == 404, path
        assert "TOP SECRET" not in r.text and '"version"' not in r.text
    assert c.get("/output/inside.html", auth=AUTH).status_code == 200


def test_traversal_via_raw_http(site: Settings, tmp_path: Path) -> None:
    """Raw request lines (no client-side normalisation) against the real server."""
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    handle = start_in_thread(site, "127.0.0.1", 0)
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    try:
        attempts = [
            "/output/../secret.txt", "/output/../../secret.txt", "/output/..%2fsecret.txt",
            "/output/%2e%2e/secret.txt", "/output/%2e%2e%2fsecret.txt",
            "/output/%252e%252e/secret.txt", "/output/%252e%252e%252fsecret.txt",
            "/output/sub/../../secret.txt", "/output//etc/passwd", "/output/%2fetc%2fpasswd",
            f"/output/{tmp_path}/secret.txt", "/output/%2e%68istory.json", "/output/.%2e/secret.txt",
            "/output/..%5csecret.txt", "/output/%00../secret.txt", "/../secret.txt",
        ]
        for target in attempts:
            status, body = raw_get(handle.port, target, token)
            assert status in (404, 400), (target, status)
            assert b"TOP SECRET" not in body and b"root:" not in body, target
        status, body = raw_get(handle.port, "/output/ok_autorun.html", token)
        assert status == 200 and b"ok run 1" in body
    finally:
        handle.stop()


def raw_get(port: int, target: str, token: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Basic {token}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# --- run now -------------------------------------------------------------------------------

def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def test_run_now_requires_token_and_same_origin(site: Settings, monkeypatch, jc,
                                                tmp_path: Path) -> None:
    launched = tmp_path / "launched"
    monkeypatch.setattr(web_app, "run_now_argv", lambda s, rel: [
        sys.executable, "-c", f"open({str(launched)!r}, 'w').write({rel!r})"])
    c = client(site)
    token = csrf_of(c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text)
    form = {"notebook": "ok_autorun.ipynb", "csrf_token": token}
    same = {"Origin": "http://dash.test", "Sec-Fetch-Site": "same-origin"}
    cases = [
        ({"notebook": "ok_autorun.ipynb"}, same),                               # no token
        ({"notebook": "ok_autorun.ipynb", "csrf_token": "0" * 64}, same),         # wrong token
        (form, {"Origin": "https://evil.example"}),                              # foreign origin
        (form, {"Origin": "null"}),                                              # sandboxed page
        (form, {"Sec-Fetch-Site": "cross-site"}),
        (form, {"Sec-Fetch-Site": "same-site", "Origin": "http://dash.test"}),
    ]
    for data, headers in cases:
        r = c.post("/run", data=data, headers=headers, auth=AUTH, follow_redirects=False)
        assert r.status_code == 403, (data, headers)
    assert not launched.exists()
    # another user's token does not work either
    other = replace(site, web_users={**site.web_users, "bob": BOB_HASH})
    app = create_app(other)
    bob = TestClient(app, base_url="http://dash.test")
    alice_token = csrf_of(bob.get("/notebook/ok_autorun.ipynb", auth=AUTH).text)
    r = bob.post("/run", data={**form, "csrf_token": alice_token}, headers=same,
                 auth=("bob", "pw"), follow_redirects=False)
    assert r.status_code == 403

    r = c.post("/run", data=form, headers=same, auth=AUTH, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/notebook/ok_autorun.ipynb"
    jc.wait_until(launched.exists, what="the launched process")
    assert launched.read_text() == "ok_autorun.ipynb"
    unknown = c.post("/run", data={**form, "notebook": "../x_autorun.ipynb"}, headers=same,
                     auth=AUTH, follow_redirects=False)
    assert unknown.status_code == 404


def test_run_now_shows_starting_and_refuses_duplicates(site: Settings, monkeypatch, jc,
                                                       tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setattr(web_app, "run_now_argv", lambda s, rel: [
        sys.executable, "-c",
        f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"])
    c = client(site)
    token = csrf_of(c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text)
    form = {"notebook": "ok_autorun.ipynb", "csrf_token": token}
    try:
        assert c.post("/run", data=form, auth=AUTH, follow_redirects=False).status_code == 303
        page = c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text
        assert 'data-state="running"' in page and "starting" in page
        assert 'id="run-now" disabled' in page and 'content="5"' in page
        assert rows_of(c.get("/", auth=AUTH).text)["ok_autorun.ipynb"] == "running"
        assert c.post("/run", data=form, auth=AUTH, follow_redirects=False).status_code == 409
    finally:
        gate.write_text("go")
    jc.wait_until(lambda: rows_of(c.get("/", auth=AUTH).text)["ok_autorun.ipynb"] == "success",
                  what="the launch to be reaped")


def test_run_recorded_as_running_shows_running(site: Settings) -> None:
    SqliteRunStore(site.output_dir).record(Run("ok_autorun.ipynb", rid(0), NOW, RunStatus.RUNNING,
                                        trigger=Trigger.MANUAL, pid=os.getpid()))
    c = client(site)
    assert rows_of(c.get("/", auth=AUTH).text)["ok_autorun.ipynb"] == "running"
    page = c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text
    assert '<svg class="status-icon shape-play"' in page and 'aria-label="running"' in page
    assert 'data-status="running"' in page
    token = csrf_of(page)
    r = c.post("/run", data={"notebook": "ok_autorun.ipynb", "csrf_token": token}, auth=AUTH)
    assert r.status_code == 409


def test_run_now_argv_is_a_list_for_the_cli_group(site: Settings) -> None:
    cfg = site.notebooks.parent / "c.toml"
    argv = web_app.run_now_argv(replace(site, config_file=cfg), "-odd name_autorun.ipynb")
    assert argv[:3] == [sys.executable, "-m", "jupycron"]
    assert argv[argv.index("--notebooks") + 1] == str(site.notebooks)
    assert argv[argv.index("--output") + 1] == str(site.output_dir)
    assert argv[argv.index("--config") + 1] == str(cfg)
    assert argv[-3:] == ["run-now", "--", "-odd name_autorun.ipynb"]


def test_errors_go_through_one_handler(site: Settings, monkeypatch) -> None:
    def broken(*a, **k):
        raise HistoryError("cannot read /x/.history.json: Permission denied")

    monkeypatch.setattr(web_app, "current_rows", broken)
    r = client(site).get("/", auth=AUTH)
    assert r.status_code == 500 and "Permission denied" in r.text

    def bug(*a, **k):
        raise KeyError("internal detail")

    monkeypatch.setattr(web_app, "current_rows", bug)
    r = TestClient(create_app(site), raise_server_exceptions=False).get("/", auth=AUTH)
    assert r.status_code == 500 and "internal detail" not in r.text


def test_a_failed_run_now_shows_its_log_to_the_logged_in_user(site: Settings, monkeypatch, jc) -> None:
    script = ("import sys; print('Error: config file demo/jupycron.toml does not exist <b>x</b>'); "
              "sys.exit(2)")
    monkeypatch.setattr(web_app, "run_now_argv", lambda s, rel: [sys.executable, "-c", script])
    c = client(site)
    token = csrf_of(c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text)
    r = c.post("/run", data={"notebook": "ok_autorun.ipynb", "csrf_token": token}, auth=AUTH,
               follow_redirects=False)
    assert r.status_code == 303

    def shown() -> str | None:
        page = c.get("/notebook/ok_autorun.ipynb", auth=AUTH).text
        return page if "launch-log" in page else None

    page = jc.wait_until(shown, what="the failure on the notebook page")
    assert 'data-code="2"' in page and "exit code 2" in page
    assert "config file demo/jupycron.toml does not exist &lt;b&gt;x&lt;/b&gt;" in page  # escaped
    assert ".web-run-now.log" not in page  # no pointer to a file the dashboard does not serve
    record = (site.output_dir / web_app.RUN_LOG).read_text()
    assert "does not exist" in record and "--- exit code 2" in record
    # anonymous readers see the notebook, not the log
    anon = client(replace(site, web_anonymous_read=True))
    anon.app.state.dashboard.launcher.failures.update(c.app.state.dashboard.launcher.failures)
    assert "launch-log" not in anon.get("/notebook/ok_autorun.ipynb").text


def test_pages_show_the_effective_data_source(site: Settings, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "nodata"))
    c = client(site)
    for path in ("/", "/notebook/ok_autorun.ipynb"):
        page = c.get(path, auth=AUTH).text
        assert f"embedded store {tmp_path / 'nodata'} (OONI_DATA_DIR) - MISSING" in page
    monkeypatch.delenv("OONI_DATA_DIR")
    assert "NONE: no data source is configured" in c.get("/", auth=AUTH).text


@pytest.mark.integration
def test_run_now_with_a_relative_config_runs_with_the_files_settings(tmp_path: Path, jc, monkeypatch) -> None:
    """`jupycron --config site/jupycron.toml serve` from another folder: the Run now it starts
    finds the config, and the run sees the [ooniutils] values and an absolute state folder."""
    import nbformat
    from click.testing import CliRunner
    from nbformat.v4 import new_code_cell, new_notebook

    from jupycron import cli

    site_dir = tmp_path / "site"
    (site_dir / "nb").mkdir(parents=True)
    nb = "env_autorun.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(
        '# jupycron: {"every": "1 day"}\n'
        "import os\n"
        f"assert os.environ['OONI_DATA_DIR'] == {str(site_dir / 'data')!r}, os.environ['OONI_DATA_DIR']\n"
        "assert os.environ['OONI_NTFY_URL'] == 'http://127.0.0.1:9/t'\n"
        f"assert os.environ['JUPYCRON_STATE_DIR'] == {str(site_dir / 'nb' / 'jupycron' / '.state')!r}\n")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}),
        site_dir / "nb" / nb)
    (site_dir / "jupycron.toml").write_text(
        'notebooks = "nb"\n[ooniutils]\ndata_dir = "data"\nntfy_url = "http://127.0.0.1:9/t"\n'
        f'[web_users]\nalice = "{HASH}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OONI_DATA_DIR", "/elsewhere")  # replaced by the file's value (restored after)
    monkeypatch.setenv("OONI_NTFY_URL", "x")
    seen = {}

    def fake_serve(settings, host, port, **kw):
        seen["settings"] = settings

    monkeypatch.setattr("jupycron.web.server.serve", fake_serve)
    res = CliRunner().invoke(cli.main, ["--config", "site/jupycron.toml", "serve"])
    assert res.exit_code == 0, res.output
    s = seen["settings"]
    assert s.config_file == site_dir / "jupycron.toml"
    argv = web_app.run_now_argv(s, nb)
    assert argv[argv.index("--config") + 1] == str(site_dir / "jupycron.toml")
    assert os.environ["OONI_DATA_DIR"] == str(site_dir / "data")
    monkeypatch.setenv("OONI_DATA_DIR", "/elsewhere")  # the run gets the file's value anyway
    c = TestClient(create_app(s), base_url="http://dash.test")
    token = csrf_of(c.get(f"/notebook/{nb}", auth=AUTH).text)
    monkeypatch.chdir("/")  # the launched run must not depend on the server's working directory
    assert c.post("/run", data={"notebook": nb, "csrf_token": token}, auth=AUTH,
                  follow_redirects=False).status_code == 303
    jc.wait_until(lambda: rows_of(c.get("/", auth=AUTH).text)[nb] not in ("never", "running"),
                  timeout=120, what="the run to finish")
    page = c.get(f"/notebook/{nb}", auth=AUTH).text
    assert "launch-log" not in page, page
    assert rows_of(c.get("/", auth=AUTH).text)[nb] == "success", page
