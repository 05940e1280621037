"""Ship journald entries (``journalctl -o json`` lines) into the ``logs`` table.

Delivery is exactly-once across restarts and ``kill -9``:

* entries are inserted in batches, committed atomically and in order: following
  journalctl, each batch on its own (:meth:`Store.insert_arrow`); from a file (a bulk
  ship), batches are streamed into parts of up to the store's part size, each part
  committed whole (:meth:`Store.insert_stream`), so each row is encoded once instead of
  once per batch part and again by the compaction that would merge them;
* the last ``__CURSOR`` of a commit is written (atomically) to the cursor file only after
  the commit, so a crash before that point re-reads its batches on restart; what a crash
  or failure leaves uncommitted (a bulk ship's open part) is dropped, never half stored;
* a batch re-read after such a crash is already stored: after every start, batches are
  checked against the store (by ``__CURSOR`` within the batch's time range) and lines that
  are already there are dropped — until one batch has no overlap, which ends the window in
  which duplicates can exist (what is stored is always every batch up to some point).

One shipper per cursor file: :func:`ship` holds ``<cursor file>.lock`` (flock) while it
runs, and a second one on the same cursor stops at once with an error naming the holder
(two would read the same entries and both insert the lines after the cursor).

Lines that are not valid JSON, or lack ``__REALTIME_TIMESTAMP`` / ``__CURSOR``, are counted
and skipped with a log message. Invalid UTF-8 inside a JSON string (journald writes raw
bytes there when a program logs them) is replaced by U+FFFD, and the lines are counted in
``ShipStats.replaced``: every stored value is text.

Speed (the file and stdin modes): the input is read in blocks of whole lines that go to
pyarrow's JSON reader (C++, parallel) as one buffer, never split into Python line objects;
only a block the reader rejects is split, and then only its rejected chunks of
:data:`FALLBACK_CHUNK` lines are parsed line by line with :func:`json.loads`. The parsed
columns are cast to the ``logs`` types with :mod:`pyarrow.compute` and handed to the store
as Arrow (no pandas frame). Blocks are cut into batches of ``batch_size`` rows (zero-copy
slices), committed, then their cursor written, in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, Protocol, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from safefiles.atomic import atomic_write_text
from safefiles.locks import LockTimeout, locked

from .exceptions import LoadError, StoreError
from .store.base import InsertEach, InsertStream, Store
from .store.params import arrow_schema
from .store.schema import LOGS

log = logging.getLogger(__name__)

Block = bytes | bytearray
"""Whole lines of ``journalctl -o json`` output, as read from a file or pipe."""

REQUIRED = ("__REALTIME_TIMESTAMP", "__CURSOR")
STOP_GRACE_S = 1.0
"""How long an ended journalctl may precede our own stop request before it is an error."""
READ_CHUNK = 16 << 20
"""Most bytes read (and parsed) at once from a file or stdin."""
MIN_READ_CHUNK = 64 << 10
FALLBACK_CHUNK = 1024
"""Lines per retry with pyarrow when a block holds a bad line (the rest of it parses fast)."""

_DERIVED = ("host", "message", "timestamp", "inserted_at")
_JOURNAL_COLUMNS = [c for c in LOGS.column_names if c not in _DERIVED]
_LOGS_SCHEMA = arrow_schema(LOGS)
_TARGET_TYPES = {f.name: f.type for f in _LOGS_SCHEMA}
_READ_SCHEMA = pa.schema([(c, pa.string()) for c in _JOURNAL_COLUMNS])
# Fields journald writes that `logs` does not keep are skipped by the reader ("ignore"): a
# field we drop anyway can then neither slow parsing nor fail it with a type clash.
_PARSE_OPTIONS = pajson.ParseOptions(explicit_schema=_READ_SCHEMA, unexpected_field_behavior="ignore",
                                     newlines_in_values=False)
_READ_OPTIONS = pajson.ReadOptions(use_threads=True, block_size=1 << 20)  # 1 MiB: parsed in parallel
_INT_RE = r"^-?[0-9]{1,18}$"  # fits int64 (then range-checked); used only for a column that failed a cast


@dataclass
class ShipStats:
    read: int = 0
    """Non-blank lines read (skipped ones before the resume cursor not counted)."""
    inserted: int = 0
    invalid: int = 0
    replaced: int = 0
    """Lines kept with invalid UTF-8 replaced by U+FFFD (counted once per line)."""
    duplicates: int = 0
    batches: int = 0
    last_cursor: str | None = None
    errors: list[str] = field(default_factory=list)


RESET_HINT = ("Restart with --reset-cursor=head (all of the input or journal; lines already "
              "stored are skipped) or --reset-cursor=<ISO time> (from that time on).")


class CursorNotFound(LoadError):
    """The saved cursor names no entry of the input or journal (garbled, cut off, rotated
    out): shipping stops instead of silently reading nothing ever after."""


ResetCursor = Literal["head"] | datetime
"""Where to start instead of after the saved cursor: ``"head"`` or an aware time."""


def parse_reset_cursor(text: str) -> ResetCursor:
    """``head`` or an ISO 8601 time (no zone: UTC) for ``--reset-cursor``; ValueError else."""
    if text.strip().lower() == "head":
        return "head"
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither 'head' nor an ISO time such as "
                         "2024-11-19T07:00:00Z") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _epoch_us(when: datetime) -> int:
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


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


# --------------------------------------------------------------------------- parsing


def _read_json(data: Block) -> pa.Table:
    return pajson.read_json(pa.BufferReader(data), read_options=_READ_OPTIONS,
                            parse_options=_PARSE_OPTIONS)


def _parse_per_line(lines: list[Block], stats: ShipStats) -> pa.Table:
    """``json.loads`` line by line, for lines pyarrow rejected: keeps the valid ones.

    Like pyarrow's reader, it keeps a string's bytes as they are (invalid UTF-8 included,
    which :func:`_repair_utf8` then replaces and counts for the rows that are kept)."""
    rows: dict[str, list[bytes | None]] = {c: [] for c in _JOURNAL_COLUMNS}
    for raw in lines:
        try:
            obj = json.loads(bytes(raw).decode("utf-8", "surrogateescape"))
        except ValueError as exc:
            stats.invalid += 1
            log.warning("skipping a line that is not valid JSON (%s): %.120r", exc, raw)
            continue
        if not isinstance(obj, dict):
            stats.invalid += 1
            log.warning("skipping a JSON line that is not an object: %.120r", raw)
            continue
        for c in _JOURNAL_COLUMNS:
            rows[c].append(_field_bytes(obj.get(c)))
    # binary viewed as string: no UTF-8 check here, as in pyarrow's reader
    return pa.table({c: pa.array(v, pa.binary()).view(pa.string()) for c, v in rows.items()},
                    schema=_READ_SCHEMA)


def _field_bytes(v: object) -> bytes | None:
    """A journald JSON field's value as the bytes it stands for."""
    if v is None:
        return None
    if isinstance(v, list):  # journald writes fields that are not UTF-8 as byte arrays
        try:
            return bytes(v)
        except (TypeError, ValueError):
            return None
    text = v if isinstance(v, str) else str(v)
    try:
        return text.encode("utf-8", "surrogateescape")  # the raw bytes of the line back
    except UnicodeEncodeError:  # a lone surrogate written as a \\uXXXX escape
        return text.encode("utf-8", "surrogatepass")  # invalid UTF-8: replaced later


