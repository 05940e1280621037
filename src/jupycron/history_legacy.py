"""Import the run history of OONI's old jupycron (the single-file script this project replaces).

The old tool kept ``<output>/.history.json`` as one row per notebook, its last run only::

    {"notebooks": {"<path>.ipynb": ["<timestamp>", "success" | "failed" | "not run", <elapsed s>]}}

:func:`convert` turns such a document into this package's entries (the ``"notebooks"`` value
of history format 1, see :mod:`jupycron.models`), so the first load after the switch shows
each notebook's last run with its time, outcome and duration instead of moving the file aside
as corrupt. The run ledger's importer (:mod:`jupycron.ledger.importer`) calls it once and
keeps the original as ``.history.json.imported``.

How a row maps to a run:

* the timestamp (ISO 8601 with ``T`` or a space, seconds and fraction optional, ``Z`` or an
  offset optional — the old tool wrote naive UTC —, or Unix seconds) is the run's start,
  and its schedule slot (so the due rule sees the slot as served); ``elapsed`` (seconds,
  ``null`` when unknown) gives ``duration_s`` and ``finished_at``;
* ``success`` → SUCCESS, ``failed`` → FAILED (the old tool kept no error text: the run says
  so), ``not run`` → no run: the notebook was seen but never run; its time (may be null, its
  elapsed is ignored) becomes ``first_seen``;
* the run's output is ``<path>.html``, the same layout as before; keys may be relative to
  the notebooks folder or absolute: an absolute key is made relative to the output folder's
  parent (the old default put the output inside the notebooks folder), else to the deepest
  folder whose HTML output exists, else it keeps its file name.

A document that is not of this shape makes :func:`convert` raise :class:`ValueError` (the
importer then treats the file as corrupt: moved aside, the ledger rebuilt from the outputs).
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from .models import Run, RunStatus, Trigger

log = logging.getLogger(__name__)

__all__ = ["LEGACY_NOTE", "convert", "is_legacy", "parse_timestamp"]

LEGACY_NOTE = "imported from the old jupycron's history"
_STATUSES = {"success": RunStatus.SUCCESS, "failed": RunStatus.FAILED}
_NOT_RUN = "not run"
# Unix seconds outside this range are not timestamps the old tool could have written.
_EPOCH_MIN, _EPOCH_MAX = 946684800, 4102444800  # 2000-01-01 .. 2100-01-01


def is_legacy(doc: Any) -> bool:
    """True for a document shaped like the old history: no ``version``, ``notebooks`` an
    object whose values are all lists (an empty ``notebooks`` counts)."""
    if not isinstance(doc, dict) or "version" in doc:
        return False
    notebooks = doc.get("notebooks")
    return isinstance(notebooks, dict) and all(isinstance(v, list) for v in notebooks.values())


def parse_timestamp(value: Any) -> datetime:
    """The old tool's timestamp as an aware UTC datetime; ValueError naming the value."""
    if isinstance(value, bool):
        raise ValueError(f"timestamp {value!r} is not a time")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and _EPOCH_MIN <= value <= _EPOCH_MAX):
            raise ValueError(f"timestamp {value!r} is not Unix seconds between 2000 and 2100")
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"timestamp {value!r} is not a string or a number")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        d = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"cannot read timestamp {value!r} (expected ISO 8601)") from exc
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _elapsed(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{key}: elapsed time {value!r} is not a number of seconds >= 0")
    return float(value)


def _relative(key: str, output_dir: Path) -> str:
    """The notebook path relative to the notebooks folder (see the module docstring)."""
    path = PurePosixPath(key)
    if not path.is_absolute():
        parts = [p for p in path.parts if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"notebook path {key!r} leaves the notebooks folder")
        return "/".join(parts)
    root = PurePosixPath(output_dir.resolve().parent.as_posix())
    if path.is_relative_to(root) and path != root:
        return path.relative_to(root).as_posix()
    tail = path.parts[1:]
    for i in range(len(tail) - 1):  # the longest suffix whose output exists
        rel = PurePosixPath(*tail[i:])
        if (output_dir / rel.with_suffix(".html")).is_file():
            return rel.as_posix()
    return path.name


def _run(rel: str, started: datetime, status: RunStatus, elapsed: float | None,
         host: str | None) -> Run:
    digest = hashlib.sha1(rel.encode("utf-8")).hexdigest()[:6]
    failed = status is RunStatus.FAILED
    return Run(notebook=rel, run_id=f"{started:%Y%m%dT%H%M%S}-{digest}", started_at=started,
               status=status, trigger=Trigger.SCHEDULE, slot=started,
               finished_at=started + timedelta(seconds=elapsed) if elapsed is not None else None,
               duration_s=elapsed, output=str(PurePosixPath(rel).with_suffix(".html")),
               host=host, error_name="Failed" if failed else None,
               error_value=f"failed under the old jupycron (it kept no error text); {LEGACY_NOTE}"
               if failed else None, extra={"imported_from_legacy": True, "note": LEGACY_NOTE})


def convert(doc: Any, output_dir: Path | str, host: str | None = None) -> dict[str, Any]:
    """The old document ``doc`` as history format 1's ``"notebooks"`` object (plain JSON).

    Raises ValueError naming the first bad row when ``doc`` is not an old-format history.
    """
    if not is_legacy(doc):
        raise ValueError('not an old jupycron history ({"notebooks": {path: [time, status, '
                         'elapsed]}})')
    out_dir = Path(output_dir)
    entries: dict[str, Any] = {}
    for key, row in doc["notebooks"].items():
        if not isinstance(key, str) or not key.endswith(".ipynb"):
            raise ValueError(f"notebook key {key!r} does not end in .ipynb")
        if len(row) != 3:
            raise ValueError(f"{key}: expected [time, status, elapsed], got {row!r}")
        stamp, status, elapsed = row
        rel = _relative(key, out_dir)
        if rel in entries:
            raise ValueError(f"{key}: two rows for the notebook {rel}")
        if status == _NOT_RUN:  # seen, never run: no time or duration to trust beyond "seen"
            seen = None if stamp is None else parse_timestamp(stamp)
            entries[rel] = {"runs": [], "deleted_at": None, "last_success_output": None,
                            "first_seen": seen.isoformat() if seen else None}
            continue
        started = parse_timestamp(stamp)
        seconds = _elapsed(elapsed, key)
        if status not in _STATUSES:
            raise ValueError(f"{key}: status {status!r} is not one of success, failed, not run")
        run = _run(rel, started, _STATUSES[status], seconds, host)
        entries[rel] = {"runs": [run.to_json()], "deleted_at": None,
                        "last_success_output": None, "first_seen": started.isoformat()}
    return entries
