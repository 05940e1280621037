"""click_query_fsn: the notebook entry point, on the embedded store and in server mode."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ooniutils.clickhouse import click_query, click_query_fsn
from ooniutils.exceptions import QueryError
from ooniutils.store import get_store


def test_works_with_no_configuration(monkeypatch, tmp_path):
    # No OONI_DATA_DIR: the store goes to $XDG_DATA_HOME/ooni-monitoring (set by tests/conftest.py).
    from ooniutils import config
    from ooniutils.store import reset_stores

    reset_stores()
    df = click_query_fsn("SELECT count() AS n FROM fastpath")
    assert int(df["n"].iloc[0]) == 0
    assert (config.data_dir() / "fastpath" / "current").is_symlink()
    reset_stores()


def test_kwargs_are_bound_parameters(data_dir):
    get_store().insert("fastpath", pd.DataFrame({
        "probe_cc": ["IT", "IT", "DE"],
        "measurement_start_time": ["2024-01-01 10:15:00", "2024-01-01 11:20:00", "2024-01-01 10:30:00"],
    }))
    df = click_query_fsn(
        "SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM fastpath "
        "WHERE probe_cc = %(cc)s AND measurement_start_time >= %(since)s GROUP BY hour ORDER BY hour",
        cc="IT", since=dt.datetime(2024, 1, 1, 10, 30, tzinfo=dt.UTC),
    )
    assert df["n"].tolist() == [1] and pd.Timestamp(df["hour"].iloc[0]) == pd.Timestamp("2024-01-01 11:00")
    same = click_query("SELECT count() AS n FROM fastpath WHERE probe_cc = {cc:String}", cc="'; DROP TABLE fastpath; --")
    assert int(same["n"].iloc[0]) == 0
    assert click_query is click_query_fsn


def test_errors_are_query_errors(data_dir):
    with pytest.raises(QueryError, match="UNKNOWN_IDENTIFIER|nosuchcol") as err:
        click_query_fsn("SELECT nosuchcol FROM fastpath")
    assert "nosuchcol" in err.value.server_message


def test_server_mode_switch(server_store):
    assert get_store() is server_store and server_store.kind == "server"
    # distinct sort keys: the server table is a ReplacingMergeTree
    server_store.insert("fastpath", pd.DataFrame({"probe_cc": ["IT", "DE"], "measurement_uid": ["a", "b"]}))
    df = click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc IN %(ccs)s", ccs=("IT", "RU"))
    assert int(df["n"].iloc[0]) == 1
    with pytest.raises(QueryError, match="SYNTAX_ERROR") as err:
        click_query_fsn("SELEC 1")
    assert "secret" not in str(err.value)  # the password never shows


def test_bad_server_url_is_a_config_error(monkeypatch):
    from ooniutils.exceptions import ConfigError
    from ooniutils.store import reset_stores

    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "ftp://u:hunter2@host/db")
    reset_stores()
    with pytest.raises(ConfigError, match="OONI_CLICKHOUSE_URL") as err:
        click_query_fsn("SELECT 1")
    assert "hunter2" not in str(err.value)