def _decode(raw: bytes) -> tuple[str, bool]:
    """``raw`` as text, invalid UTF-8 replaced by U+FFFD; and whether any was."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def _repair_utf8(cols: dict[str, pa.ChunkedArray], stats: ShipStats) -> dict[str, pa.ChunkedArray]:
    """Neither pyarrow's JSON reader nor :func:`_parse_per_line` checks that a string's bytes
    are UTF-8; such values would reach pandas as bytes. Replace their invalid sequences by
    U+FFFD (one fast validation per chunk; only a chunk that fails is decoded value by
    value) and count the rows in ``stats.replaced``."""
    bad_rows: set[int] = set()
    out = dict(cols)
    for name, col in cols.items():
        if not pa.types.is_string(col.type):
            continue
        chunks, offset, changed = [], 0, False
        for chunk in col.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                values: list[str | None] = []
                for i, raw in enumerate(chunk.view(pa.binary()).to_pylist()):
                    text, bad = (None, False) if raw is None else _decode(raw)
                    values.append(text)
                    if bad:
                        bad_rows.add(offset + i)
                chunk, changed = pa.array(values, pa.string()), True
            chunks.append(chunk)
            offset += len(chunk)
        if changed:
            out[name] = pa.chunked_array(chunks, pa.string())
    if bad_rows:
        stats.replaced += len(bad_rows)
        log.warning("%d line(s) hold invalid UTF-8: stored with U+FFFD in its place", len(bad_rows))
    return out


def _parse_slow(data: Block, stats: ShipStats) -> pa.Table:
    """A block pyarrow rejected: pyarrow again on chunks of lines, per line where that fails."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    stats.read += len(lines)
    parts = []
    for start in range(0, len(lines), FALLBACK_CHUNK):
        chunk = lines[start:start + FALLBACK_CHUNK]
        try:
            part = _read_json(b"\n".join(chunk))
            if part.num_rows != len(chunk):  # e.g. two objects on one line
                raise pa.ArrowInvalid("row count differs from line count")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            part = _parse_per_line(chunk, stats)
        parts.append(part)
    return pa.concat_tables(parts) if parts else _READ_SCHEMA.empty_table()


