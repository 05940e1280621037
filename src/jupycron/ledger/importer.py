"""One-time import of the JSON state files the SQLite ledger replaces.

* ``<output>/.history.json`` - this product's history (format 1: ``{"version": 1,
  "notebooks": {rel: {"runs": [...], "deleted_at", "last_success_output", "first_seen"}}}``)
  or the old jupycron's (``{"notebooks": {path: [time, status, elapsed]}}``, converted by
  :mod:`jupycron.history_legacy`);
* ``<output>/.alert-state.json`` - the run alerts' memory of what each channel was told.

Every notebook key, entry and run is checked (:mod:`jupycron.history_check`) before it is
imported; a damaged one is refused with a warning naming it and the reason, and the rest is
imported. The file is then renamed ``<name>.imported``, so nothing is lost; it is never
imported twice (the ledger notes the file's inode, size and mtime in the import's
transaction, and the rename follows the commit: of processes opening the ledger at once, one
imports and the others find its runs). A file that is not a history at all (bad JSON,
wrong shape, an old-format file with a bad row) is renamed ``<name>.corrupt-<UTC stamp>``
instead and, when the ledger holds nothing yet, the ledger is rebuilt from the HTML outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import history_legacy
from ..history_check import check_entry_fields, check_notebook_key, check_run
from ..models import Run
from ..paths import history_file
from .base import NotebookHistory

if TYPE_CHECKING:
    from .sqlite import SqliteRunStore

log = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "IMPORTED_SUFFIX", "Imported", "import_json_files", "parse_history"]

FORMAT_VERSION = 1
IMPORTED_SUFFIX = ".imported"
HISTORY_JSON = history_file(Path()).name
ALERT_STATE_JSON = ".alert-state.json"


class Imported:
    """What :func:`parse_history` kept: ``entries[rel] = (fields, runs)`` and ``refused``
    (one line per damaged part left out)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[dict[str, Any], list[Run]]] = {}
        self.refused: list[str] = []


def parse_history(doc: Any, output_dir: Path) -> Imported:
    """The sound part of a ``.history.json`` document (either format).

    Raises ValueError when ``doc`` is not a history of either format (the caller moves the
    file aside)."""
    if not isinstance(doc, dict):
        raise ValueError("the top level is not an object")
    if history_legacy.is_legacy(doc):
        notebooks: Any = history_legacy.convert(doc, output_dir)
    else:
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        notebooks = doc.get("notebooks")
        if not isinstance(notebooks, dict):
            raise ValueError('"notebooks" is not an object')
    out = Imported()
    for rel, entry in notebooks.items():
        try:
            check_notebook_key(rel)
            check_entry_fields(entry)
        except ValueError as exc:
            out.refused.append(f"the entry {_short(rel)}: {exc}")
            continue
        runs = []
        for raw in entry.get("runs", []):
            try:
                check_run(raw)
                run = Run.from_json(raw)
                if run.notebook != rel:
                    raise ValueError(f'"notebook" is {run.notebook!r}, not its entry\'s key')
            except (ValueError, TypeError, KeyError) as exc:
                rid = raw.get("run_id") if isinstance(raw, dict) else None
                out.refused.append(f"a run ({_short(rid)}) of {rel}: {exc}")
                continue
            runs.append(run)
        out.entries[rel] = (entry, runs)
    return out


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _aside(path: Path, kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
        n += 1
    return dest


def import_json_files(store: SqliteRunStore) -> None:
    """Import ``.history.json`` and ``.alert-state.json`` of ``store``'s outputs folder
    when present (see the module docstring). Problems are logged, never raised: the ledger
    works without them."""
    assert store.output_dir is not None
    history = store.output_dir / HISTORY_JSON
    if history.exists():
        try:
            _import_history(store, history)
        except Exception:
            log.exception("cannot import %s into the run ledger (left in place, retried at the "
                          "next start)", history)
    alerts = store.output_dir / ALERT_STATE_JSON
    if alerts.exists():
        try:
            _import_alert_state(store, alerts)
        except Exception:
            log.exception("cannot import %s into the run ledger (left in place)", alerts)


def _import_history(store: SqliteRunStore, path: Path) -> None:
    with store._transaction("import into") as conn:
        dest = _import_in(store, conn, path)
    if dest is not None:  # renamed only once committed: a file still there is not imported
        with contextlib.suppress(FileNotFoundError):  # another process renamed it
            os.replace(path, dest)


def _import_in(store: SqliteRunStore, conn: sqlite3.Connection, path: Path) -> Path | None:
    """Inside the import's transaction: import ``path`` unless this very file (inode, size,
    mtime) was imported already; returns the name to keep it as (renamed after the commit)."""
    assert store.output_dir is not None
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # another process imported it meanwhile
    marker = f"imported:{path.name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    done = conn.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is not None
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 1)", (marker,))
    try:
        try:
            doc = json.loads(raw)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        parsed = parse_history(doc, store.output_dir)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        dest = _aside(path, "corrupt")
        if done:
            return dest
        empty = conn.execute("SELECT count(*) FROM notebooks").fetchone()[0] == 0
        log.warning("%s is not a run history (%s): kept it as %s%s", path,
                    str(exc) or type(exc).__name__, dest.name,
                    "; rebuilding the ledger from the HTML outputs" if empty else "")
        if empty:
            _rebuild(store, conn)
        return dest
    dest = path.with_name(path.name + IMPORTED_SUFFIX)
    if dest.exists():
        dest = _aside(path, "imported")  # never overwrite an earlier import's file
    if done:
        return dest
    for problem in parsed.refused:
        log.warning("%s: refused %s", path.name, problem)
    store.write_entries(conn, {
        rel: NotebookHistory(runs=runs, deleted_at=_parse(fields.get("deleted_at")),
                             last_success_output=fields.get("last_success_output"),
                             first_seen=_parse(fields.get("first_seen")))
        for rel, (fields, runs) in parsed.entries.items()})
    log.warning("imported %s into the run ledger %s: %d notebook(s), %d run(s), %d damaged "
                "part(s) refused; the file is kept as %s", path, store.path,
                len(parsed.entries), sum(len(r) for _, r in parsed.entries.values()),
                len(parsed.refused), dest.name)
    return dest


def _parse(v: str | None) -> datetime | None:
    if v is None:
        return None
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _rebuild(store: SqliteRunStore, conn: sqlite3.Connection) -> None:
    from ..retention import rebuild_from_outputs
    assert store.output_dir is not None
    rebuilt = rebuild_from_outputs(store.output_dir, store.keep)
    store.write_entries(conn, {rel: NotebookHistory(**e) for rel, e in rebuilt.items()})


def _import_alert_state(store: SqliteRunStore, path: Path) -> None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): the run alerts start from an empty state", path, exc)
        os.replace(path, _aside(path, "corrupt"))
        return
    if not isinstance(doc, dict):
        log.warning("%s has an unexpected shape: the run alerts start from an empty state", path)
        os.replace(path, _aside(path, "corrupt"))
        return
    if store.alert_state("run_alerts") is None:
        store.save_alert_state("run_alerts", doc)
    os.replace(path, path.with_name(path.name + IMPORTED_SUFFIX))
    log.info("imported %s into the run ledger (kept as %s%s)", path, path.name, IMPORTED_SUFFIX)
