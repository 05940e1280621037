"""The server store: a real ClickHouse server through clickhouse-connect (HTTP).

Selected by ``OONI_CLICKHOUSE_URL=http(s)://user:pass@host:8123/db``. Same Python API and
SQL as the embedded store: parameters are prepared by :func:`params.bind` (so pyformat
and ``{name:Type}`` behave identically) and sent as ``param_<name>`` for the server to
bind; inserted DataFrames are coerced by :func:`params.to_arrow` and sent as Arrow.
Errors never show the password: messages name the host only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa

from .. import config
from ..exceptions import ConfigError, QueryError, StoreError
from . import params as P
from .base import Store, TableInfo
from .schema import TABLES, Table, get_table

log = logging.getLogger(__name__)


TIMEOUT_SETTING = "OONI_CLICKHOUSE_TIMEOUT"
CONNECT_TIMEOUT = 10
"""Seconds to open a connection (a host that does not accept it is down, not slow)."""


def _timed_out(exc: BaseException) -> bool:
    """A request that got no answer in time (clickhouse-connect wraps urllib3's timeout
    in its own exception; only the message tells)."""
    return "timed out" in str(exc).lower()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"


class ServerStore(Store):
    """Tables on a ClickHouse server (created by :meth:`init` from ``schema.py``)."""

    kind = "server"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"OONI_CLICKHOUSE_URL must look like http(s)://user:pass@host:8123/db, got {_redact(url)}",
                "OONI_CLICKHOUSE_URL",
            )
        self.where = _redact(url)
        self.database = parts.path.strip("/") or "default"
        self.timeout = config.get_float(TIMEOUT_SETTING)
        if not 0 < self.timeout < 1e6:
            raise ConfigError(f"{TIMEOUT_SETTING} must be a number of seconds above 0, "
                              f"got {self.timeout:g}", TIMEOUT_SETTING)
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            self.client = clickhouse_connect.get_client(
                dsn=url, database=self.database, connect_timeout=CONNECT_TIMEOUT,
                send_receive_timeout=self.timeout,
                settings={"session_timezone": "UTC",
                          "max_execution_time": max(1, int(self.timeout))})
        except ClickHouseError as exc:
            if _timed_out(exc):
                raise StoreError(self._no_answer("connecting")) from exc
            raise StoreError(f"cannot connect to ClickHouse at {self.where}: {exc}") from exc

    def _no_answer(self, what: str) -> str:
        return (f"ClickHouse at {self.where} did not answer within {self.timeout:g} s while "
                f"{what} ({TIMEOUT_SETTING}; the server is overloaded, stuck or not ClickHouse)")

    def _fail(self, exc: Exception, sql: str, what: str = "query") -> QueryError:
        if _timed_out(exc):
            msg = self._no_answer(f"running a {what}")
            return QueryError(msg, query=sql, server_message=msg)
        msg = str(exc).strip()
        # clickhouse-connect prefixes the server text with its own; keep ClickHouse's part.
        idx = msg.find("Code: ")
        server_msg = msg[idx:] if idx >= 0 else msg
        if "Code: 159" in server_msg:  # TIMEOUT_EXCEEDED: our max_execution_time
            server_msg += f" (the limit is {TIMEOUT_SETTING}={self.timeout:g})"
        return QueryError(f"{what} failed on {self.where}: {server_msg}", query=sql, server_message=server_msg)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        bound = P.bind(sql, params)
        try:
            return self.client.query_df(bound.sql, parameters=bound.values or None)
        except ClickHouseError as exc:
            raise self._fail(exc, sql) from exc

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        bound = P.bind(sql, params)
        try:
            self.client.command(bound.sql, parameters=bound.values or None)
        except ClickHouseError as exc:
            raise self._fail(exc, sql, "statement") from exc

    def insert(self, table: str, df: pd.DataFrame) -> int:
        t = get_table(table)
        return self._send(t, P.to_arrow(t, df), given=set(map(str, df.columns)))

    def insert_arrow(self, table: str | Table, arrow: pa.Table) -> int:
        """Send ``arrow`` (coerced by :func:`params.conform_arrow`) as one Arrow insert."""
        t = get_table(table if isinstance(table, str) else table.name)
        return self._send(t, P.conform_arrow(t, arrow), given=set(arrow.column_names))

    def _send(self, t: Table, arrow: pa.Table, given: set[str]) -> int:
        """Insert ``arrow``. A MATERIALIZED column is left to the server (``now64()``)
        unless the caller gave its values (the generator's update_time), which then go
        with ``insert_allow_materialized_columns``."""
        from clickhouse_connect.driver.exceptions import ClickHouseError

        if arrow.num_rows == 0:
            return 0
        computed = [c for c in t.materialized if c not in given]
        if computed:
            arrow = arrow.drop_columns(computed)
        settings = {"insert_allow_materialized_columns": 1} \
            if any(c in given for c in t.materialized) else None
        try:
            self.client.insert_arrow(t.name, arrow, database=self.database, settings=settings)
        except ClickHouseError as exc:
            raise self._fail(exc, f"INSERT INTO {t.name}", "insert") from exc
        return arrow.num_rows

    def init(self) -> None:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        for table in TABLES.values():
            ddl = table.ddl(self.database)
            try:
                # OONI's logs table has LowCardinality(Nullable(UInt32)) columns.
                self.client.command(ddl, settings={"allow_suspicious_low_cardinality_types": 1})
            except ClickHouseError as exc:
                raise self._fail(exc, ddl, "CREATE TABLE") from exc
        from .seed import seed_tables

        seed_tables(self)  # fixed lookup rows (test_groups)

    def info(self) -> list[TableInfo]:
        out = []
        for name, table in TABLES.items():
            df = self.query(
                "SELECT sum(rows) AS rows, sum(bytes_on_disk) AS bytes, count() AS parts "
                "FROM system.parts WHERE active AND database = {db:String} AND table = {t:String}",
                {"db": self.database, "t": name},
            )
            rows = int(df["rows"].iloc[0] or 0)
            tmin = tmax = None
            if table.time_column and rows:
                r = self.query(f"SELECT min(`{table.time_column}`) AS a, max(`{table.time_column}`) AS b FROM `{name}`")
                tmin, tmax = r["a"].iloc[0], r["b"].iloc[0]
            out.append(TableInfo(name, rows, int(df["bytes"].iloc[0] or 0), int(df["parts"].iloc[0]), tmin, tmax))
        return out

    def optimize(self, table: str | None = None) -> None:
        """``OPTIMIZE TABLE ... FINAL`` (what :meth:`compact` means on a server)."""
        for name in [get_table(table).name] if table else list(TABLES):
            self.command(f"OPTIMIZE TABLE `{name}` FINAL")

    def compact(self, table: str | None = None) -> None:
        """The server merges parts itself; this only logs (use :meth:`optimize` to force)."""
        log.info("compact is a no-op on a ClickHouse server (it merges parts itself)")

    def close(self) -> None:
        self.client.close()
