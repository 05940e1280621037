"""The measurement store: :func:`get_store` picks the back-end from the settings.

``OONI_CLICKHOUSE_URL`` set → :class:`~.server.ServerStore` (a ClickHouse server);
otherwise → :class:`~.embedded.EmbeddedStore` in ``OONI_DATA_DIR``. One store per process
and location is kept and reused.

Nothing here creates a store as a side effect: with no data source configured, or an
``OONI_DATA_DIR`` that ``ooniutils data init`` never initialised, :func:`get_store` raises
:class:`~ooniutils.exceptions.ConfigError` naming the settings to set, so a notebook that
reads data fails (🔴) instead of reporting on an empty store. Only ``get_store(create=True)``
(``ooniutils data init``) makes the folder and its tables. The writers (``data generate``,
``load-sql``, ``load-test-lists``, ``logs ship``) need an initialised store too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .. import config
from ..exceptions import ConfigError
from .base import Store, TableInfo
from .schema import TABLES, Table, get_table

__all__ = ["Store", "TABLES", "Table", "TableInfo", "get_logs_store", "get_store",
           "get_table", "is_initialised", "reset_stores"]

_cache: dict[tuple[int, str, str], Store] = {}
_cache_lock = threading.Lock()


def is_initialised(folder: Path) -> bool:
    """True when ``folder`` holds an embedded store made by ``ooniutils data init``."""
    return config.store_initialised(folder)


def _not_initialised(folder: Path, setting: str) -> ConfigError:
    what = "does not exist" if not folder.exists() else "is not an initialised store"
    server = "OONI_LOGS_CLICKHOUSE_URL" if setting == "OONI_LOGS_DATA_DIR" else "OONI_CLICKHOUSE_URL"
    return ConfigError(
        f"{setting}={folder} {what}: set {setting} to the folder that holds the data "
        f"(or {server} for a ClickHouse server), or create a store there with "
        f"`OONI_DATA_DIR={folder} ooniutils data init`", setting)


def get_store(*, create: bool = False) -> Store:
    """The store notebooks and commands use (settings are read at each call).

    ``create=True`` makes the embedded store's folder and tables when missing (what
    ``ooniutils data init`` does); without it a missing or never-initialised folder, or no
    data source at all, raises :class:`ConfigError` naming ``OONI_DATA_DIR`` /
    ``OONI_CLICKHOUSE_URL``.
    """
    url = config.get("OONI_CLICKHOUSE_URL")
    return _store_at(url, None if url else config.data_dir(), create, "OONI_DATA_DIR")


def get_logs_store(*, create: bool = False) -> Store:
    """The store holding the ``logs`` table: ``OONI_LOGS_CLICKHOUSE_URL``, else an embedded
    store in ``OONI_LOGS_DATA_DIR``, else the measurements' store (:func:`get_store`).
    Never creates one unless ``create`` (same rule as :func:`get_store`)."""
    url = config.get("OONI_LOGS_CLICKHOUSE_URL")
    folder = config.get("OONI_LOGS_DATA_DIR")
    if not url and not folder:
        return get_store(create=create)
    return _store_at(url, None if url else Path(str(folder)).expanduser().absolute(), create,
                     "OONI_LOGS_DATA_DIR")


def _store_at(url: str | None, folder: Path | None, create: bool, setting: str) -> Store:
    key = (os.getpid(), "server", url) if url else (os.getpid(), "embedded", str(folder))
    with _cache_lock:
        store = _cache.get(key)
        if store is None:
            if url:
                from .server import ServerStore

                store = ServerStore(url)
            else:
                assert folder is not None
                if not create and not is_initialised(folder):
                    raise _not_initialised(folder, setting)
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
