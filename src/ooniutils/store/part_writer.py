"""Writing parts row group by row group: one part (:class:`PartFile`), and a stream of
batches committed part by part (:class:`PartStream`, :meth:`EmbeddedStore.insert_stream`).

A part being written lives under a temp name its writer holds an ``flock`` on (so a
killed writer's file is told apart, :func:`.parts.stale_temp_files`); full row groups of
``ROW_GROUP_ROWS`` go to the Parquet writer as soon as they are buffered, so a part is
never whole in memory. Readers see it only once it is renamed into the current generation.

A :class:`PartStream` is how a bulk writer (``logs ship --from-file``) encodes each row
once: its batches, in order, go into parts of up to :data:`.parts.PART_ROWS` rows — each a
part a full compaction would keep as it is (sorted, row groups of ``ROW_GROUP_ROWS``,
statistics) — instead of one part per batch that a compaction then rewrites. A part holds
whole batches (one bigger than ``part_rows`` is a part of its own); it is committed
(renamed, then ``on_commit`` called with the last batch's mark) when the next batch would
take it past ``part_rows``, when the next batch starts before the rows already written
(the part would no longer be sorted: the batches that follow go to a new part, which the
next compaction merges with it), and at the end. What was committed is therefore always a
prefix of the batches, which the caller's restart logic may rely on (``logs ship``'s
duplicate check); a batch not yet committed is lost by a crash or :meth:`PartStream.abort`,
never half stored.

Each batch is sorted by the sort step (the hour), grouped by the cluster column within it
(:func:`.parts.sort_order`; a stream cannot know a part's density before its end, so it
does not group sparse rows within the day as :func:`.parts.group_step` would — the only
stream today, ``logs``, has no cluster column); row groups hold at most
``ROW_GROUP_ROWS`` rows and, but for a part's last, at least half as many: a big batch's
rows are written when it comes, so no more than about one batch waits in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NoReturn, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import StoreError
from . import params as P
from . import parts
from .base import InsertStream
from .schema import Table

M = TypeVar("M")


@dataclass
class Written:
    """A part written under a temp path, locked by this process until renamed."""

    path: Path
    fd: int
    info: parts.PartInfo


class PartFile:
    """One part written to ``path`` (created and locked here) from sorted tables of
    ``schema``, in row groups of at most ``group_rows`` rows: :meth:`write` buffers rows
    into full row groups (the rest at :meth:`close`), :meth:`write_now` writes what it is
    given at once. Dictionary columns are unified per row group (one dictionary per column
    chunk: given several, Parquet's writer gives its dictionary up)."""

    def __init__(self, path: Path, schema: pa.Schema, key: str | None, group_rows: int,
                 group: int | None = None) -> None:
        self.path, self.schema, self.key, self.group_rows = path, schema, key, group_rows
        self.step = parts.sort_step(schema.field(key).type) if key else 1
        self.group = group or self.step
        """The grouping step the rows come in (:func:`.parts.group_step`; default the sort step)."""
        self.rows = 0
        """Rows taken so far (written or buffered)."""
        self._fd = parts.open_locked(path)
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._groups: list[tuple[int, int, int]] = []
        self._dictionaries = any(pa.types.is_dictionary(f.type) for f in schema)

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (rows in the part's order: sorting is the caller's)."""
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.group_rows:
            self._flush(whole_groups=True)

    def write_now(self, table: pa.Table) -> None:
        """Append ``table`` and write it (with what is buffered) at once: full row groups
        and one smaller one for the rest."""
        self.write(table)
        if self._buffered:
            self._flush(whole_groups=False)

    def _flush(self, whole_groups: bool) -> None:
        data = pa.concat_tables(self._buffer)
        n = data.num_rows - data.num_rows % self.group_rows if whole_groups else data.num_rows
        if n == 0:
            return
        head, rest = data.slice(0, n), data.slice(n)
        if self._dictionaries:
            head = head.unify_dictionaries()
        if self._writer is None:
            opts = parts.parquet_options(head, self.key)
            del opts["row_group_size"]  # given to each write_table
            self._writer = pq.ParquetWriter(self.path, parts.marked(self.schema, self.key, self.group), **opts)
        self._writer.write_table(head, row_group_size=self.group_rows)
        if self.key is not None:  # the groups just written: (lo, hi, rows)
            k = parts.key_ints(head.column(self.key))
            for off in range(0, n, self.group_rows):
                g = k[off:off + self.group_rows]
                self._groups.append((int(g.min()), int(g.max()), len(g)))
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> Written:
        """Write what is buffered and the footer; the file stays locked (``Written.fd``)."""
        if self._buffered:
            self._flush(whole_groups=False)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        groups = tuple(self._groups) if self.key is not None else None
        info = parts.info_from_groups(self.path, self.rows, groups, self.step, self.group)
        return Written(self.path, self._fd, info)

    def abort(self) -> None:
        """Remove the file and release its lock."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # a writer that failed may fail again closing
                self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._buffer, self._buffered = [], 0


class PartStream(InsertStream[M], Generic[M]):
    """Batches for ``table``, in order, written into parts of up to ``part_rows`` rows and
    committed part by part (see the module doc and :meth:`Store.insert_stream`).

    Rows not yet written — less than a row group, and in a table grouped by a cluster
    column the rows of the last key step (a later batch may bring more of that step) — wait
    in a sorted *tail*: a batch that starts within the tail is sorted in with it, one that
    starts before the rows already written ends the part. ``new_path`` names a temp part;
    ``publish`` makes a closed one visible (an atomic rename into the current generation);
    ``on_commit(mark, rows)`` follows each publish, then ``tidy`` (the store's clean-up and
    automatic merge). Not thread-safe: one writer.
    """

    def __init__(self, table: Table, on_commit: Callable[[M, int], None], *,
                 new_path: Callable[[], Path], publish: Callable[[Written], None],
                 tidy: Callable[[], None], part_rows: int | None = None) -> None:
        self.table = table
        self.key = parts.range_key(table)
        self.part_rows = part_rows if part_rows is not None else parts.PART_ROWS
        if self.part_rows <= 0:
            raise ValueError("part_rows must be positive")
        self._on_commit, self._new_path, self._publish, self._tidy = on_commit, new_path, publish, tidy
        self._schema: pa.Schema | None = None
        self._cluster: str | None = None
        self._file: PartFile | None = None
        self._tail: pa.Table | None = None  # sorted rows of the open part not yet in the file
        self._rows = 0  # rows of the open part (file + tail)
        self._written_last: int | None = None  # the last key step written to the file
        self._mark: M | None = None
        self._marked = False  # a mark added since the last commit

    def add(self, arrow: pa.Table, mark: M) -> None:
        batch = self._conform(arrow)
        if batch.num_rows == 0:
            self._mark, self._marked = mark, True
            if not self._rows:  # nothing pending: the mark is committed as it is
                self.commit()
            return
        if self._rows and (self._rows + batch.num_rows > self.part_rows or not self._follows(batch)):
            self.commit()
        data = batch if self._tail is None else pa.concat_tables([self._tail, batch])
        data, steps = self._sorted(data)
        # Write full row groups, and with a big batch the rest too when it is at least half a
        # group: a batch of 50k rows is written when it comes instead of waiting (in memory)
        # for the next one to fill its last group. Grouped by a cluster column, the rows of
        # the last step wait: a later batch may bring more of that step, to be grouped with them.
        half = parts.ROW_GROUP_ROWS // 2
        movable = int(np.searchsorted(steps, steps[-1])) if steps is not None and self._cluster else data.num_rows
        rest = movable % parts.ROW_GROUP_ROWS
        n = movable if rest >= half and batch.num_rows >= half else movable - rest
        if n:
            self._write(data.slice(0, n))
            self._written_last = int(steps[n - 1]) if steps is not None else None
        self._tail = data.slice(n) if n < data.num_rows else None
        self._rows += batch.num_rows
        self._mark, self._marked = mark, True
        if self._rows >= self.part_rows:
            self.commit()

    def commit(self) -> None:
        if not self._rows:
            if self._marked:
                self._marked = False
                self._on_commit(cast(M, self._mark), 0)
            return
        if self._tail is not None:
            self._write(self._tail)
        file, self._file = self._file, None
        self._tail, self._rows, self._written_last = None, 0, None
        assert file is not None
        try:
            written = file.close()
        except OSError as exc:
            file.abort()
            self._fail(exc)
        except BaseException:
            file.abort()
            raise
        try:
            self._publish(written)
        except OSError as exc:
            self._fail(exc)
        finally:
            written.path.unlink(missing_ok=True)  # renamed away when published
            os.close(written.fd)
        self._marked = False
        self._on_commit(cast(M, self._mark), written.info.rows)
        self._tidy()
        # Arrow's allocator keeps freed pages: hand them back for what the process does next
        # (as a merge does at its end; about a millisecond)
        pa.default_memory_pool().release_unused()

    def abort(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.abort()
        self._tail, self._rows, self._written_last, self._marked = None, 0, None, False

    # ------------------------------------------------------------------ helpers
    def _conform(self, arrow: pa.Table) -> pa.Table:
        batch = P.conform_arrow(self.table, arrow, dictionary=True)
        if self._schema is None:
            if batch.num_rows == 0:
                return batch
            self._schema = batch.schema
            self._cluster = parts.cluster_column(batch.schema, self.key)
        elif batch.schema != self._schema:  # e.g. a categorical column, dense in the first batch
            try:
                batch = batch.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StoreError(f"a batch for {self.table.name} does not match the stream's first "
                                 f"batch's columns: {exc}") from exc
        return batch

    def _steps(self, data: pa.Table) -> np.ndarray:
        assert self.key is not None
        return parts.key_ints(data.column(self.key)) // parts.sort_step(data.schema.field(self.key).type)

    def _sorted(self, data: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
        """``data`` in the part order (:func:`.parts.sort_order`) and its key steps."""
        if self.key is None:
            return data, None
        k = parts.key_ints(data.column(self.key))
        step = parts.sort_step(data.schema.field(self.key).type)
        ranks = parts.cluster_ranks(data.column(self._cluster)) if self._cluster else None
        order = parts.sort_order(k, step, ranks)
        if order is not None:
            data, k = data.take(pa.array(order)), k[order]
        return data, k // step if step > 1 else k

    def _follows(self, batch: pa.Table) -> bool:
        """Whether ``batch`` can join the open part in order: it starts after the last key
        step written to the file, or in it when rows are not grouped by a cluster column."""
        if self.key is None or self._written_last is None:
            return True
        first = int(self._steps(batch).min())
        return first > self._written_last or (first == self._written_last and self._cluster is None)

    def _write(self, rows: pa.Table) -> None:
        try:
            if self._file is None:
                assert self._schema is not None
                self._file = PartFile(self._new_path(), self._schema, self.key, parts.ROW_GROUP_ROWS)
            self._file.write_now(rows)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> NoReturn:
        self.abort()
        raise StoreError(f"cannot write a part of {self.table.name}: {exc}") from exc
