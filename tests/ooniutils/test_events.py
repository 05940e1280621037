"""Unit tests of ooniutils.analyses.events: links, keys, new-vs-sent, the state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from ooniutils.analyses.events import (
    SentLog,
    changepoint_key,
    default_state_dir,
    explorer_url,
    new_changepoints,
    slack_message,
    summary_table,
    table_html,
)
from ooniutils.exceptions import AnalysisError

BASE = "https://explorer.example.org/"


def changepoints() -> pd.DataFrame:
    return pd.DataFrame({
        "ts": pd.to_datetime(["2024-05-01 10:00", "2024-05-02 03:30", "2024-05-02 04:00"]),
        "probe_cc": ["IR", "RU", "IR"],
        "probe_asn": [197207, 12389, 44244],
        "domain": ["twitter.com", "www.bbc.com", "<b>x.org</b>"],
        "change_dir": [1, -1, None],
        "block_type": ["dns", "tcp", ""],
        "current_state": ["ok", "blk", "blk"],   # OONI's detector: the state before the change
    })


def test_explorer_url_has_the_network_domain_and_window():
    row = changepoints().iloc[0]
    url = explorer_url(row, BASE)
    parts = urlsplit(url)
    assert url.startswith("https://explorer.example.org/chart/mat?")
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q["probe_cc"] == "IR" and q["probe_asn"] == "AS197207" and q["domain"] == "twitter.com"
    assert q["since"] == "2024-04-24" and q["until"] == "2024-05-02"


def test_summary_table_and_html_escaping():
    table = summary_table(changepoints(), BASE)
    assert list(table["ts"]) == sorted(table["ts"], reverse=True)
    assert list(table["change"]) == ["change", "blocking ended", "blocking started"]
    # "blocking started" never sits beside a bare "ok": the state reads before → after
    assert list(table["state"]) == ["blocked", "blocked → ok", "ok → blocked"]
    assert "current_state" not in table.columns
    assert table["key"].is_unique
    page = table_html(table)
    assert page.count('<a href="https://explorer.example.org/chart/mat?') == 3
    assert "<b>x.org</b>" not in page and "&lt;b&gt;x.org&lt;/b&gt;" in page
    assert summary_table(changepoints().iloc[:0], BASE).empty
    with pytest.raises(AnalysisError, match="domain"):
        summary_table(changepoints().drop(columns=["domain"]), BASE)


def test_key_is_stable_across_types():
    row = changepoints().iloc[0]
    as_dict = dict(row) | {"ts": "2024-05-01T10:00:00+00:00", "probe_asn": "197207"}
    assert changepoint_key(row) == changepoint_key(as_dict) == "IR|AS197207|twitter.com|2024-05-01T10:00:00|1|dns"


def test_new_vs_already_sent(tmp_path):
    table = summary_table(changepoints(), BASE)
    state = SentLog(tmp_path / "state" / "events.json")
    assert state.load() == {}
    first = new_changepoints(table, state.load())
    assert len(first) == 3
    state.record(first["key"][:2], now=datetime(2024, 5, 2, 5, tzinfo=UTC))
    second = new_changepoints(table, state.load())
    assert list(second["key"]) == [first["key"][2]]
    # a later run with one more changepoint sees only that one
    more = pd.concat([changepoints(), pd.DataFrame({
        "ts": [pd.Timestamp("2024-05-02 06:00")], "probe_cc": ["CN"], "probe_asn": [4134],
        "domain": ["google.com"], "change_dir": [1], "block_type": ["tls"], "current_state": ["blocked"]})])
    state.record(second["key"], now=datetime(2024, 5, 2, 6, tzinfo=UTC))
    third = new_changepoints(summary_table(more, BASE), state.load())
    assert list(third["probe_cc"]) == ["CN"]
    assert "google.com" in slack_message(third) and "twitter.com" not in slack_message(third)
    # no temp files left behind
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["events.json"]


def test_state_prunes_old_keys_and_survives_corruption(tmp_path):
    path = tmp_path / "events.json"
    state = SentLog(path, keep_days=2)
    now = datetime(2024, 5, 10, tzinfo=UTC)
    state.record(["old"], now=now - timedelta(days=5))
    state.record(["new"], now=now)
    assert set(state.load()) == {"new"}
    path.write_text("{not json")
    assert state.load() == {}
    assert not path.exists() and len(list(tmp_path.glob("events.json.corrupt-*"))) == 1
    state.record(["again"], now=now)
    assert json.loads(path.read_text())["sent"].keys() == {"again"}


def test_slack_message_is_capped():
    table = summary_table(changepoints(), BASE)
    msg = slack_message(table, max_lines=2)
    assert msg.count("\n• ") + msg.startswith("• ") == 2 and "and 1 more" in msg


def test_state_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "s"))
    assert default_state_dir() == tmp_path / "s"
    monkeypatch.delenv("JUPYCRON_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x" / "ooni-monitoring"


def test_slack_message_shows_data_as_written():
    """Text from the data goes into Slack mrkdwn escaped: a block type such as
    ``<!channel>`` is not a mention, a ``>`` in a domain does not end the link."""
    table = summary_table(pd.DataFrame({
        "ts": [pd.Timestamp("2024-05-02 06:00")], "probe_cc": ["CN"], "probe_asn": [4134],
        "domain": ["a>b&c.example"], "change_dir": [1], "block_type": ["<!channel>"],
        "current_state": ["blocked"]}), BASE)
    text = slack_message(table)
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text
    assert "|CN AS4134 a&gt;b&amp;c.example>:" in text
