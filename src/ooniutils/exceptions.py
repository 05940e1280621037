"""Errors raised by ooniutils.

Callers (notebooks, jupycron, the CLI) catch :class:`OoniUtilsError`; the tree is::

    OoniUtilsError
    ├── ConfigError          a setting is missing or has a bad value (names the setting)
    ├── QueryError           ClickHouse rejected or failed a query (carries its message)
    ├── StoreError           the data folder / server cannot be used (layout, lock, I/O)
    │   ├── LoadError        input data (SQL dump, CSV, JSON lines) is malformed
    │   └── NoDataError      a table an analysis needs holds no row at all (empty table or
    │                        wrong data source): the run must fail, not report "all quiet"
    ├── AnalysisError        bad arguments to an analysis (lists what is allowed)
    └── AlertError           an alert channel failed; ``permanent`` says whether a retry helps

Foreign exceptions (chdb, clickhouse-connect, httpx) are converted at the boundary with
``raise Ours(...) from exc`` so notebooks never see driver-specific types.
"""

from __future__ import annotations


class OoniUtilsError(Exception):
    """Base class of every ooniutils error."""


class ConfigError(OoniUtilsError):
    """A setting is missing or invalid. ``setting`` is its environment variable name."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class QueryError(OoniUtilsError):
    """A query failed. ``server_message`` is ClickHouse's own text."""

    def __init__(self, message: str, query: str | None = None, server_message: str | None = None) -> None:
        super().__init__(message)
        self.query = query
        self.server_message = server_message or message


class StoreError(OoniUtilsError):
    """The measurement store cannot be used (layout, I/O, server unreachable)."""


class LoadError(StoreError):
    """Input data is malformed. ``source`` and ``line`` locate the problem when known."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
        super().__init__(where + message)
        self.source = source
        self.line = line


class AnalysisError(OoniUtilsError, ValueError):
    """Bad arguments to an analysis or chart helper."""


class AlertError(OoniUtilsError):
    """Sending an alert failed.

    ``channel`` is e.g. "slack"; ``host`` the endpoint host (never the secret path or token);
    ``permanent`` is True when retrying cannot help (4xx, bad config).
    """

    def __init__(self, message: str, channel: str, host: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.channel = channel
        self.host = host
        self.permanent = permanent


class NoDataError(StoreError):
    """A query that must return rows returned none over the whole history it looked at: the
    table is empty or the notebook reads the wrong data source. ``table`` names the table."""

    def __init__(self, message: str, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table
