"""jupycron settings, declared once (name, type, default, help).

Precedence: command-line flag > environment variable ``JUPYCRON_<NAME>`` (or
``JUPYCRON_<NAME>_FILE`` holding the value) > TOML file (``--config`` / ``JUPYCRON_CONFIG``,
keys are the lower-case names, e.g. ``concurrency = 4``) > default. The environment is read
only in :func:`load_settings`, at the edge (CLI), so library code takes a ``Settings``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

DEFAULT_NOTEBOOKS = "/var/lib/jupyter/notebooks"


@dataclass(frozen=True)
class Settings:
    notebooks: Path = field(default=Path(DEFAULT_NOTEBOOKS),
                            metadata={"help": "Folder scanned for **/*autorun*.ipynb."})
    output: Path | None = field(default=None,
                                metadata={"help": "Outputs, history and summary.html. Default <notebooks>/jupycron."})
    concurrency: int = field(default=0, metadata={"help": "Max notebooks running at once (0 = CPU count)."})
    default_max_mem_mb: int = field(default=1000, metadata={"help": "MaxMem when a notebook sets none (MB)."})
    max_mem_mb: int = field(default=1000, metadata={"help": "Upper bound on any notebook's MaxMem (MB)."})
    default_max_runtime_s: float = field(default=3600.0, metadata={"help": "MaxRuntime when a notebook sets none (s)."})
    max_runtime_s: float = field(default=86400.0, metadata={"help": "Upper bound on any notebook's MaxRuntime (s)."})
    history_runs: int = field(default=100, metadata={"help": "Runs kept per notebook in .history.json."})
    deleted_grace_s: float = field(default=7 * 86400.0,
                                   metadata={"help": "How long a deleted notebook's history and outputs are kept (s)."})
    kernel_name: str = field(default="python3", metadata={
        "help": "Jupyter kernel for notebooks whose kernelspec names none (a notebook that names an "
                "installed kernel runs with it; one naming a missing kernel fails)."})
    jupyter_base_url: str = field(default="", metadata={"help": "Jupyter base URL; links are <url>/notebooks/<path>."})
    output_base_url: str = field(default="", metadata={"help": "Public base URL of the outputs folder (alert links)."})
    late_grace_s: float = field(default=600.0,
                                metadata={"help": "A slot missed by more than this makes the notebook 'late' (alerts)."})
    alert_after_failures: int = field(default=1, metadata={"help": "Consecutive failures before a failure alert."})
    alert_channels: str = field(default="", metadata={"help": "Comma list of alertmanager,slack,ntfy for run-state alerts."})
    pool_size: int = field(default=-1, metadata={"help": "Pre-started kernels, each used for one run (0 = off, -1 = one per concurrent run)."})
    pool_preimport: str = field(default="", metadata={"help": "Comma list of modules imported in pooled kernels (once, in a template they are "
        "forked from, when kernel_forkserver is on)."})
    run_new_at_once: bool = field(default=False, metadata={
        "help": "Run a notebook seen for the first time at once (its latest slot) instead of at its "
                "first slot after discovery; a notebook's \"RunAtOnce\" overrides it."})
    kernel_forkserver: bool = field(default=True, metadata={
        "help": "Fork kernels from a template process with ipykernel imported (about 0.5 s of CPU less "
                "per run); falls back to a normal start on any failure."})
    web_anonymous_read: bool = field(default=False, metadata={"help": "Allow read-only access without login."})
    web_proxy_auth_header: str = field(default="", metadata={"help": "Trust this header (set by a reverse proxy) as the user."})
    web_users: Mapping[str, str] = field(default_factory=dict,
                                         metadata={"help": "user = password hash (argon2); managed by `jupycron passwd`."})
    config_file: Path | None = field(default=None, metadata={"help": "The TOML file these were read from."})

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else self.notebooks / "jupycron"

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency if self.concurrency > 0 else (os.cpu_count() or 1)


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    t = str(typ)
    try:
        if "Path" in t:
            return Path(str(raw)).expanduser() if raw not in (None, "") else None
        if t == "int" or typ is int:
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if t == "float" or typ is float:
            return float(raw)
        if t == "bool" or typ is bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if "Mapping" in t:
            if not isinstance(raw, Mapping):
                raise ValueError
            return dict(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: invalid value {raw!r} (expected {t})", name) from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "config") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", "config") from exc


def load_settings(overrides: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None,
                  config_file: Path | str | None = None) -> Settings:
    """Build Settings from flags (``overrides``, None values ignored), env, TOML, defaults."""
    env = os.environ if env is None else env
    cfg_path = config_file or env.get("JUPYCRON_CONFIG")
    file_vals: dict[str, Any] = read_toml(Path(cfg_path)) if cfg_path else {}
    known = {f.name: f for f in fields(Settings)}
    unknown = set(file_vals) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {cfg_path}: {', '.join(sorted(unknown))}", "config")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name == "config_file":
            continue
        raw: Any = None
        if overrides and overrides.get(name) is not None:
            raw = overrides[name]
        elif (ev := env.get(f"JUPYCRON_{name.upper()}")) is not None:
            raw = ev
        elif (fv := env.get(f"JUPYCRON_{name.upper()}_FILE")) is not None:
            try:
                raw = Path(fv).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read JUPYCRON_{name.upper()}_FILE={fv}: {exc}", name) from exc
        elif name in file_vals:
            raw = file_vals[name]
        if raw is not None:
            values[name] = _coerce(name, f.type, raw)
    s = replace(Settings(), **values, config_file=Path(cfg_path) if cfg_path else None)
    for name in ("max_mem_mb", "default_max_mem_mb", "history_runs"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"setting {name!r} must be positive, got {getattr(s, name)}", name)
    if s.default_max_runtime_s <= 0 or s.max_runtime_s <= 0:
        raise ConfigError("runtime limits must be positive", "max_runtime_s")
    return s


def documented_settings() -> list[tuple[str, str, str]]:
    """(name, env var, help) of every setting, for docs and `jupycron config`."""
    return [(f.name, f"JUPYCRON_{f.name.upper()}", f.metadata.get("help", ""))
            for f in fields(Settings) if f.name != "config_file"]
