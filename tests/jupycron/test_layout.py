"""The summary page and the dashboard at a glance, in headless Chromium (issue 14 §4).

At 1280 and 1920 px wide, with every state present and a 2,000-character error: the page
does not overflow horizontally, notebook names keep at least 15 characters of width, the long
error is one line until clicked (no JavaScript), and the status icons are SVG elements with
a size and the state as their name - no emoji code point is left (this machine has no emoji
font: they rendered as empty boxes). The finding column shows each latest finding with its
own SVG icon, and the dashboard's finding filter keeps only the notebooks at that level.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jupycron.status import NotebookState, current_rows, finding_word
from jupycron.summary import write_summary
from jupycron.web import start_in_thread
from tests.support.chromium import chromium_driver
from tests.support.status_site import (
    FINDINGS,
    LONG_ERROR_CHARS,
    NOTEBOOKS,
    build_status_site,
    long_error,
)

pytestmark = pytest.mark.integration

WIDTHS = (1280, 1920)
FAILED_NB = next(rel for rel, (_, state) in NOTEBOOKS.items() if state == "failed")

# Everything measured in one script: [overflow, names, icons, emoji, reason] facts.
MEASURE = r"""
const de = document.documentElement;
const ctx = document.createElement("canvas").getContext("2d");
const rows = [...document.querySelectorAll("tr[data-path]")];
const names = rows.map(tr => {
  const cell = tr.querySelector("td.notebook");
  const link = cell.querySelector("a") || cell;
  const cs = getComputedStyle(cell);
  ctx.font = getComputedStyle(link).font;
  return {path: tr.dataset.path,
          width: cell.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight),
          need: ctx.measureText(tr.dataset.path.slice(0, 15)).width};
});
const icons = rows.map(tr => [...tr.querySelectorAll("svg.status-icon")].map(svg => {
  const r = svg.getBoundingClientRect();
  return {state: tr.dataset.state, label: svg.getAttribute("aria-label"),
          tag: svg.namespaceURI, w: r.width, h: r.height, shapes: svg.childElementCount};
}));
const findings = Object.fromEntries(rows.map(tr => {
  const cell = tr.querySelector("td.finding");
  const svg = cell.querySelector("svg.finding-icon");
  const r = svg ? svg.getBoundingClientRect() : null;
  return [tr.dataset.path, {level: tr.dataset.finding, text: cell.textContent,
          label: svg ? svg.getAttribute("aria-label") : null, w: r ? r.width : 0,
          right: cell.getBoundingClientRect().right}];
}));
const emoji = [...de.outerHTML.matchAll(/\p{Extended_Pictographic}/gu)].map(m => m[0]);
return {scrollWidth: de.scrollWidth, clientWidth: de.clientWidth, innerWidth: window.innerWidth,
        names: names, icons: icons, emoji: emoji, states: rows.map(tr => tr.dataset.state),
        findings: findings, paths: rows.map(tr => tr.dataset.path)};
"""

REASON = """
const s = document.querySelector(arguments[0] + ' details.reason > summary');
const line = parseFloat(getComputedStyle(s).lineHeight) || 20;
return {height: s.getBoundingClientRect().height, line: line, text: s.textContent,
        open: s.parentElement.open, scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth};
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("layout")
    settings = build_status_site(root, web_anonymous_read=True)
    now = datetime.now(UTC)
    summary = write_summary(settings, current_rows(settings, now), now)
    handle = start_in_thread(settings, "127.0.0.1", 0)
    try:
        with chromium_driver(root) as driver:
            yield driver, {"summary": summary.as_uri(), "dashboard": handle.url + "/",
                           "failing filter": handle.url + "/?state=failing",
                           "alarm filter": handle.url + "/?finding=alarm",
                           "none reported filter": handle.url + "/?finding=none"}
    finally:
        handle.stop()


