"""The run ledger in SQLite: ``<output>/.jupycron.sqlite`` (stdlib :mod:`sqlite3`).

Every jupycron process (``tick`` timers, the daemon, the web server's run-now, ``jupycron
list``) opens the same file. WAL mode lets readers go on while one process writes; a write
is one short ``BEGIN IMMEDIATE`` transaction, waiting up to :data:`BUSY_TIMEOUT_MS` for
another writer. A process killed at any point leaves the ledger as of its last commit;
commits of outcomes, deletions and imports are also fsync'ed (``synchronous=FULL``: they
survive a power cut), RUNNING rows, claims and the heartbeat are not (they are rewritten
within the run anyway; a machine crash ends the run too).

Tables (``sqlite3 <output>/.jupycron.sqlite .schema`` shows them)::

    schema_version(version)                          one row: SCHEMA_VERSION
    meta(key, value)                                 "generation" (bumped by every write of
                                                     runs/notebooks), "purges"
    notebooks(path, first_seen, deleted_at,          one row per notebook ever seen;
              last_success_output, version)          version = generation of its last change
    runs(run_id, notebook, started_at, status, trigger, slot, finished_at, duration_s,
         error_name, error_value, error_cell, peak_mem_mb, output, pid, host, memory_limit,
         kernel_pid, kernel_pgid, kernel_create_time, kernel_sockets, kernel_marker,
         kernel_cgroup, kernel_forked, finding_level, finding_summary, finding_detail,
         extra)                                      one row per run; extra and
                                                     finding_detail are JSON text
    state(key, value)                                JSON objects: "heartbeat",
                                                     "alerts:<name>" (run alerts' memory)

Times are ISO 8601 text in UTC (``2024-05-01T10:30:00+00:00``).

Reads: :meth:`SqliteRunStore.snapshot` keeps the parsed ledger and, when the generation
moved, re-reads only the notebooks whose ``version`` is newer (all of them after a purge):
an idle daemon's rescans cost one ``SELECT`` of the generation.

Failures: a write that cannot be made (a full disk, a read-only folder, a lock held longer
than the busy timeout) raises :class:`~jupycron.exceptions.HistoryError` naming the file
and SQLite's reason. A file SQLite reports corrupt (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``)
is moved aside to ``<name>.corrupt-<UTC yyyymmddTHHMMSSZ>`` (with its ``-wal``) with a
warning, and a fresh ledger is rebuilt from the HTML outputs
(:func:`jupycron.retention.rebuild_from_outputs`). On first open, an existing
``.history.json`` is imported (:mod:`jupycron.ledger.importer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..exceptions import AlreadyRunning, HistoryError
from ..models import Finding, FindingLevel, KernelInfo, Run, RunStatus, Trigger
from .base import NotebookHistory, RunStore, capped, kernel_from_extra, run_sort_key

log = logging.getLogger(__name__)

__all__ = ["BUSY_TIMEOUT_MS", "LEDGER_NAME", "SCHEMA_VERSION", "SqliteRunStore", "ledger_file"]

LEDGER_NAME = ".jupycron.sqlite"
SCHEMA_VERSION = 1
#: How long a write waits for another process's write transaction.
BUSY_TIMEOUT_MS = 15_000
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

_RUN_COLUMNS = ("run_id", "notebook", "started_at", "status", "trigger", "slot", "finished_at",
                "duration_s", "error_name", "error_value", "error_cell", "peak_mem_mb", "output",
                "pid", "host", "memory_limit", "kernel_pid", "kernel_pgid", "kernel_create_time",
                "kernel_sockets", "kernel_marker", "kernel_cgroup", "kernel_forked",
                "finding_level", "finding_summary", "finding_detail", "extra")
_SELECT_RUNS = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
_UPSERT_RUN = (f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})")
_STATUSES = ", ".join(f"'{s.value}'" for s in RunStatus)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notebooks (
    path TEXT PRIMARY KEY,
    first_seen TEXT,
    deleted_at TEXT,
    last_success_output TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL,
    notebook TEXT NOT NULL REFERENCES notebooks(path),
    started_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
    trigger TEXT NOT NULL,
    slot TEXT,
    finished_at TEXT,
    duration_s REAL,
    error_name TEXT,
    error_value TEXT,
    error_cell INTEGER,
    peak_mem_mb REAL,
    output TEXT,
    pid INTEGER,
    host TEXT,
    memory_limit TEXT,
    kernel_pid INTEGER,
    kernel_pgid INTEGER,
    kernel_create_time REAL,
    kernel_sockets TEXT,
    kernel_marker TEXT,
    kernel_cgroup TEXT,
    kernel_forked INTEGER,
    finding_level TEXT,
    finding_summary TEXT,
    finding_detail TEXT,
    extra TEXT NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (notebook, run_id)
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (notebook, started_at, run_id);
CREATE INDEX IF NOT EXISTS runs_running ON runs (notebook) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('purges', 0);
"""


