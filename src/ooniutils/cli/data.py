"""``ooniutils data``: create, fill, inspect and compact the measurement store.

Every command works on :func:`ooniutils.store.get_store` (the embedded store in
``OONI_DATA_DIR``, or the server named by ``OONI_CLICKHOUSE_URL``). Long commands show a
progress bar on stderr when it is a terminal, or with ``--progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable
from rich.text import Text

from ..exceptions import OoniUtilsError
from ..store import TABLES, get_store

_progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress bar (default: only when stderr is a terminal).",
)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except OoniUtilsError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _bar(label: str, show: bool | None) -> Iterator[Any]:
    """Yields a ``progress(done, total)`` callback (None when no bar is shown)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.group(name="data")
def group() -> None:
    """The measurement store (embedded chDB, or a ClickHouse server)."""


@group.command()
def init() -> None:
    """Create the store (OONI_DATA_DIR's folder and tables, or the server's tables).

    Idempotent; never drops data. The only command that creates a store: the others need
    one made by this command."""
    with _errors():
        store = get_store(create=True)
        store.init()
    click.echo(f"store ready ({store.kind})")


@group.command()
def info() -> None:
    """Tables, rows, time range, size and parts."""
    with _errors():
        store = get_store()
        infos = store.info()
    where = getattr(store, "data_dir", None) or getattr(store, "where", "")
    table = RichTable(title=Text(f"{store.kind} store {where}"))  # a path, not rich markup
    for col in ("table", "rows", "from", "to", "size", "parts"):
        table.add_column(col, justify="right" if col in ("rows", "size", "parts") else "left")
    for i in infos:
        table.add_row(i.name, f"{i.rows:,}", str(i.time_min or ""), str(i.time_max or ""),
                      _size(i.bytes_on_disk), "" if i.parts is None else str(i.parts))
    Console().print(table)
    for i in infos:
        if i.leftovers:
            click.echo(f"{i.name}: {i.leftovers.describe()} ({_size(i.leftovers.bytes)}) left by an interrupted "
                       "write or compaction; removed at the next write or `ooniutils data compact`")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


@group.command()
@click.argument("table", required=False, type=click.Choice(sorted(TABLES)))
def compact(table: str | None) -> None:
    """Merge each table's parts by time range, and remove what interrupted writes left
    (all tables without TABLE). Small parts are also merged automatically after inserts."""
    with _errors():
        get_store().compact(table)
    click.echo(f"compacted {table or 'all tables'}")


@group.command("load-sql")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_progress_option
def load_sql(file: Path, progress: bool | None) -> None:
    """Load ClickHouse INSERT ... VALUES statements, one per line, from FILE."""
    from ..store.loaders import load_sql_file

    with _errors(), _bar(f"loading {file.name}", progress) as cb:
        result = load_sql_file(get_store(), file, progress=cb)
    for name, rows in result.rows.items():
        click.echo(f"{name}: {rows:,} rows")
    _compact_after_load(list(result.rows))


@group.command("load-test-lists")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_progress_option
def load_test_lists_cmd(folder: Path, progress: bool | None) -> None:
    """Load Citizen Lab test lists (<cc>.csv, global.csv → ZZ) from FOLDER into citizenlab.

    Idempotent: rows the table already holds are not inserted again."""
    from ..store.loaders import load_test_lists

    with _errors(), _bar("loading test lists", progress) as cb:
        result = load_test_lists(get_store(), folder, progress=cb)
    for name in result.skipped:
        click.echo(f"skipped {name}: its name is not a country code or 'global'", err=True)
    click.echo(f"citizenlab: {result.total:,} rows from {len(result.rows)} lists "
               f"({', '.join(sorted(result.rows))})")
    if result.already_stored:
        click.echo(f"  {result.already_stored:,} of them were already stored and were not inserted again")


@group.command("load-url-priorities")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def load_url_priorities_cmd(file: Path) -> None:
    """Make url_priorities hold exactly the rules of the CSV FILE (header
    category_code,cc,domain,url,priority; '*' matches anything). Rules no longer in the file
    are cancelled (sign -1), new ones added: loading the same file twice changes nothing."""
    from ..store.url_priorities import load_url_priorities

    with _errors():
        result = load_url_priorities(get_store(), file)
    click.echo(f"url_priorities: {result.read:,} rules in {file.name}; "
               f"{result.added:,} added, {result.cancelled:,} cancelled")


@group.command()
@click.option("--days", default=90, show_default=True, type=click.IntRange(min=1), help="Days of data.")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="Total fastpath rows (default: by days).")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed (same seed, same data).")
@click.option("--end", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="End (UTC, excluded) of the data: rows cover [END - DAYS, END). Default: now, rounded down to the hour.")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the injected events (ground truth) to this JSON file.")
@_progress_option
def generate(days: int, rows: int | None, seed: int, end: dt.datetime | None, truth: Path | None,
             progress: bool | None) -> None:
    """Generate synthetic fastpath-like data with known injected events."""
    from ..store.generator import generate as run_generate

    if end is not None:
        end = end.replace(tzinfo=dt.UTC)
    with _errors(), _bar("generating", progress) as cb:
        gt = run_generate(get_store(), days=days, rows=rows, seed=seed, end=end, progress=cb)
    if truth is not None:
        truth.write_text(_truth_json(gt))
        click.echo(f"ground truth written to {truth}")
    click.echo("generated")
    _compact_after_load(["fastpath"])


def _compact_after_load(tables: list[str]) -> None:
    """After a bulk load, merge the tables' parts by time range (what ``data compact``
    does): loads write parts of up to a generator chunk, which the automatic merges after
    each insert leave alone; fewer, bigger parts make every query cheaper."""
    with _errors():
        store = get_store()
        for name in tables:
            store.compact(name)


def _truth_json(gt: Any) -> str:
    """JSON text of the generator's ground truth (its ``to_json()``, ``to_dict()`` or fields)."""
    if callable(getattr(gt, "to_json", None)):
        out = gt.to_json()
        return out if isinstance(out, str) else json.dumps(out, default=str, indent=2)
    if callable(getattr(gt, "to_dict", None)):
        return json.dumps(gt.to_dict(), default=str, indent=2)
    if dataclasses.is_dataclass(gt) and not isinstance(gt, type):
        return json.dumps(dataclasses.asdict(gt), default=str, indent=2)
    return json.dumps(gt, default=str, indent=2)


@group.command()
@click.option("--database", default="default", show_default=True)
def ddl(database: str) -> None:
    """Print the server DDL of every table (what deploy/clickhouse/schema.sql holds)."""
    click.echo(render_ddl(database), nl=False)


def render_ddl(database: str = "default") -> str:
    """The CREATE TABLE statements of schema.py, then the seed rows (test_groups: a Join
    table keeps the first row per key, so running the script again adds nothing)."""
    head = (
        "-- Generated by `ooniutils data ddl` from src/ooniutils/store/schema.py: do not edit.\n"
        "-- OONI's logs table has LowCardinality(Nullable(UInt32)) columns.\n"
        "SET allow_suspicious_low_cardinality_types = 1;\n"
    )
    seeds = "".join(f"\n{sql};\n" for t in TABLES.values() if (sql := t.seed_sql(database)))
    return head + "".join(f"\n{t.ddl(database)};\n" for t in TABLES.values()) + seeds