def _load(driver, url: str, width: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    # The dashboard refreshes itself every 5 s while a notebook runs: a refresh due just as
    # the next page is requested can win and reload the dashboard instead. A blank page in
    # between has no refresh, so the page asked for is the page loaded.
    driver.get("about:blank")
    driver.get(url)
    assert driver.current_url == url, (driver.current_url, url)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", ["summary", "dashboard", "failing filter", "alarm filter"])
def test_page_fits_the_window_and_icons_need_no_emoji_font(site, page: str, width: int) -> None:
    driver, urls = site
    _load(driver, urls[page], width)
    m = driver.execute_script(MEASURE)

    assert m["innerWidth"] == width
    assert m["scrollWidth"] <= m["clientWidth"] <= m["innerWidth"], \
        f"{page} overflows at {width} px: {m['scrollWidth']} > {m['clientWidth']}"
    every = {str(s) for s in NotebookState}   # every state a row can show
    expected = {"failing filter": {"failed", "timeout", "oom", "crashed"},
                "alarm filter": {"success"}}.get(page, every)
    assert set(m["states"]) == expected
    for name in m["names"]:
        assert name["width"] >= name["need"], f"{name['path']} squeezed at {width} px: {name}"
    for per_row in m["icons"]:
        assert len(per_row) == 1, per_row
        (icon,) = per_row
        assert icon["tag"] == "http://www.w3.org/2000/svg" and icon["shapes"] >= 1
        assert icon["w"] >= 10 and icon["h"] >= 10, icon
        assert icon["label"] == icon["state"]
    assert m["emoji"] == [], f"emoji code points left in the {page}: {m['emoji']}"
    for path, f in m["findings"].items():
        finding = FINDINGS.get(path)
        assert f["right"] <= width, f"the finding cell of {path} is cut off at {width} px"
        if finding is None:
            assert (f["level"], f["text"], f["label"]) == ("", "—", None)
        else:
            word = finding_word(finding.level)
            assert f["level"] == finding.level and f["label"] == word and f["w"] >= 10, f
            assert f["text"] == word + finding.summary


@pytest.mark.parametrize("level", ["alarm", "no_data", "warning", "ok", "none"])
def test_the_finding_filter_keeps_that_level(site, level: str) -> None:
    driver, urls = site
    _load(driver, urls["dashboard"] + f"?finding={level}", 1280)
    m = driver.execute_script(MEASURE)
    expected = sorted(p for p in NOTEBOOKS if (str(FINDINGS[p].level) if p in FINDINGS
                                               else "none") == level)
    assert sorted(m["paths"]) == expected
    active = driver.execute_script(
        "return [...document.querySelectorAll('nav.findings a.active')].map(a => a.dataset.findingFilter)")
    assert active == [level]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", ["summary", "dashboard"])
def test_long_error_is_one_line_until_clicked(site, page: str, width: int) -> None:
    from selenium.webdriver.common.by import By

    driver, urls = site
    _load(driver, urls[page], width)
    row = f'tr[data-path="{FAILED_NB}"]'
    before = driver.execute_script(REASON, row)
    assert not before["open"]
    assert before["height"] < 1.6 * before["line"], f"not one line: {before}"
    assert long_error() in before["text"] and len(before["text"]) >= LONG_ERROR_CHARS
    driver.find_element(By.CSS_SELECTOR, f"{row} details.reason > summary").click()
    after = driver.execute_script(REASON, row)
    assert after["open"] and after["height"] > 5 * after["line"], after
    assert after["scrollWidth"] <= after["clientWidth"], f"the opened error overflows: {after}"


def test_notebook_page_icons_are_svg(site) -> None:
    driver, urls = site
    _load(driver, urls["dashboard"] + f"notebook/{FAILED_NB}", 1280)
    m = driver.execute_script(r"""
const de = document.documentElement;
const svgs = [...document.querySelectorAll("h1 .icon svg.status-icon, tr.run-row svg.status-icon")];
return {emoji: [...de.outerHTML.matchAll(/\p{Extended_Pictographic}/gu)].map(m => m[0]),
        runs: document.querySelectorAll("tr.run-row").length,
        labels: svgs.map(s => s.getAttribute("aria-label")),
        sizes: svgs.map(s => s.getBoundingClientRect().width),
        scrollWidth: de.scrollWidth, clientWidth: de.clientWidth,
        title: document.title, url: location.href};
""")
    assert m["emoji"] == []
    assert m["runs"] >= 2 and len(m["labels"]) == m["runs"] + 1, (m["title"], m["url"], m["runs"])
    assert m["labels"][:2] == ["failed", "failed"] and min(m["sizes"]) >= 10, m
    assert m["scrollWidth"] <= m["clientWidth"], m
