"""ooniutils' side of the jupycron contract: the run-environment plugin and the kernel
environment it reads (issue 13 §4: jupycron never imports ooniutils)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ooniutils import jupycron_plugin
from ooniutils.alerts.sent_log import default_state_dir


def test_the_plugin_is_registered_for_the_ooniutils_table():
    (ep,) = [ep for ep in entry_points(group="jupycron.run_environment") if ep.name == "ooniutils"]
    assert ep.load() is jupycron_plugin


def test_check_table_makes_paths_absolute_and_refuses_bad_keys_and_values(tmp_path):
    assert jupycron_plugin.check_table({"data_dir": "d", "http_retries": 2, "tls_hosts": "a"},
                                       tmp_path) == {"data_dir": str(tmp_path / "d"),
                                                     "http_retries": "2", "tls_hosts": "a"}
    with pytest.raises(ValueError, match=r"unknown key\(s\): data_dirr \(known: .*data_dir"):
        jupycron_plugin.check_table({"data_dirr": "x"}, tmp_path)
    with pytest.raises(ValueError, match="'slack_webhook_url': expected a string or a number"):
        jupycron_plugin.check_table({"slack_webhook_url": ["a"]}, tmp_path)


def test_environment_names_the_config_file_only_when_there_is_one(tmp_path):
    cfg = tmp_path / "j.toml"
    assert jupycron_plugin.environment({"data_dir": "/d"}, cfg) == {
        "OONI_DATA_DIR": "/d", "OONI_CLICKHOUSE_URL": "", "OONI_MONITORING_CONFIG": str(cfg)}
    assert jupycron_plugin.environment({"output_base_url": "https://o/"}, None) == {
        "OONI_OUTPUT_BASE_URL": "https://o/"}


def test_a_table_naming_a_folder_blanks_the_server_urls(tmp_path):
    """Found by using the product: with `data_dir` in jupycron's config and a stray
    OONI_CLICKHOUSE_URL in the daemon's environment, runs queried that server."""
    env = jupycron_plugin.environment({"data_dir": "/d", "logs_data_dir": "/l"}, None)
    assert env["OONI_CLICKHOUSE_URL"] == "" and env["OONI_LOGS_CLICKHOUSE_URL"] == ""
    both = jupycron_plugin.environment({"data_dir": "/d", "clickhouse_url": "http://h:8123/db"},
                                       None)
    assert both["OONI_CLICKHOUSE_URL"] == "http://h:8123/db" and "OONI_LOGS_CLICKHOUSE_URL" not in both


def test_the_kernel_environment_is_read_in_one_place(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTORUN", raising=False)
    monkeypatch.delenv("JUPYCRON_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert not jupycron_plugin.scheduled_run()
    assert jupycron_plugin.jupycron_state_dir() is None
    assert default_state_dir() == tmp_path / "xdg" / "ooni-monitoring"
    monkeypatch.setenv("AUTORUN", "1")
    monkeypatch.setenv("JUPYCRON_STATE_DIR", "~/state")
    assert jupycron_plugin.scheduled_run()
    assert jupycron_plugin.jupycron_state_dir() == Path("~/state").expanduser()
    assert default_state_dir() == Path("~/state").expanduser()


def test_no_other_ooniutils_module_reads_a_jupycron_variable():
    src = Path(jupycron_plugin.__file__).parent
    readers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if p.name != "jupycron_plugin.py"
                     and ('"JUPYCRON_' in p.read_text() or '"AUTORUN"' in p.read_text()))
    assert readers == []
