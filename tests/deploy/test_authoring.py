"""The editor end to end: headless Chromium -> the real nginx (notebooks site) -> the dashboard's
/auth/check and the real Jupyter Notebook 7 server started by `jupycron notebook-server`;
then `jupycron tick` runs what was saved and the dashboard names who saved it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat
import pandas as pd
import pytest

from jupycron.authors import load_authors
from jupycron.config import Settings
from jupycron.nginx_site import render_notebooks_site
from jupycron.web.auth import hash_password
from jupycron.web.server import start_in_thread
from ooniutils.store import get_store, reset_stores
from tests.deploy.conftest import nginx_main_conf
from tests.jupycron.conftest import seen_long_ago
from tests.support.chromium import chromium_driver, set_basic_auth
from tests.support.services import (
    free_port,
    poll_until,
    require_program,
    running,
    wait_for_http,
    wait_for_port,
)

REL = "ops/autorun_counts.ipynb"
USER, PASSWORD = "alice", "correct horse"
MARKER = "saved-in-the-editor"
QUERY_CELL = ("# jupycron: {\"every\": \"1 minute\"}\n"
              "import os\n"
              "import ooniutils\n"
              "df = ooniutils.click_query_fsn('SELECT count() AS n FROM fastpath')\n"
              "print('rows:', int(df.n[0]), 'autorun:', ooniutils.autorun,"
              " os.environ.get('AUTORUN'))")


@dataclass
class Stack:
    url: str            # nginx
    settings: Settings
    env: dict[str, str]  # the environment both the editor and `jupycron tick` get


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(
        "Counts the measurements in the store: $n = \\sum_i 1$ (math is typeset offline)."),
                nbformat.v4.new_code_cell(QUERY_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def stack(tmp_path, monkeypatch) -> Iterator[Stack]:
    nginx_bin = require_program("nginx", "/usr/sbin/nginx", package="nginx")
    # The store: embedded, in this test's folder, with five measurements.
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "store"))
    reset_stores()
    store = get_store(create=True)
    store.init()
    store.insert("fastpath", pd.DataFrame({
        "measurement_uid": [f"m{i}" for i in range(5)], "probe_cc": ["IT", "IT", "DE", "DE", "US"],
        "test_name": ["web_connectivity"] * 5,
        "measurement_start_time": pd.to_datetime(["2026-12-01"] * 5)}))
    reset_stores()

    notebooks, output = tmp_path / "notebooks", tmp_path / "output"
    _notebook(notebooks / REL)
    settings = Settings(notebooks=notebooks, output=output, concurrency=1, pool_size=0,
                        web_users={USER: hash_password(PASSWORD)}, jupyter_base_url="/jupyter")
    env = {**os.environ, "JUPYCRON_POOL_SIZE": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("AUTORUN", None)
    dashboard = start_in_thread(settings, "127.0.0.1", 0)
    editor_port = free_port()
    cmd = [sys.executable, "-m", "jupycron", "--notebooks", str(notebooks), "--output",
           str(output), "notebook-server", "--port", str(editor_port)]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    prefix = tmp_path / "nginx"
    for sub in ("logs", "tmp", "wellknown"):
        (prefix / sub).mkdir(parents=True)
    port = free_port()
    site = prefix / "site.conf"
    site.write_text(render_notebooks_site(
        server_name="localhost", dashboard=f"127.0.0.1:{dashboard.port}",
        editor=f"127.0.0.1:{editor_port}", challenge_dir=prefix / "wellknown",
        listen=[f"127.0.0.1:{port}"]))
    main = prefix / "nginx.conf"
    main.write_text(nginx_main_conf(str(prefix), str(site)))
    nginx_cmd = [nginx_bin, "-p", str(prefix), "-c", str(main), "-g",
                 f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log info;"]
    try:
        # AUTORUN=1 as if started from a run's environment: the editor's kernels must drop it.
        with running(cmd, tmp_path / "editor.log", env={**env, "AUTORUN": "1"}) as editor, \
                running(nginx_cmd, prefix / "logs" / "stdout.log") as nginx:
            wait_for_port(port, proc=nginx)
            wait_for_http(f"http://127.0.0.1:{editor_port}/jupyter/api/status", timeout=120,
                          proc=editor, ok=lambda r: r.status_code == 403)
            yield Stack(f"http://127.0.0.1:{port}", settings, env)
    finally:
        dashboard.stop()
        reset_stores()


def _check_login(stack: Stack) -> None:
    """One login: nginx asks the dashboard; a client cannot claim a user with the header."""
    api = stack.url + "/jupyter/api/contents/" + REL
    with httpx.Client(timeout=30) as c:
        anonymous = c.get(api)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith('Basic realm="jupycron"')
        assert c.get(api, headers={"X-Jupycron-User": USER}).status_code == 401
        assert c.get(api, auth=(USER, "wrong")).status_code == 401
        ok = c.get(api, auth=(USER, PASSWORD))
        assert ok.status_code == 200 and ok.json()["type"] == "notebook"
        assert c.get(stack.url + "/", auth=(USER, PASSWORD)).status_code == 200
        # The server side of "no network": no news feed, no update check, no PyPI manager.
        lab = stack.url + "/jupyter/lab/api"
        assert c.get(lab + "/news", auth=(USER, PASSWORD)).json() == {"news": []}
        assert c.get(lab + "/update", auth=(USER, PASSWORD)).json() == {"notification": None}
        page = c.get(stack.url + "/jupyter/tree", auth=(USER, PASSWORD)).text
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page,
                                      re.S).group(1))
        assert config["extensionManager"]["name"] == "read-only"
        assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]


def _kernel_idle(stack: Stack) -> bool:
    sessions = httpx.get(stack.url + "/jupyter/api/sessions", auth=(USER, PASSWORD),
                         timeout=10).json()
    return any(s["path"] == REL and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions)


def _accept_dialog(driver) -> bool:
    """Click the default button of an open Jupyter dialog; False when none is open."""
    from selenium.webdriver.common.by import By

    buttons = driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if buttons:
        buttons[0].click()
    return False  # keep waiting for the output


@contextlib.contextmanager
def _screenshot_on_failure(driver, folder: Path) -> Iterator[None]:
    """Keep what the browser showed when the test failed (``failure.png`` / ``.html``)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(folder / "failure.png"))
            (folder / "failure.html").write_text(driver.page_source)
        raise