def parse_block(data: Block, stats: ShipStats) -> pa.Table:
    """Parse a block of journald JSON lines into a table of the journald columns of
    ``logs``, as strings, one row per valid line in input order.

    Counts the lines in ``stats.read``; lines that are not JSON objects or lack a
    required field are dropped and counted in ``stats.invalid``.
    """
    if not data or data.isspace():  # (strip() would copy the block)
        return _READ_SCHEMA.empty_table()
    n_lines = data.count(b"\n") + (not data.endswith(b"\n"))
    try:
        table = _read_json(data)
        if table.num_rows != n_lines:  # blank lines, or several objects on a line
            raise pa.ArrowInvalid("row count differs from line count")
        stats.read += n_lines
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = _parse_slow(data, stats)
    missing = None
    for col in REQUIRED:
        m = pc.is_null(table[col])
        missing = m if missing is None else pc.or_(missing, m)
    n_missing = (pc.sum(missing).as_py() or 0) if missing is not None else 0
    if n_missing:
        stats.invalid += n_missing
        log.warning("skipping %d line(s) lacking %s", n_missing, " or ".join(REQUIRED))
        table = table.filter(pc.invert(missing))
    return table


def parse_batch(lines: list[bytes], stats: ShipStats) -> pa.Table:
    """:func:`parse_block` for a list of lines (without their newlines)."""
    return parse_block(b"\n".join(lines), stats)


def _to_int(name: str, arr: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """journald's decimal strings as ``target``; values that are not integers in its range
    become null (logged with their count)."""
    try:
        return pc.cast(arr, target)  # the common case: every value is an integer that fits
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = pc.fill_null(pc.match_substring_regex(arr, _INT_RE), True)
    wide = pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.int64())
    bits = target.bit_width
    lo, hi = (0, 2**bits - 1) if pa.types.is_unsigned_integer(target) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    fits = pc.fill_null(pc.and_(pc.greater_equal(wide, lo), pc.less_equal(wide, min(hi, 2**63 - 1))), True)
    n_bad = pc.sum(pc.invert(pc.and_(ok, fits))).as_py() or 0
    log.warning("%d value(s) of %s are not integers that fit %s", n_bad, name, target)
    return pc.cast(pc.if_else(fits, wide, pa.scalar(None, pa.int64())), target)


