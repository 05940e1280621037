"""The ``ooniutils`` command: a click group whose sub-groups live one per module
(data.py, logs.py, cache.py, edge.py). Each command parses options, calls the library and maps
:class:`ooniutils.exceptions.OoniUtilsError` to a ClickException (exit 1)."""

from __future__ import annotations

import importlib
import logging

import click

SUBCOMMAND_MODULES = ("data", "logs", "cache", "edge")


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """OONI monitoring utilities: the measurement store, log shipping, caches, proxy configs."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # sub-command not built yet
            raise
        cli.add_command(mod.group)


_register()


def main() -> None:
    cli()
