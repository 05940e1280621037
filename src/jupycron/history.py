"""The run history: ``<output>/.history.json`` (format in :mod:`jupycron.models`).

Several processes write it (concurrent ``jupycron tick`` runs, the daemon, the web server's
run-now), so every read-modify-write holds an exclusive :func:`fcntl.flock` on the sidecar
``.history.json.lock`` and the new content is written to a temporary file in the same folder,
fsync'ed and renamed over the old one: readers never see a half-written file, and a process
killed at any point leaves either the old or the new history.

Besides the documented keys each notebook entry holds ``"first_seen"`` (ISO UTC): when the
notebook was first discovered (set by :meth:`History.mark_deleted`). The due rule uses it for
notebooks that have never had a scheduled run (see :mod:`jupycron.schedule`).

A corrupt file (bad JSON or wrong shape) is never silently emptied: it is moved aside to
``.history.json.corrupt-<UTC yyyymmddTHHMMSSZ>`` with a warning, and the history is rebuilt
from the HTML outputs on disk: each kept success copy becomes a SUCCESS run, and a latest
output that is not also the kept copy becomes a run whose outcome is unknown (recorded as
INTERRUPTED with ``extra["rebuilt_from_outputs"] = True`` and ``error_value`` saying so).

Cost of a write: a :class:`History` keeps, per object, the JSON text of every entry of the
file as it last wrote it, with the file's stamp ``(mtime_ns, size, inode, ctime_ns)``. When
the file under the lock still has that stamp (nobody else wrote since: every write renames a
new file in, so it gets a new inode and ctime), :meth:`History.update_entry` reuses that text
and only encodes the one entry it changes: recording a run costs that notebook's runs, not
the whole history's. Otherwise the file is read, every entry checked, and the text rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import psutil

from safefiles.atomic import atomic_copy, atomic_write_bytes

from . import history_legacy
from .exceptions import HistoryError
from .history_check import check_entry_fields, check_notebook_key, check_run
from .models import Run, RunStatus, Trigger
from .paths import (
    history_file,
    history_lock_file,
    kept_html,
    kept_html_glob,
    lock_file,
    notebook_for_output,
    output_html,
)

log = logging.getLogger(__name__)

__all__ = ["REBUILT_NOTE", "CachedHistory", "History", "NotebookHistory", "Purged", "Stamp", "file_stamp",
           "runner_alive"]

FORMAT_VERSION = 1
REBUILT_NOTE = "rebuilt from outputs after corrupt history"
T = TypeVar("T")

Stamp: TypeAlias = tuple[int, int, int, int]
"""A file's identity: ``(mtime_ns, size, inode, ctime_ns)``."""


def file_stamp(st: os.stat_result) -> Stamp:
    """The :data:`Stamp` of a ``stat`` result."""
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _encode(raw: Any) -> str:
    # No indent: json's C encoder only serves compact output (~4x faster).
    return json.dumps(raw, ensure_ascii=False)


def _member(rel: str, text: str) -> bytes:
    """``"<rel>": <entry JSON>`` as it appears in the file's ``notebooks`` object."""
    return f"{_encode(rel)}: {text}".encode()


@dataclass(frozen=True)
class _Mirror:
    """The history file as this object last wrote it: its stamp and, per notebook, the
    entry's JSON text and its ``"<rel>": <entry>`` bytes in the file."""

    stamp: Stamp
    texts: dict[str, str]
    members: dict[str, bytes]


class _Reencoder:
    """Encodes an entry after a change, reusing the JSON of the runs that did not change.

    :meth:`Run.to_json` (``dataclasses.asdict``) costs ~0.3 ms a run, i.e. ~30 ms for a
    100-run entry at each run's start and end; comparing with a second parse of the entry's
    old text is ~20 times cheaper. The second parse comes from its own ``json.loads``, so
    nothing ``fn`` changes in the entry can reach it.
    """

    def __init__(self, text: str | None) -> None:
        self._old: dict[str, tuple[dict[str, Any], Run]] = {}
        if text is not None:
            runs = json.loads(text).get("runs")
            for raw in runs if isinstance(runs, list) else []:
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                    run = Run.from_json(raw)
                    self._old[run.run_id] = (raw, run)

    def run_json(self, run: Run) -> dict[str, Any]:
        old = self._old.get(run.run_id)
        return old[0] if old is not None and old[1] == run else run.to_json()


