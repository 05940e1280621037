"""Output retention: the files a notebook's runs leave in the outputs folder.

* ``<output>/<rel>.html`` is the latest run's page (written by the runner);
* :func:`keep_success_copy` keeps the page of the latest *successful* run as
  :func:`jupycron.paths.kept_html` (``<rel>.success-<run_id>.html``), and
  :func:`remove_other_kept` removes the copies it supersedes, so a failing notebook still
  shows its last good output;
* :func:`remove_outputs` removes every output of a purged (deleted) notebook;
* :func:`rebuild_from_outputs` turns the pages on disk back into runs, for a ledger that
  had to be set aside (corrupt): the outputs are never lost, and what happened is shown.

The run ledger (:class:`jupycron.ledger.RunStore`) calls these from ``record`` and ``purge``.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safefiles.atomic import atomic_copy

from .models import Run, RunStatus
from .paths import kept_html, kept_html_glob, lock_file, notebook_for_output, output_html

log = logging.getLogger(__name__)

__all__ = ["REBUILT_NOTE", "keep_success_copy", "rebuild_from_outputs", "remove_other_kept",
           "remove_outputs"]

REBUILT_NOTE = "rebuilt from outputs after a corrupt run ledger"


def _rel_out(output_dir: Path, p: Path) -> str:
    return p.relative_to(output_dir).as_posix()


def keep_success_copy(output_dir: Path, run: Run, retry: bool = False) -> str | None:
    """Copy a successful run's page to its kept name; returns it relative to ``output_dir``
    (None when the run has no page or the copy failed: logged, at debug level on a ``retry``)."""
    if not run.output:
        return None
    src = output_dir / run.output
    dst = kept_html(output_dir, run.notebook, run.run_id)
    if dst.exists():
        return _rel_out(output_dir, dst)
    try:
        atomic_copy(src, dst)
    except OSError as exc:
        log.log(logging.DEBUG if retry else logging.WARNING,
                "cannot keep a copy of %s's successful output %s: %s", run.notebook, src, exc)
        return None
    return _rel_out(output_dir, dst)


def remove_other_kept(output_dir: Path, rel: str, keep_rel: str | None) -> None:
    """Remove ``rel``'s kept success copies other than ``keep_rel``."""
    for p in output_dir.glob(kept_html_glob(rel)):
        if _rel_out(output_dir, p) != keep_rel:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                log.debug("removed superseded success copy %s", p)


def remove_outputs(output_dir: Path, rel: str) -> list[Path]:
    """Remove every output file of the notebook ``rel`` (and folders left empty)."""
    candidates = [output_html(output_dir, rel), lock_file(output_dir, rel),
                  *output_dir.glob(kept_html_glob(rel))]
    removed = []
    for p in candidates:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", p, exc.strerror)
    for p in {c.parent for c in candidates}:
        _remove_empty_parents(p, output_dir)
    return removed


def rebuild_from_outputs(output_dir: Path, keep: int) -> dict[str, dict[str, Any]]:
    """The runs the HTML files in ``output_dir`` show, per notebook:
    ``{rel: {"runs": [Run, ...] newest first, "last_success_output": rel|None,
    "first_seen": datetime}}`` (:meth:`jupycron.ledger.NotebookHistory`'s fields).

    Each kept success copy becomes a SUCCESS run; a latest page that is not also the newest
    kept copy becomes a run whose outcome is unknown (INTERRUPTED, ``error_value`` saying so,
    ``extra["status_unknown"]``). Every such run has ``extra["rebuilt_from_outputs"]``.
    """
    found: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(output_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            full = Path(dirpath) / name
            mapped = notebook_for_output(_rel_out(output_dir, full))
            if mapped is None:
                continue
            nb, run_id = mapped
            slot = found.setdefault(nb, {"latest": None, "kept": []})
            if run_id is None:
                slot["latest"] = full
            else:
                slot["kept"].append((run_id, full))
    data: dict[str, dict[str, Any]] = {}
    host = socket.gethostname()
    for nb, info in found.items():
        runs: list[Run] = []
        kept_rel = None
        for run_id, full in sorted(info["kept"]):
            started = _run_id_time(run_id) or _mtime(full)
            runs.append(Run(notebook=nb, run_id=run_id, started_at=started,
                            status=RunStatus.SUCCESS, finished_at=_mtime(full),
                            output=_rel_out(output_dir, full), host=host,
                            extra={"rebuilt_from_outputs": True, "note": REBUILT_NOTE}))
            kept_rel = _rel_out(output_dir, full)
        latest = info["latest"]
        # The latest output is the newest kept copy when the last run succeeded.
        if latest is not None and not (
                info["kept"] and filecmp.cmp(latest, info["kept"][-1][1], shallow=False)):
            mtime = _mtime(latest)
            digest = hashlib.sha1(nb.encode("utf-8")).hexdigest()[:6]
            runs.append(Run(notebook=nb, run_id=f"{mtime:%Y%m%dT%H%M%S}-{digest}",
                            started_at=mtime, status=RunStatus.INTERRUPTED,
                            finished_at=mtime, output=_rel_out(output_dir, latest), host=host,
                            error_name="Unknown", error_value=REBUILT_NOTE,
                            extra={"rebuilt_from_outputs": True, "status_unknown": True}))
        if not runs:
            continue
        runs.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
        data[nb] = {"runs": runs[:keep], "last_success_output": kept_rel,
                    "first_seen": min(r.started_at for r in runs)}
    return data


def _run_id_time(run_id: str) -> datetime | None:
    try:
        return datetime.strptime(run_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _mtime(p: Path) -> datetime:
    return datetime.fromtimestamp(p.stat().st_mtime, tz=UTC)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    path, stop = path.resolve(), stop.resolve()
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