def ledger_file(output_dir: Path | str) -> Path:
    """``<output>/.jupycron.sqlite``."""
    return Path(output_dir) / LEDGER_NAME


def _iso(d: datetime | None) -> str | None:
    return d.astimezone(UTC).isoformat() if d is not None else None


def _dt(v: Any) -> datetime | None:
    if v is None:
        return None
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _row(run: Run) -> tuple[Any, ...]:
    k = kernel_from_extra(run)
    f = run.finding
    return (run.run_id, run.notebook, _iso(run.started_at), str(run.status), str(run.trigger),
            _iso(run.slot), _iso(run.finished_at), run.duration_s, run.error_name,
            run.error_value, run.error_cell, run.peak_mem_mb, run.output, run.pid, run.host,
            run.memory_limit,
            k.pid if k else None, k.pgid if k else None, k.create_time if k else None,
            k.sockets if k else None, k.marker if k else None, k.cgroup if k else None,
            int(k.forked) if k else None,
            str(f.level) if f else None, f.summary if f else None,
            json.dumps(f.detail, ensure_ascii=False) if f and f.detail is not None else None,
            json.dumps(run.extra, ensure_ascii=False))


def _run(row: sqlite3.Row) -> Run:
    kernel = None
    if row["kernel_pid"] is not None:
        kernel = KernelInfo(pid=int(row["kernel_pid"]), pgid=int(row["kernel_pgid"]),
                            create_time=float(row["kernel_create_time"]),
                            sockets=row["kernel_sockets"], marker=row["kernel_marker"],
                            cgroup=row["kernel_cgroup"], forked=bool(row["kernel_forked"]))
    finding = None
    if row["finding_level"] is not None:
        detail = row["finding_detail"]
        finding = Finding(FindingLevel(row["finding_level"]), row["finding_summary"] or "",
                          json.loads(detail) if detail is not None else None)
    extra = json.loads(row["extra"])
    if not isinstance(extra, dict):
        raise ValueError("extra is not a JSON object")
    return Run(notebook=row["notebook"], run_id=row["run_id"],
               started_at=_dt(row["started_at"]) or datetime.now(UTC),
               status=RunStatus(row["status"]), trigger=Trigger(row["trigger"]),
               slot=_dt(row["slot"]), finished_at=_dt(row["finished_at"]),
               duration_s=row["duration_s"], error_name=row["error_name"],
               error_value=row["error_value"], error_cell=row["error_cell"],
               peak_mem_mb=row["peak_mem_mb"], output=row["output"], pid=row["pid"],
               host=row["host"], memory_limit=row["memory_limit"], kernel=kernel,
               finding=finding, extra=extra)


class _Corrupt(Exception):
    pass


