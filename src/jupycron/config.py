"""jupycron settings, declared once (name, type, default, bounds, help).

Precedence: command-line flag > environment variable ``JUPYCRON_<NAME>`` (or
``JUPYCRON_<NAME>_FILE`` holding the value) > TOML file (``--config`` / ``JUPYCRON_CONFIG``,
keys are the lower-case names, e.g. ``concurrency = 4``) > default. The environment is read
only in :func:`load_settings`, at the edge (CLI), so library code takes a ``Settings``.

Every path is made absolute once, here: a relative path in the TOML file is relative to the
file's folder, one from a flag or a variable to the working directory; ``config_file``
itself is absolute. So a run started from anywhere (the dashboard's Run now, a kernel's
``JUPYCRON_STATE_DIR``, the kernel template) sees the same folders.

Numbers are checked against each setting's bounds (``metadata["min"]``/``["max"]``): NaN,
infinities, out-of-range and non-integral values are refused with the key's name.

The run environment: the ``[ooniutils]`` table (keys as in ooniutils' own config file, e.g.
``data_dir = "data"``, ``clickhouse_url``, ``slack_webhook_url``) is what every run needs to
read data and send alerts. jupycron does not interpret it: the package registered as the
table's run-environment plugin (:mod:`jupycron.environment`; ooniutils registers
``ooniutils.jupycron_plugin``) checks it at load and spells it as variables.
:func:`run_environment` returns them and :func:`apply_run_environment` puts them into this
process's environment at the CLI edge, so ``tick``, ``daemon``, ``run-now``, the dashboard's
Run now (a child process), the run-state alert checks and every kernel (they inherit the
environment) see the same values.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import environment
from .exceptions import ConfigError

log = logging.getLogger(__name__)

DEFAULT_NOTEBOOKS = "/var/lib/jupyter/notebooks"
_DAY = 86400.0


@dataclass(frozen=True)
class Settings:
    notebooks: Path = field(default=Path(DEFAULT_NOTEBOOKS),
                            metadata={"help": "Folder scanned for **/*autorun*.ipynb."})
    output: Path | None = field(default=None,
                                metadata={"help": "Outputs, history and summary.html. Default <notebooks>/jupycron."})
    concurrency: int = field(default=0, metadata={"help": "Max notebooks running at once (0 = CPU count).",
                                                  "min": 0, "max": 1024})
    default_max_mem_mb: int = field(default=1000, metadata={"help": "MaxMem when a notebook sets none (MB).",
                                                            "min": 1, "max": 16 << 20})
    max_mem_mb: int = field(default=1000, metadata={"help": "Upper bound on any notebook's MaxMem (MB).",
                                                    "min": 1, "max": 16 << 20})
    default_max_runtime_s: float = field(default=3600.0, metadata={
        "help": "MaxRuntime when a notebook sets none (s).", "min": 0.0, "min_open": True, "max": 366 * _DAY})
    max_runtime_s: float = field(default=86400.0, metadata={
        "help": "Upper bound on any notebook's MaxRuntime (s).", "min": 0.0, "min_open": True, "max": 366 * _DAY})
    history_runs: int = field(default=100, metadata={"help": "Runs kept per notebook in the run ledger.",
                                                     "min": 1, "max": 100_000})
    deleted_grace_s: float = field(default=7 * 86400.0, metadata={
        "help": "How long a deleted notebook's history and outputs are kept (s).", "min": 0.0, "max": 3660 * _DAY})
    kernel_name: str = field(default="python3", metadata={
        "help": "Jupyter kernel for notebooks whose kernelspec names none (a notebook that names an "
                "installed kernel runs with it; one naming a missing kernel fails)."})
    jupyter_base_url: str = field(default="", metadata={"help": "Jupyter base URL; links are <url>/notebooks/<path>."})
    output_base_url: str = field(default="", metadata={"help": "Public base URL of the outputs folder (alert links)."})
    late_grace_s: float = field(default=600.0, metadata={
        "help": "A slot missed by more than this makes the notebook 'late' (alerts).", "min": 0.0, "max": 3660 * _DAY})
    alert_after_failures: int = field(default=1, metadata={"help": "Consecutive failures before a failure alert.",
                                                           "min": 1, "max": 100_000})
    alert_channels: str = field(default="", metadata={"help": "Comma list of alertmanager,slack,ntfy for run-state alerts."})
    alert_on_finding: bool = field(default=False, metadata={
        "help": "Also send each notebook's finding level changes (ok -> alarm, alarm -> ok, ...) to "
                "alert_channels; a notebook's \"AlertOnFinding\" (true, false or a channel list) overrides it."})
    pool_size: int = field(default=-1, metadata={"help": "Pre-started kernels, each used for one run (0 = off, -1 = one per concurrent run).",
                                                 "min": -1, "max": 256})
    pool_preimport: str = field(default="", metadata={"help": "Comma list of modules imported in pooled kernels (once, in a template they are "
        "forked from, when kernel_forkserver is on)."})
    run_new_at_once: bool = field(default=False, metadata={
        "help": "Run a notebook seen for the first time at once (its latest slot) instead of at its "
                "first slot after discovery; a notebook's \"RunAtOnce\" overrides it."})
    kernel_forkserver: bool = field(default=True, metadata={
        "help": "Fork kernels from a template process with ipykernel imported (less CPU per run: "
                "BENCHMARKS.md); falls back to a normal start on any failure."})
    web_anonymous_read: bool = field(default=False, metadata={"help": "Allow read-only access without login."})
    web_proxy_auth_header: str = field(default="", metadata={"help": "Trust this header (set by a reverse proxy) as the user."})
    web_users: Mapping[str, str] = field(default_factory=dict,
                                         metadata={"help": "user = password hash (argon2); managed by `jupycron passwd`."})
    ooniutils: Mapping[str, str] = field(default_factory=dict, metadata={
        "help": "Table `[ooniutils]`: the run environment, i.e. the ooniutils settings every run, "
                "Run now, alert check and kernel uses (checked by ooniutils' run-environment plugin): `data_dir` (relative to this file's folder) or "
                "`clickhouse_url`, alert endpoints (`alertmanager_url`, `slack_webhook_url`, "
                "`ntfy_url`, ...), `output_base_url`; keys as in the ooniutils table below. "
                "Passed to runs as OONI_* variables, over the inherited environment, with "
                "OONI_MONITORING_CONFIG naming this file (one config file for everything)."})
    config_file: Path | None = field(default=None, metadata={"help": "The TOML file these were read from."})

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else self.notebooks / "jupycron"

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency if self.concurrency > 0 else (os.cpu_count() or 1)


def _coerce(name: str, typ: Any, raw: Any, meta: Mapping[str, Any] | None = None) -> Any:
    t = str(typ)
    try:
        if "Path" in t:
            return Path(str(raw)).expanduser() if raw not in (None, "") else None
        if t == "int" or typ is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value: Any = int(raw.strip()) if isinstance(raw, str) else int(raw)
            return _bounded(name, value, meta)
        if t == "float" or typ is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not math.isfinite(value):
                raise ConfigError(f"setting {name!r}: {raw!r} is not a finite number", name)
            return _bounded(name, value, meta)
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
        if not isinstance(raw, str | int | float):
            raise ValueError
        return str(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"setting {name!r}: invalid value {raw!r} (expected {t})", name) from None


def _bounded(name: str, value: Any, meta: Mapping[str, Any] | None) -> Any:
    """``value`` when within ``meta``'s ``min`` (``min_open``: excluded) and ``max``."""
    lo, hi = (meta or {}).get("min"), (meta or {}).get("max")
    open_lo = bool((meta or {}).get("min_open"))
    if (lo is not None and (value < lo or (open_lo and value == lo))) or (hi is not None and value > hi):
        low = ("" if lo is None else f"more than {fmt_bound(lo)}" if open_lo
               else f"at least {fmt_bound(lo)}")
        raise ConfigError(f"setting {name!r}: {value!r} is out of range (must be {low}"
                          f"{f' and at most {fmt_bound(hi)}' if hi is not None else ''})", name)
    return value


