"""Loading real input into the store: ClickHouse SQL dumps and Citizen Lab test lists.

Both loaders read and check the whole input first and write only at the end (one part per
table), so a malformed file leaves the store as it was.

* :func:`load_sql_file` — ``INSERT INTO t (cols) VALUES (...)`` statements, one per line
  (empty lines and ``--``/``#`` comment lines skipped). The VALUES are parsed by
  ClickHouse itself: each statement runs in a private chDB database of Memory tables
  shaped like ``schema.py``, then the rows are read back and inserted into the store.
* :func:`load_test_lists` — Citizen Lab CSVs (``url,category_code,...``); ``cc`` holds
  what OONI's own loader stores: the file stem as it is, lowercase (``it.csv`` → ``it``),
  and ``ZZ`` for ``global.csv``; other stems are skipped. OONI's queries rely on it
  (``citizenlab.cc IN <lowercased countries> OR citizenlab.cc = 'ZZ'``).
  Loading is idempotent: ``citizenlab`` is a ReplacingMergeTree keyed by all its columns,
  so only the rows beyond what the table already holds are inserted (loading the same
  lists twice inserts nothing; a list that gained URLs adds just those). A row listed twice
  in one file is kept twice the first time (the duplicates analysis reports it).
* :func:`seed_tables` (from :mod:`.seed`) — the fixed rows of lookup tables
  (``test_groups``), inserted by the stores' ``init`` when missing.
"""

from __future__ import annotations

import csv
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from ..exceptions import LoadError, StoreError
from .base import Store
from .schema import CITIZENLAB, TABLES
from .seed import seed_tables as seed_tables  # re-exported (it lives in .seed: no cycle)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done, total)``; units are bytes for SQL files and files for test lists."""

_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?:`?(?P<db>\w+)`?\s*\.\s*)?`?(?P<table>\w+)`?\s*(?P<rest>(?:\(|VALUES\b|FORMAT\b).*)$",
    re.IGNORECASE | re.DOTALL,
)
# "(cols) VALUES" then the tuples; the column list may not contain parentheses.
_VALUES = re.compile(r"^(?P<head>(?:\([^()]*\)\s*)?VALUES)\s*(?P<values>\(.*)$", re.IGNORECASE | re.DOTALL)
_BATCH = 5000
_UNQUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")  # splits out quoted strings