def _iso_time(us: pa.ChunkedArray) -> pa.ChunkedArray:
    """Microseconds since the epoch as ``2024-11-19T07:06:40.000000Z``.

    Casting a naive timestamp to text and patching it is much faster than
    ``pc.strftime`` (which goes through a time-zone library for each value)."""
    text = pc.cast(pc.cast(us, pa.timestamp("us")), pa.string())  # "2024-11-19 07:06:40.000000"
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), pa.scalar(""))


def to_logs(table: pa.Table, stats: ShipStats, now: datetime | None = None) -> pa.Table:
    """Typed ``logs`` rows (the store's Arrow schema) from :func:`parse_block`'s strings.

    Integer columns are cast (values that are not integers in range become null; rows
    whose ``__REALTIME_TIMESTAMP`` is not one are dropped and counted as invalid);
    ``host`` is ``_HOSTNAME``, ``message`` is ``MESSAGE``, ``timestamp`` is the ISO time of
    ``__REALTIME_TIMESTAMP`` and ``inserted_at`` is ``now`` (default: the current second).
    """
    cols: dict[str, pa.ChunkedArray] = {}
    bad = None
    for c in _JOURNAL_COLUMNS:
        target = _TARGET_TYPES[c]
        arr = table[c]
        if pa.types.is_integer(target):
            arr = _to_int(c, arr, target)
            if c == "__REALTIME_TIMESTAMP" and arr.null_count:
                bad = pc.is_null(arr)
        cols[c] = arr
    if bad is not None and (n_bad := pc.sum(bad).as_py() or 0):
        stats.invalid += n_bad
        log.warning("skipping %d line(s) whose __REALTIME_TIMESTAMP is missing or not an integer", n_bad)
        keep = pc.invert(bad)
        cols = {c: pc.filter(a, keep) for c, a in cols.items()}
    cols = _repair_utf8(cols, stats)
    n = len(cols["__REALTIME_TIMESTAMP"])
    cols["_HOSTNAME"] = pc.fill_null(cols["_HOSTNAME"], "")
    cols["_MACHINE_ID"] = pc.fill_null(cols["_MACHINE_ID"], "")
    cols["host"] = cols["_HOSTNAME"]
    cols["message"] = cols["MESSAGE"]
    cols["timestamp"] = _iso_time(cols["__REALTIME_TIMESTAMP"])
    inserted_at = (now or datetime.now(UTC)).replace(microsecond=0)
    cols["inserted_at"] = pa.chunked_array(
        [pa.repeat(pa.scalar(inserted_at, _TARGET_TYPES["inserted_at"]), n)])
    return pa.Table.from_arrays([cols[f.name] for f in _LOGS_SCHEMA], schema=_LOGS_SCHEMA)


# --------------------------------------------------------------------------- shipping


