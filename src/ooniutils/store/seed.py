"""The fixed rows of lookup tables (:attr:`~ooniutils.store.schema.Table.seed`, e.g.
``test_groups``), inserted by both stores' ``init`` (and re-exported by :mod:`.loaders`).

A module of its own so the stores can call it without importing the loaders (which use the
embedded store's chDB session to parse SQL dumps).
"""

from __future__ import annotations

import logging

import pandas as pd

from .base import Store
from .schema import TABLES, Table

log = logging.getLogger(__name__)

__all__ = ["seed_tables"]


def seed_tables(store: Store) -> int:
    """Insert the :attr:`~ooniutils.store.schema.Table.seed` rows each table lacks; returns
    how many were inserted (0 on a second call)."""
    inserted = 0
    for table in TABLES.values():
        if table.seed:
            inserted += _seed_one(store, table)
    return inserted


def _seed_one(store: Store, table: Table) -> int:
    def missing() -> list[tuple[str, ...]]:
        cols = ", ".join(f"`{c}`" for c in table.column_names)
        have = store.query(f"SELECT {cols} FROM `{table.name}`")
        stored = {tuple(str(v) for v in row) for row in have.itertuples(index=False, name=None)}
        return [row for row in table.seed if row not in stored]

    if not missing():  # the usual case: no lock, nothing written (a read-only store works)
        return 0
    with store.exclusive(table.name):
        rows = missing()
        if rows:
            store.insert(table.name, pd.DataFrame(rows, columns=table.column_names))
    log.info("seeded %d row(s) of %s", len(rows), table.name)
    return len(rows)
