"""Test helpers: put runs into an outputs folder's run ledger as a whole."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jupycron.ledger import NotebookHistory, SqliteRunStore
from jupycron.ledger.importer import parse_history


def write_history_doc(output_dir: Path, doc: dict[str, Any]) -> None:
    """Replace the ledger's notebooks named in ``doc`` (a history document of format 1:
    ``{"version": 1, "notebooks": {rel: {"runs": [Run.to_json()...], ...}}}``) by them.
    Every part must be sound (a test fixture is not a damaged file)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    parsed = parse_history(doc, output_dir)
    assert not parsed.refused, parsed.refused

    def dt(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    store = SqliteRunStore(output_dir, keep=max([100] + [len(r) for _, r in
                                                         parsed.entries.values()]))
    store.replace_entries({rel: NotebookHistory(
        runs=runs, deleted_at=dt(f.get("deleted_at")), first_seen=dt(f.get("first_seen")),
        last_success_output=f.get("last_success_output"))
        for rel, (f, runs) in parsed.entries.items()})
    store.close()


def write_heartbeat(output_dir: Path, beat: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteRunStore(output_dir)
    store.write_heartbeat(beat)
    store.close()


def read_heartbeat(output_dir: Path) -> dict[str, Any] | None:
    store = SqliteRunStore(output_dir)
    try:
        return store.heartbeat()
    finally:
        store.close()
