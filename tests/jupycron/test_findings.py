"""jupycron.findings: the last valid finding output of an executed notebook, pure."""

from __future__ import annotations

import logging

import nbformat
from hypothesis import given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from jupycron.findings import (
    FINDING_MIME,
    LEVELS,
    MAX_COLUMN_NAME,
    MAX_DETAIL_COLUMNS,
    MAX_DETAIL_ROWS,
    MAX_SUMMARY,
    capped_detail,
    finding_from_payload,
    finding_html,
    last_finding,
)
from jupycron.models import Finding, FindingLevel


def _out(payload: object) -> nbformat.NotebookNode:
    return new_output("display_data", data={FINDING_MIME: payload, "text/plain": "x"})


def _nb(*cells_outputs: list) -> nbformat.NotebookNode:
    return new_notebook(cells=[new_code_cell("...", outputs=outs) for outs in cells_outputs])


def test_levels_are_the_model_levels():
    assert LEVELS == ("ok", "warning", "alarm", "no_data")
    assert set(LEVELS) == {str(level) for level in FindingLevel}


def test_no_finding_output_is_none():
    nb = _nb([new_output("stream", name="stdout", text="hello\n")], [])
    nb.cells.append(new_markdown_cell("text"))
    assert last_finding(nb) is None
    assert last_finding(new_notebook()) is None


def test_the_last_finding_wins_across_cells_and_outputs():
    nb = _nb([_out({"level": "ok", "summary": "first"})],
             [_out({"level": "warning", "summary": "second"}),
              _out({"level": "alarm", "summary": "IR: down 40 %", "detail": [{"cc": "IR"}]})],
             [new_output("stream", name="stdout", text="after\n")])
    assert last_finding(nb) == Finding(FindingLevel.ALARM, "IR: down 40 %", [{"cc": "IR"}])


def test_malformed_payloads_are_skipped_with_a_logged_reason(caplog):
    nb = _nb([_out({"level": "warning", "summary": "the valid one"})],
             [_out({"level": "red", "summary": "x"}), _out(["not", "an", "object"]),
              _out({"level": "ok", "summary": 3}), _out({"level": "ok", "summary": "x",
                                                         "detail": "a table"}),
              _out("{not json")])
    with caplog.at_level(logging.WARNING, logger="jupycron.findings"):
        found = last_finding(nb)
    assert found == Finding(FindingLevel.WARNING, "the valid one", None)
    text = caplog.text
    assert "level 'red' is not one of ok, warning, alarm, no_data" in text
    assert "payload is a list, not an object" in text
    assert "summary is a int, not a string" in text
    assert "detail is not a list of objects" in text
    assert "payload is not JSON" in text
    assert "cell 1" in text


def test_odd_notebook_shapes_never_raise():
    assert last_finding({"cells": "not a list"}) is None
    assert last_finding({"cells": [{"cell_type": "code", "outputs": {"a": 1}}, "junk"]}) is None
    assert last_finding(None) is None


def test_a_json_text_payload_is_read():
    nb = _nb([_out('{"level": "no_data", "summary": "no rows"}')])
    assert last_finding(nb) == Finding(FindingLevel.NO_DATA, "no rows", None)


def test_summary_is_one_line_and_bounded_and_detail_rows_capped():
    f = finding_from_payload({"level": "alarm", "summary": "a\n  b\tc " + "x" * 500,
                              "detail": [{"i": i, "long": "y" * 1000} for i in range(80)]})
    assert "\n" not in f.summary and f.summary.startswith("a b c x")
    assert len(f.summary) == MAX_SUMMARY and f.summary.endswith("…")
    assert f.detail is not None and len(f.detail) == MAX_DETAIL_ROWS
    assert f.detail[0]["i"] == 0 and len(f.detail[0]["long"]) == 200


def test_banner_escapes_and_says_the_level_in_words():
    html = finding_html(Finding(FindingLevel.ALARM, "<script>x</script> & more",
                                [{"cc": "<b>IR</b>", "drop": 0.4, "note": None}]), total_rows=7)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "ALARM" in html and "&lt;b&gt;IR&lt;/b&gt;" in html
    assert "<th" in html and ">drop<" in html and "0.4" in html
    assert "the first 1 of 7 rows" in html
    for level in FindingLevel:
        assert str(level).replace("_", " ").upper() in finding_html(Finding(level, "s"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=120), st.one_of(st.none(), st.integers(),
                                                                   st.text(max_size=300)),
                                max_size=40), max_size=70))
def test_capped_detail_is_within_its_limits(rows):
    """Any rows a notebook sends: at most 50 rows of 20 columns, names one line of <= 60
    characters and unique, cells <= 200 characters, the first columns kept in order."""
    kept, total_columns = capped_detail(rows)
    assert len(kept) == min(len(rows), MAX_DETAIL_ROWS)
    order: list[str] = []
    for r in rows[:MAX_DETAIL_ROWS]:
        order.extend(k for k in r if k not in order)
    assert total_columns == len(order)
    names: list[str] = []
    for r in kept:
        names.extend(k for k in r if k not in names)
    assert len(names) <= MAX_DETAIL_COLUMNS and len(set(names)) == len(names)
    assert all(len(n) <= MAX_COLUMN_NAME and "\n" not in n for n in names)
    assert all(len(v) <= 200 for r in kept for v in r.values() if isinstance(v, str))
    for original, cut in zip(rows, kept, strict=False):
        assert len(cut) == len([k for k in original if k in order[:MAX_DETAIL_COLUMNS]])
        assert [v for k, v in original.items() if k in order[:MAX_DETAIL_COLUMNS]
                and not isinstance(v, str)] == [v for v in cut.values() if not isinstance(v, str)]
