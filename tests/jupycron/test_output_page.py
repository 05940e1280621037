"""The run's output page in headless Chromium at 1280 px (issue 14 §2): the finding opens
the page above the first code cell, code is folded with a toggle that shows all of it, and
the page never scrolls sideways: a wide table scrolls inside its own box."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from jupycron.findings import FINDING_MIME, finding_html
from jupycron.models import Finding, FindingLevel
from jupycron.runner import export_html
from tests.support.chromium import chromium_driver

pytestmark = pytest.mark.integration

WIDE_COLUMNS = 40


def _wide_table() -> str:
    head = "".join(f"<th>a_rather_long_column_name_{i}</th>" for i in range(WIDE_COLUMNS))
    row = "".join(f"<td>value {i:,}</td>" for i in range(WIDE_COLUMNS))
    return f'<table class="dataframe"><thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody></table>'


def _page(tmp_path: Path) -> Path:
    finding = Finding(FindingLevel.ALARM, "IR: measurements down 40 % since 14:00",
                      [{"series": "IR", "down": "40 %", "since": "2026-12-06 14:00"}])
    payload = finding.to_json()
    cells = [
        new_code_cell('# jupycron: {"every": "1 hour"}\nfrom ooniutils import *\n' + "x = 1\n" * 30,
                      execution_count=1, outputs=[]),
        new_markdown_cell("# A dashboard\nText for readers."),
        new_code_cell("wide_table", execution_count=2, outputs=[new_output(
            "execute_result", execution_count=2, data={"text/html": _wide_table(), "text/plain": "t"})]),
        new_code_cell("print('long line')", execution_count=3, outputs=[new_output(
            "stream", name="stdout", text="word " * 600 + "\n")]),
        new_code_cell("report_finding(...)", execution_count=4, outputs=[new_output(
            "display_data", data={FINDING_MIME: payload, "text/html": finding_html(finding),
                                  "text/plain": "ALARM"})]),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.validate(nb)
    dest = tmp_path / "page.html"
    export_html(nb, dest, "page_autorun")
    return dest


MEASURE = r"""
const de = document.documentElement;
const top = el => el ? el.getBoundingClientRect().top + window.scrollY : null;
const inputs = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea')];
const wide = [...document.querySelectorAll('.jp-OutputArea-output')]
  .find(o => o.querySelector('table.dataframe'));
return {scrollWidth: de.scrollWidth, clientWidth: de.clientWidth,
        banner: top(document.querySelector('.jupycron-top .jupycron-finding')),
        bannerText: document.querySelector('.jupycron-top .jupycron-finding').textContent,
        firstCell: top(document.querySelector('.jp-Cell')),
        firstCode: top(document.querySelector('.jp-CodeCell')),
        inputsShown: inputs.map(i => i.checkVisibility()),
        summaries: [...document.querySelectorAll('details.jupycron-code > summary')]
          .map(s => s.checkVisibility()),
        wide: {scroll: wide.scrollWidth, client: wide.clientWidth,
               overflowX: getComputedStyle(wide).overflowX,
               right: wide.getBoundingClientRect().right}};
"""


def test_finding_on_top_code_folded_and_no_sideways_scroll(tmp_path):
    page = _page(tmp_path)
    with chromium_driver(tmp_path) as driver:
        driver.set_window_size(1280, 900)
        driver.get(page.as_uri())
        width = driver.execute_script("return window.innerWidth")
        assert 1200 <= width <= 1280  # the viewport asked for (a scrollbar may take some)
        m = driver.execute_script(MEASURE)
        assert m["banner"] is not None and m["banner"] < m["firstCell"] <= m["firstCode"]
        assert m["banner"] < 200  # read without scrolling
        assert "ALARM" in m["bannerText"] and "IR: measurements down 40 % since 14:00" in m["bannerText"]
        assert m["inputsShown"] == [False] * 4 and m["summaries"] == [True] * 4
        # the page does not scroll sideways; the wide table scrolls inside its box
        assert m["scrollWidth"] <= m["clientWidth"], m
        assert m["wide"]["scroll"] > m["wide"]["client"] and m["wide"]["overflowX"] in ("auto", "scroll")
        assert m["wide"]["right"] <= m["clientWidth"]

        button = driver.find_element("id", "jupycron-code-toggle")
        button.click()
        shown = driver.execute_script(MEASURE)
        assert shown["inputsShown"] == [True] * 4 and button.text == "Hide code"
        assert shown["scrollWidth"] <= shown["clientWidth"]
        button.click()
        assert driver.execute_script(MEASURE)["inputsShown"] == [False] * 4
        # one cell opened by its own summary
        driver.find_elements("css selector", "details.jupycron-code > summary")[1].click()
        assert driver.execute_script(MEASURE)["inputsShown"] == [False, True, False, False]