def _iso(d: datetime | None) -> str | None:
    return d.astimezone(UTC).isoformat() if d is not None else None


def _parse_dt(v: Any) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"expected an ISO datetime string, got {v!r}")
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _sort_key(run: Run) -> tuple[datetime, str]:
    return (run.started_at, run.run_id)


@dataclass
class NotebookHistory:
    """One notebook's entry: runs newest first plus bookkeeping."""

    runs: list[Run] = field(default_factory=list)
    deleted_at: datetime | None = None
    last_success_output: str | None = None   # kept HTML copy, relative to the output folder
    first_seen: datetime | None = None

    @property
    def latest(self) -> Run | None:
        """The newest run of any status (may be RUNNING)."""
        return self.runs[0] if self.runs else None

    @property
    def running(self) -> list[Run]:
        return [r for r in self.runs if r.status is RunStatus.RUNNING]

    @property
    def last_finished(self) -> Run | None:
        """The newest run that is not RUNNING."""
        return next((r for r in self.runs if r.status is not RunStatus.RUNNING), None)

    @property
    def last_success(self) -> Run | None:
        return next((r for r in self.runs if r.status is RunStatus.SUCCESS), None)

    @property
    def last_scheduled_slot(self) -> datetime | None:
        """The latest slot served by a scheduled run, whatever its outcome (the due rule's input)."""
        slots = [r.slot for r in self.runs if r.trigger is Trigger.SCHEDULE and r.slot is not None]
        return max(slots) if slots else None

    @property
    def consecutive_failures(self) -> int:
        """Failures (failed/timeout/oom/crashed) since the last success, newest first.

        RUNNING and INTERRUPTED rows neither count nor break the streak.
        """
        n = 0
        for r in self.runs:
            if r.status is RunStatus.SUCCESS:
                break
            if r.status.is_failure:
                n += 1
        return n

    def to_json(self, run_json: Callable[[Run], dict[str, Any]] | None = None) -> dict[str, Any]:
        """The entry as JSON; ``run_json`` (default :meth:`Run.to_json`) encodes each run."""
        encode = run_json or Run.to_json
        return {
            "runs": [encode(r) for r in self.runs],
            "deleted_at": _iso(self.deleted_at),
            "last_success_output": self.last_success_output,
            "first_seen": _iso(self.first_seen),
        }

    @classmethod
    def from_json(cls, d: Any, bad_runs: list[str] | None = None) -> NotebookHistory:
        """Parse an entry, every field checked (:mod:`jupycron.history_check`); ValueError
        names the first problem. With ``bad_runs``, unsound runs are left out instead and
        their problems appended to it (the entry's own fields must still be sound)."""
        check_entry_fields(d)
        runs = []
        for r in d.get("runs", []):
            try:
                check_run(r)
            except ValueError as exc:
                if bad_runs is None:
                    raise
                bad_runs.append(str(exc))
                continue
            runs.append(Run.from_json(r))
        lso = d.get("last_success_output")
        runs.sort(key=_sort_key, reverse=True)
        return cls(runs=runs, deleted_at=_parse_dt(d.get("deleted_at")),
                   last_success_output=lso, first_seen=_parse_dt(d.get("first_seen")))


@dataclass(frozen=True)
class Purged:
    """A notebook whose history and outputs :meth:`History.purge` removed."""

    notebook: str
    deleted_at: datetime
    files: tuple[Path, ...]


class _Corrupt(Exception):
    pass


