"""The embedded store: chDB (in-process ClickHouse) over Parquet parts in a folder.

Layout (one sub-folder per table)::

    <data>/<table>/current -> gen-000003     symlink: the generation readers see
    <data>/<table>/gen-000003/part-*.parquet  immutable parts
    <data>/<table>/tmp/                       parts being written (never globbed)
    <data>/<table>/.lock                      writers' flock (insert / compact swap)
    <data>/<table>/.compact.lock              one compaction at a time
    <data>/<table>/.exclusive.lock            Store.exclusive (read-then-insert loaders)

Why this shape: chDB locks an on-disk database to one process, yet several notebook
kernels query at once while loaders append. So nothing is shared but files: every process
opens its own in-memory chDB session whose tables are views over
``file('<data>/<table>/current/*.parquet', Parquet, '<structure>')``. ClickHouse expands
the glob at each query, so new parts show up at once; an empty generation reads as 0 rows.
A *simple* query (one ``SELECT`` on one table, :mod:`.prune`) skips the view: it reads
``file()`` over the current generation's parts its ``WHERE`` can need, listed at each
attempt, so it pays for one or two footers instead of every part's.

* **insert** writes a part under ``tmp/`` (sorted by the table's range key, in row
  groups a time filter can skip: :mod:`.parts`) then ``os.rename``-s it into the current
  generation (under the writers' lock), so readers see all of a part or none of it. Then
  small parts are merged when enough have piled up (``compact`` in automatic mode).
  :meth:`EmbeddedStore.insert_stream` does the same for a bulk load's many batches, streamed
  into parts of up to ``PART_ROWS`` rows (:mod:`.part_writer`).
* **compact** merges parts by key range (:mod:`.compaction` says which and writes the
  merged parts), builds the next generation (the merged parts + hard links to every
  other part, appended meanwhile or kept) and swaps ``current`` with an atomic
  symlink rename. A reader therefore lists either the old or the new generation, never
  both (no double counting). A reader that listed the old one and opens a part after the
  old generation was removed gets a missing-file error, and one whose listing of the old
  folder raced with the removal sees too few parts without any error. So
  :meth:`EmbeddedStore.query` reads every ``current`` link before and after the query and
  re-runs it (a few attempts) when either a file went missing or a link changed.

A killed writer leaves a temp part (locked with ``flock`` while written, so a live
writer's file is told apart) or, from a compaction, a next or old generation folder; the
next write removes stale temp parts, the next compaction all of it, and
:meth:`EmbeddedStore.leftovers` (shown by ``ooniutils data info``) reports them meanwhile.

chDB sessions in one process share one catalog, so the views are (re)created whenever a
store for another folder queries; a process-wide lock serialises embedded queries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver.binding import format_str

from safefiles.locks import locked, try_locked

from ..exceptions import QueryError, StoreError
from . import compaction, prune, session_dirs
from . import params as P
from .base import InsertStream, Leftovers, M, Store, TableInfo
from .part_writer import PartStream, Written
from .parts import (
    PartInfo,
    open_locked,
    parquet_options,
    part_info,
    range_key,
    relink,
    remember,
    stale_temp_files,
    write_sorted,
)
from .schema import TABLES, Table, get_table

__all__ = ["EmbeddedStore", "parquet_options"]

log = logging.getLogger(__name__)

_GEN_RE = re.compile(r"^gen-(\d{6,})$")
# ClickHouse error codes meaning "a file listed by the glob has gone": a compaction won.
_MISSING_FILE_CODES = ("(FILE_DOESNT_EXIST)", "(CANNOT_OPEN_FILE)", "(CANNOT_STAT)", "(CANNOT_OPEN", "No such file")
_QUERY_ATTEMPTS = 4
_STRAY_LINK_AGE = 60.0
"""Seconds after which a ``.current-*`` link candidate is taken as left by a killed process."""

_LOW_CARDINALITY_MEMO = 512
_low_cardinality_columns: dict[str, tuple[bool, ...]] = {}
"""SQL text → which result columns the views return as LowCardinality (``()``: unknown)."""
_lock = threading.RLock()
_views_for: dict[int, Path] = {}  # pid → data folder the process-wide views point at
_sessions: dict[int, Any] = {}  # pid → chDB session


def _session() -> Any:
    """This process's chDB session (created on first use, again after a fork)."""
    pid = os.getpid()
    sess = _sessions.get(pid)
    if sess is None:
        from chdb.session import Session

        session_dirs.sweep()  # what sessions of killed processes left in the temp folder
        sess = Session()  # in memory: nothing on disk is locked
        sess.query("SET session_timezone = 'UTC'")
        # OONI's logs table has LowCardinality(Nullable(UInt32)) columns.
        sess.query("SET allow_suspicious_low_cardinality_types = 1")
        _sessions.clear()
        _views_for.pop(pid, None)
        _sessions[pid] = sess
    return sess


