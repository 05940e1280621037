"""``ooniutils logs ship``: journald → the ``logs`` table."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from ..exceptions import OoniUtilsError


@click.group("logs")
def group() -> None:
    """Ship journald logs into the store."""


@group.command("ship")
@click.option("--from-file", "from_file", metavar="FILE",
              help="Read `journalctl -o json` lines from FILE ('-' for stdin) instead of "
                   "following journalctl. Read in blocks of up to 16 MiB: meant for files "
                   "and finished pipes, not for live streams.")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where the last committed __CURSOR is kept. "
              "Default: <data dir>/logship.cursor. One shipper per cursor file "
              "(<file>.lock beside it; a second one exits with an error).")
@click.option("--batch-size", default=50_000, show_default=True, type=click.IntRange(1),
              help="Valid lines per insert; the cursor is saved after each insert.")
@click.option("--flush-interval", default=2.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between inserts when following.")
def ship_cmd(from_file: str | None, cursor_file: Path | None, batch_size: int,
             flush_interval: float) -> None:
    """Insert journald JSON lines into `logs`, resuming after the last committed cursor.

    The logs go to their own data source when OONI_LOGS_CLICKHOUSE_URL or OONI_LOGS_DATA_DIR
    is set, else to the measurements' store."""
    from .. import config
    from ..logship import ship
    from ..store import get_logs_store

    try:
        store = get_logs_store()
        cursor = cursor_file or config.data_dir() / "logship.cursor"
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stats = ship(store, cursor, from_file=from_file, batch_size=batch_size,
                     flush_interval=flush_interval, stop=stop)
    except OoniUtilsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"read {stats.read} line(s): inserted {stats.inserted}, skipped {stats.invalid} "
               f"invalid, dropped {stats.duplicates} already stored; last cursor {stats.last_cursor}")


@group.command("sample")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lines", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True)
def sample_cmd(out: Path, lines: int, seed: int) -> None:
    """Write LINES realistic `journalctl -o json` lines to OUT (demo and benchmarks)."""
    import time as _time

    from ..journal_sample import journal_lines

    start_us = int((_time.time() - lines / 1000 - 3600) * 1_000_000)
    out.write_bytes(b"\n".join(journal_lines(lines, start_us=start_us, seed=seed)) + b"\n")
    click.echo(f"wrote {lines} lines to {out}")