@dataclass
class LoadResult:
    """What a load read: rows per table (per list for test lists), the files skipped, and
    (test lists) how many of the rows read were already stored and so not inserted again."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    already_stored: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def load_sql_file(store: Store, path: str | Path, progress: Progress | None = None) -> LoadResult:
    """Parse ``path`` with ClickHouse and append its rows to ``store`` (see module doc).

    Raises :class:`LoadError` naming the file and line for an unknown table, a line that is
    not an ``INSERT INTO ... VALUES`` statement, or values ClickHouse cannot parse.
    """
    from . import embedded

    path = Path(path)
    source = str(path)
    try:
        total = path.stat().st_size
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise LoadError(f"cannot read: {exc}", source) from exc
    db = f"_ooni_load_{uuid.uuid4().hex}"
    created: set[str] = set()
    batch: list[tuple[int, str]] = []  # (line number, VALUES tuples) of one statement head
    head: tuple[str, str] | None = None  # (table, "(cols) VALUES")

    def flush() -> None:
        if not batch or head is None:
            return
        name, cols = head
        try:
            sess.query(f"INSERT INTO `{db}`.`{name}` {cols} " + ", ".join(v for _, v in batch))
        except Exception as exc:  # find the first line ClickHouse rejects, to name it
            probe = f"`{db}`.`_probe_{name}`"
            sess.query(f"CREATE TABLE IF NOT EXISTS {probe} AS `{db}`.`{name}`")
            for lineno, values in batch:
                try:
                    sess.query(f"INSERT INTO {probe} {cols} {values}")
                except Exception as line_exc:
                    raise LoadError(f"ClickHouse cannot parse this statement: {line_exc}", source, lineno) from line_exc
            raise LoadError(f"ClickHouse rejected lines {batch[0][0]}-{batch[-1][0]}: {exc}", source) from exc
        batch.clear()

    done = 0
    with embedded._lock:
        sess = embedded._session()
        try:
            sess.query(f"CREATE DATABASE `{db}` ENGINE = Memory")
            with fh:
                for lineno, line in enumerate(fh, 1):
                    done += len(line.encode())
                    stmt = line.strip()
                    if not stmt or stmt.startswith(("--", "#")):
                        continue
                    m = _INSERT.match(stmt)
                    vm = _VALUES.match(m.group("rest")) if m else None
                    if not m or not vm:
                        raise LoadError("not an INSERT INTO <table> (columns) VALUES (...) statement", source, lineno)
                    name = m.group("table")
                    if name not in TABLES:
                        raise LoadError(
                            f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}", source, lineno
                        )
                    if name not in created:
                        sess.query(f"CREATE TABLE `{db}`.`{name}` ({TABLES[name].structure()}) ENGINE = Memory")
                        created.add(name)
                    this_head = (name, vm.group("head"))
                    if this_head != head or len(batch) >= _BATCH:
                        flush()
                        head = this_head
                    values = vm.group("values").rstrip()
                    # ClickHouse stops reading VALUES at ";" and ignores what follows, so a
                    # second statement (or a stray tail) on the line would vanish silently.
                    if any(";" in chunk for chunk in _UNQUOTED.split(values.removesuffix(";"))):
                        raise LoadError("more than one statement on the line", source, lineno)
                    batch.append((lineno, values.removesuffix(";")))
                    if progress and lineno % 100 == 0:
                        progress(done, total)
            flush()
            frames = {}
            for name in sorted(created):
                frames[name] = sess.query(f"SELECT * FROM `{db}`.`{name}`", "DataFrame")
        except UnicodeDecodeError as exc:
            raise LoadError(f"not UTF-8 text: {exc}", source) from exc
        finally:
            try:
                sess.query(f"DROP DATABASE IF EXISTS `{db}`")
            except Exception:  # noqa: BLE001 - cleanup must not hide the real error
                log.warning("could not drop the temporary database %s", db)
    result = LoadResult()
    for name, df in frames.items():
        try:
            result.rows[name] = store.insert(name, df)
        except StoreError as exc:
            raise LoadError(f"cannot store the rows of {name}: {exc}", source) from exc
    if progress:
        progress(total, total)
    log.info("loaded %s from %s", result.rows, source)
    return result


def country_code(stem: str) -> str | None:
    """Test-list file stem → ``citizenlab.cc`` as OONI stores it: the lowercase stem
    (``br``), ``ZZ`` for ``global``; None when the file is not a list."""
    stem = stem.lower()
    if stem == "global":
        return "ZZ"
    if re.fullmatch(r"[a-z]{2}", stem):
        return stem
    return None


def read_test_list(path: Path, cc: str) -> list[dict[str, str]]:
    """Rows ``{domain, url, cc, category_code}`` of one Citizen Lab CSV."""
    source = str(path)
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise LoadError("empty file: a test list needs at least its header line", source)
            missing = {"url", "category_code"} - set(reader.fieldnames)
            if missing:
                raise LoadError(f"header lacks column(s) {', '.join(sorted(missing))}", source, 1)
            for rec in reader:
                url = (rec.get("url") or "").strip()
                host = urlsplit(url).hostname if "://" in url else None
                if not host:
                    raise LoadError(f"no host name in url {url!r}", source, reader.line_num)
                rows.append({"domain": host, "url": url, "cc": cc,
                             "category_code": (rec.get("category_code") or "").strip()})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoadError(f"cannot read: {exc}", source) from exc
    return rows


def load_test_lists(store: Store, folder: str | Path, progress: Progress | None = None) -> LoadResult:
    """Load every ``<cc>.csv`` / ``global.csv`` of ``folder`` into ``citizenlab``.

    Result rows are keyed by country code; files with other stems are listed in
    ``skipped`` (and logged). Raises :class:`LoadError` for a malformed file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LoadError("not a folder", str(folder))
    files = sorted(folder.glob("*.csv"))
    result = LoadResult()
    rows: list[dict[str, str]] = []
    for i, path in enumerate(files, 1):
        cc = country_code(path.stem)
        if cc is None:
            log.warning("skipping %s: its name is not a country code or 'global'", path.name)
            result.skipped.append(path.name)
            continue
        got = read_test_list(path, cc)
        result.rows[cc] = result.rows.get(cc, 0) + len(got)
        rows.extend(got)
        if progress:
            progress(i, len(files))
    with store.exclusive(CITIZENLAB.name):  # a concurrent load must see what this one adds
        new = _not_yet_stored(store, rows) if rows else []
        if new:
            store.insert(CITIZENLAB.name, pd.DataFrame(new))
    result.already_stored = len(rows) - len(new)
    log.info("read %d test-list rows from %s, inserted %d (%d already stored)",
             len(rows), folder, len(new), result.already_stored)
    return result


def _not_yet_stored(store: Store, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` minus what ``citizenlab`` already holds, as multisets over the whole row.

    A key stored ``k`` times and read ``n`` times is inserted ``max(0, n - k)`` times, so a
    second identical load inserts nothing while a URL listed twice in a new file still lands
    twice. ``cc`` is FixedString(32): its NUL padding is stripped before comparing.
    """
    stored = store.query(
        "SELECT domain, url, toString(cc) AS cc, category_code, count() AS n FROM citizenlab "
        "GROUP BY domain, url, cc, category_code")
    have: dict[tuple[str, str, str, str], int] = {}
    if stored.empty:  # a server returns no columns for no rows
        return list(rows)
    for d, u, c, k, n in zip(stored["domain"], stored["url"], stored["cc"], stored["category_code"],
                             stored["n"], strict=True):
        have[(str(d), str(u), str(c).rstrip("\x00"), str(k))] = int(n)
    new = []
    for r in rows:
        key = (r["domain"], r["url"], r["cc"], r["category_code"])
        if have.get(key, 0) > 0:
            have[key] -= 1
        else:
            new.append(r)
    return new
