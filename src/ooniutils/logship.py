"""Ship journald entries (``journalctl -o json`` lines) into the ``logs`` table.

Delivery is exactly-once across restarts and ``kill -9``:

* entries are inserted in batches; a batch is one atomic :meth:`Store.insert`;
* the last ``__CURSOR`` of a batch is written (atomically) to the cursor file only after the
  batch is committed, so a crash before that point re-reads the batch on restart;
* a batch re-read after such a crash is already stored: after every start, batches are
  checked against the store (by ``__CURSOR`` within the batch's time range) and lines that
  are already there are dropped — until one batch has no overlap, which ends the window in
  which duplicates can exist.

Lines that are not valid JSON, or lack ``__REALTIME_TIMESTAMP`` / ``__CURSOR``, are counted
and skipped with a log message. Parsing is done a batch at a time by pyarrow's JSON reader
(C++), falling back to per-line ``json.loads`` for batches it rejects.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from .atomicfile import atomic_write_text
from .exceptions import LoadError
from .store.base import Store
from .store.schema import LOGS

log = logging.getLogger(__name__)

REQUIRED = ("__REALTIME_TIMESTAMP", "__CURSOR")
READ_CHUNK = 8 << 20
_JOURNAL_COLUMNS = [c for c in LOGS.column_names if c not in ("host", "message", "timestamp", "inserted_at")]


def _arrow_type(ch_type: str) -> pa.DataType:
    t = ch_type.replace("LowCardinality(", "").replace("Nullable(", "").rstrip(")")
    return {
        "UInt8": pa.uint8(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
        "Int64": pa.int64(), "Int32": pa.int32(),
    }.get(t, pa.string())


_TARGET_TYPES = {c: _arrow_type(t) for c, t in LOGS.columns}
_READ_SCHEMA = pa.schema([(c, pa.string()) for c in _JOURNAL_COLUMNS])


@dataclass
class ShipStats:
    read: int = 0
    inserted: int = 0
    invalid: int = 0
    duplicates: int = 0
    batches: int = 0
    last_cursor: str | None = None
    errors: list[str] = field(default_factory=list)


class CursorFile:
    """The last committed ``__CURSOR``, stored atomically in a small text file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> str | None:
        try:
            value = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def write(self, cursor: str) -> None:
        atomic_write_text(self.path, cursor + "\n")


def _parse_fallback(lines: list[bytes], stats: ShipStats) -> pa.Table:
    """Per-line parsing for a batch pyarrow rejected: keeps the valid lines."""
    rows: dict[str, list[str | None]] = {c: [] for c in _JOURNAL_COLUMNS}
    for raw in lines:
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            stats.invalid += 1
            log.warning("skipping a line that is not valid JSON (%s): %.120r", exc, raw)
            continue
        if not isinstance(obj, dict):
            stats.invalid += 1
            log.warning("skipping a JSON line that is not an object: %.120r", raw)
            continue
        for c in _JOURNAL_COLUMNS:
            v = obj.get(c)
            if isinstance(v, list):  # journald encodes non-UTF-8 fields as byte arrays
                try:
                    v = bytes(v).decode("utf-8", "replace")
                except (TypeError, ValueError):
                    v = None
            elif v is not None and not isinstance(v, str):
                v = str(v)
            rows[c].append(v)
    return pa.table({c: pa.array(v, pa.string()) for c, v in rows.items()}, schema=_READ_SCHEMA)


def parse_batch(lines: list[bytes], stats: ShipStats) -> pa.Table:
    """Parse journald JSON lines into a table of the ``logs`` columns (as strings).

    Rows lacking a required field are dropped and counted in ``stats.invalid``.
    """
    if not lines:
        return _READ_SCHEMA.empty_table()
    try:
        # 1 MiB blocks parse in parallel; fields we do not store are inferred then dropped
        # (measured faster than "ignore").
        table = pajson.read_json(
            io.BytesIO(b"\n".join(lines)),
            read_options=pajson.ReadOptions(use_threads=True, block_size=1 << 20),
            parse_options=pajson.ParseOptions(explicit_schema=_READ_SCHEMA,
                                              unexpected_field_behavior="infer",
                                              newlines_in_values=False),
        ).select(_JOURNAL_COLUMNS)
        if table.num_rows != len(lines):
            raise pa.ArrowInvalid("row count mismatch")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = _parse_fallback(lines, stats)
    missing = None
    for col in REQUIRED:
        m = pc.is_null(table[col])
        missing = m if missing is None else pc.or_(missing, m)
    n_missing = pc.sum(missing).as_py() or 0 if missing is not None else 0
    if n_missing:
        stats.invalid += n_missing
        log.warning("skipping %d line(s) lacking %s", n_missing, " or ".join(REQUIRED))
        table = table.filter(pc.invert(missing))
    return table


