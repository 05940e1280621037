"""`ooniutils data ...` through click's CliRunner."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.cli.data import render_ddl
from ooniutils.store import get_store
from tests.support.services import REPO, require_shared_data


def _run(*args: str):
    return CliRunner().invoke(cli, ["data", *args], catch_exceptions=False)


def test_init_load_info_compact(data_dir):
    sample = require_shared_data("ooni-fastpath-sample.sql")
    lists = require_shared_data("test-lists-sample")
    assert _run("init").exit_code == 0
    r = _run("load-sql", str(sample))
    assert r.exit_code == 0 and "fastpath: 1,080 rows" in r.output
    r = _run("load-sql", "--progress", str(sample))
    assert r.exit_code == 0
    r = _run("load-test-lists", str(lists))
    assert r.exit_code == 0 and "ZZ" in r.output and "13 lists" in r.output
    r = _run("load-test-lists", str(lists))  # again: nothing new is inserted
    assert r.exit_code == 0 and "were already stored and were not inserted again" in r.output
    r = CliRunner().invoke(cli, ["data", "info"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "fastpath" in r.output and "2,160" in r.output and "2021-07-08 06:41:03" in r.output
    assert len(get_store().parts("fastpath")) == 1  # each load-sql compacts what it loaded into
    r = _run("compact", "fastpath")
    assert r.exit_code == 0 and len(get_store().parts("fastpath")) == 1
    assert _run("compact").exit_code == 0


def test_errors_exit_1_with_the_message(data_dir, tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_text("INSERT INTO nosuch (a) VALUES ('x');\n")
    r = CliRunner().invoke(cli, ["data", "load-sql", str(bad)])
    assert r.exit_code == 1 and "bad.sql:1: unknown table 'nosuch'" in r.output
    r = CliRunner().invoke(cli, ["data", "compact", "nosuch"])
    assert r.exit_code == 2


def test_ddl_matches_committed_file():
    committed = (REPO / "deploy" / "clickhouse" / "schema.sql").read_text()
    assert _run("ddl").output == committed == render_ddl()
    assert "CREATE TABLE IF NOT EXISTS default.fastpath" in committed


def test_generate_maps_options(data_dir, tmp_path, monkeypatch):
    calls = {}

    @dataclass
    class Truth:
        events: list

    def fake_generate(store, days=90, rows=None, seed=0, end=None, progress=None):
        calls.update(store=store, days=days, rows=rows, seed=seed, end=end)
        return Truth(events=[{"cc": "IT"}])

    module = types.ModuleType("ooniutils.store.generator")
    module.generate = fake_generate
    monkeypatch.setitem(sys.modules, "ooniutils.store.generator", module)
    truth = tmp_path / "truth.json"
    r = _run("generate", "--days", "7", "--rows", "1000", "--seed", "42", "--end", "2024-05-01",
             "--truth", str(truth))
    assert r.exit_code == 0, r.output
    assert (calls["days"], calls["rows"], calls["seed"]) == (7, 1000, 42)
    assert calls["end"].isoformat() == "2024-05-01T00:00:00+00:00"
    assert calls["store"] is get_store()
    assert json.loads(truth.read_text()) == {"events": [{"cc": "IT"}]}
