"""ooniutils settings: jupycron's config file can be ooniutils' too (its ``[ooniutils]``
table, relative paths relative to the file), so an interactive kernel pointed at it with
OONI_MONITORING_CONFIG sees what scheduled runs see; there is no default data folder."""

from __future__ import annotations

import pytest

from ooniutils import config
from ooniutils.exceptions import ConfigError


def test_the_ooniutils_table_of_a_jupycron_config_is_read(tmp_path, monkeypatch):
    cfg = tmp_path / "site" / "jupycron.toml"
    cfg.parent.mkdir()
    cfg.write_text('notebooks = "nb"\n[ooniutils]\ndata_dir = "data"\nslack_webhook_url = "https://h/x"\n'
                   "http_retries = 5\n[web_users]\nalice = \"hash\"\n")
    monkeypatch.setenv("OONI_MONITORING_CONFIG", str(cfg))
    monkeypatch.chdir(tmp_path)
    assert config.data_dir() == tmp_path / "site" / "data"  # the file's folder, not the cwd
    assert config.get("OONI_SLACK_WEBHOOK_URL") == "https://h/x"
    assert config.get_float("OONI_HTTP_RETRIES") == 5.0
    monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", "https://env/y")  # the environment still wins
    assert config.get("OONI_SLACK_WEBHOOK_URL") == "https://env/y"


def test_top_level_keys_still_work(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('data_dir = "/srv/data"\nntfy_url = "https://ntfy.example/t"\n')
    monkeypatch.setenv("OONI_MONITORING_CONFIG", str(cfg))
    assert config.data_dir() == config.Path("/srv/data")
    assert config.get("OONI_NTFY_URL") == "https://ntfy.example/t"


def test_no_default_data_folder(monkeypatch):
    with pytest.raises(ConfigError) as err:
        config.data_dir()
    assert err.value.setting == "OONI_DATA_DIR"
    assert "OONI_CLICKHOUSE_URL" in str(err.value) and "ooniutils data init" in str(err.value)
    assert config.describe_data_source().startswith("NONE: no data source is configured")


def test_describe_data_source_never_shows_a_password(monkeypatch):
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "https://reader:s3cret@ch.example:8443/ooni")
    text = config.describe_data_source()
    assert text == "ClickHouse server https://ch.example:8443/ooni (OONI_CLICKHOUSE_URL)"
