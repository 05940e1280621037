"""Every ooniutils setting, declared once: name, default, help.

Values come from, in order: the environment variable, the ``<NAME>_FILE`` variable (a file
holding the value, for secrets), the TOML config file (``OONI_MONITORING_CONFIG``, default
``/etc/ooni-monitoring/config.toml`` when it exists; keys are the lower-case setting names
without the ``OONI_`` prefix, e.g. ``slack_webhook_url = "..."``, at the top level or in an
``[ooniutils]`` table, so jupycron's config file can be this file too), then the default.
Relative paths in the file (``data_dir``, ``nginx_cache_dir``) are relative to its folder.
The environment is read only here, at call time, so tests can set variables freely.

Runs started by jupycron get the ``[ooniutils]`` table of jupycron's config file as
``OONI_*`` variables (:func:`jupycron.config.run_environment`), so a scheduled run, a
dashboard Run now and an interactive kernel pointed at the same file see the same values.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .exceptions import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str
    secret: bool = False
    path: bool = False
    """A folder or file: a relative value in the config file is relative to the file's folder."""

    @property
    def key(self) -> str:
        """The TOML key: the name in lower case without ``OONI_``."""
        return self.name.removeprefix("OONI_").lower()


SETTINGS: tuple[Setting, ...] = (
    Setting("OONI_MONITORING_CONFIG", "/etc/ooni-monitoring/config.toml",
            "Optional TOML file holding any of these settings (lower-case key, no OONI_ prefix)."),
    Setting("OONI_DATA_DIR", None,
            "Folder of the embedded store (chDB over Parquet parts), created by "
            "`ooniutils data init`. No default: with neither this nor OONI_CLICKHOUSE_URL "
            "set, reading or writing data is an error that names both.", path=True),
    Setting("OONI_CLICKHOUSE_URL", None,
            "http(s)://user:pass@host:8123/db of a ClickHouse server; when set, queries go there "
            "instead of the embedded store.", secret=True),
    Setting("OONI_LOGS_CLICKHOUSE_URL", None,
            "ClickHouse server holding the `logs` table when it is not the measurements' one "
            "(OONI keeps logs on the monitoring host's ClickHouse). Used by `ooniutils logs ship` "
            "and the log notebooks; default: the measurements' data source.", secret=True),
    Setting("OONI_LOGS_DATA_DIR", None,
            "Embedded store folder holding the `logs` table, when logs are kept apart from the "
            "measurements and OONI_LOGS_CLICKHOUSE_URL is not set (create it with "
            "`OONI_DATA_DIR=<folder> ooniutils data init`); default: the measurements' data source.",
            path=True),
    Setting("OONI_CLICKHOUSE_TIMEOUT", "300",
            "Seconds a ClickHouse server (OONI_CLICKHOUSE_URL, OONI_LOGS_CLICKHOUSE_URL) may take "
            "to answer one request before it is an error that says so; also sent as the "
            "query's max_execution_time, so the server stops the query too. Connecting: 10 s."),
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
            "nginx proxy_cache_path folder emptied by `ooniutils cache purge`.", path=True),
    Setting("OONI_TLS_HOSTS", "api.ooni.io api.ooni.org explorer.ooni.org ooni.org run.ooni.io "
            "0.th.ooni.org 1.th.ooni.org",
            "Hosts whose TLS certificate autorun_tls_cert_expiry checks: comma- or space-separated "
            "host or host:port (port 443 by default)."),
    Setting("OONI_TLS_EXPECTED_OFFLINE", "",
            "Hosts of OONI_TLS_HOSTS that may be unreachable (same syntax; a bare host means port "
            "443): listed but not alerted when they cannot be reached. Every other unreachable "
            "host alerts (TLSHostUnreachable) with the reason."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


SETTINGS_BY_KEY = {s.key: s for s in SETTINGS if s.name != "OONI_MONITORING_CONFIG"}
"""The settings a config file (or jupycron's ``[ooniutils]`` table) may hold, by TOML key."""


def config_file() -> Path | None:
    """The ooniutils config file in use (None when the default one does not exist)."""
    path = os.environ.get("OONI_MONITORING_CONFIG") or _BY_NAME["OONI_MONITORING_CONFIG"].default
    p = Path(path).expanduser() if path else None
    if p is None or not p.exists():
        if os.environ.get("OONI_MONITORING_CONFIG"):
            raise ConfigError(f"config file {path} does not exist", "OONI_MONITORING_CONFIG")
        return None
    return p


def file_value(key: str, raw: object, base: Path) -> str:
    """The string value of ``key`` read from a config file in folder ``base`` (relative
    paths made absolute against ``base``; booleans as ``true``/``false``)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if not isinstance(raw, str | int | float):
        raise ConfigError(f"config key {key!r}: expected a string or a number, got {raw!r}",
                          SETTINGS_BY_KEY[key].name if key in SETTINGS_BY_KEY else None)
    text = str(raw)
    setting = SETTINGS_BY_KEY.get(key)
    if setting is not None and setting.path and text:
        text = str((base / Path(text).expanduser()).absolute())
    return text


def _config_file_values() -> dict[str, object]:
    p = config_file()
    if p is None:
        return {}
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", "OONI_MONITORING_CONFIG") from exc
    table = doc.get("ooniutils")
    values = {**doc, **table} if isinstance(table, dict) else doc
    base = p.absolute().parent
    return {k: file_value(k, v, base) for k, v in values.items() if k in SETTINGS_BY_KEY}


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
        file_val = _config_file_values().get(_BY_NAME[name].key)
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
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} must be a number, got {raw!r}", name) from exc
    if not math.isfinite(value):  # NaN slipped past every "> 0" check, then broke httpx
        raise ConfigError(f"setting {name} must be a finite number, got {raw!r}", name)
    return value


_URL_KEYS = ("alertmanager_url", "slack_webhook_url", "ntfy_url", "clickhouse_url",
             "logs_clickhouse_url")
_NUMBER_RULES: dict[str, tuple[float, bool]] = {
    # key: (lower bound, bound included)
    "http_timeout": (0.0, False), "clickhouse_timeout": (0.0, False), "http_backoff": (0.0, True),
}


def check_value(key: str, text: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``text`` cannot work as its value (what
    would otherwise fail only at the first alert or query): an endpoint that is not an
    http(s) URL with a host and a valid port, a timeout that is not a finite number above 0,
    a retry count below 1. An empty value means "not set" and passes."""
    setting = SETTINGS_BY_KEY[key]
    if not text:
        return
    if key in _URL_KEYS:
        try:
            parts = urlsplit(text)
            port_ok = parts.port is None or parts.port > 0
        except ValueError as exc:
            raise ConfigError(f"config key {key!r}: not a valid URL ({exc})", setting.name) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ConfigError(f"config key {key!r} must be an http(s)://host... URL",
                              setting.name)
    elif key in _NUMBER_RULES:
        low, included = _NUMBER_RULES[key]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (value == low and not included):
            raise ConfigError(f"config key {key!r} must be a finite number "
                              f"{'>=' if included else '>'} {low:g}, got {text!r}", setting.name)
    elif key == "http_retries":
        if not text.isdecimal() or int(text) < 1:
            raise ConfigError(f"config key {key!r} must be a whole number >= 1, got {text!r}",
                              setting.name)


NO_DATA_SOURCE = (
    "no data source is configured: set OONI_DATA_DIR (a folder made by `ooniutils data init`) "
    "or OONI_CLICKHOUSE_URL (a ClickHouse server), as an environment variable, as "
    "'data_dir' / 'clickhouse_url' in the ooniutils config file (OONI_MONITORING_CONFIG), or "
    "in the [ooniutils] table of jupycron's config file")


def data_dir() -> Path:
    """Folder of the embedded store (absolute); :class:`ConfigError` naming the settings to
    set when none is configured (there is no default folder: a store nobody configured
    would be an empty one)."""
    explicit = get("OONI_DATA_DIR")
    if not explicit:
        raise ConfigError(NO_DATA_SOURCE, "OONI_DATA_DIR")
    return Path(explicit).expanduser().absolute()


def store_initialised(folder: Path) -> bool:
    """True when ``folder`` holds an embedded store made by ``ooniutils data init`` (a table
    folder with its ``current`` generation link)."""
    return folder.is_dir() and any(p.is_symlink() for p in folder.glob("*/current"))


def describe_data_source(table: str | None = None) -> str:
    """One line naming the data source these settings select for ``table`` (no secret) and
    whether it can be read; ``jupycron list``, the dashboard and the notebooks' no-data
    errors show it. The ``logs`` table has its own source when ``OONI_LOGS_CLICKHOUSE_URL``
    or ``OONI_LOGS_DATA_DIR`` is set. Light: imports no store code."""
    url_key, dir_key = "OONI_CLICKHOUSE_URL", "OONI_DATA_DIR"
    if table == "logs" and (get("OONI_LOGS_CLICKHOUSE_URL") or get("OONI_LOGS_DATA_DIR")):
        url_key, dir_key = "OONI_LOGS_CLICKHOUSE_URL", "OONI_LOGS_DATA_DIR"
    try:
        url = get(url_key)
        if url:
            parts = urlsplit(url)
            where = f"{parts.scheme}://{parts.hostname or '?'}"
            if parts.port:
                where += f":{parts.port}"
            return f"ClickHouse server {where}{parts.path} ({url_key})"
        folder = data_dir() if dir_key == "OONI_DATA_DIR" else Path(str(get(dir_key))).expanduser().absolute()
    except ConfigError as exc:
        return f"NONE: {exc}"
    if store_initialised(folder):
        return f"embedded store {folder} ({dir_key})"
    problem = "NOT INITIALISED" if folder.exists() else "MISSING"
    return f"embedded store {folder} ({dir_key}) - {problem}: run `ooniutils data init` or fix {dir_key}"
