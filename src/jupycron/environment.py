"""Run-environment plugins: what a domain library adds to the runs' environment.

jupycron knows only a generic *run environment*: variables put into every run's (and every
kernel's) environment. A table of its config file other than its own settings, such as
``[ooniutils]``, belongs to the installed package that registered a plugin under that name
in the ``jupycron.run_environment`` entry-point group::

    [project.entry-points."jupycron.run_environment"]
    ooniutils = "ooniutils.jupycron_plugin"

The plugin (a module or object) provides

- ``check_table(raw, base) -> dict[str, str]``: the table checked (``ValueError`` naming
  the problem; relative paths made absolute against ``base``, the config file's folder);
- ``environment(table, config_file) -> dict[str, str]``: the variables every run gets;
- ``describe() -> str``: one line naming the data source, shown by ``jupycron list`` and the
  dashboard.

The dependency points from the library to jupycron: jupycron never imports a plugin by
name, and loads one only when its table is in the config file (or, for :func:`describe`, when
a page shows the data source). A plugin that cannot be loaded is a :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, cast

from .exceptions import ConfigError

log = logging.getLogger(__name__)

GROUP = "jupycron.run_environment"


class EnvironmentPlugin(Protocol):
    def check_table(self, raw: Mapping[str, Any], base: Path) -> dict[str, str]: ...

    def environment(self, table: Mapping[str, str],
                    config_file: Path | None) -> dict[str, str]: ...

    def describe(self) -> str: ...


def plugin_names() -> list[str]:
    """Names (config-file tables) of the installed plugins, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


@functools.cache
def load_plugin(name: str) -> EnvironmentPlugin:
    """The plugin registered as ``name``; :class:`ConfigError` naming the table when none is
    installed or it cannot be imported."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(plugin_names()) or "none installed"
        raise ConfigError(f"no installed package handles the [{name}] table (entry points "
                          f"{GROUP!r}: {known})", name)
    try:
        obj = found[0].load()
    except Exception as exc:
        raise ConfigError(f"cannot load the [{name}] table's plugin {found[0].value}: "
                          f"{type(exc).__name__}: {exc}", name) from exc
    missing = [a for a in ("check_table", "environment", "describe") if not callable(getattr(obj, a, None))]
    if missing:
        raise ConfigError(f"the [{name}] table's plugin {found[0].value} lacks "
                          f"{', '.join(missing)}", name)
    return cast(EnvironmentPlugin, obj)


def check_table(name: str, raw: Any, base: Path, source: str) -> dict[str, str]:
    """The table ``[name]`` of ``source`` checked by its plugin (see the module docstring)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {name!r} must be a table ([{name}])", name)
    plugin = load_plugin(name)
    try:
        return dict(plugin.check_table(raw, base))
    except ValueError as exc:
        raise ConfigError(f"[{name}] of {source}: {exc}", name) from exc


def environment(name: str, table: Mapping[str, str], config_file: Path | None) -> dict[str, str]:
    """The variables the ``[name]`` table gives every run (none for an empty table)."""
    if not table:
        return {}
    return dict(load_plugin(name).environment(table, config_file))


def describe_data_source() -> str:
    """What the installed plugins say about the data source, or why nothing is said."""
    lines = []
    for name in plugin_names():
        try:
            lines.append(load_plugin(name).describe())
        except ConfigError as exc:
            lines.append(f"unknown ({exc})")
        except Exception as exc:  # a describer must never take a page down
            log.warning("the [%s] plugin could not describe the data source: %s", name, exc)
            lines.append(f"unknown ([{name}] plugin failed: {type(exc).__name__})")
    return "; ".join(lines) if lines else "not described (no run-environment plugin installed)"
