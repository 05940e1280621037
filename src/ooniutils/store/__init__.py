"""The measurement store: :func:`get_store` picks the back-end from the settings.

``OONI_CLICKHOUSE_URL`` set → :class:`~.server.ServerStore` (a ClickHouse server);
otherwise → :class:`~.embedded.EmbeddedStore` in ``config.data_dir()`` (created on first
use: no server and no configuration needed). One store per process and location is kept
and reused.
"""

from __future__ import annotations

import os
import threading

from .. import config
from .base import Store, TableInfo
from .schema import TABLES, Table, get_table

__all__ = ["Store", "TABLES", "Table", "TableInfo", "get_store", "get_table", "reset_stores"]

_cache: dict[tuple[int, str, str], Store] = {}
_cache_lock = threading.Lock()


def get_store() -> Store:
    """The store notebooks and commands use (settings are read at each call)."""
    url = config.get("OONI_CLICKHOUSE_URL")
    key = (os.getpid(), "server", url) if url else (os.getpid(), "embedded", str(config.data_dir()))
    with _cache_lock:
        store = _cache.get(key)
        if store is None:
            if url:
                from .server import ServerStore

                store = ServerStore(url)
            else:
                from .embedded import EmbeddedStore

                store = EmbeddedStore(config.data_dir())
            _cache[key] = store
        return store


def reset_stores() -> None:
    """Close and forget the cached stores (tests, or after changing settings)."""
    with _cache_lock:
        for store in _cache.values():
            store.close()
        _cache.clear()
