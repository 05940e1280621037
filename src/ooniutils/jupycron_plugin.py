"""ooniutils' side of the jupycron contract, in both directions, and nowhere else.

**What ooniutils reads from jupycron** (the kernel environment jupycron documents in
docs/ARCHITECTURE.md, "Kernel environment"): :func:`scheduled_run` (``AUTORUN``) and
:func:`jupycron_state_dir` (``JUPYCRON_STATE_DIR``). No other ooniutils module reads a
``JUPYCRON_*`` variable, and nothing in ooniutils imports jupycron.

**What jupycron loads from ooniutils**: this module is registered in ooniutils' packaging
metadata as the ``ooniutils`` entry of the ``jupycron.run_environment`` entry-point group
(pyproject.toml), so the ``[ooniutils]`` table of jupycron's config file is checked, turned
into the runs' environment and described by ooniutils, while jupycron never imports it:

- :func:`check_table` — the table's values checked against ooniutils' settings (unknown keys
  and bad values raise ``ValueError`` naming them; relative paths made absolute);
- :func:`environment` — the ``OONI_*`` variables every run gets, plus
  ``OONI_MONITORING_CONFIG`` naming jupycron's config file, so the scheduler, its alert
  checks and every kernel read one config file;
- :func:`describe` — the one-line data source shown by ``jupycron list`` and the dashboard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import config
from .exceptions import OoniUtilsError

STATE_DIR_ENV = "JUPYCRON_STATE_DIR"
"""Where jupycron lets a run keep state between runs (jupycron sets it to ``<output>/.state``)."""
AUTORUN_ENV = "AUTORUN"
"""Set (to ``1``) by jupycron in every scheduled run's kernel, unset in the editor's."""


def jupycron_state_dir() -> Path | None:
    """``$JUPYCRON_STATE_DIR`` (``~`` expanded), or None outside jupycron."""
    value = os.environ.get(STATE_DIR_ENV)
    return Path(value).expanduser() if value else None


def scheduled_run() -> bool:
    """True when this process is a run started by jupycron (``AUTORUN`` set)."""
    return bool(os.environ.get(AUTORUN_ENV))


def check_table(raw: Mapping[str, Any], base: Path) -> dict[str, str]:
    """The ``[ooniutils]`` table as strings, checked; relative paths made absolute against
    ``base`` (the config file's folder). Raises ``ValueError`` naming the problem."""
    unknown = sorted(set(raw) - set(config.SETTINGS_BY_KEY))
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(config.SETTINGS_BY_KEY))})")
    try:
        table = {k: config.file_value(k, v, base) for k, v in raw.items()}
        for key, text in table.items():
            config.check_value(key, text)
    except OoniUtilsError as exc:
        raise ValueError(str(exc)) from exc
    return table


_DATA_SOURCES = (("data_dir", "clickhouse_url"), ("logs_data_dir", "logs_clickhouse_url"))
"""(folder key, server key) of each data source: a server URL is used when both are set."""


def environment(table: Mapping[str, str], config_file: Path | None) -> dict[str, str]:
    """The variables a run gets for a checked table: ``OONI_<KEY>`` each, and
    ``OONI_MONITORING_CONFIG`` = ``config_file`` (when there is one) so any setting read
    from a file comes from the same file jupycron read. A table that names a store folder
    (``data_dir``) and no server also gets the server's variable blank, so that a
    ``OONI_CLICKHOUSE_URL`` left in the host's environment cannot take the runs elsewhere."""
    out = {f"OONI_{k.upper()}": v for k, v in table.items()}
    for folder, server in _DATA_SOURCES:
        if folder in table and server not in table:
            # The table names a folder: a server URL inherited from the host's environment
            # would win over it (config.describe_data_source). Blank = not set.
            out[f"OONI_{server.upper()}"] = ""
    if config_file is not None:
        out["OONI_MONITORING_CONFIG"] = str(config_file)
    return out


def describe() -> str:
    """The data source these settings select (see :func:`ooniutils.config.describe_data_source`)."""
    return config.describe_data_source()