def runner_alive(run: Run) -> bool:
    """Default orphan test: is the process that recorded this RUNNING row still there?

    Rows from another host, or without a pid, are assumed alive (we cannot tell). A pid that
    now belongs to a process started after the run began is a reused pid, i.e. gone.
    """
    if run.host and run.host != socket.gethostname():
        return True
    if run.pid is None:
        return True
    try:
        proc = psutil.Process(run.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= run.started_at.timestamp() + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


class History:
    """Read and update ``<output>/.history.json``.

    Example::

        h = History(settings.output_dir, keep=settings.history_runs)
        h.record(run)                      # upsert by run_id, capped, atomic
        entry = h.load().get("a/b_autorun.ipynb")
    """

    def __init__(self, output_dir: Path | str, keep: int = 100) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.output_dir = Path(output_dir)
        self.keep = keep
        self.path = history_file(self.output_dir)
        self.lock_path = history_lock_file(self.output_dir)
        # The file as this object last wrote it; only used and replaced under the flock, so
        # threads sharing the object see a consistent one (module docstring: cost of a write).
        self._mirror: _Mirror | None = None

    # --- low level ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise HistoryError(f"cannot open history lock {self.lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read_raw(self) -> dict[str, Any]:
        """The file's notebook entries as plain JSON (shape of the document checked, entries
        not parsed); {} when absent; _Corrupt when unreadable as a history.

        Keeps no state in the object: :meth:`load` calls it without the lock, from any thread.
        """
        try:
            with self.path.open("rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise HistoryError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            try:
                doc = json.loads(raw)
            except RecursionError:
                raise ValueError("nested too deeply") from None
            if not isinstance(doc, dict):
                raise ValueError("the top level is not an object")
            if history_legacy.is_legacy(doc):  # the old jupycron's file: import its last runs
                history_legacy.backup_legacy(self.path)
                return history_legacy.convert(doc, self.output_dir)
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            notebooks = doc.get("notebooks")
            if not isinstance(notebooks, dict):
                raise ValueError('"notebooks" is not an object')
            return notebooks
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _Corrupt(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _parse_entry(raw: Any) -> NotebookHistory:
        try:
            return NotebookHistory.from_json(raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _Corrupt(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _check_key(rel: Any) -> str:
        try:
            return check_notebook_key(rel)
        except ValueError as exc:
            raise _Corrupt(str(exc)) from exc

    def _read(self) -> dict[str, NotebookHistory]:
        """Parse the file; {} when absent; _Corrupt when unreadable as a history."""
        return {self._check_key(k): self._parse_entry(v) for k, v in self._read_raw().items()}

    def _write_raw(self, notebooks: dict[str, Any]) -> None:
        texts = {k: _encode(v) for k, v in notebooks.items()}
        self._write_encoded(texts, {k: _member(k, t) for k, t in texts.items()})

    def _write_encoded(self, texts: dict[str, str], members: dict[str, bytes]) -> Stamp | None:
        """Under the lock: write the document made of ``members`` (see :class:`_Mirror`),
        remember it and return the new file's stamp."""
        body = b", ".join(members[k] for k in sorted(members))
        self._mirror = None
        try:
            atomic_write_bytes(self.path,
                               b'{"version": %d, "notebooks": {%s}}' % (FORMAT_VERSION, body))
        except OSError as exc:  # e.g. ENOSPC: the old file is intact
            raise HistoryError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        try:  # under the lock: nobody else has written since
            stamp = file_stamp(os.stat(self.path))
        except OSError:
            return None
        self._mirror = _Mirror(stamp, texts, members)
        return stamp

    def _current_stamp(self) -> Stamp | None:
        try:
            return file_stamp(os.stat(self.path))
        except OSError:
            return None

    def _write(self, data: dict[str, NotebookHistory]) -> None:
        self._write_raw({k: v.to_json() for k, v in data.items()})

    def _read_or_recover(self, now: datetime | None = None) -> dict[str, NotebookHistory]:
        """Under the lock: read, or move a corrupt file aside and rebuild (and write) it."""
        try:
            return self._read()
        except _Corrupt as exc:
            return self._recover(str(exc), now or datetime.now(UTC))

    def _recover(self, why: str, now: datetime) -> dict[str, NotebookHistory]:
        """Move the damaged file aside; keep every sound entry and run of it, rebuild the
        rest from the HTML outputs (all of it when the document itself is unreadable)."""
        try:
            raw: dict[str, Any] | None = self._read_raw()
        except _Corrupt:
            raw = None
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(self.path, aside)
        rebuilt = self.rebuild_from_outputs(now)
        if raw is None:
            data = rebuilt
            log.warning("history %s is corrupt (%s): kept it as %s and rebuilt %d notebook(s) "
                        "from the HTML outputs", self.path, why, aside.name, len(data))
        else:
            data, kept, dropped = _salvage(raw, rebuilt)
            log.warning("history %s is damaged (%s): kept it as %s; %d notebook(s) kept, "
                        "%d damaged part(s) left out or rebuilt from the HTML outputs",
                        self.path, why, aside.name, kept, dropped)
        self._write(data)
        return data

    def update(self, fn: Callable[[dict[str, NotebookHistory]], T],
               now: datetime | None = None) -> T:
        """Run ``fn`` on the history under the lock and write it back (always)."""
        with self._locked():
            data = self._read_or_recover(now)
            result = fn(data)
            self._write(data)
            return result

    def update_entry(self, rel: str, fn: Callable[[NotebookHistory], T]) -> T:
        """:meth:`update` for one notebook's entry (created when missing).

        The other notebooks' entries are copied as JSON text, not re-serialized, and when the
        file is still the one this object last wrote they are not even read again (see the
        module docstring): a write costs one notebook's runs, not the whole history's.
        Otherwise they are checked, as :meth:`update` does; a corrupt file is recovered as
        in :meth:`update`.
        """
        with self._locked():
            before = self._current_stamp()
            mirror = self._mirror if before is not None else None
            own = mirror is not None and before == mirror.stamp
            try:
                if mirror is not None and own:
                    texts, members = dict(mirror.texts), dict(mirror.members)
                else:
                    # Not the file this object last wrote (another process wrote it, or it was
                    # edited): check every entry before copying them on.
                    notebooks = self._read_raw()
                    for other, raw in notebooks.items():
                        self._check_key(other)
                        if other != rel:
                            self._parse_entry(raw)
                    texts = {k: _encode(v) for k, v in notebooks.items()}
                    members = {k: _member(k, t) for k, t in texts.items() if k != rel}
                old = texts.get(rel)
                entry = self._parse_entry(json.loads(old)) if old is not None \
                    else NotebookHistory()
            except _Corrupt as exc:
                data = self._recover(str(exc), datetime.now(UTC))
                result = fn(data.setdefault(rel, NotebookHistory()))
                self._write(data)
                return result
            result = fn(entry)
            texts[rel] = text = _encode(entry.to_json(_Reencoder(old).run_json))
            members[rel] = _member(rel, text)
            after = self._write_encoded(texts, members)
            self._entry_written(rel, text, before, after, own)
            return result

    def _entry_written(self, rel: str, text: str, before: Stamp | None, after: Stamp | None,
                       own: bool) -> None:
        """Hook, called under the lock after :meth:`update_entry` replaced ``rel``'s entry
        with ``text`` (its JSON), turning the file stamped ``before`` (``own``: as this object
        had written it) into the one stamped ``after``. Lets a caching subclass patch its
        parsed view instead of parsing the whole file again."""

    # --- public API -----------------------------------------------------------------------

    def load(self) -> dict[str, NotebookHistory]:
        """Every notebook's history (deleted ones included), runs newest first.

        Reads without the lock (writes are atomic renames). A corrupt file is recovered
        under the lock (see module docstring). Raises HistoryError only for I/O errors.
        """
        try:
            return self._read()
        except _Corrupt:
            with self._locked():
                return self._read_or_recover()

    def get(self, rel: str) -> NotebookHistory:
        """One notebook's history (an empty one when unknown)."""
        return self.load().get(rel) or NotebookHistory()

    def record(self, run: Run, *, retry: bool = False) -> None:
        """Insert or replace ``run`` (matched by run_id) and cap the notebook's runs.

        Keeps the newest ``keep`` runs plus any older RUNNING rows. For a SUCCESS run with
        an ``output``, the HTML is copied to :func:`jupycron.paths.kept_html` (unless already
        there), ``last_success_output`` points to it, and older kept copies are removed.
        ``retry``: this write already failed once (a full disk), so a copy that fails again
        is logged at debug level only.
        """
        kept_rel = self._keep_success_copy(run, retry) if run.status is RunStatus.SUCCESS else None

        def apply(entry: NotebookHistory) -> str | None:
            if entry.first_seen is None:
                entry.first_seen = run.started_at
            runs = [r for r in entry.runs if r.run_id != run.run_id]
            runs.append(run)
            runs.sort(key=_sort_key, reverse=True)
            entry.runs = runs[: self.keep] + [r for r in runs[self.keep:]
                                              if r.status is RunStatus.RUNNING]
            if kept_rel is not None and entry.last_success is run:
                entry.last_success_output = kept_rel
            return entry.last_success_output

        # The kept copy the history points to after this write (the notebook's run lock keeps
        # other runs of the same notebook from recording meanwhile).
        current_kept = self.update_entry(run.notebook, apply)
        if kept_rel is not None:
            self._remove_other_kept(run.notebook, keep_rel=current_kept)

    def reap_orphans(self, is_alive: Callable[[int], bool] | None = None,
                     now: datetime | None = None, *,
                     run_alive: Callable[[Run], bool] | None = None) -> list[Run]:
        """Mark RUNNING runs whose runner process is gone as INTERRUPTED; return them.

        ``is_alive(pid)`` overrides the default test (:func:`runner_alive`, which also
        detects reused pids and skips rows recorded on another host); ``run_alive(run)``
        overrides both (it is asked again under the lock, on the file as it is then).
        """
        now = now or datetime.now(UTC)

        def alive(run: Run) -> bool:
            if run_alive is not None:
                return run_alive(run)
            if is_alive is None:
                return runner_alive(run)
            return run.pid is None or is_alive(run.pid)

        # Cheap check without the lock first: most calls find nothing to do.
        if not any(r.status is RunStatus.RUNNING and not alive(r)
                   for e in self.load().values() for r in e.runs):
            return []

        def apply(data: dict[str, NotebookHistory]) -> list[Run]:
            reaped = []
            for entry in data.values():
                for r in entry.runs:
                    if r.status is RunStatus.RUNNING and not alive(r):
                        r.status = RunStatus.INTERRUPTED
                        r.finished_at = now
                        r.duration_s = max(0.0, (now - r.started_at).total_seconds())
                        r.error_name = "Interrupted"
                        r.error_value = (
                            f"the runner process {r.pid} on {r.host or 'this host'} went away "
                            "during the run (killed or crashed)" if r.pid != os.getpid()
                            else f"the outcome of this run could not be written by process "
                            f"{r.pid} (e.g. the disk was full) and is lost")
                        r.extra["orphaned"] = True
                        reaped.append(r)
            return reaped

        reaped = self.update(apply, now)
        for r in reaped:
            log.warning("run %s of %s was orphaned (runner pid %s gone): marked interrupted",
                        r.run_id, r.notebook, r.pid)
        return reaped

    def mark_deleted(self, existing: Iterable[str], now: datetime) -> list[str]:
        """Reconcile with the notebooks on disk (``existing``: every discovered path).

        Notebooks missing from ``existing`` get ``deleted_at = now`` (once); ones that came
        back have it cleared; new ones get an entry with ``first_seen = now``. Returns the
        paths newly marked deleted. Writes only when something changed.
        """
        present = set(existing)
        current = self.load()
        if all(p in current and current[p].deleted_at is None and current[p].first_seen
               for p in present) and all(e.deleted_at is not None or p in present
                                         for p, e in current.items()):
            return []

        def apply(data: dict[str, NotebookHistory]) -> list[str]:
            newly = []
            for p in present:
                entry = data.setdefault(p, NotebookHistory(first_seen=now))
                if entry.first_seen is None:
                    entry.first_seen = now
                if entry.deleted_at is not None:
                    log.info("notebook %s is back: no longer marked deleted", p)
                    entry.deleted_at = None
            for p, entry in data.items():
                if p not in present and entry.deleted_at is None:
                    entry.deleted_at = now
                    newly.append(p)
            return sorted(newly)

        newly = self.update(apply, now)
        for p in newly:
            log.info("notebook %s disappeared: marked deleted", p)
        return newly

    def purge(self, now: datetime, grace: float | timedelta) -> list[Purged]:
        """Remove history and output files of notebooks deleted more than ``grace`` ago."""
        grace_td = grace if isinstance(grace, timedelta) else timedelta(seconds=grace)
        if not any(e.deleted_at is not None and now - e.deleted_at > grace_td
                   for e in self.load().values()):
            return []

        def apply(data: dict[str, NotebookHistory]) -> list[tuple[str, datetime]]:
            gone = [(p, e.deleted_at) for p, e in data.items()
                    if e.deleted_at is not None and now - e.deleted_at > grace_td]
            for p, _ in gone:
                del data[p]
            return gone

        removed = []
        for rel, deleted_at in self.update(apply, now):
            files = self._remove_outputs(rel)
            log.info("purged notebook %s (deleted at %s): removed %d file(s)",
                     rel, deleted_at.isoformat(), len(files))
            removed.append(Purged(rel, deleted_at, tuple(files)))
        return removed

    # --- outputs --------------------------------------------------------------------------

    def _rel_out(self, p: Path) -> str:
        return p.relative_to(self.output_dir).as_posix()

    def _keep_success_copy(self, run: Run, retry: bool = False) -> str | None:
        if not run.output:
            return None
        src = self.output_dir / run.output
        dst = kept_html(self.output_dir, run.notebook, run.run_id)
        if dst.exists():
            return self._rel_out(dst)
        try:
            atomic_copy(src, dst)
        except OSError as exc:
            log.log(logging.DEBUG if retry else logging.WARNING,
                    "cannot keep a copy of %s's successful output %s: %s",
                    run.notebook, src, exc)
            return None
        return self._rel_out(dst)

    def _remove_other_kept(self, rel: str, keep_rel: str | None) -> None:
        for p in self.output_dir.glob(kept_html_glob(rel)):
            if self._rel_out(p) != keep_rel:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    log.debug("removed superseded success copy %s", p)

    def _remove_outputs(self, rel: str) -> list[Path]:
        candidates = [output_html(self.output_dir, rel), lock_file(self.output_dir, rel),
                      *self.output_dir.glob(kept_html_glob(rel))]
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
            _remove_empty_parents(p, self.output_dir)
        return removed

    def rebuild_from_outputs(self, now: datetime) -> dict[str, NotebookHistory]:
        """Reconstruct a history from the HTML files in the output folder (see module doc)."""
        found: dict[str, dict[str, Any]] = {}
        for dirpath, dirnames, filenames in os.walk(self.output_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = Path(dirpath) / name
                mapped = notebook_for_output(self._rel_out(full))
                if mapped is None:
                    continue
                nb, run_id = mapped
                slot = found.setdefault(nb, {"latest": None, "kept": []})
                if run_id is None:
                    slot["latest"] = full
                else:
                    slot["kept"].append((run_id, full))
        data: dict[str, NotebookHistory] = {}
        host = socket.gethostname()
        for nb, info in found.items():
            runs: list[Run] = []
            kept_rel = None
            for run_id, full in sorted(info["kept"]):
                started = _run_id_time(run_id) or _mtime(full)
                runs.append(Run(notebook=nb, run_id=run_id, started_at=started,
                                status=RunStatus.SUCCESS, finished_at=_mtime(full),
                                output=self._rel_out(full), host=host,
                                extra={"rebuilt_from_outputs": True, "note": REBUILT_NOTE}))
                kept_rel = self._rel_out(full)
            latest = info["latest"]
            # The latest output is the newest kept copy when the last run succeeded.
            if latest is not None and not (
                    info["kept"] and filecmp.cmp(latest, info["kept"][-1][1], shallow=False)):
                mtime = _mtime(latest)
                digest = hashlib.sha1(nb.encode("utf-8")).hexdigest()[:6]
                runs.append(Run(notebook=nb, run_id=f"{mtime:%Y%m%dT%H%M%S}-{digest}",
                                started_at=mtime, status=RunStatus.INTERRUPTED,
                                finished_at=mtime, output=self._rel_out(latest), host=host,
                                error_name="Unknown", error_value=REBUILT_NOTE,
                                extra={"rebuilt_from_outputs": True, "status_unknown": True}))
            if not runs:
                continue
            runs.sort(key=_sort_key, reverse=True)
            data[nb] = NotebookHistory(runs=runs[: self.keep], last_success_output=kept_rel,
                                       first_seen=min(r.started_at for r in runs))
        return data


# --- the history, parsed once per change ------------------------------------------------

#: A history file whose stamps are younger than this when read is parsed again next time: a
#: rewrite within the same timestamp tick could otherwise keep (mtime, size, inode, ctime).
_HISTORY_RACY_NS = 2_000_000_000


class CachedHistory(History):
    """A :class:`~jupycron.history.History` whose :meth:`load` parses the file only when it
    changed, for the daemon (the scheduler) and other long-lived readers.

    An idle rescan reads the history several times (orphans, deletions, purge, due runs,
    the summary page); parsing costs time proportional to notebooks × runs, a ``stat`` does
    not. The parse is reused while the file's ``(mtime_ns, size, inode, ctime_ns)`` are
    unchanged and were at least 2 s old when read. Writers replace the file by rename, so
    every write also gives it a new inode. A write by this object itself (``record`` through
    :meth:`~jupycron.history.History.update_entry`: a run's start and end) patches the one
    entry it changed into the parse instead of dropping it, so during a burst of runs the
    history is not parsed again per run. ``generation`` counts the changes of the view:
    answers derived from one generation (see :meth:`snapshot`) stay valid while it is
    unchanged; ``parses`` counts the full parses.

    Each :meth:`load` returns a new dict, but the :class:`NotebookHistory` values are shared
    between calls: treat them as read-only (History's writes read the file afresh under its
    lock). Thread-safe.
    """

    def __init__(self, output_dir: Path | str, keep: int = 100) -> None:
        super().__init__(output_dir, keep)
        self._cache_lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._data: dict[str, NotebookHistory] | None = None
        self._trusted = False
        self.generation = 0
        self.parses = 0
        self._derived: dict[str, Any] = {}

    def _file_stamp(self) -> tuple[Stamp | None, bool]:
        """The file's stamp (None when absent) and whether it is old enough to trust."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None, True
        except OSError:
            return None, False  # let History.load report the error
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        return file_stamp(st), newest < time.time_ns() - _HISTORY_RACY_NS

    def _entry_written(self, rel: str, text: str, before: Stamp | None, after: Stamp | None,
                       own: bool) -> None:
        """Patch the parse with the entry this object just wrote (see the class docstring).

        Only when the parse was of the file just replaced (``before``), and that file was
        either trusted or this object's own previous write (whose text it knows); otherwise
        the next :meth:`load` parses the file."""
        with self._cache_lock:
            if (self._data is None or before is None or after is None or self._stamp != before
                    or not (self._trusted or own)):
                return
            data = dict(self._data)
            data[rel] = NotebookHistory.from_json(json.loads(text))  # a copy of nobody's objects
            self._data, self._stamp, self._trusted = data, after, True
            self.generation += 1
            self._derived = {}

    def snapshot(self) -> tuple[int, dict[str, NotebookHistory]]:
        """``(generation, history)``: the parse of the current file and its generation."""
        stamp, trusted = self._file_stamp()  # before reading: a later write changes it
        with self._cache_lock:
            if self._data is not None and self._trusted and stamp == self._stamp:
                return self.generation, dict(self._data)
        data = super().load()
        current, _ = self._file_stamp()
        with self._cache_lock:
            if (current != stamp and self._data is not None and self._trusted
                    and self._stamp == current):
                # Our own writes patched the view up to the current file while this parse
                # read an older one: keep the patched view (else, in a burst, every parse
                # would be overtaken and every patch refused).
                return self.generation, dict(self._data)
            self.generation += 1
            self.parses += 1
            self._stamp, self._data, self._trusted = stamp, data, trusted
            self._derived = {}
            return self.generation, dict(data)

    def load(self) -> dict[str, NotebookHistory]:
        """Every notebook's history, as :meth:`History.load` (values shared: read-only)."""
        return self.snapshot()[1]

    def _memo(self, name: str, fn: Callable[[dict[str, NotebookHistory]], T]) -> T:
        """``fn(history)``, computed once per parse."""
        generation, data = self.snapshot()
        with self._cache_lock:
            if generation == self.generation and name in self._derived:
                return self._derived[name]
        value = fn(data)
        with self._cache_lock:
            if generation == self.generation:
                self._derived[name] = value
        return value

    def running_runs(self) -> list[Run]:
        """Every RUNNING row (without walking every run of every notebook each time)."""
        return list(self._memo("running", _running_runs))

    def earliest_deleted(self) -> datetime | None:
        """The oldest ``deleted_at`` of any notebook, None when none is marked deleted."""
        return self._memo("deleted", lambda data: min(
            (e.deleted_at for e in data.values() if e.deleted_at is not None), default=None))


def _salvage(raw: dict[str, Any], rebuilt: dict[str, NotebookHistory],
             ) -> tuple[dict[str, NotebookHistory], int, int]:
    """The sound part of a damaged history: (entries, notebooks kept, damaged parts).

    A bad key is left out; an entry whose own fields are bad is replaced by its rebuilt
    one (from the HTML outputs) when there is one; a bad run is left out of its entry."""
    data: dict[str, NotebookHistory] = {}
    damaged = 0
    for rel, entry in raw.items():
        try:
            check_notebook_key(rel)
        except ValueError as exc:
            log.warning("history: left out the entry %r: %s", rel[:80] if isinstance(rel, str)
                        else rel, exc)
            damaged += 1
            continue
        bad: list[str] = []
        try:
            data[rel] = NotebookHistory.from_json(entry, bad_runs=bad)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("history: the entry of %s is damaged (%s): %s", rel, exc,
                        "rebuilt from its outputs" if rel in rebuilt else "left out")
            damaged += 1
            if rel in rebuilt:
                data[rel] = rebuilt[rel]
            continue
        for problem in bad:
            log.warning("history: left out a run of %s: %s", rel, problem)
        damaged += len(bad)
    kept = len(data)
    for rel, entry in rebuilt.items():  # outputs of notebooks the file no longer named
        data.setdefault(rel, entry)
    return data, kept, damaged


def _running_runs(data: dict[str, NotebookHistory]) -> list[Run]:
    return [r for e in data.values() for r in e.runs if r.status is RunStatus.RUNNING]


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
