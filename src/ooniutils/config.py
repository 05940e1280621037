"""Every ooniutils setting, declared once: name, default, help.

Values come from, in order: the environment variable, the ``<NAME>_FILE`` variable (a file
holding the value, for secrets), the TOML config file (``OONI_MONITORING_CONFIG``, default
``/etc/ooni-monitoring/config.toml`` when it exists; keys are the lower-case setting names
without the ``OONI_`` prefix, e.g. ``slack_webhook_url = "..."``), then the default.
The environment is read only here, at call time, so tests can set variables freely.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .exceptions import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("OONI_MONITORING_CONFIG", "/etc/ooni-monitoring/config.toml",
            "Optional TOML file holding any of these settings (lower-case key, no OONI_ prefix)."),
    Setting("OONI_DATA_DIR", None,
            "Folder of the embedded store (chDB over Parquet parts). Default "
            "$XDG_DATA_HOME/ooni-monitoring, i.e. ~/.local/share/ooni-monitoring."),
    Setting("OONI_CLICKHOUSE_URL", None,
            "http(s)://user:pass@host:8123/db of a ClickHouse server; when set, queries go there "
            "instead of the embedded store.", secret=True),
    Setting("OONI_LOGS_CLICKHOUSE_URL", None,
            "ClickHouse server holding the `logs` table when it is not the measurements' one "
            "(OONI keeps logs on the monitoring host's ClickHouse). Used by `ooniutils logs ship` "
            "and the log notebooks; default: the measurements' data source.", secret=True),
    Setting("OONI_LOGS_DATA_DIR", None,
            "Embedded store folder holding the `logs` table, when logs are kept apart from the "
            "measurements and OONI_LOGS_CLICKHOUSE_URL is not set; default: the measurements' "
            "data source."),
    Setting("OONI_ALERTMANAGER_URL", None,
            "Base URL of Prometheus Alertmanager, e.g. http://127.0.0.1:9093."),
    Setting("OONI_SLACK_WEBHOOK_URL", None, "Slack incoming-webhook URL.", secret=True),
    Setting("OONI_NTFY_URL", None, "ntfy topic URL, e.g. https://ntfy.sh/ooni-alerts."),
    Setting("OONI_NTFY_TOKEN", None, "Optional ntfy access token (Bearer).", secret=True),
    Setting("OONI_OUTPUT_BASE_URL", "",
            "Public base URL of the jupycron outputs folder, used for links in alerts."),
    Setting("OONI_EXPLORER_URL", "https://explorer.ooni.org",
            "OONI Explorer base URL for links in tables."),
    Setting("OONI_HTTP_TIMEOUT", "10", "Timeout in seconds of each alert HTTP request."),
    Setting("OONI_HTTP_RETRIES", "3", "Attempts per alert before giving up (transient errors only)."),
    Setting("OONI_HTTP_BACKOFF", "0.5",
            "Seconds before the first alert retry; doubles each attempt (capped at 10 s)."),
    Setting("OONI_NGINX_CACHE_DIR", "/var/cache/nginx/ooni-api",
            "nginx proxy_cache_path folder emptied by `ooniutils cache purge`."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _config_file_values() -> dict[str, object]:
    path = os.environ.get("OONI_MONITORING_CONFIG") or _BY_NAME["OONI_MONITORING_CONFIG"].default
    p = Path(path) if path else None
    if p is None or not p.exists():
        if os.environ.get("OONI_MONITORING_CONFIG"):
            raise ConfigError(f"config file {path} does not exist", "OONI_MONITORING_CONFIG")
        return {}
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", "OONI_MONITORING_CONFIG") from exc


def get(name: str, required: bool = False) -> str | None:
    """Return the value of setting ``name`` (see module doc for the lookup order).

    With ``required=True`` a missing value raises :class:`ConfigError` naming the setting.
    """
    if name not in _BY_NAME:
        raise KeyError(f"unknown setting {name}")
    val = os.environ.get(name)
    if val is None and (fname := os.environ.get(name + "_FILE")):
        try:
            val = Path(fname).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {name}_FILE={fname}: {exc}", name) from exc
    if val is None and name != "OONI_MONITORING_CONFIG":
        key = name.removeprefix("OONI_").lower()
        file_val = _config_file_values().get(key)
        if file_val is not None:
            val = str(file_val)
    if val is None:
        val = _BY_NAME[name].default
    if required and not val:
        raise ConfigError(
            f"setting {name} is not set: set the environment variable {name} "
            f"(or {name}_FILE, or '{name.removeprefix('OONI_').lower()}' in the config file)",
            name,
        )
    return val


def get_float(name: str) -> float:
    raw = get(name)
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} must be a number, got {raw!r}", name) from exc


def data_dir() -> Path:
    """Folder of the embedded store."""
    explicit = get("OONI_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "ooni-monitoring"