def fmt_bound(value: float) -> str:
    """A bound as people write it: ``31622400``, not ``3.16224e+07``."""
    return f"{value:.0f}" if float(value).is_integer() else repr(value)


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
    """Build Settings from flags (``overrides``, None values ignored), env, TOML, defaults.

    Paths come out absolute (see the module doc); numbers within their bounds."""
    env = os.environ if env is None else env
    cfg_raw = config_file or env.get("JUPYCRON_CONFIG")
    cfg_path = Path(cfg_raw).expanduser().absolute() if cfg_raw else None
    file_vals: dict[str, Any] = read_toml(cfg_path) if cfg_path else {}
    base = cfg_path.parent if cfg_path else Path.cwd()
    known = {f.name: f for f in fields(Settings)}
    unknown = set(file_vals) - set(known) | ({"config_file"} & set(file_vals))
    if unknown:
        raise ConfigError(f"unknown key(s) in {cfg_path}: {', '.join(sorted(unknown))}", "config")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name == "config_file":
            continue
        raw: Any = None
        from_file = False
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
            raw, from_file = file_vals[name], True
        if raw is None:
            continue
        if name == "ooniutils":
            values[name] = environment.check_table(
                name, raw, base, str(cfg_path) if from_file else "the overrides")
            continue
        value = _coerce(name, f.type, raw, f.metadata)
        if isinstance(value, Path):  # relative to the file's folder, or to the working directory
            value = ((base if from_file else Path.cwd()) / value).absolute()
        values[name] = value
    s = replace(Settings(), **values, config_file=cfg_path)
    if not s.notebooks.is_absolute():
        s = replace(s, notebooks=s.notebooks.absolute())
    table_url = s.ooniutils.get("output_base_url", "")
    if table_url and s.output_base_url and table_url.rstrip("/") != s.output_base_url.rstrip("/"):
        raise ConfigError(f"output_base_url ({s.output_base_url}) and [ooniutils] output_base_url "
                          f"({table_url}) differ: set one of them", "output_base_url")
    if table_url and not s.output_base_url:
        s = replace(s, output_base_url=table_url)
    return s


