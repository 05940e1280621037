"""The store interface. Two implementations: :mod:`.embedded` (chDB over Parquet parts,
the default) and :mod:`.server` (a ClickHouse server through clickhouse-connect).

Notebooks never touch a store directly: they call :func:`ooniutils.click_query_fsn`,
which calls :func:`ooniutils.store.get_store` and then :meth:`Store.query`.
Both implementations pass one contract test suite (tests/ooniutils/test_store_contract.py).
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import pandas as pd
import pyarrow as pa

from .schema import Table, get_table

M = TypeVar("M")


@dataclass(frozen=True)
class Leftovers:
    """Files an interrupted write or compaction left in a table's folder (not data: the
    store removes them at its next write or compaction)."""

    temp_parts: int
    generations: int
    bytes: int

    def __bool__(self) -> bool:
        return bool(self.temp_parts or self.generations)

    def describe(self) -> str:
        what = []
        if self.temp_parts:
            what.append(f"{self.temp_parts} temp part(s)")
        if self.generations:
            what.append(f"{self.generations} unfinished or old generation(s)")
        return " and ".join(what)


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    bytes_on_disk: int
    parts: int | None
    """Number of Parquet parts (embedded) or active parts (server); None when unknown."""
    time_min: Any | None
    time_max: Any | None
    leftovers: Leftovers | None = None
    """What interrupted writes left (embedded store; None where unknown)."""


class InsertStream(abc.ABC, Generic[M]):
    """Batches appended to one table in order and committed in steps (see
    :meth:`Store.insert_stream`). As a context manager: :meth:`commit` at the end of the
    block, :meth:`abort` when it raises."""

    @abc.abstractmethod
    def add(self, arrow: pa.Table, mark: M) -> None:
        """Append ``arrow`` (coerced like :meth:`Store.insert_arrow`; errors name the
        column); ``mark`` (e.g. a journal cursor) is handed to ``on_commit`` once this
        batch and every one before it are committed. May commit what came before."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Commit every batch added so far (readers see all of a commit or none of it)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop what was added and not yet committed; committed batches stay."""

    def __enter__(self) -> InsertStream[M]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise


class InsertEach(InsertStream[M]):
    """:class:`InsertStream` that commits each batch at once with :meth:`Store.insert_arrow`
    (the default of :meth:`Store.insert_stream`, and what a writer that must show each
    batch at once uses: ``logs ship`` following journalctl)."""

    def __init__(self, store: Store, table: str | Table, on_commit: Callable[[M, int], None]) -> None:
        self.store, self.table, self.on_commit = store, table, on_commit

    def add(self, arrow: pa.Table, mark: M) -> None:
        rows = self.store.insert_arrow(self.table, arrow) if arrow.num_rows else 0
        self.on_commit(mark, rows)

    def commit(self) -> None:
        """Nothing waits: each batch was committed by :meth:`add`."""

    def abort(self) -> None:
        """Nothing waits: each batch was committed by :meth:`add`."""


class Store(abc.ABC):
    """A place that holds the measurement tables and answers ClickHouse SQL."""

    kind: str  # "embedded" or "server"

    @abc.abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a SELECT and return a DataFrame.

        ``params`` are bound by the engine, never pasted into the SQL text. Both ClickHouse
        ``{name:Type}`` placeholders and ``%(name)s`` pyformat are accepted (pyformat is
        rewritten to ``{name:<inferred type>}``). Errors raise :class:`QueryError` with
        ClickHouse's message.
        """

    @abc.abstractmethod
    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... VALUES on a server)."""

    @abc.abstractmethod
    def insert(self, table: str, df: pd.DataFrame) -> int:
        """Append ``df`` (columns = a subset of the table's; missing ones get defaults)
        atomically: readers see all of it or none. Returns the number of rows written."""

    def insert_arrow(self, table: str | Table, arrow: pa.Table) -> int:
        """Append an Arrow table atomically, like :meth:`insert`, without a pandas frame.

        Columns are a subset of the table's; each is coerced by
        :func:`~ooniutils.store.params.conform_arrow` (kept as is when it already has the
        column's Arrow type, cast otherwise; errors name the column). Back-ends override
        this with a path that never builds a DataFrame; this default goes through
        :meth:`insert`. Returns the number of rows written.
        """
        from . import params as P

        t = get_table(table if isinstance(table, str) else table.name)
        return self.insert(t.name, P.conform_arrow(t, arrow).to_pandas())

    def insert_stream(self, table: str | Table, on_commit: Callable[[M, int], None], *,
                      part_rows: int | None = None) -> InsertStream[M]:
        """A bulk insert of many batches into ``table``, in order, with each row encoded
        once. ``on_commit(mark, rows)`` is called after each commit with the mark of the
        last batch it holds and how many rows it made visible (0 for a batch that had
        none); what is committed is always every batch up to that mark, and a crash or
        :meth:`InsertStream.abort` drops only batches not yet committed.

        The embedded store writes the batches into parts of up to ``part_rows`` rows
        (default its ``PART_ROWS``), row group by row group, committing a part when it is
        full, when the next batch would break its time order, and at the end
        (:mod:`.part_writer`): a compaction then has nothing to rewrite. This default (a
        server, whose engine merges by itself) inserts each batch at once
        (:class:`InsertEach`).

        Example::

            with store.insert_stream("logs", lambda cursor, rows: save(cursor)) as stream:
                for batch, cursor in batches:
                    stream.add(batch, cursor)
        """
        return InsertEach(self, table, on_commit)

    @abc.abstractmethod
    def init(self) -> None:
        """Create the tables when missing (idempotent, never drops data)."""

    @abc.abstractmethod
    def info(self) -> list[TableInfo]:
        """Rows, size and time range of each table."""

    def exclusive(self, table: str) -> contextlib.AbstractContextManager[None]:
        """Hold off other ``exclusive`` sections on ``table`` (read-then-insert loaders, so
        two at once cannot both insert the same missing rows); inserts and queries go on.

        The embedded store takes a file lock shared by every process using the folder. A
        server has no cross-client lock: there ``citizenlab``'s ReplacingMergeTree drops
        such duplicates at its next merge, so this default holds nothing.
        """
        return contextlib.nullcontext()

    def compact(self, table: str | None = None) -> None:  # noqa: B027 - optional on servers
        """Merge small parts (embedded store); a no-op where the engine merges by itself."""

    def compact_soon(self, table: str) -> threading.Thread | None:
        """Start merging ``table``'s piled-up parts in the background and return at once
        (embedded store: what a long-running writer calls after each batch window); the
        running thread, or None when there is nothing to start (one is still running, or
        the engine merges by itself, as a server does)."""
        return None

    def close(self) -> None:  # noqa: B027
        """Release resources (sessions, HTTP pools)."""