def _error_text(exc: BaseException) -> str:
    return str(exc).strip()


class EmbeddedStore(Store):
    """chDB over Parquet parts under ``data_dir`` (see module doc). Creates the folder."""

    kind = "embedded"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._links = [os.path.join(self.data_dir, name, "current") for name in TABLES]
        self._background: dict[str, threading.Thread] = {}
        self._background_lock = threading.Lock()
        self.init()

    # ----------------------------------------------------------------- layout helpers
    def table_dir(self, table: str) -> Path:
        return self.data_dir / get_table(table).name

    def current_dir(self, table: str) -> Path:
        """The generation folder readers currently see."""
        link = self.table_dir(table) / "current"
        return link.parent / os.readlink(link)

    def parts(self, table: str) -> list[Path]:
        """Parquet parts of the current generation, oldest first."""
        return sorted(self.current_dir(table).glob("part-*.parquet"))

    @contextlib.contextmanager
    def _writer_lock(self, table: str, name: str = ".lock") -> Iterator[None]:
        with locked(self.table_dir(table) / name):
            yield

    def _new_part_path(self, table: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self.table_dir(table) / "tmp" / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"

    # ----------------------------------------------------------------- Store API
    def init(self) -> None:
        """Create the data folder and every table's folders (idempotent)."""
        try:
            for name in TABLES:
                tdir = self.data_dir / name
                (tdir / "tmp").mkdir(parents=True, exist_ok=True)
                link = tdir / "current"
                if not link.is_symlink():
                    (tdir / "gen-000001").mkdir(exist_ok=True)
                    tmp_link = tdir / f".current-{uuid.uuid4().hex}"
                    tmp_link.symlink_to("gen-000001")
                    try:
                        os.rename(tmp_link, link) if not link.is_symlink() else tmp_link.unlink()
                    except OSError:
                        tmp_link.unlink(missing_ok=True)
                        raise
        except OSError as exc:
            raise StoreError(f"cannot create the embedded store in {self.data_dir}: {exc}") from exc
        from .seed import seed_tables

        try:
            seed_tables(self)  # fixed lookup rows (test_groups)
        except (StoreError, OSError) as exc:  # e.g. a read-only copy made before test_groups
            log.warning("cannot add the fixed rows of the lookup tables in %s: %s", self.data_dir, exc)

    def _ensure_views(self) -> None:
        pid = os.getpid()
        sess = _session()
        if _views_for.get(pid) == self.data_dir:
            return
        for name, table in TABLES.items():
            pattern = str(self.data_dir / name / "current" / "*.parquet")
            view = f"__{name}_parts" if table.materialized else name
            sess.query(
                f"CREATE OR REPLACE VIEW `{view}` AS SELECT * FROM "
                f"file({format_str(pattern)}, Parquet, {format_str(P.structure(table))})"
            )
            if table.materialized:  # as on a server: the column is stored, not in SELECT *
                sess.query(f"CREATE OR REPLACE TABLE `{name}` ({table.structure()}) "
                           f"ENGINE = Merge(currentDatabase(), {format_str(f'^{view}$')})")
        _views_for[pid] = self.data_dir

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        bound = P.bind(sql, params)
        escaped = bound.escaped()
        with _lock:
            self._ensure_views()
            sess = _session()
            shape = prune.shape(bound.sql) if prune.ENABLED else None
            low_cardinality: bool | None = True if prune.LOW_CARDINALITY else None
            races = 0  # runs spoiled by a compaction
            while races < _QUERY_ATTEMPTS:
                before = self._generations()
                run, plain = self._plan(bound, shape, low_cardinality) if shape is not None else (bound.sql, False)
                try:
                    result = sess.query(run, "DataFrame", params=escaped)
                except Exception as exc:  # chDB raises ChdbError / RuntimeError
                    msg = _error_text(exc)
                    races += 1
                    if any(c in msg for c in _MISSING_FILE_CODES) and (
                            races < _QUERY_ATTEMPTS or self._generations() != before):
                        log.debug("part vanished under a query (compaction); retry %d: %s", races, msg)
                        continue
                    raise QueryError(f"query failed: {msg}", query=sql, server_message=msg) from exc
                if self._generations() != before:
                    # A compaction swapped a generation during the query: the glob may have
                    # listed the old folder while its parts were being removed, which reads as
                    # fewer rows (not as an error). Only a run with no swap is a snapshot.
                    races += 1
                    log.debug("a generation changed under a query (compaction); retry %d", races)
                    continue
                if not plain:
                    return result
                conformed = self._as_views_return(result, bound, escaped)
                if conformed is not None:
                    return conformed
                low_cardinality = True  # the views' types are unknown: read as they do
        raise QueryError(f"query failed: the store was compacted under it {_QUERY_ATTEMPTS} times in a row; "
                         "retry when compaction is done", query=sql)

    def _as_views_return(self, result: pd.DataFrame, bound: P.Bound, escaped: dict[str, str]) -> pd.DataFrame | None:
        """``result`` of a query that read ``LowCardinality`` columns as plain ones
        (:mod:`.prune`) with the dtypes the views give: the one difference chDB shows is a
        string column holding no value (an empty result, or only NULLs), ``str`` for a
        String but ``object`` of ``None`` for a LowCardinality column. Which result columns
        are LowCardinality the views say (``DESCRIBE``, remembered per SQL text: types do
        not depend on parameter values); None for a query ``DESCRIBE`` cannot wrap (e.g.
        one with a ``FORMAT`` clause): it is then run again reading LowCardinality."""
        todo = [i for i, dtype in enumerate(result.dtypes)
                if isinstance(dtype, pd.StringDtype) and result.iloc[:, i].count() == 0]  # no value
        if not todo:
            return result
        low = _low_cardinality_columns.get(bound.sql)
        if low is None:
            try:
                select = bound.sql.rstrip().removesuffix(";")
                described = _session().query(f"DESCRIBE TABLE ({select}\n)", "TabSeparated", params=escaped)
                low = tuple(line.split("\t")[1].startswith("LowCardinality(")
                            for line in described.bytes().decode().splitlines() if line)
            except Exception:  # e.g. a FORMAT clause: cannot be a subquery
                low = ()
            if len(_low_cardinality_columns) >= _LOW_CARDINALITY_MEMO:
                _low_cardinality_columns.clear()
            _low_cardinality_columns[bound.sql] = low
        if len(low) != result.shape[1]:
            return None
        for i in todo:
            if low[i]:
                result.isetitem(i, np.full(len(result), None, dtype=object))
        return result

    def _direct(self, bound: P.Bound, shape: prune.Shape, low_cardinality: bool | None = None) -> str:
        """``bound.sql`` reading only the parts of the current generation its ``WHERE``
        can need, named directly (:mod:`.prune`); as it is when that cannot be done. See
        :meth:`_plan` for ``low_cardinality``."""
        return self._plan(bound, shape, low_cardinality)[0]

    def _plan(self, bound: P.Bound, shape: prune.Shape, low_cardinality: bool | None = None) -> tuple[str, bool]:
        """:meth:`_direct`'s SQL, and whether it reads ``LowCardinality`` columns as plain
        ones: when ``low_cardinality`` is False, or when it is None and the query is
        estimated to read at least :data:`.prune.PLAIN_ROWS` rows (:func:`.prune.rows_within`;
        below, LowCardinality's hashing costs less than :meth:`_as_views_return`)."""
        table = shape.table
        plain = low_cardinality is not True and P.has_low_cardinality(table)
        try:
            folder = self.current_dir(table.name)
            paths = sorted(folder.glob("part-*.parquet"))
            key = range_key(table)
            if key is not None and shape.bounds:
                key_type = P.arrow_schema(table).field(key).type
                lo, hi = prune.window(shape, bound.values, key_type)
                if lo is not None or hi is not None:
                    infos = prune.select([part_info(p, key, key_type) for p in paths], lo, hi)
                    paths = [p.path for p in infos]
                    if plain and low_cardinality is None:
                        rows = prune.rows_within(infos, lo, hi)
                        plain = rows is None or rows >= prune.PLAIN_ROWS
        except OSError:  # a part went (a compaction): the view reads the generation as it is
            return bound.sql, False
        source = prune.file_source(folder, paths, table, low_cardinality=not plain)
        return (bound.sql, False) if source is None else (prune.rewrite(bound.sql, shape, source), plain)

    def _generations(self) -> tuple[str, ...]:
        """Every table's ``current`` target (names only grow, so equal means no swap)."""
        try:
            return tuple(map(os.readlink, self._links))
        except OSError as exc:
            raise StoreError(f"the embedded store in {self.data_dir} is damaged: {exc}") from exc

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement in this process's session (not persisted: use :meth:`insert`)."""
        bound = P.bind(sql, params)
        with _lock:
            self._ensure_views()
            try:
                _session().query(bound.sql, "TabSeparated", params=bound.escaped())
            except Exception as exc:
                msg = _error_text(exc)
                raise QueryError(f"statement failed: {msg}", query=sql, server_message=msg) from exc

    def insert(self, table: str, df: pd.DataFrame) -> int:
        t = get_table(table)
        arrow = P.to_arrow(t, df, dictionary=True)  # categoricals stay dictionaries in Parquet
        return self._write_part(t, arrow)

    def insert_arrow(self, table: str | Table, arrow: pa.Table) -> int:
        """Write ``arrow`` as one new part, with no pandas round trip.

        Columns are coerced by :func:`params.conform_arrow` (dictionary columns allowed and
        written as they are; columns already of the right type are not copied)."""
        t = get_table(table if isinstance(table, str) else table.name)
        return self._write_part(t, P.conform_arrow(t, arrow, dictionary=True))

    def _write_part(self, table: Table, arrow: pa.Table) -> int:
        """Write ``arrow`` (coerced to ``table``'s schema) as one new part sorted by the
        table's range key (:mod:`.parts`), visible to readers all at once; then clean up
        what a killed writer left and merge small parts when enough have piled up."""
        if arrow.num_rows == 0:
            return 0
        key = range_key(table)
        tmp = self._new_part_path(table.name)
        fd = -1
        try:
            fd = open_locked(tmp)
            info = write_sorted(arrow, tmp, key)
            with self._writer_lock(table.name):
                final = self.current_dir(table.name) / tmp.name
                os.rename(tmp, final)
            remember(dataclasses.replace(info, path=final), key)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write a part of {table.name} in {self.data_dir}: {exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)
        log.info("inserted %d rows into %s (%s)", arrow.num_rows, table.name, tmp.name)
        self._clean_temp(table.name)
        self._compact_one(table, "auto")
        return arrow.num_rows

    # ----------------------------------------------------------------- streamed inserts
    def insert_stream(self, table: str | Table, on_commit: Callable[[M, int], None], *,
                      part_rows: int | None = None) -> InsertStream[M]:
        """Batches written into parts of up to ``part_rows`` rows (default
        :data:`~.parts.PART_ROWS`) as they come, each part committed (renamed into the
        current generation, as :meth:`insert_arrow` does) when full, when the next batch
        would break its time order, and at the end (:class:`.part_writer.PartStream`)."""
        t = get_table(table if isinstance(table, str) else table.name)
        self._clean_temp(t.name)

        def tidy() -> None:
            self._clean_temp(t.name)
            self._compact_one(t, "auto")

        return PartStream(t, on_commit, new_path=lambda: self._new_part_path(t.name),
                          publish=lambda w: self._publish(t, w), tidy=tidy, part_rows=part_rows)

    def _publish(self, table: Table, written: Written) -> None:
        """Rename a closed temp part into the current generation (readers see all of it)."""
        with self._writer_lock(table.name):
            final = self.current_dir(table.name) / written.path.name
            os.rename(written.path, final)
        remember(dataclasses.replace(written.info, path=final), range_key(table))
        log.info("inserted %d rows into %s (%s)", written.info.rows, table.name, final.name)

    def exclusive(self, table: str) -> contextlib.AbstractContextManager[None]:
        """A flock on ``<data>/<table>/.exclusive.lock`` (see :meth:`Store.exclusive`)."""
        return self._writer_lock(get_table(table).name, ".exclusive.lock")

    def compact(self, table: str | None = None) -> None:
        """Merge each table's parts (all tables when ``table`` is None): overlapping parts
        are merge-sorted, neighbouring small ones joined (see :mod:`.compaction`); and
        remove what a killed writer or compaction left behind."""
        for name in [get_table(table).name] if table else list(TABLES):
            self._compact_one(get_table(name), "full")

    def compact_soon(self, table: str) -> threading.Thread | None:
        """Merge ``table``'s piled-up parts in a background thread (runs of similar-size
        parts under :data:`~.compaction.FULL_BIG` rows: the *tiered* rule of
        :mod:`.compaction`) and return at once. One such thread per table and store;
        None when one is still running (or another process is compacting the table: the
        merge gives way). Inserts and queries go on meanwhile. The thread is not a daemon,
        so a process ends after its merge (a kill is safe: see the module doc)."""
        t = get_table(table)
        with self._background_lock:
            running = self._background.get(t.name)
            if running is not None and running.is_alive():
                return None
            thread = threading.Thread(target=self._compact_background, args=(t,),
                                      name=f"compact-{t.name}")
            self._background[t.name] = thread
            thread.start()
        return thread

    def _compact_background(self, table: Table) -> None:
        try:
            self._compact_one(table, "tiered")
        except Exception:  # a background merge must not kill its writer; the next one retries
            log.exception("background compaction of %s in %s failed", table.name, self.data_dir)

    def _compact_one(self, table: Table, mode: compaction.Mode) -> None:
        # One compaction per table at a time (inserts go on): two merging the same parts
        # would each keep the other's merged part and double every row. An automatic or
        # background one gives way when another is running.
        with self._try_lock(table.name, ".compact.lock", wait=mode == "full") as locked:
            if not locked:
                return
            self._clean_generations(table.name)
            self._merge_parts(table, mode)

    @contextlib.contextmanager
    def _try_lock(self, table: str, name: str, wait: bool) -> Iterator[bool]:
        if wait:
            with self._writer_lock(table, name):
                yield True
            return
        with try_locked(self.table_dir(table) / name) as got:
            yield got

    def part_infos(self, table: str) -> list[PartInfo]:
        """Rows and key range of each part of the current generation (from the footers)."""
        t = get_table(table)
        key = range_key(t)
        key_type = P.arrow_schema(t).field(key).type if key else None
        return [part_info(p, key, key_type) for p in self.parts(t.name)]

    def _merge_parts(self, table: Table, mode: compaction.Mode) -> None:
        key = range_key(table)
        try:
            infos = self.part_infos(table.name)
        except FileNotFoundError:  # a part vanished: only a compaction removes parts, and we hold its lock
            raise StoreError(f"a part of {table.name} in {self.data_dir} vanished during a compaction") from None
        schema = P.arrow_schema(table)  # dense: parts' dictionaries differ
        jobs = compaction.plan(infos, mode=mode, keyed=key is not None)
        if not jobs:
            return
        written: list[Written] = []
        try:
            for job in jobs:
                written += compaction.merge(job, schema, key, lambda: self._new_part_path(table.name))
            replaced = {p.path.name for job in jobs for p in job.inputs}
            self._swap(table.name, replaced, written)
        except OSError as exc:
            raise StoreError(f"cannot compact {table.name} in {self.data_dir}: {exc}") from exc
        finally:
            for w in written:
                w.path.unlink(missing_ok=True)  # renamed away when the swap succeeded
                os.close(w.fd)
        log.info("compacted %d parts of %s into %d (%s)", len(replaced), table.name, len(written), mode)

    def _swap(self, table: str, replaced: set[str], written: list[Written]) -> None:
        """Build the next generation (the merged parts + hard links to every other part,
        including those appended meanwhile) and point ``current`` at it atomically."""
        tdir = self.table_dir(table)
        key = range_key(get_table(table))
        with self._writer_lock(table):
            cur = self.current_dir(table)
            num = int(_GEN_RE.match(cur.name).group(1))  # type: ignore[union-attr]
            new = tdir / f"gen-{num + 1:06d}"
            new.mkdir()
            for w in written:
                os.rename(w.path, new / w.path.name)
                remember(dataclasses.replace(w.info, path=new / w.path.name), key)
            for part in cur.glob("part-*.parquet"):
                if part.name not in replaced:  # untouched, or appended while we merged
                    os.link(part, new / part.name)
                    relink(part, new / part.name, key)
            link_tmp = tdir / f".current-{uuid.uuid4().hex}"
            link_tmp.symlink_to(new.name)
            os.rename(link_tmp, tdir / "current")
        shutil.rmtree(cur, ignore_errors=True)

    # ----------------------------------------------------------------- crash leftovers
    def _clean_temp(self, table: str) -> None:
        """Remove temp parts no live process is writing (left by a killed writer)."""
        for path in stale_temp_files(self.table_dir(table) / "tmp"):
            log.warning("removing %s, a temp part left by an interrupted write", path)
            path.unlink(missing_ok=True)

    def _clean_generations(self, table: str) -> None:
        """Under the compaction lock: remove temp parts, generations other than
        ``current`` (an interrupted compaction's next one, or an old one it had not yet
        removed) and stray ``current`` link candidates."""
        self._clean_temp(table)
        tdir = self.table_dir(table)
        cur = os.readlink(tdir / "current")
        for entry in tdir.iterdir():
            if _GEN_RE.match(entry.name) and entry.name != cur:
                log.warning("removing %s, left by an interrupted compaction", entry)
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(".current-") and _older_than(entry, _STRAY_LINK_AGE):
                entry.unlink(missing_ok=True)

    def leftovers(self, table: str) -> Leftovers:
        """What interrupted writes or compactions left in ``table``'s folder (not data)."""
        tdir = self.table_dir(get_table(table).name)
        temp = list(stale_temp_files(tdir / "tmp"))
        temp_bytes = sum(_size(p) for p in temp)
        cur = os.readlink(tdir / "current")
        gens = [e for e in tdir.iterdir() if _GEN_RE.match(e.name) and e.name != cur]
        gen_bytes = sum(_size(p) for g in gens for p in g.glob("*") if p.stat().st_nlink == 1)
        return Leftovers(len(temp), len(gens), temp_bytes + gen_bytes)

    def info(self) -> list[TableInfo]:
        out = []
        for name, table in TABLES.items():
            parts, size, rows = self._parts_stats(name)
            tmin = tmax = None
            if table.time_column and rows:
                df = self.query(f"SELECT min(`{table.time_column}`) AS a, max(`{table.time_column}`) AS b FROM `{name}`")
                tmin, tmax = df["a"].iloc[0], df["b"].iloc[0]
            out.append(TableInfo(name, rows, size, len(parts), tmin, tmax, self.leftovers(name)))
        return out

    def _parts_stats(self, table: str) -> tuple[list[Path], int, int]:
        """One generation's parts, bytes and rows (read again if a compaction swapped it)."""
        link = self.table_dir(table) / "current"
        for _ in range(_QUERY_ATTEMPTS):
            gen = os.readlink(link)
            try:
                parts = self.parts(table)
                stats = (parts, sum(p.stat().st_size for p in parts),
                         sum(pq.ParquetFile(p).metadata.num_rows for p in parts))
            except FileNotFoundError as exc:
                if os.readlink(link) == gen:
                    raise StoreError(f"a part of {table} in {self.data_dir} vanished: {exc}") from exc
                continue
            if os.readlink(link) == gen:
                return stats
        raise StoreError(f"{table} in {self.data_dir} was compacted {_QUERY_ATTEMPTS} times in a row "
                         "while being measured; retry when compaction is done")

    def close(self) -> None:
        """Sessions are per process and shared; nothing to release per store."""


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