def to_frame(table: pa.Table, stats: ShipStats) -> pd.DataFrame:
    """Typed ``logs`` rows: journald strings cast to the column types, plus host/message/timestamp."""
    cols: dict[str, pa.Array] = {}
    bad = None
    for c in _JOURNAL_COLUMNS:
        target = _TARGET_TYPES[c]
        arr = table[c]
        if target != pa.string():
            try:
                arr = pc.cast(arr, target)  # the common case: every value is an integer
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok = pc.fill_null(pc.match_substring_regex(arr, r"^-?[0-9]+$"), True)
                if c == "__REALTIME_TIMESTAMP":
                    bad = pc.invert(ok)
                arr = pc.if_else(ok, arr, pa.scalar(None, pa.string()))
                arr = pc.cast(arr, target, safe=False)
        cols[c] = arr
    out = pa.table(cols)
    if bad is not None and (n_bad := pc.sum(bad).as_py() or 0):
        stats.invalid += n_bad
        log.warning("skipping %d line(s) whose __REALTIME_TIMESTAMP is not an integer", n_bad)
        out = out.filter(pc.invert(bad))
    ts = pc.cast(out["__REALTIME_TIMESTAMP"], pa.timestamp("us", tz="UTC"))
    host = pc.fill_null(out["_HOSTNAME"], "")
    out = (out.set_column(out.schema.get_field_index("_HOSTNAME"), "_HOSTNAME", host)
              .set_column(out.schema.get_field_index("_MACHINE_ID"), "_MACHINE_ID",
                          pc.fill_null(out["_MACHINE_ID"], ""))
              .append_column("host", host)
              .append_column("message", out["MESSAGE"])
              .append_column("timestamp", pc.strftime(ts, "%Y-%m-%dT%H:%M:%SZ")))
    df = out.to_pandas()
    df["inserted_at"] = pd.Timestamp(datetime.now(UTC).replace(microsecond=0, tzinfo=None))
    return df


class Shipper:
    """Reads journald JSON lines and inserts them into ``logs`` in batches."""

    def __init__(self, store: Store, cursor_file: Path, batch_size: int = 50_000,
                 flush_interval: float = 2.0) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.store = store
        self.cursor = CursorFile(cursor_file)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.stats = ShipStats(last_cursor=self.cursor.read())
        self._dedupe = True  # check against the store until a batch has no overlap

    def _already_stored(self, df: pd.DataFrame) -> pd.Series:
        lo, hi = int(df["__REALTIME_TIMESTAMP"].min()), int(df["__REALTIME_TIMESTAMP"].max())
        found = self.store.query(
            "SELECT __CURSOR FROM logs WHERE __REALTIME_TIMESTAMP BETWEEN {lo:Int64} AND {hi:Int64}",
            {"lo": lo, "hi": hi},
        )
        return df["__CURSOR"].isin(set(found["__CURSOR"]))

    def flush(self, lines: list[bytes]) -> None:
        """Insert one batch, then record its last cursor."""
        if not lines:
            return
        self.stats.read += len(lines)
        df = to_frame(parse_batch(lines, self.stats), self.stats)
        if df.empty:
            return
        last_cursor = str(df["__CURSOR"].iloc[-1])
        if self._dedupe:
            dup = self._already_stored(df)
            n_dup = int(dup.sum())
            if n_dup:
                self.stats.duplicates += n_dup
                log.info("dropping %d line(s) already stored by a previous run", n_dup)
                df = df[~dup]
            else:
                self._dedupe = False
        if not df.empty:
            self.stats.inserted += self.store.insert("logs", df)
            self.stats.batches += 1
        self.cursor.write(last_cursor)
        self.stats.last_cursor = last_cursor

    def ship_lines(self, lines: Iterable[bytes], skip_until_cursor: str | None = None) -> ShipStats:
        """Ship an iterable of lines (a file, stdin). With ``skip_until_cursor``, lines up to
        and including the one holding that cursor are skipped (resume after a restart)."""
        it = iter(lines)
        if skip_until_cursor is not None:
            needle = json.dumps(skip_until_cursor).encode()
            for raw in it:
                if needle in raw:
                    break
            else:
                log.warning("cursor %s not found in the input; nothing after it was shipped",
                            skip_until_cursor)
        while batch := list(itertools.islice(it, self.batch_size)):  # batches taken in C
            self.flush([line for line in batch if not line.isspace() and line])
        return self.stats

    def ship_stream(self, stream: IO[bytes], stop: threading.Event | None = None) -> ShipStats:
        """Ship a never-ending stream (journalctl --follow): flush on size or interval."""
        q: queue.Queue[bytes | None] = queue.Queue(maxsize=self.batch_size * 2)

        def reader() -> None:
            for raw in stream:
                q.put(raw)
            q.put(None)

        threading.Thread(target=reader, daemon=True, name="journal-reader").start()
        batch: list[bytes] = []
        deadline = time.monotonic() + self.flush_interval
        while not (stop and stop.is_set()):
            try:
                item = q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = b""
            if item is None:
                break
            if item.strip():
                batch.append(item.strip())
            if len(batch) >= self.batch_size or time.monotonic() >= deadline:
                self.flush(batch)
                batch = []
                deadline = time.monotonic() + self.flush_interval
        self.flush(batch)
        return self.stats


def journalctl_command(after_cursor: str | None, journalctl: str = "journalctl") -> list[str]:
    cmd = [journalctl, "-o", "json", "--follow", "--no-pager"]
    if after_cursor:
        cmd.append(f"--after-cursor={after_cursor}")
    return cmd


def iter_file(path: str) -> Iterator[bytes]:
    if path == "-":
        import sys

        yield from sys.stdin.buffer
        return
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LoadError(f"cannot read {exc.strerror.lower() if exc.strerror else exc}", source=path) from exc
    with fh:
        rest = b""
        while chunk := fh.read(READ_CHUNK):  # split big blocks rather than iterate lines
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def ship(store: Store, cursor_file: Path, from_file: str | None = None,
         batch_size: int = 50_000, flush_interval: float = 2.0,
         stop: threading.Event | None = None,
         popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> ShipStats:
    """Ship from ``from_file`` (a path or ``-``) or from ``journalctl --follow``."""
    shipper = Shipper(store, cursor_file, batch_size, flush_interval)
    start_cursor = shipper.stats.last_cursor
    if from_file is not None:
        return shipper.ship_lines(iter_file(from_file), skip_until_cursor=start_cursor)
    cmd = journalctl_command(start_cursor)
    log.info("reading %s", " ".join(cmd))
    proc = popen(cmd, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        return shipper.ship_stream(proc.stdout, stop)
    finally:
        proc.terminate()
        proc.wait(10)