class Shipper:
    """Reads journald JSON lines and inserts them into ``logs`` in batches.

    ``bulk`` (``ship --from-file``): :meth:`ship_blocks` streams its batches into parts of
    up to ``part_rows`` rows (:meth:`Store.insert_stream`; default the store's), each
    committed with the cursor of its last batch, so every row is encoded once. Otherwise
    each batch is committed, then its cursor written, on its own."""

    def __init__(self, store: Store, cursor_file: Path, batch_size: int = 50_000,
                 flush_interval: float = 2.0, *, bulk: bool = False, part_rows: int | None = None) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.store = store
        self.cursor = CursorFile(cursor_file)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.bulk = bulk
        self.part_rows = part_rows
        self.stats = ShipStats(last_cursor=self.cursor.read())
        self._dedupe = True  # check against the store until a batch has no overlap
        self._stored_until: int | None = None  # see dedupe_through_stored()
        self._through_stored = False
        self._each: InsertStream[str] = InsertEach(store, LOGS, self._committed)

    def dedupe_through_stored(self) -> None:
        """Check every batch against the store until the input passes the newest stored
        entry, not only until a batch has no overlap: after ``--reset-cursor`` the input
        starts anywhere before (or inside) what is stored, not just after it."""
        self._through_stored = True

    def _already_stored(self, batch: pa.Table) -> pa.ChunkedArray:
        ts = batch["__REALTIME_TIMESTAMP"]
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        found = self.store.query(
            "SELECT __CURSOR FROM logs WHERE __REALTIME_TIMESTAMP BETWEEN {lo:Int64} AND {hi:Int64}",
            {"lo": lo, "hi": hi},
        )
        # a server answers an empty result with no columns at all (clickhouse-connect)
        cursors = found["__CURSOR"].dropna().tolist() if "__CURSOR" in found.columns else []
        stored = pa.array(cursors, pa.string())
        return pc.fill_null(pc.is_in(batch["__CURSOR"], value_set=stored), False)

    def insert_batch(self, batch: pa.Table, stream: InsertStream[str] | None = None) -> None:
        """Insert one batch of :func:`to_logs` rows through ``stream`` (default: committed
        at once), which records its last cursor once the batch is committed.

        Only committed rows are ever stored, so a restart after a crash finds what was
        committed — batches up to some point — and the duplicate check drops those that a
        crash before the cursor write left behind the saved cursor."""
        if batch.num_rows == 0:
            return
        last_cursor = str(batch["__CURSOR"][-1].as_py())
        if self._dedupe:
            if self._through_stored and self._stored_until is None:
                found = self.store.query("SELECT max(__REALTIME_TIMESTAMP) AS t, count() AS n FROM logs")
                self._stored_until = int(found["t"].iloc[0]) if int(found["n"].iloc[0]) else -1
            newest = pc.max(batch["__REALTIME_TIMESTAMP"]).as_py()
            dup = self._already_stored(batch)
            n_dup = pc.sum(dup).as_py() or 0
            if n_dup:
                self.stats.duplicates += n_dup
                log.info("dropping %d line(s) already stored by a previous run", n_dup)
                batch = batch.filter(pc.invert(dup))
            elif not self._through_stored or newest > (self._stored_until or -1):
                self._dedupe = False
        if batch.num_rows:
            self.stats.batches += 1
        (stream or self._each).add(batch, last_cursor)

    def _committed(self, last_cursor: str, rows: int) -> None:
        """A commit's rows are visible: record its last cursor."""
        self.stats.inserted += rows
        self.cursor.write(last_cursor)
        self.stats.last_cursor = last_cursor

    def flush(self, lines: list[bytes]) -> None:
        """Parse ``lines`` and insert them as one batch, then record its last cursor."""
        if lines:
            self.insert_batch(to_logs(parse_batch(lines, self.stats), self.stats))

    def ship_blocks(self, blocks: Iterable[Block], skip_until_cursor: str | None = None,
                    stop: threading.Event | None = None, since_us: int | None = None) -> ShipStats:
        """Ship blocks of whole lines (each ending at a line end) in batches of
        ``batch_size`` rows. With ``skip_until_cursor``, lines up to and including the one
        holding that cursor are skipped unparsed (resume after a restart); when no line holds
        it, :class:`CursorNotFound` is raised and nothing is shipped. With ``since_us``, lines
        whose ``__REALTIME_TIMESTAMP`` is earlier are dropped (not counted as read). When
        ``stop`` is set, the rows parsed so far are committed and no further block is read.

        Batches are handed to the store by one background thread while the next block is
        parsed, at most one batch in flight: batch N+1 is handed over only after batch N is
        (and, when it was committed, its cursor written), so a failure stops the shipping
        with no later batch committed. ``bulk``: they go into one :meth:`Store.insert_stream`,
        whose parts and their cursors are committed together when full and at the end;
        what is not committed when shipping fails is dropped (a restart ships it). Every
        store call happens on that thread; the first one (while the first block is parsed)
        starts the engine.
        """
        needle = json.dumps(skip_until_cursor).encode() if skip_until_cursor is not None else None
        pending: pa.Table | None = None
        stream = (self.store.insert_stream(LOGS, self._committed, part_rows=self.part_rows)
                  if self.bulk else self._each)
        with ThreadPoolExecutor(1, thread_name_prefix="logship-commit") as committer:
            inflight: Future[None] | None = committer.submit(self._warm_up) if self._dedupe else None

            def commit(batch: pa.Table) -> None:
                nonlocal inflight
                if inflight is not None:
                    inflight.result()  # re-raises the previous batch's error
                inflight = committer.submit(self.insert_batch, batch, stream)

            try:
                for block in blocks:
                    if stop is not None and stop.is_set():
                        log.info("stop requested: committing what was read, then stopping")
                        break
                    if needle is not None:
                        at = block.find(needle)
                        if at < 0:
                            continue
                        end = block.find(b"\n", at)
                        block = block[end + 1:] if end >= 0 else b""
                        needle = None
                    rows = to_logs(parse_block(block, self.stats), self.stats)
                    if since_us is not None:
                        rows = self._drop_before(rows, since_us)
                    pending = rows if pending is None else pa.concat_tables([pending, rows])
                    while pending.num_rows >= self.batch_size:  # slices: no copies
                        commit(pending.slice(0, self.batch_size))
                        pending = pending.slice(self.batch_size)
                if needle is not None and not (stop is not None and stop.is_set()):
                    raise CursorNotFound(
                        f"the saved cursor {skip_until_cursor!r} ({self.cursor.path}) is not in the "
                        f"input, so nothing was shipped: it is garbled or cut off, or its entry is "
                        f"no longer in the journal. {RESET_HINT}")
                if pending is not None:
                    commit(pending)
                if inflight is not None:
                    inflight.result()
                committer.submit(stream.commit).result()
            except BaseException as failed:
                if inflight is not None and (exc := inflight.exception()) is not None and exc is not failed:
                    log.error("committing a batch failed too: %s", exc)  # the first error wins
                stream.abort()  # after the batch in flight: nothing else uses the stream
                raise
        return self.stats

    def _drop_before(self, rows: pa.Table, since_us: int) -> pa.Table:
        keep = pc.greater_equal(rows["__REALTIME_TIMESTAMP"], since_us)
        n_kept = pc.sum(keep).as_py() or 0
        self.stats.read -= rows.num_rows - n_kept
        return rows if n_kept == rows.num_rows else rows.filter(keep)

    def _warm_up(self) -> None:
        """Start the store's engine (loading chDB is slow) before the first duplicate check."""
        self.store.query("SELECT 1 AS ok")

    def ship_lines(self, lines: Iterable[bytes], skip_until_cursor: str | None = None) -> ShipStats:
        """:meth:`ship_blocks` for an iterable of lines (with or without their newlines)."""
        return self.ship_blocks(_join_lines(lines, _block_size(self.batch_size)), skip_until_cursor)

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
                if batch:  # merge the parts that piled up, in the background (embedded store)
                    self.store.compact_soon(LOGS.name)
                batch = []
                deadline = time.monotonic() + self.flush_interval
        self.flush(batch)
        return self.stats


