"""Shared fixtures. Live-service fixtures live in tests/<area>/conftest.py and use
tests/support/services.py; each starts its process on 127.0.0.1 and stops it."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path_factory):
    """No test reads the machine's config or data: each gets empty, private locations."""
    for var in ("OONI_CLICKHOUSE_URL", "OONI_ALERTMANAGER_URL", "OONI_SLACK_WEBHOOK_URL",
                "OONI_NTFY_URL", "OONI_NTFY_TOKEN", "JUPYCRON_CONFIG", "AUTORUN",
                "JUPYCRON_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    base = tmp_path_factory.mktemp("settings")
    empty = base / "config.toml"
    empty.write_text("")
    monkeypatch.setenv("OONI_MONITORING_CONFIG", str(empty))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
    monkeypatch.delenv("OONI_DATA_DIR", raising=False)
