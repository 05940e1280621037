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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from .schema import Table, get_table


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
