"""Headless Debian Chromium driven by Selenium through Debian's /usr/bin/chromedriver.

Usage::

    with chromium_driver(tmp_path) as driver:
        set_basic_auth(driver, "alice", "secret")   # Authorization header on every request
        driver.get(base_url + "/")

Nothing is downloaded: the browser and driver paths are given explicitly, so Selenium
Manager is not consulted. Each driver gets a fresh ``--user-data-dir`` under ``tmp_path``
and is quit (browser and driver stopped) when the block ends. Missing programs skip the test
outside CI and fail it with ``CI=true`` (:func:`tests.support.services.require_program`).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

from .services import require_program

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", "--window-size=1280,900")


@contextlib.contextmanager
def chromium_driver(tmp_path: Path) -> Iterator[object]:
    """Start headless Chromium; yield the selenium ``webdriver.Chrome``; quit it afterwards."""
    browser = require_program("chromium", "/usr/bin/chromium", package="chromium")
    driver_bin = require_program("chromedriver", "/usr/bin/chromedriver", package="chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    workdir = tmp_path / "chromium"
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=driver_bin, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def set_basic_auth(driver: object, user: str, password: str) -> None:
    """Send ``Authorization: Basic`` with every request of ``driver`` (DevTools protocol)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",  # type: ignore[attr-defined]
                           {"headers": {"Authorization": f"Basic {token}"}})