def _block_size(batch_size: int) -> int:
    """Bytes per read: about one batch (journald lines are ~1 KB), within bounds, so a small
    ``batch_size`` on a pipe still ships soon and a big one does not hold a whole batch
    of raw text besides the parsed one."""
    return max(MIN_READ_CHUNK, min(READ_CHUNK, batch_size * 1024))


def _join_lines(lines: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Lines → blocks of about ``size`` bytes, each line ending with a newline."""
    buf: list[bytes] = []
    n = 0
    for line in lines:
        line = line.rstrip(b"\r\n")
        buf.append(line)
        n += len(line) + 1
        if n >= size:
            buf.append(b"")
            yield b"\n".join(buf)
            buf, n = [], 0
    if buf:
        buf.append(b"")
        yield b"\n".join(buf)


class _Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


def read_blocks(fh: _Readable, size: int = READ_CHUNK) -> Iterator[Block]:
    """``fh`` in blocks of about ``size`` bytes, each cut after its last newline (the rest
    starts the next block; a last line without a newline is its own block).

    Each block is read straight into its own buffer (no copy of the block, only of the
    few bytes carried over): at hundreds of MB/s, copies and fresh pages show up.
    """
    rest = b""
    while True:
        buf = bytearray(len(rest) + size)
        buf[:len(rest)] = rest
        n = fh.readinto(memoryview(buf)[len(rest):])
        if not n:
            break
        end = len(rest) + n
        cut = buf.rfind(b"\n", 0, end) + 1
        if cut == 0:  # no line end yet: a line longer than a block
            rest = bytes(buf[:end])
            continue
        rest = bytes(buf[cut:end])
        del buf[cut:]  # shrinks in place
        yield buf
    if rest:
        yield rest


def iter_blocks(path: str, size: int = READ_CHUNK) -> Iterator[Block]:
    """Blocks of whole lines from the file at ``path`` or, for ``-``, from stdin."""
    if path == "-":
        yield from read_blocks(cast(_Readable, sys.stdin.buffer), size)
        return
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LoadError(f"cannot read {exc.strerror.lower() if exc.strerror else exc}", source=path) from exc
    with fh:
        try:
            yield from read_blocks(fh, size)
        except OSError as exc:  # e.g. EIO mid-file: what was committed stays (see ship_blocks)
            raise LoadError(f"cannot read {exc.strerror.lower() if exc.strerror else exc}", source=path) from exc


def journalctl_command(after_cursor: str | None, journalctl: str = "journalctl", *,
                       reset: ResetCursor | None = None,
                       directory: Path | None = None) -> list[str]:
    """``journalctl -o json --follow`` from after ``after_cursor``, or from ``reset``
    (``head``: every entry; a time: ``--since``), of ``directory`` or the system journal.
    Without either (the first start), journalctl's default: the last 10 entries, then new ones."""
    cmd = [journalctl, "-o", "json", "--follow", "--no-pager"]
    if directory is not None:
        cmd.append(f"--directory={directory}")
    if reset == "head":
        cmd.append("--lines=all")
    elif isinstance(reset, datetime):
        us = _epoch_us(reset)
        cmd += ["--lines=all", f"--since=@{us // 1_000_000}.{us % 1_000_000:06d}"]
    elif after_cursor:
        # --follow alone shows only the last 10 entries after the cursor: the rest of a
        # downtime's entries would never be shipped
        cmd += ["--lines=all", f"--after-cursor={after_cursor}"]
    return cmd


def ship(store: Store, cursor_file: Path, from_file: str | None = None,
         batch_size: int = 50_000, flush_interval: float = 2.0,
         stop: threading.Event | None = None,
         popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen, *,
         reset_cursor: ResetCursor | None = None, journal_dir: Path | None = None,
         part_rows: int | None = None) -> ShipStats:
    """Ship from ``from_file`` (a path or ``-``) or from ``journalctl --follow`` (of the
    journal files in ``journal_dir``, default the system journal).

    From a file, the batches are streamed into parts of up to ``part_rows`` rows (default:
    the store's part size), each committed with its last cursor (``bulk`` in
    :class:`Shipper`), then the table is compacted (which then finds nothing to rewrite
    unless the input was out of time order or small parts were there before); following
    journalctl, each batch (``batch_size`` lines or ``flush_interval`` seconds) is
    committed on its own.

    ``stop`` (set by the CLI on SIGTERM) ends either mode after committing what was read.
    A saved cursor that is not in the input raises :class:`CursorNotFound`; so does
    journalctl refusing it. ``reset_cursor`` ignores the saved cursor for this run and
    starts at the head of the input, or at a time (earlier lines are dropped); the cursor
    file is rewritten after the first batch, and lines already stored are dropped by the
    duplicate check.

    Example::

        stats = ship(get_store(), Path("/var/lib/ooni/logship.cursor"), from_file="journal.json")
    """
    with _sole_shipper(cursor_file):
        shipper = Shipper(store, cursor_file, batch_size, flush_interval, bulk=from_file is not None,
                          part_rows=part_rows)
        if reset_cursor is not None:
            shipper.dedupe_through_stored()
            log.warning("ignoring the saved cursor %r: starting from %s", shipper.stats.last_cursor,
                        reset_cursor if reset_cursor == "head" else reset_cursor.isoformat())
        stats = _ship(shipper, from_file, batch_size, stop, popen, reset_cursor, journal_dir)
        if from_file is not None and not (stop is not None and stop.is_set()):
            store.compact(LOGS.name)  # a bulk ship leaves what `data compact` would (usually as it is)
        return stats


@contextlib.contextmanager
def _sole_shipper(cursor_file: Path) -> Iterator[None]:
    """Hold ``<cursor_file>.lock`` (flock, released by the kernel even on kill -9); raise
    :class:`StoreError` naming the holder's pid when another shipper has it."""
    lock_path = Path(f"{cursor_file}.lock")
    stack = contextlib.ExitStack()
    try:
        fd = stack.enter_context(locked(lock_path, timeout=0))
    except LockTimeout:
        try:
            holder = lock_path.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise StoreError(f"another shipper (pid {holder}) is using the cursor file {cursor_file}; "
                         "run one shipper per cursor file") from None
    except OSError as exc:
        raise StoreError(f"cannot open the shipper lock {lock_path}: {exc}") from exc
    with stack:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield


def _ship(shipper: Shipper, from_file: str | None, batch_size: int, stop: threading.Event | None,
          popen: Callable[..., subprocess.Popen[bytes]], reset: ResetCursor | None,
          journal_dir: Path | None) -> ShipStats:
    start_cursor = shipper.stats.last_cursor if reset is None else None
    if from_file is not None:
        return shipper.ship_blocks(iter_blocks(from_file, _block_size(batch_size)),
                                   skip_until_cursor=start_cursor, stop=stop,
                                   since_us=_epoch_us(reset) if isinstance(reset, datetime) else None)
    cmd = journalctl_command(start_cursor, reset=reset, directory=journal_dir)
    log.info("reading %s", " ".join(cmd))
    proc = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = _Tail(proc.stderr)
    try:
        assert proc.stdout is not None
        stats = shipper.ship_stream(proc.stdout, stop)
        # `journalctl --follow` ends by itself only on an error, or when it got the SIGTERM
        # meant for both of us (systemd signals the whole unit): give ours a moment to arrive
        if stop is None or not stop.wait(STOP_GRACE_S):
            try:
                code: int | None = proc.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            said = errors.text()
            message = (f"journalctl stopped (exit code {code}) after {stats.read} line(s)"
                       + (f": {said}" if said else ""))
            if start_cursor and "cursor" in said.lower():
                raise CursorNotFound(f"{message}. The saved cursor {start_cursor!r} "
                                     f"({shipper.cursor.path}) is not valid for this journal. "
                                     f"{RESET_HINT}")
            raise LoadError(message)
        return stats
    finally:
        proc.terminate()
        proc.wait(10)


class _Tail:
    """Reads a pipe to its end in a thread (so the writer never blocks), keeping its end."""

    def __init__(self, pipe: IO[bytes] | None, keep: int = 4096) -> None:
        self._buf = b""
        self._keep = keep
        self._thread: threading.Thread | None = None
        if pipe is not None:
            self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True,
                                            name="journalctl-stderr")
            self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: pipe.read1(4096) if hasattr(pipe, "read1") else pipe.read(4096), b""):
            self._buf = (self._buf + chunk)[-self._keep:]

    def text(self, timeout: float = 2.0) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._buf.decode("utf-8", "replace").strip()
