"""The run ledger: every run's row, each notebook's bookkeeping, the run alerts' memory and
the scheduler's heartbeat, behind one interface (:class:`RunStore`).

    from jupycron.ledger import open_store
    store = open_store(settings)             # <output>/.jupycron.sqlite
    entry = store.load().get("daily_autorun.ipynb")

See :mod:`jupycron.ledger.base` (the interface, the claim rule), :mod:`.sqlite` (the file),
:mod:`.memory` (in memory) and :mod:`.importer` (``.history.json`` of older versions).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import INTERRUPTED_RETRIES, NotebookHistory, Purged, RunStore, runner_alive, served_slot
from .memory import MemoryRunStore
from .sqlite import SqliteRunStore, ledger_file

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["INTERRUPTED_RETRIES", "MemoryRunStore", "NotebookHistory", "Purged", "RunStore",
           "SqliteRunStore", "ledger_file", "open_store", "runner_alive", "served_slot"]


def open_store(settings: Settings | None = None, *, output_dir: Path | str | None = None,
               keep: int | None = None) -> RunStore:
    """The run ledger of ``settings.output_dir`` (or ``output_dir``), keeping
    ``settings.history_runs`` (or ``keep``, default 100) runs per notebook."""
    if output_dir is None:
        if settings is None:
            raise ValueError("open_store needs settings or output_dir")
        output_dir = settings.output_dir
    if keep is None:
        keep = settings.history_runs if settings is not None else 100
    return SqliteRunStore(output_dir, keep=keep)
