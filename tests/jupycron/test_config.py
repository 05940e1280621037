"""Settings: bounds on every number (issue 12 #11), paths resolved once at load (issue 12
#16), and the ``[ooniutils]`` run environment shared by every way a notebook runs."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jupycron import cli
from jupycron.config import Settings, apply_run_environment, load_settings, run_environment
from jupycron.exceptions import ConfigError

NUMERIC = {f.name: f for f in fields(Settings) if str(f.type) in ("int", "float")}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -5, 1, 2.5, 1e308, -1e308, 10**19, "", "abc", "12", " 3 ", "1e3"]),
    st.booleans(),
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(NUMERIC)), value=values)
def test_every_number_is_within_its_bounds_or_refused_naming_the_key(tmp_path, key, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{key} = {_toml(value)}\n")
    meta = NUMERIC[key].metadata
    try:
        s = load_settings(config_file=cfg, env={})
    except ConfigError as exc:
        assert exc.setting == key and repr(key) in str(exc)
        return
    got = getattr(s, key)
    assert isinstance(got, int | float) and not isinstance(got, bool) and math.isfinite(got)
    assert meta["min"] <= got <= meta["max"]
    if meta.get("min_open"):
        assert got > meta["min"]
    if str(NUMERIC[key].type) == "int":
        assert isinstance(got, int) and got == float(value if not isinstance(value, str) else value.strip())


@pytest.mark.parametrize("line, key", [
    ("deleted_grace_s = 1e308", "deleted_grace_s"),
    ("deleted_grace_s = nan", "deleted_grace_s"),
    ("default_max_runtime_s = nan", "default_max_runtime_s"),
    ("max_runtime_s = inf", "max_runtime_s"),
    ("late_grace_s = -1.0", "late_grace_s"),
    ("pool_size = -5", "pool_size"),
    ("concurrency = 1e400", "concurrency"),
    ("history_runs = 2.5", "history_runs"),
    ("max_mem_mb = 99999999999999999999", "max_mem_mb"),
])
def test_absurd_values_exit_2_with_the_key_name(tmp_path, line, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'notebooks = "{tmp_path}"\n{line}\n')
    res = CliRunner().invoke(cli.main, ["--config", str(cfg), "list"])
    assert res.exit_code == 2, res.output
    assert repr(key) in res.output


def test_the_same_bounds_hold_for_environment_variables(tmp_path):
    for var, value in (("JUPYCRON_DELETED_GRACE_S", "nan"), ("JUPYCRON_POOL_SIZE", "-5"),
                       ("JUPYCRON_DEFAULT_MAX_RUNTIME_S", "inf")):
        with pytest.raises(ConfigError, match=var.removeprefix("JUPYCRON_").lower()):
            load_settings(env={var: value})
    assert load_settings(env={"JUPYCRON_POOL_SIZE": "-1"}).pool_size == -1


def test_relative_paths_are_resolved_once_against_the_config_file(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "jupycron.toml").write_text('notebooks = "nb"\noutput = "nb/out"\n'
                                        '[ooniutils]\ndata_dir = "data"\n')
    monkeypatch.chdir(tmp_path)
    s = load_settings(config_file="site/jupycron.toml", env={})
    assert s.config_file == site / "jupycron.toml" and s.config_file.is_absolute()
    assert (s.notebooks, s.output_dir) == (site / "nb", site / "nb" / "out")
    assert s.ooniutils == {"data_dir": str(site / "data")}
    # flags and variables are relative to the working directory
    s = load_settings({"output": Path("o")}, config_file="site/jupycron.toml",
                      env={"JUPYCRON_NOTEBOOKS": "n"})
    assert (s.notebooks, s.output_dir) == (tmp_path / "n", tmp_path / "o")


def test_ooniutils_table_is_checked(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ooniutils]\ndata_dirr = "x"\n')
    with pytest.raises(ConfigError, match="data_dirr.*known: .*data_dir"):
        load_settings(config_file=cfg, env={})
    cfg.write_text('ooniutils = "x"\n')
    with pytest.raises(ConfigError, match=r"\[ooniutils\]"):
        load_settings(config_file=cfg, env={})
    cfg.write_text('output_base_url = "https://a/"\n[ooniutils]\noutput_base_url = "https://b/"\n')
    with pytest.raises(ConfigError, match="differ"):
        load_settings(config_file=cfg, env={})


def test_run_environment_carries_the_table_and_the_output_url(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ooniutils]\ndata_dir = "d"\nslack_webhook_url = "https://hooks/x"\n'
                   'output_base_url = "https://mon/out/"\nhttp_retries = 2\n')
    s = load_settings(config_file=cfg, env={})
    assert s.output_base_url == "https://mon/out/"  # run-state alerts link like the notebooks
    assert run_environment(s) == {"OONI_DATA_DIR": str(tmp_path / "d"),
                                  "OONI_CLICKHOUSE_URL": "",  # the folder, not a stray server
                                  "OONI_SLACK_WEBHOOK_URL": "https://hooks/x",
                                  "OONI_OUTPUT_BASE_URL": "https://mon/out/",
                                  "OONI_HTTP_RETRIES": "2",
                                  # one config file: ooniutils reads the rest from this one too
                                  "OONI_MONITORING_CONFIG": str(cfg)}
    # no table: only the output URL, and ooniutils keeps its own config file
    s = load_settings(config_file=_write(tmp_path / "d.toml", 'output_base_url = "https://o/"\n'),
                      env={})
    assert run_environment(s) == {"OONI_OUTPUT_BASE_URL": "https://o/"}
    assert run_environment(load_settings(env={})) == {}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_table_nobody_handles_or_a_broken_plugin_is_a_config_error(tmp_path, monkeypatch):
    from jupycron import environment

    cfg = _write(tmp_path / "c.toml", '[ooniutils]\ndata_dir = "d"\n')
    environment.load_plugin.cache_clear()
    monkeypatch.setattr(environment, "entry_points", lambda group: [])
    try:
        with pytest.raises(ConfigError, match=r"no installed package handles the \[ooniutils\] table"):
            load_settings(config_file=cfg, env={})
        assert environment.describe_data_source().startswith("not described")
    finally:
        environment.load_plugin.cache_clear()

    class Broken:
        name, value = "ooniutils", "nowhere.at_all:plugin"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(environment, "entry_points", lambda group: [Broken()])
    try:
        with pytest.raises(ConfigError, match="cannot load the \\[ooniutils\\] table's plugin "
                                              "nowhere.at_all:plugin: ImportError"):
            load_settings(config_file=cfg, env={})
    finally:
        environment.load_plugin.cache_clear()


def test_applied_run_environment_replaces_an_inherited_value_and_says_so(tmp_path, caplog):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ooniutils]\ndata_dir = "d"\nslack_webhook_url = "https://hooks/secret"\n')
    s = load_settings(config_file=cfg, env={})
    environ = {"OONI_DATA_DIR": "/elsewhere", "OONI_SLACK_WEBHOOK_URL": "https://hooks/secret"}
    with caplog.at_level(logging.WARNING, logger="jupycron.config"):
        apply_run_environment(s, environ)
    assert environ["OONI_DATA_DIR"] == str(tmp_path / "d")
    assert "OONI_DATA_DIR" in caplog.text and "/elsewhere" not in caplog.text
    assert "OONI_SLACK_WEBHOOK_URL" not in caplog.text  # same value: nothing to say


def test_a_stray_server_url_does_not_take_the_runs_off_the_configured_folder(
        tmp_path, caplog, monkeypatch):
    """data_dir in the config file, OONI_CLICKHOUSE_URL in the host's environment: the runs
    (and `jupycron list`) use the folder, and a warning names the cleared variable."""
    from ooniutils.config import describe_data_source

    cfg = tmp_path / "c.toml"
    cfg.write_text('[ooniutils]\ndata_dir = "d"\n')
    s = load_settings(config_file=cfg, env={})
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "http://secret-host:8123/db")
    with caplog.at_level(logging.WARNING, logger="jupycron.config"):
        apply_run_environment(s)  # os.environ, restored by monkeypatch
    assert os.environ["OONI_CLICKHOUSE_URL"] == ""
    assert "OONI_CLICKHOUSE_URL from the environment is cleared" in caplog.text
    assert "secret-host" not in caplog.text
    assert describe_data_source().startswith(f"embedded store {tmp_path / 'd'} (OONI_DATA_DIR)")


def test_list_shows_the_effective_data_source_from_a_relative_config(tmp_path, monkeypatch):
    from ooniutils.store import get_store, reset_stores

    (tmp_path / "nb").mkdir()
    (tmp_path / "jupycron.toml").write_text('notebooks = "nb"\n[ooniutils]\ndata_dir = "data"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OONI_DATA_DIR", "/not/this/one")  # restored afterwards
    res = CliRunner().invoke(cli.main, ["--config", "jupycron.toml", "list"])
    assert res.exit_code == 0, res.output
    assert f"data source: embedded store {tmp_path / 'data'} (OONI_DATA_DIR) - MISSING" in res.output
    assert os.environ["OONI_DATA_DIR"] == str(tmp_path / "data")
    reset_stores()
    get_store(create=True)
    res = CliRunner().invoke(cli.main, ["--config", "jupycron.toml", "list"])
    assert f"data source: embedded store {tmp_path / 'data'} (OONI_DATA_DIR)\n" in res.output
    reset_stores()


def test_alert_checks_use_the_channels_of_the_config_file(tmp_path, jc, monkeypatch):
    """`jupycron alerts` with no OONI_* variable: the ntfy endpoint comes from [ooniutils]."""
    from datetime import UTC, datetime, timedelta

    from jupycron.ledger import SqliteRunStore
    from jupycron.models import Run, RunStatus
    from tests.support.fake_webhooks import fake_webhook_server

    nb = jc.copy_notebook("ok_autorun.ipynb", tmp_path / "nb", "a_autorun.ipynb", line='{"every": "1 hour"}')
    now = datetime.now(UTC)
    SqliteRunStore(tmp_path / "nb" / "jupycron").record(Run(
        nb, f"{now:%Y%m%dT%H%M%S}-000001", now - timedelta(minutes=1), RunStatus.FAILED,
        finished_at=now, duration_s=1.0, error_name="ValueError", error_value="boom"))
    with fake_webhook_server() as hook:
        (tmp_path / "jupycron.toml").write_text(
            'notebooks = "nb"\nalert_channels = "ntfy"\n'
            f'[ooniutils]\nntfy_url = "{hook.url("/topic")}"\n')
        monkeypatch.setenv("OONI_NTFY_URL", "http://127.0.0.1:9/not-this-one")  # restored after
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(cli.main, ["--config", "jupycron.toml", "alerts"])
        assert res.exit_code == 0, res.output
        assert res.output.splitlines() == [f"ntfy\tfire\tfailing\t{nb}\tok"]
        assert [r.path for r in hook.requests] == ["/topic"]
        assert "boom" in hook.requests[0].text()