def run_environment(settings: Settings) -> dict[str, str]:
    """The variables every run of ``settings`` gets from the ``[ooniutils]`` table, as its
    plugin (:mod:`jupycron.environment`) spells them, with ``output_base_url`` filled in from
    the setting (so a notebook's alarm links and the run-state alerts' links agree).

    Empty when there is no table and no installed plugin for it; the table's plugin also
    names this config file, so every reader of those settings reads this one file."""
    table = dict(settings.ooniutils)
    if settings.output_base_url:
        table.setdefault("output_base_url", settings.output_base_url)
    if not settings.ooniutils and "ooniutils" not in environment.plugin_names():
        return {}
    return environment.environment("ooniutils", table,
                                   settings.config_file if settings.ooniutils else None)


def apply_run_environment(settings: Settings,
                          environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put :func:`run_environment` into ``environ`` (default: this process's environment,
    which every kernel, the kernel template and a dashboard Run now inherit). A different
    inherited value is replaced, with a warning naming the variable (never its value: it may
    be a secret). Called once, at the CLI edge. Returns what was set."""
    target = os.environ if environ is None else environ
    wanted = run_environment(settings)
    source = settings.config_file or "the settings"
    for name, value in wanted.items():
        old = target.get(name)
        if old is not None and old != value and value == "":
            log.warning("%s from the environment is cleared: %s sets what it would override "
                        "(one source of settings for every run)", name, source)
        elif old is not None and old != value:
            log.warning("%s from the environment is replaced by the value in %s (one source "
                        "of settings for every run)", name, source)
        target[name] = value
    return wanted


def documented_settings() -> list[tuple[str, str, str]]:
    """(name, env var, help) of every setting, for docs and `jupycron config`."""
    return [(f.name, f"JUPYCRON_{f.name.upper()}", f.metadata.get("help", ""))
            for f in fields(Settings) if f.name != "config_file"]
