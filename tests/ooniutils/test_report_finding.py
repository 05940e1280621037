"""ooniutils.report_finding: checked input, bounded payload, one display output."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

import ooniutils
from jupycron import findings as jf
from ooniutils import findings
from ooniutils.exceptions import AnalysisError


@pytest.fixture
def shown(monkeypatch):
    """What report_finding displayed: a list of (bundle, kwargs)."""
    import IPython.display

    seen: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: seen.append((obj, kw)))
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # as in a kernel
    return seen


def test_public_and_constants_match_jupycron():
    assert "report_finding" in ooniutils.__all__
    assert ooniutils.report_finding is findings.report_finding
    assert findings.FINDING_MIME == jf.FINDING_MIME == "application/vnd.jupycron.finding+json"
    assert findings.LEVELS == jf.LEVELS


def test_bad_level_names_the_valid_ones(shown):
    with pytest.raises(AnalysisError, match="'red' is not one of ok, warning, alarm, no_data"):
        ooniutils.report_finding("red", "x")
    with pytest.raises(AnalysisError, match="summary must be a string"):
        ooniutils.report_finding("ok", None)
    with pytest.raises(AnalysisError, match="detail must be a DataFrame or a list of dicts"):
        ooniutils.report_finding("ok", "x", detail="IR down")
    with pytest.raises(AnalysisError, match="detail row 1 is a int"):
        ooniutils.report_finding("ok", "x", detail=[{"a": 1}, 2])
    assert shown == []


def test_one_display_output_with_the_mime_type_and_a_readable_banner(shown):
    assert ooniutils.report_finding("alarm", "IR: measurements\ndown 40 %") is None
    payload = shown[0][0][jf.FINDING_MIME]
    assert payload == {"level": "alarm", "summary": "IR: measurements down 40 %", "detail": None}
    [(bundle, kw)] = shown
    assert kw == {"raw": True}
    assert bundle[jf.FINDING_MIME] == payload
    assert "ALARM" in bundle["text/html"] and "IR: measurements down 40 %" in bundle["text/html"]
    assert bundle["text/plain"] == "ALARM: IR: measurements down 40 %"
    assert jf.finding_from_payload(bundle[jf.FINDING_MIME]).summary == payload["summary"]


def test_dataframe_detail_is_json_safe_and_capped(shown):
    df = pd.DataFrame({"cc": [f"C{i}" for i in range(70)],
                       "n": np.arange(70, dtype="int64"),
                       "rate": [np.nan] + [0.5] * 69,
                       "since": pd.to_datetime(["2026-12-06 14:00"] * 69 + [None])})
    payload, total = findings.finding_payload("warning", "70 rows", detail=df)
    ooniutils.report_finding("warning", "70 rows", detail=df)
    assert shown[0][0][jf.FINDING_MIME] == payload and total == 70
    rows = payload["detail"]
    assert len(rows) == jf.MAX_DETAIL_ROWS == 50
    assert rows[0] == {"cc": "C0", "n": 0, "rate": None, "since": "2026-12-06 14:00:00"}
    assert type(rows[1]["n"]) is int
    assert "the first 50 of 70 rows" in shown[0][0]["text/html"]
    assert shown[0][0]["text/plain"].endswith("(70 detail rows)")


def test_list_detail_and_indexed_frames():
    def rows(detail):
        return findings.finding_payload("ok", "x", detail)[0]["detail"]

    when = dt.datetime(2026, 12, 6, 14, 0, tzinfo=dt.UTC)
    assert rows([{"at": when, "v": np.float32(1.5)}]) == [{"at": "2026-12-06 14:00:00+00:00", "v": 1.5}]
    assert rows(pd.DataFrame({"n": [1]}, index=pd.Index(["IR"], name="cc"))) == [{"cc": "IR", "n": 1}]
    # a filtered frame's unnamed index is not a column
    assert rows(pd.DataFrame({"n": [1, 2, 3]}).iloc[[2]]) == [{"n": 3}]
    assert rows([]) == []


def test_the_readme_example_runs(shown):
    import re

    from tests.support.services import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Reporting what a notebook found", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the documented example
    [(bundle, _)] = shown
    assert bundle[jf.FINDING_MIME]["level"] == "alarm"
    assert bundle[jf.FINDING_MIME]["detail"] == [
        {"cc": "IR", "down": "40 %", "since": "2026-12-06 14:00 UTC"}]


def test_a_wide_frame_keeps_its_first_columns_with_short_unique_names(shown):
    """Found by using the product: a notebook passing its whole wide frame made an 82 MB
    finding (5,000 columns), kept with every run; now 20 columns, names of <= 60 chars."""
    wide = pd.DataFrame(np.arange(60 * 5000).reshape(60, 5000),
                        columns=["c" * 300 + str(i) for i in range(5000)])
    findings.report_finding("alarm", "wide", detail=wide)
    bundle = shown[-1][0]
    rows = bundle[findings.FINDING_MIME]["detail"]
    assert len(rows) == findings.MAX_DETAIL_ROWS
    names = list(rows[0])
    assert len(names) == findings.MAX_DETAIL_COLUMNS == len(set(names))
    assert all(len(n) <= 60 for n in names)
    assert [r[names[3]] for r in rows[:2]] == [3, 5003]
    assert "the first 50 of 60 rows; the first 20 of 5000 columns" in bundle["text/html"]
    assert len(json.dumps(bundle)) < 300_000  # was 82 MB


def test_outside_ipython_it_prints_one_line(capsys):
    """A plain script (no IPython shell) gets the readable line, not the bundle's repr."""
    findings.report_finding("alarm", "IR down", detail=[{"a": 1}, {"a": 2}])
    assert capsys.readouterr().out == "ALARM: IR down (2 detail rows)\n"


def test_lone_surrogates_become_replacement_characters(shown):
    """Found by using the product: a summary holding a lone surrogate (broken data) made the
    kernel fail to send the report, so the run failed instead of reporting its alarm."""
    findings.report_finding("alarm", "lone \ud800 surrogate",
                            detail=[{"k\udfff": "v\udc80"}, {"k\udfff": 1}])
    bundle = shown[-1][0]
    text = json.dumps(bundle, ensure_ascii=False)
    text.encode("utf-8")  # what the kernel's session does: no error
    payload = bundle[findings.FINDING_MIME]
    assert payload["summary"] == "lone \ufffd surrogate"
    assert payload["detail"] == [{"k\ufffd": "v\ufffd"}, {"k\ufffd": 1}]
