"""Findings end to end with real kernels: a notebook calls ``ooniutils.report_finding``, the
runner records it with the run (and the history), and the output page opens with it."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import discovery, execute, runner
from jupycron.ledger import SqliteRunStore
from jupycron.models import Finding, FindingLevel, RunStatus, Trigger
from jupycron.paths import output_html

pytestmark = pytest.mark.integration

HEADER = '# jupycron: {"every": "1 hour"}\nfrom ooniutils import report_finding\nimport pandas as pd'
NOTEBOOKS = {
    "once_autorun.ipynb": [
        HEADER,
        'report_finding("alarm", "IR: measurements down 40 % since 14:00",\n'
        '               detail=pd.DataFrame({"cc": ["IR", "RU"], "drop_pct": [40, 31],\n'
        '                                    "since": pd.to_datetime(["2026-12-06 14:00", None])}))',
    ],
    "twice_autorun.ipynb": [
        HEADER,
        'report_finding("alarm", "first report, replaced below")',
        'print("between")',
        'report_finding("ok", "all quiet after all")',
    ],
    "never_autorun.ipynb": [HEADER, 'print("I report nothing")'],
    # prints past the output cap (set to 256 KB below), then reports on a frame far too
    # wide and long: the finding is kept, cut to its limits (found by using the product:
    # it was dropped with the rest of the output, and the alarm showed as "—")
    "verbose_autorun.ipynb": [
        HEADER,
        'for i in range(400):\n    print(i, "x" * 1000)',
        'wide = pd.DataFrame([[r * 1000 + c for c in range(300)] for r in range(120)],\n'
        '                    columns=[f"column {c} " + "y" * 100 for c in range(300)])\n'
        'report_finding("alarm", "a finding after 400 KB of prints", detail=wide)',
    ],
    "bad_then_raises_autorun.ipynb": [
        HEADER,
        'report_finding("no_data", "the query returned no row")',
        'from IPython.display import display\n'
        'display({"application/vnd.jupycron.finding+json": {"level": "purple", "summary": 1},\n'
        '         "text/plain": "a broken finding"}, raw=True)',
        'raise RuntimeError("a later cell fails")',
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, jc):
    tmp = tmp_path_factory.mktemp("findings")
    settings = jc.make_settings(tmp)
    for rel, sources in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nbformat.write(nb, settings.notebooks / rel)
    history = SqliteRunStore(settings.output_dir)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setattr(execute, "MAX_OUTPUT_BYTES", 256 * 1024)
        for rel in NOTEBOOKS:
            nb = discovery.read_notebook(settings.notebooks / rel, rel)
            out[rel] = runner.run_notebook(settings, nb, Trigger.MANUAL, None, history)
    return {"settings": settings, "runs": out, "history": SqliteRunStore(settings.output_dir).load()}


def _recorded(runs, rel):
    return runs["history"][rel].runs[0]


def _html(runs, rel) -> str:
    return Path(output_html(runs["settings"].output_dir, rel)).read_text()


def test_a_reported_finding_is_recorded_with_the_run(runs):
    run = runs["runs"]["once_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS
    expected = Finding(FindingLevel.ALARM, "IR: measurements down 40 % since 14:00",
                       [{"cc": "IR", "drop_pct": 40, "since": "2026-12-06 14:00:00"},
                        {"cc": "RU", "drop_pct": 31, "since": None}])
    assert run.finding == expected
    assert _recorded(runs, "once_autorun.ipynb").finding == expected  # through the history


def test_the_last_report_wins(runs):
    run = runs["runs"]["twice_autorun.ipynb"]
    assert run.finding == Finding(FindingLevel.OK, "all quiet after all", None)
    assert _recorded(runs, "twice_autorun.ipynb").finding == run.finding


def test_a_notebook_that_never_reports_has_no_finding(runs):
    assert runs["runs"]["never_autorun.ipynb"].status is RunStatus.SUCCESS
    assert runs["runs"]["never_autorun.ipynb"].finding is None
    assert _recorded(runs, "never_autorun.ipynb").finding is None
    assert "reported no finding" in _html(runs, "never_autorun.ipynb")


def test_a_broken_finding_is_ignored_and_a_failed_run_keeps_its_finding(runs):
    run = runs["runs"]["bad_then_raises_autorun.ipynb"]
    assert run.status is RunStatus.FAILED and run.error_name == "RuntimeError"
    assert run.finding == Finding(FindingLevel.NO_DATA, "the query returned no row", None)


def test_a_finding_after_the_output_cap_is_kept_within_its_limits(runs):
    run = runs["runs"]["verbose_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS and run.extra["output_truncated"] is True
    assert run.finding is not None and run.finding.level is FindingLevel.ALARM
    assert run.finding.summary == "a finding after 400 KB of prints"
    detail = run.finding.detail
    assert detail is not None and len(detail) == 50 and all(len(r) == 20 for r in detail)
    assert detail[1][next(iter(detail[1]))] == 1000
    assert all(len(name) <= 60 for name in detail[0])
    assert _recorded(runs, "verbose_autorun.ipynb").finding == run.finding
    html = _html(runs, "verbose_autorun.ipynb")
    assert "jupycron-finding-alarm" in html and "output truncated" in html
    assert len(html) < 1_000_000


def test_the_output_page_opens_with_the_finding_and_folds_the_code(runs):
    html = _html(runs, "once_autorun.ipynb")
    top = html.index('class="jupycron-top"')
    banner = html.index("jupycron-finding-alarm")
    first_cell = html.index('class="jp-Cell ')
    assert top < banner < first_cell
    assert "IR: measurements down 40 % since 14:00" in html[banner:first_cell]
    assert "<th" in html[banner:first_cell] and ">drop_pct<" in html[banner:first_cell]
    # every code input folded (closed <details>), none from a CDN
    assert html.count('<details class="jupycron-code">') == len(NOTEBOOKS["once_autorun.ipynb"])
    assert not re.search(r"<script[^>]+src=", html)


def test_a_failing_cell_shows_its_code_open(runs):
    html = _html(runs, "bad_then_raises_autorun.ipynb")
    assert html.count('<details class="jupycron-code" open="">') == 1
    opened = html.index('<details class="jupycron-code" open="">')
    assert "a later cell fails" in html[opened:opened + 20000]
