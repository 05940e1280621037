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

__all__ = ["Store", "TABLES", "Table", "TableInfo", "get_store",
           "get_table", "is_initialised", "reset_stores"]

_cache: dict[tuple[int, str, str], Store] = {}
_cache_lock = threading.Lock()


def is_initialised(folder: Path) -> bool:
    """True when ``folder`` holds an embedded store made by ``ooniutils data init``."""
    return config.store_initialised(folder)


def _not_initialised(folder: Path) -> ConfigError:
    what = "does not exist" if not folder.exists() else "is not an initialised store"
    return ConfigError(
        f"OONI_DATA_DIR={folder} {what}: set OONI_DATA_DIR to the folder that holds the data "
        f"(or OONI_CLICKHOUSE_URL for a ClickHouse server), or create a store there with "
        f"`ooniutils data init`", "OONI_DATA_DIR")


def get_store(*, create: bool = False) -> Store:
    """The store notebooks and commands use (settings are read at each call).

    ``create=True`` makes the embedded store's folder and tables when missing (what
    ``ooniutils data init`` does); without it a missing or never-initialised folder, or no
    data source at all, raises :class:`ConfigError` naming ``OONI_DATA_DIR`` /
    ``OONI_CLICKHOUSE_URL``.
    """
    url = config.get("OONI_CLICKHOUSE_URL")
    folder = None if url else config.data_dir()
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
                    raise _not_initialised(folder)
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
