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
              "Default: <data dir>/logship.cursor. Its folder is created when missing. "
              "One shipper per cursor file (<file>.lock beside it; a second one exits "
              "with an error).")
@click.option("--batch-size", default=50_000, show_default=True, type=click.IntRange(1),
              help="Valid lines per insert (following) or per batch (--from-file: batches go "
                   "into parts of up to 2M rows, each saved with its cursor).")
@click.option("--flush-interval", default=2.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between inserts when following.")
@click.option("--reset-cursor", "reset_cursor", metavar="head|TIME", default=None,
              help="Ignore the saved cursor for this run: start at the head of the input (or "
                   "journal), or at an ISO time (e.g. 2024-11-19T07:00:00Z; no zone = UTC). "
                   "Lines already stored are skipped. Needed when the saved cursor is not in "
                   "the journal (garbled, cut off or rotated out): shipping then stops with "
                   "an error rather than reading nothing.")
@click.option("--journal-dir", "journal_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Follow the journal files in this folder (journalctl "
              "--directory) instead of the system journal.")
def ship_cmd(from_file: str | None, cursor_file: Path | None, batch_size: int,
             flush_interval: float, reset_cursor: str | None, journal_dir: Path | None) -> None:
    """Insert journald JSON lines into `logs`, resuming after the last committed cursor.

    The logs go to their own data source when OONI_LOGS_CLICKHOUSE_URL or OONI_LOGS_DATA_DIR
    is set, else to the measurements' store."""
    from .. import config
    from ..logship import parse_reset_cursor, ship
    from ..store import get_logs_store

    try:
        reset = parse_reset_cursor(reset_cursor) if reset_cursor is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--reset-cursor") from exc
    if journal_dir is not None and from_file is not None:
        raise click.UsageError("--journal-dir and --from-file exclude each other")
    try:
        store = get_logs_store()
        cursor = cursor_file or config.data_dir() / "logship.cursor"
        try:
            cursor.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(f"cannot create the cursor file's folder {cursor.parent}: "
                                       f"{exc.strerror or exc}") from exc
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stats = ship(store, cursor, from_file=from_file, batch_size=batch_size,
                     flush_interval=flush_interval, stop=stop, reset_cursor=reset,
                     journal_dir=journal_dir)
    except OoniUtilsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"read {stats.read} line(s): inserted {stats.inserted}, skipped {stats.invalid} "
               f"invalid, dropped {stats.duplicates} already stored, {stats.replaced} with invalid "
               f"UTF-8 replaced; last cursor {stats.last_cursor}")


@group.command("sample")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lines", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True)
@click.option("--hours", default=24.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Spread the lines over the HOURS before now (busier by day, one incident hour).")
def sample_cmd(out: Path, lines: int, seed: int, hours: float) -> None:
    """Write LINES realistic `journalctl -o json` lines to OUT (demo and benchmarks)."""
    import time as _time

    from ..journal_sample import journal_lines

    span_s = hours * 3600
    start_us = int((_time.time() - span_s) * 1_000_000)
    out.write_bytes(b"\n".join(journal_lines(lines, start_us=start_us, seed=seed, span_s=span_s))
                    + b"\n")
    click.echo(f"wrote {lines} lines over {hours:g} hours to {out}")
