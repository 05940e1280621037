"""Citizen Lab test lists: finding duplicate URLs.

Usage in a notebook::

    from ooniutils import find_duplicate_test_list_urls
    dups = find_duplicate_test_list_urls()                       # the citizenlab table
    dups = find_duplicate_test_list_urls("/srv/test-lists/lists")  # a folder of CSVs

See :mod:`ooniutils.analyses.duplicates` for what counts as a duplicate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .analyses.duplicates import RESULT_COLUMNS, find_duplicates
from .exceptions import LoadError
from .store.loaders import country_code

log = logging.getLogger(__name__)

_CSV_COLUMNS = ["url", "category_code", "category_description", "date_added", "source", "notes"]

__all__ = ["RESULT_COLUMNS", "find_duplicate_test_list_urls", "read_test_list_folder"]


def read_test_list_folder(folder: str | Path) -> pd.DataFrame:
    """Read every ``<cc>.csv`` (and ``global.csv`` as ``ZZ``) of a Citizen Lab lists folder.

    ``cc`` is what the ``citizenlab`` table holds, as in OONI: the lowercase file stem
    (``br``), ``ZZ`` for the global list (:func:`ooniutils.store.loaders.country_code`).

    Other files (``00-LEGEND-*.csv``, ``cctld.csv`` ...) are skipped with a log line.
    Returns columns url, cc, category_code, date_added (datetime64, ``NaT`` when blank).
    Raises :class:`LoadError` naming the file when a CSV lacks the ``url`` or
    ``category_code`` column, and when the folder holds no list at all.
    """
    root = Path(folder)
    if not root.is_dir():
        raise LoadError("not a folder of test lists", source=str(root))
    frames = []
    for path in sorted(root.glob("*.csv")):
        cc = country_code(path.stem)
        if cc is None:
            log.info("skipping %s: file name is not a country code or 'global'", path.name)
            continue
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError as exc:
            raise LoadError("empty file: a test list needs at least its header line "
                            f"({','.join(_CSV_COLUMNS)})", source=str(path)) from exc
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise LoadError(f"cannot parse CSV: {exc}", source=str(path)) from exc
        lacking = {"url", "category_code"} - set(df.columns)
        if lacking:
            raise LoadError(
                f"missing column(s) {sorted(lacking)}; expected header {','.join(_CSV_COLUMNS)}",
                source=str(path),
            )
        if "date_added" not in df.columns:
            df["date_added"] = ""
        df = df[["url", "category_code", "date_added"]].assign(cc=cc)
        frames.append(df)
    if not frames:
        raise LoadError("no <cc>.csv or global.csv test list found", source=str(root))
    out = pd.concat(frames, ignore_index=True)
    out["date_added"] = pd.to_datetime(out["date_added"], errors="coerce", format="ISO8601")
    return out[["url", "cc", "category_code", "date_added"]]


def _read_citizenlab_table() -> pd.DataFrame:
    from .clickhouse import click_query_fsn

    df = click_query_fsn("SELECT url, toString(cc) AS cc, category_code FROM citizenlab")
    # cc is FixedString(32) in OONI's schema: strip the NUL padding
    df["cc"] = df["cc"].astype(str).str.rstrip("\x00").str.strip()
    df["date_added"] = pd.NaT  # the table does not keep it
    return df


def find_duplicate_test_list_urls(source: str | Path | None = None) -> pd.DataFrame:
    """URLs listed more than once, one row per (url, list) occurrence.

    ``source`` is a folder of Citizen Lab CSVs (``br.csv`` → ``br``, ``global.csv`` → ``ZZ``),
    or ``None`` to read the store's ``citizenlab`` table (which has no ``date_added``, so
    that column is ``NaT``). Columns: url, normalized_url, cc, category_code, date_added,
    kind (``'exact'``, ``'near'`` or ``'exact+near'``), exact, near (booleans).
    """
    entries = _read_citizenlab_table() if source is None else read_test_list_folder(source)
    return find_duplicates(entries)
