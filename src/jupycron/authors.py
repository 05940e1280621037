"""Who last saved each notebook in the editor: ``<output>/.authors.json``.

Written by the Jupyter server's save hook (:mod:`jupycron.authoring`), read by the dashboard's
notebook page. One entry per notebook path (relative to the notebooks folder, ``/``
separated)::

    {"version": 1,
     "notebooks": {"ops/autorun_x.ipynb": {"user": "alice",
                                           "saved_at": "2026-12-06T10:40:00+00:00"}}}

Every update holds an exclusive :func:`safefiles.locks.locked` on ``<output>/.authors.json.lock`` (two
saves at once both land) and replaces the file atomically (a reader never sees half a file).
The file starts with a dot, so the dashboard never serves it as an output. A corrupt file is
moved aside to ``.authors.json.corrupt-<ts>`` (logged) and a new one started: the record is a
convenience, never a reason to refuse a save. A notebook renamed in the editor has no author
until its next save under the new name (the hook sees saves, not renames).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safefiles.atomic import atomic_write_bytes
from safefiles.locks import locked

log = logging.getLogger(__name__)

__all__ = ["Authorship", "authors_file", "last_saved", "load_authors", "record_save"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Authorship:
    """The last save of one notebook: by whom (the name the login proxy vouched for) and when."""

    user: str
    saved_at: datetime


def authors_file(output_dir: Path) -> Path:
    return Path(output_dir) / ".authors.json"


def _parse(raw: bytes, path: Path) -> dict[str, Any]:
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("notebooks"), dict):
        raise ValueError(f"{path}: not an authorship record (no 'notebooks' table)")
    return doc


def load_authors(output_dir: Path) -> dict[str, Authorship]:
    """Every notebook's last save; ``{}`` when nothing was saved yet or the file is unreadable
    (logged: the dashboard then shows no author rather than an error page)."""
    path = authors_file(output_dir)
    try:
        doc = _parse(path.read_bytes(), path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    out: dict[str, Authorship] = {}
    for rel, entry in doc["notebooks"].items():
        try:
            out[rel] = Authorship(str(entry["user"]), datetime.fromisoformat(entry["saved_at"]))
        except (KeyError, TypeError, ValueError):
            log.warning("%s: ignoring malformed entry for %r", path, rel)
    return out


def last_saved(output_dir: Path, rel: str) -> Authorship | None:
    return load_authors(output_dir).get(rel)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with locked(f"{path}.lock"):
        yield


def record_save(output_dir: Path, rel: str, user: str, now: datetime | None = None) -> Authorship:
    """Record that ``user`` saved notebook ``rel`` (at ``now``, default the current time)."""
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise ValueError(f"notebook path {rel!r} must be relative to the notebooks folder")
    if not user:
        raise ValueError("the author's name is empty")
    saved = Authorship(user, (now or datetime.now(UTC)).astimezone(UTC))
    path = authors_file(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            doc = _parse(path.read_bytes(), path)
        except FileNotFoundError:
            doc = {"version": FORMAT_VERSION, "notebooks": {}}
        except (OSError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(saved.saved_at.timestamp())}")
            log.error("%s is unreadable (%s): moved to %s, starting a new record", path, exc,
                      aside)
            with contextlib.suppress(OSError):
                path.replace(aside)
            doc = {"version": FORMAT_VERSION, "notebooks": {}}
        doc["notebooks"][rel] = {"user": saved.user, "saved_at": saved.saved_at.isoformat()}
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        atomic_write_bytes(path, data)
    log.info("%s saved %s", user, rel)
    return saved
