"""The measurement store: :func:`get_store` picks the back-end from the settings.

``OONI_CLICKHOUSE_URL`` set → :class:`~.server.ServerStore` (a ClickHouse server);
otherwise → :class:`~.embedded.EmbeddedStore` in ``config.data_dir()`` (created on first
use: no server and no configuration needed). One store per process and location is kept
and reused.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .. import config
from .base import Store, TableInfo
from .schema import TABLES, Table, get_table

__all__ = ["Store", "TABLES", "Table", "TableInfo", "get_logs_store", "get_store", "get_table", "reset_stores"]

_cache: dict[tuple[int, str, str], Store] = {}
_cache_lock = threading.Lock()


def get_store() -> Store:
    """The store notebooks and commands use (settings are read at each call)."""
    return _store_at(config.get("OONI_CLICKHOUSE_URL"), config.data_dir())


def get_logs_store() -> Store:
    """The store holding the ``logs`` table: ``OONI_LOGS_CLICKHOUSE_URL``, else an embedded
    store in ``OONI_LOGS_DATA_DIR``, else the measurements' store (:func:`get_store`)."""
    url = config.get("OONI_LOGS_CLICKHOUSE_URL")
    folder = config.get("OONI_LOGS_DATA_DIR")
    if not url and not folder:
        return get_store()
    return _store_at(url, Path(folder).expanduser() if folder else config.data_dir())


def _store_at(url: str | None, folder: Path) -> Store:
    key = (os.getpid(), "server", url) if url else (os.getpid(), "embedded", str(folder))
    with _cache_lock:
        store = _cache.get(key)
        if store is None:
            if url:
                from .server import ServerStore

                store = ServerStore(url)
            else:
                from .embedded import EmbeddedStore

                store = EmbeddedStore(folder)
            _cache[key] = store
        return store


def reset_stores() -> None:
    """Close and forget the cached stores (tests, or after changing settings)."""
    with _cache_lock:
        for store in _cache.values():
            store.close()
        _cache.clear()