class SqliteRunStore(RunStore):
    """The run ledger of ``output_dir`` (see the module docstring). Opening is lazy: the
    file is created (and an old ``.history.json`` imported) at the first use.

    Example::

        store = SqliteRunStore(settings.output_dir, keep=settings.history_runs)
        store.record(run)
    """

    def __init__(self, output_dir: Path | str, keep: int = 100) -> None:
        super().__init__(output_dir, keep)
        assert self.output_dir is not None
        self.path = ledger_file(self.output_dir)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._inode: int | None = None
        self._cache: dict[str, NotebookHistory] | None = None
        self._cache_gen = -1
        self._cache_purges = -1
        self.parses = 0          # full reads of the ledger (tests, benchmarks)

    # --- connection -----------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> HistoryError:
        return HistoryError(f"cannot {what} the run ledger {self.path}: {exc}")

    def _connection(self) -> sqlite3.Connection:
        """Under ``_lock``: the open connection (a new one after a fork or a close)."""
        if self._conn is not None and self._conn_pid == os.getpid():
            return self._conn
        self._conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail("create the folder of", exc) from exc
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                log.warning("run ledger %s: WAL mode unavailable, using a rollback journal",
                            self.path)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 4194304")
            self._setup(conn)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if _is_corrupt(exc):
                raise _Corrupt(str(exc)) from exc
            raise self._fail("open", exc) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn, self._conn_pid = conn, os.getpid()
        with contextlib.suppress(OSError):
            self._inode = self.path.stat().st_ino
        self._cache = None
        from .importer import ALERT_STATE_JSON, HISTORY_JSON, import_json_files
        out = self.path.parent
        if (out / HISTORY_JSON).exists() or (out / ALERT_STATE_JSON).exists():
            import_json_files(self)
        return conn

    def _check_version(self, conn: sqlite3.Connection) -> bool:
        """True when the schema exists (and is this version's); HistoryError for another."""
        have = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'schema_version'").fetchone()
        if have is None:
            return False
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise HistoryError(
                f"the run ledger {self.path} has schema version "
                f"{row[0] if row else None}, this jupycron reads version "
                f"{SCHEMA_VERSION}: use the jupycron that wrote it, or move the file "
                "aside (it is then rebuilt from the outputs)")
        return True

    def _setup(self, conn: sqlite3.Connection) -> None:
        """Check the schema, or create it (a write only when it is missing)."""
        if self._check_version(conn):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._check_version(conn):  # created meanwhile by another process
                conn.execute("COMMIT")
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._cache = None

    @contextlib.contextmanager
    def _transaction(self, what: str = "write",
                     durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Under ``_lock``: one write transaction (``BEGIN IMMEDIATE``), committed on exit.

        ``durable=False``: the commit is not fsync'ed (WAL with ``synchronous=NORMAL``: it
        survives the process dying, not the machine) - for rows that are rewritten soon
        anyway (a RUNNING row, a claim, the heartbeat); outcomes are always fsync'ed."""
        conn = self._connection()
        try:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                raise _Corrupt(str(exc)) from exc
            raise self._fail(what, exc) from exc

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` under the lock; a corrupt ledger is set aside and rebuilt, then ``fn``
        runs once more on the new one."""
        with self._lock:
            try:
                return fn()
            except _Corrupt as exc:
                self._recover(str(exc))
                try:
                    return fn()
                except _Corrupt as again:
                    raise HistoryError(f"the run ledger {self.path} is still corrupt after "
                                       f"rebuilding it: {again}") from again

    def _bump(self, conn: sqlite3.Connection, *notebooks: str, purge: bool = False) -> int:
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        if purge:
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'purges'")
        gen = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        conn.executemany("UPDATE notebooks SET version = ? WHERE path = ?",
                         [(gen, rel) for rel in notebooks])
        return gen

    # --- corruption -------------------------------------------------------------------------

    def _recover(self, why: str) -> None:
        """Under the lock: move the corrupt file aside and rebuild a ledger from the outputs."""
        self.close()
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            inode = None
        if inode is not None and self._inode is not None and inode != self._inode:
            # Another process already replaced it: use theirs.
            log.info("run ledger %s was replaced by another process: reopening", self.path)
            self._inode = None
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            if inode is not None:
                os.replace(self.path, aside)
            for suffix in ("-wal", "-journal"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + "-shm").unlink()
        except OSError as exc:
            raise self._fail("move aside the corrupt", exc) from exc
        from ..retention import rebuild_from_outputs
        assert self.output_dir is not None
        rebuilt = rebuild_from_outputs(self.output_dir, self.keep)
        with self._transaction("rebuild") as conn:
            self.write_entries(conn, {rel: NotebookHistory(**e) for rel, e in rebuilt.items()})
        log.warning("run ledger %s is corrupt (%s): kept it as %s and rebuilt %d notebook(s) "
                    "from the HTML outputs", self.path, why, aside.name, len(rebuilt))

    # --- reads ------------------------------------------------------------------------------

    def _read_entries(self, conn: sqlite3.Connection,
                      only: list[str] | None) -> dict[str, NotebookHistory]:
        if only is None:
            nb_rows = conn.execute("SELECT * FROM notebooks").fetchall()
            run_rows = conn.execute(_SELECT_RUNS).fetchall()
        else:
            nb_rows, run_rows = [], []
            for rel in only:
                nb_rows += conn.execute("SELECT * FROM notebooks WHERE path = ?", (rel,)).fetchall()
                run_rows += conn.execute(_SELECT_RUNS + " WHERE notebook = ?", (rel,)).fetchall()
        entries = {r["path"]: NotebookHistory(deleted_at=_dt(r["deleted_at"]),
                                              last_success_output=r["last_success_output"],
                                              first_seen=_dt(r["first_seen"]))
                   for r in nb_rows}
        for row in run_rows:
            try:
                run = _run(row)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("run ledger %s: left out the unreadable run %r of %s: %s",
                            self.path, row["run_id"], row["notebook"], exc)
                continue
            entries.setdefault(run.notebook, NotebookHistory()).runs.append(run)
        for entry in entries.values():
            entry.runs.sort(key=run_sort_key, reverse=True)
        return entries

    def snapshot(self) -> tuple[int, dict[str, NotebookHistory]]:
        def read() -> tuple[int, dict[str, NotebookHistory]]:
            try:
                conn = self._connection()
            except HistoryError:
                if not self.path.exists():  # nothing was ever recorded (e.g. a full disk)
                    return 0, {}
                raise
            try:
                conn.execute("BEGIN")  # one consistent snapshot of several SELECTs
                try:
                    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                    gen, purges = int(meta["generation"]), int(meta["purges"])
                    if self._cache is not None and gen == self._cache_gen:
                        return gen, dict(self._cache)
                    if self._cache is None or purges != self._cache_purges:
                        data = self._read_entries(conn, None)
                        self.parses += 1
                    else:
                        changed = [r[0] for r in conn.execute(
                            "SELECT path FROM notebooks WHERE version > ?", (self._cache_gen,))]
                        data = dict(self._cache)
                        data.update(self._read_entries(conn, changed))
                finally:
                    conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    raise _Corrupt(str(exc)) from exc
                raise self._fail("read", exc) from exc
            self._cache, self._cache_gen, self._cache_purges = data, gen, purges
            return gen, dict(data)

        result: tuple[int, dict[str, NotebookHistory]] = self._guarded(read)
        return result

    # --- writes -----------------------------------------------------------------------------

    def _notebook(self, conn: sqlite3.Connection, rel: str, first_seen: datetime | None) -> None:
        conn.execute("INSERT INTO notebooks (path, first_seen) VALUES (?, ?) "
                     "ON CONFLICT (path) DO UPDATE SET first_seen = "
                     "coalesce(notebooks.first_seen, excluded.first_seen)",
                     (rel, _iso(first_seen)))

    def _insert(self, conn: sqlite3.Connection, run: Run, kept_rel: str | None) -> str | None:
        rel = run.notebook
        self._notebook(conn, rel, run.started_at)
        conn.execute(_UPSERT_RUN, _row(run))
        # the cap: the newest `keep` runs, plus older RUNNING rows
        conn.execute("DELETE FROM runs WHERE notebook = ? AND status != 'running' AND run_id "
                     "NOT IN (SELECT run_id FROM runs WHERE notebook = ? ORDER BY started_at "
                     "DESC, run_id DESC LIMIT ?)", (rel, rel, self.keep))
        if kept_rel is not None:
            newest = conn.execute("SELECT run_id FROM runs WHERE notebook = ? AND status = "
                                  "'success' ORDER BY started_at DESC, run_id DESC LIMIT 1",
                                  (rel,)).fetchone()
            if newest is not None and newest[0] == run.run_id:
                conn.execute("UPDATE notebooks SET last_success_output = ? WHERE path = ?",
                             (kept_rel, rel))
        self._bump(conn, rel)
        row = conn.execute("SELECT last_success_output FROM notebooks WHERE path = ?",
                           (rel,)).fetchone()
        return row[0] if row else None

    def _upsert(self, run: Run, kept_rel: str | None) -> str | None:
        def write() -> str | None:
            with self._transaction(durable=run.status is not RunStatus.RUNNING) as conn:
                return self._insert(conn, run, kept_rel)
        result: str | None = self._guarded(write)
        return result

    def _entry(self, conn: sqlite3.Connection, rel: str) -> NotebookHistory:
        return self._read_entries(conn, [rel]).get(rel) or NotebookHistory()

    def _claim(self, run: Run, check: Callable[[NotebookHistory], bool]) -> bool:
        def write() -> bool:
            with self._transaction("claim a run in", durable=False) as conn:
                holder = conn.execute("SELECT run_id, pid, host FROM runs WHERE notebook = ? "
                                      "AND status = 'running' AND run_id != ? LIMIT 1",
                                      (run.notebook, run.run_id)).fetchone()
                if holder is not None:
                    raise AlreadyRunning(f"{run.notebook} is already running (run "
                                         f"{holder['run_id']}, pid {holder['pid']} on "
                                         f"{holder['host'] or 'this host'})")
                if not check(self._entry(conn, run.notebook)):
                    return False
                self._insert(conn, run, None)
                return True
        result: bool = self._guarded(write)
        return result

    def _replace_running(self, runs: list[Run]) -> list[Run]:
        def write() -> list[Run]:
            done = []
            with self._transaction() as conn:
                for run in runs:
                    row = conn.execute("SELECT status FROM runs WHERE notebook = ? AND "
                                       "run_id = ?", (run.notebook, run.run_id)).fetchone()
                    if row is None or row[0] != RunStatus.RUNNING.value:
                        continue
                    conn.execute(_UPSERT_RUN, _row(run))
                    done.append(run)
                if done:
                    self._bump(conn, *{r.notebook for r in done})
            return done
        result: list[Run] = self._guarded(write)
        return result

    def _discard(self, run: Run) -> bool:
        def write() -> bool:
            with self._transaction() as conn:
                gone = conn.execute("DELETE FROM runs WHERE notebook = ? AND run_id = ? AND "
                                    "status = 'running'", (run.notebook, run.run_id)).rowcount
                if gone:
                    self._bump(conn, run.notebook)
                return bool(gone)
        result: bool = self._guarded(write)
        return result

    def _reconcile(self, present: set[str], now: datetime) -> list[str]:
        def write() -> list[str]:
            with self._transaction() as conn:
                rows = {r["path"]: r for r in conn.execute(
                    "SELECT path, first_seen, deleted_at FROM notebooks")}
                changed, newly = [], []
                for p in sorted(present):
                    r = rows.get(p)
                    if r is not None and r["first_seen"] and r["deleted_at"] is None:
                        continue
                    if r is not None and r["deleted_at"] is not None:
                        log.info("notebook %s is back: no longer marked deleted", p)
                    self._notebook(conn, p, now)
                    conn.execute("UPDATE notebooks SET deleted_at = NULL WHERE path = ?", (p,))
                    changed.append(p)
                for p, r in rows.items():
                    if p not in present and r["deleted_at"] is None:
                        conn.execute("UPDATE notebooks SET deleted_at = ? WHERE path = ?",
                                     (_iso(now), p))
                        changed.append(p)
                        newly.append(p)
                if changed:
                    self._bump(conn, *changed)
                return sorted(newly)
        result: list[str] = self._guarded(write)
        return result

    def _purge(self, now: datetime, grace: timedelta) -> list[tuple[str, datetime]]:
        def write() -> list[tuple[str, datetime]]:
            with self._transaction() as conn:
                gone = []
                for r in conn.execute("SELECT path, deleted_at FROM notebooks WHERE "
                                      "deleted_at IS NOT NULL").fetchall():
                    deleted = _dt(r["deleted_at"])
                    if deleted is not None and now - deleted > grace:
                        gone.append((r["path"], deleted))
                for rel, _ in gone:
                    conn.execute("DELETE FROM runs WHERE notebook = ?", (rel,))
                    conn.execute("DELETE FROM notebooks WHERE path = ?", (rel,))
                if gone:
                    self._bump(conn, purge=True)
                return gone
        result: list[tuple[str, datetime]] = self._guarded(write)
        return result

    def write_entries(self, conn: sqlite3.Connection,
                      entries: dict[str, NotebookHistory]) -> None:
        """Inside a transaction: :meth:`replace_entries`' write."""
        for rel, e in entries.items():
            conn.execute("DELETE FROM runs WHERE notebook = ?", (rel,))
            conn.execute("INSERT OR REPLACE INTO notebooks (path, first_seen, deleted_at, "
                         "last_success_output) VALUES (?, ?, ?, ?)",
                         (rel, _iso(e.first_seen), _iso(e.deleted_at), e.last_success_output))
            conn.executemany(_UPSERT_RUN, [_row(r) for r in capped(e.runs, self.keep)])
        if entries:
            self._bump(conn, *entries)

    def replace_entries(self, entries: dict[str, NotebookHistory]) -> None:
        def write() -> None:
            with self._transaction() as conn:
                self.write_entries(conn, entries)
        self._guarded(write)

    # --- state: alerts, heartbeat -----------------------------------------------------------

    def _get_state(self, key: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                conn = self._connection()
            except HistoryError:
                if not self.path.exists():
                    return None
                raise
            try:
                row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    raise _Corrupt(str(exc)) from exc
                raise self._fail("read", exc) from exc
            if row is None:
                return None
            try:
                value = json.loads(row[0])
            except ValueError as exc:
                log.warning("run ledger %s: the %s state is unreadable (%s): ignored",
                            self.path, key, exc)
                return None
            return value if isinstance(value, dict) else None
        result: dict[str, Any] | None = self._guarded(read)
        return result

    def _set_state(self, key: str, value: dict[str, Any], durable: bool = True) -> None:
        """``durable=False``: no fsync at the commit (WAL ``synchronous=NORMAL``: kept if the
        process dies, may be lost with the machine) - for the heartbeat, rewritten anyway."""
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)

        def write() -> None:
            with self._transaction(durable=durable) as conn:
                conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                             (key, text))
        self._guarded(write)

    def alert_state(self, name: str) -> dict[str, Any] | None:
        return self._get_state(f"alerts:{name}")

    def save_alert_state(self, name: str, state: dict[str, Any]) -> None:
        self._set_state(f"alerts:{name}", state)

    def write_heartbeat(self, beat: dict[str, Any]) -> None:
        self._set_state("heartbeat", beat, durable=False)

    def heartbeat(self) -> dict[str, Any] | None:
        return self._get_state("heartbeat")


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _CORRUPT_CODES
