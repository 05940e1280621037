"""The dashboard in headless Chromium: log in, see the statuses, open a notebook, run it now
(a real kernel through ``python -m jupycron ... run-now``) and see it finish.

Login: the test adds ``Authorization: Basic`` to every request through the DevTools protocol
(``Network.setExtraHTTPHeaders``), which is what a browser sends after its native Basic-auth
prompt; there is no login form or session cookie in the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jupycron.ledger import SqliteRunStore
from jupycron.models import Run, RunStatus
from jupycron.web import hash_password, start_in_thread
from tests.support.chromium import chromium_driver, set_basic_auth

pytestmark = pytest.mark.integration


def poll(driver, fn: Callable[[], object], timeout: float, what: str, reload: bool = True) -> object:
    """Reload and evaluate ``fn`` until it is truthy (the page also refreshes itself)."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            if value:
                return value
        except WebDriverException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page:\n"
                                 f"{driver.page_source[:3000]}")
        time.sleep(0.5)
        if reload:
            driver.refresh()


def test_log_in_see_statuses_run_now_and_see_it_finish(tmp_path: Path, jc) -> None:
    from selenium.webdriver.common.by import By

    s = jc.make_settings(tmp_path, web_users={"alice": hash_password("pw")})
    ok = jc.copy_notebook("ok_autorun.ipynb", s.notebooks, line='{"every": "1 day"}')
    bad = jc.copy_notebook("raises_autorun.ipynb", s.notebooks, line='{"every": "1 day"}')
    now = datetime.now(UTC)
    SqliteRunStore(s.output_dir).record(Run(bad, "20240101T000000-000001", now, RunStatus.FAILED,
                                     finished_at=now, duration_s=2.0, error_name="ValueError",
                                     error_value="boom"))
    handle = start_in_thread(s, "127.0.0.1", 0)
    try:
        with chromium_driver(tmp_path) as driver:
            set_basic_auth(driver, "alice", "pw")
            driver.get(handle.url + "/")
            states = {tr.get_attribute("data-path"): tr.get_attribute("data-state")
                      for tr in driver.find_elements(By.CSS_SELECTOR, "tr[data-path]")}
            assert states == {ok: "never", bad: "failed"}
            assert "ValueError: boom" in driver.find_element(
                By.CSS_SELECTOR, f'tr[data-path="{bad}"] .reason').text
            # the filter links work without JavaScript
            driver.find_element(By.CSS_SELECTOR, 'a[data-filter="failing"]').click()
            assert [tr.get_attribute("data-path")
                    for tr in driver.find_elements(By.CSS_SELECTOR, "tr[data-path]")] == [bad]
            driver.find_element(By.CSS_SELECTOR, 'a[data-filter=""]').click()

            driver.find_element(By.CSS_SELECTOR, f'tr[data-path="{ok}"] a.details').click()
            assert driver.current_url.endswith(f"/notebook/{ok}")
            assert driver.find_element(By.CSS_SELECTOR, "dd.max-mem").text == "1000 MB"
            driver.find_element(By.ID, "run-now").click()
            # redirected back to the notebook page, which shows "running" until the run is done
            assert driver.current_url.endswith(f"/notebook/{ok}")
            # the page refreshes itself while the run goes on: read it whole, retrying a read
            # that a reload made stale
            first, icon = poll(driver, lambda: (
                driver.find_element(By.CSS_SELECTOR, "p.state").get_attribute("data-state"),
                driver.find_element(By.CSS_SELECTOR, "h1 .icon svg.status-icon")
                .get_attribute("aria-label")), 30, "the notebook page")
            assert first in ("running", "success")  # a fast machine may already be done
            if first == "running":
                assert icon == "running"
            poll(driver, lambda: driver.find_element(By.CSS_SELECTOR, "p.state")
                 .get_attribute("data-state") == "success", 120, "the run to succeed")
            row = driver.find_element(By.CSS_SELECTOR, "tr.run-row")
            assert row.get_attribute("data-status") == "success"
            assert row.find_element(By.CSS_SELECTOR, "td.trigger").text == "manual"
            assert row.find_element(By.CSS_SELECTOR, "td.peak-mem").text != "—"
            row.find_element(By.CSS_SELECTOR, "a.latest").click()
            assert "/output/ok_autorun.html" in driver.current_url
            assert "probe written" in driver.find_element(By.TAG_NAME, "body").text
            driver.get(handle.url + "/")
            assert driver.find_element(By.CSS_SELECTOR, f'tr[data-path="{ok}"]') \
                .get_attribute("data-state") == "success"
    finally:
        handle.stop()
    runs = SqliteRunStore(s.output_dir).get(ok).runs
    assert [r.status for r in runs] == [RunStatus.SUCCESS]