@pytest.mark.integration
def test_login_edit_run_save_then_tick_runs_the_saved_version(stack: Stack, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _check_login(stack)
    with chromium_driver(tmp_path) as driver, _screenshot_on_failure(driver, tmp_path):
        set_basic_auth(driver, USER, PASSWORD)
        # From the dashboard's notebook page to the editor: one login for both.
        driver.get(f"{stack.url}/notebook/{REL}")
        wait = WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException])
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a.jupyter"))).click()
        wait.until(lambda d: d.current_url == f"{stack.url}/jupyter/notebooks/{REL}")
        # The editor started the notebook's kernel (the browser may still be connecting).
        poll_until(lambda: _kernel_idle(stack), timeout=120, every=0.5)
        editor = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, ".jp-CodeCell .cm-content")))
        # the markdown cell's math is typeset by the bundled MathJax (the check below shows
        # nothing was fetched from a CDN for it)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-MarkdownCell mjx-container")))
        editor.click()
        editor.send_keys(Keys.CONTROL, Keys.END)
        editor.send_keys(Keys.ENTER, f"print('{MARKER}')")
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        # Run before the page had connected to the kernel, Notebook 7 asks which kernel to
        # use: answer as an operator would (its default is the notebook's, python3).
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                   or _accept_dialog(d))
        out = wait.until(lambda d: next(
            (o.text for o in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
             if MARKER in o.text), None))
        # The editor's kernel queried the test's store, and is not a scheduled run.
        assert "rows: 5 autorun: False None" in out
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.CONTROL, "s")
        saved = stack.settings.notebooks / REL
        poll_until(lambda: MARKER in saved.read_text(), timeout=30)
        author = poll_until(lambda: load_authors(stack.settings.output_dir).get(REL), timeout=30)
        assert author.user == USER
        # Nothing the editor loaded came from anywhere but nginx (no CDN, news, or PyPI).
        urls = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and not [u for u in urls if not u.startswith((stack.url, "data:", "blob:"))]

        # The scheduler runs the saved version at its slot.
        seen_long_ago(stack.settings, [REL])
        tick = subprocess.run([sys.executable, "-m", "jupycron", "--notebooks",
                               str(stack.settings.notebooks), "--output",
                               str(stack.settings.output_dir), "--concurrency", "1", "tick"],
                              env=stack.env, capture_output=True, text=True, timeout=240)
        assert tick.returncode == 0, tick.stdout + tick.stderr
        html = (stack.settings.output_dir / REL.replace(".ipynb", ".html")).read_text()
        assert MARKER in html and "rows: 5 autorun: True 1" in html

        # The dashboard's notebook page names the author.
        driver.get(f"{stack.url}/notebook/{REL}")
        line = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".last-saved")))
        assert line.find_element(By.CSS_SELECTOR, ".author").text == USER
        assert driver.find_element(By.CSS_SELECTOR, ".state").get_attribute(
            "data-state") == "success"

