"""click_query_fsn: the notebook entry point, on the embedded store and in server mode."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from ooniutils.clickhouse import click_query, click_query_fsn
from ooniutils.exceptions import QueryError
from ooniutils.store import get_store


def test_no_data_source_is_an_error_naming_the_settings_and_creates_nothing(tmp_path):
    # Nothing configured (tests/conftest.py clears OONI_DATA_DIR / OONI_CLICKHOUSE_URL and
    # points XDG_DATA_HOME at a private folder): no store is made behind the user's back.
    import os

    from ooniutils.exceptions import ConfigError
    from ooniutils.store import reset_stores

    reset_stores()
    with pytest.raises(ConfigError) as err:
        click_query_fsn("SELECT count() AS n FROM fastpath")
    for name in ("OONI_DATA_DIR", "OONI_CLICKHOUSE_URL", "data_dir", "[ooniutils]"):
        assert name in str(err.value)
    assert err.value.setting == "OONI_DATA_DIR"
    xdg = Path(os.environ["XDG_DATA_HOME"])
    assert not (xdg / "ooni-monitoring").exists()


@pytest.mark.parametrize("exists", [False, True])
def test_a_folder_never_initialised_is_an_error_and_stays_untouched(tmp_path, monkeypatch, exists):
    from ooniutils.exceptions import ConfigError
    from ooniutils.store import reset_stores

    folder = tmp_path / "nodata"
    if exists:
        folder.mkdir()
    monkeypatch.setenv("OONI_DATA_DIR", str(folder))
    reset_stores()
    with pytest.raises(ConfigError, match=r"OONI_DATA_DIR=.*nodata .*ooniutils data init") as err:
        click_query_fsn("SELECT count() AS n FROM fastpath")
    assert err.value.setting == "OONI_DATA_DIR"
    assert folder.exists() == exists and (not exists or not any(folder.iterdir()))


def test_data_init_is_the_explicit_way_to_create_a_store(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ooniutils.cli import cli
    from ooniutils.config import describe_data_source
    from ooniutils.store import reset_stores

    folder = tmp_path / "rel" / "data"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OONI_DATA_DIR", "rel/data")  # relative: made absolute once
    reset_stores()
    assert "MISSING" in describe_data_source()
    res = CliRunner().invoke(cli, ["data", "generate", "--days", "1", "--rows", "10"])
    assert res.exit_code != 0 and "ooniutils data init" in res.output and not folder.exists()
    assert CliRunner().invoke(cli, ["data", "init"]).exit_code == 0
    assert describe_data_source() == f"embedded store {folder} (OONI_DATA_DIR)"
    df = click_query_fsn("SELECT count() AS n FROM fastpath")
    assert int(df["n"].iloc[0]) == 0
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
        click_query_fsn("SELECT (1")
    assert "secret" not in str(err.value)  # the password never shows


def test_bad_server_url_is_a_config_error(monkeypatch):
    from ooniutils.exceptions import ConfigError
    from ooniutils.store import reset_stores

    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "ftp://u:hunter2@host/db")
    reset_stores()
    with pytest.raises(ConfigError, match="OONI_CLICKHOUSE_URL") as err:
        click_query_fsn("SELECT 1")
    assert "hunter2" not in str(err.value)
