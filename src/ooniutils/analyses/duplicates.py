"""Duplicate URLs across (and within) Citizen Lab test lists.

Two kinds of duplicate are reported:

* **exact** — the identical URL string appears in two or more places (two lists, or twice
  in one list);
* **near** — different strings that become equal after :func:`normalize_url`, which folds
  the scheme (``http`` and ``https`` are the same site), drops a leading ``www.``, lower-cases
  scheme and host, drops the default ports ``:80``/``:443``, a trailing ``/`` and the
  fragment (``#...`` never reaches the server: ``https://www.ted.com/`` and
  ``https://www.ted.com/#/`` fetch the same page). The ``url`` column keeps the string as
  listed, fragment included.

Both relations are reported: ``exact`` and ``near`` columns (booleans) say which hold for a
row, and ``kind`` is ``'exact'``, ``'near'`` or ``'exact+near'`` (``http://1xbet.com/`` in
several lists and ``https://1xbet.com/`` in several others: each row is both).

Pure functions over DataFrames: reading CSVs or the ``citizenlab`` table is in
:mod:`ooniutils.testlists`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pandas as pd

from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["url", "normalized_url", "cc", "category_code", "date_added", "kind", "exact", "near"]
_DEFAULT_PORTS = {None, 80, 443}


def normalize_url(url: str) -> str:
    """Canonical form used to spot near duplicates.

    ``"HTTP://www.Example.com:80/"`` and ``"https://example.com"`` both become
    ``"//example.com"``: the scheme is dropped because http and https point at the same
    site for test-list purposes. Path and query keep their case (paths are case-sensitive
    on most servers); the fragment is dropped (the browser keeps it, the server never sees
    it). A string that does not parse as a URL with a
    host is returned stripped but otherwise unchanged, so it can still match exactly.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    host = (parts.hostname or "").lower()
    if not host:
        return text
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port in _DEFAULT_PORTS else f"{host}:{port}"
    path = parts.path.rstrip("/")
    out = "//" + netloc + path
    if parts.query:
        out += "?" + parts.query
    return out


def find_duplicates(entries: pd.DataFrame) -> pd.DataFrame:
    """Every row whose URL occurs more than once, exactly or after normalisation.

    ``entries`` needs columns ``url``, ``cc``, ``category_code`` (``date_added`` optional: it
    is filled with ``NaT`` when absent). Returns one row per input row that is a duplicate,
    with columns :data:`RESULT_COLUMNS` (``exact``: the same string occurs elsewhere;
    ``near``: another string has the same normalised form; ``kind`` names both), sorted by ``normalized_url``, ``url``, ``cc``.
    An empty input gives an empty result with the same columns.
    """
    missing = {"url", "cc", "category_code"} - set(entries.columns)
    if missing:
        raise AnalysisError(
            f"test-list entries lack column(s) {sorted(missing)}; got {list(entries.columns)}"
        )
    df = entries.copy()
    if "date_added" not in df.columns:
        df["date_added"] = pd.NaT
    df = df[df["url"].notna()]
    df["url"] = df["url"].astype(str).str.strip()
    df = df[df["url"] != ""]
    if df.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    df["normalized_url"] = df["url"].map(normalize_url)
    exact = df.groupby("url")["url"].transform("size") > 1
    distinct_forms = df.groupby("normalized_url")["url"].transform("nunique") > 1
    keep = exact | distinct_forms
    out = df.loc[keep].copy()
    out["exact"] = exact[keep].to_numpy(dtype=bool)
    out["near"] = distinct_forms[keep].to_numpy(dtype=bool)
    out["kind"] = out["exact"].map({True: "exact", False: ""}) + \
        out["near"].map({True: "+near", False: ""})
    out["kind"] = out["kind"].str.removeprefix("+")
    out = out.sort_values(["normalized_url", "url", "cc"], kind="stable")
    log.info("found %d duplicate rows (%d exact, %d near) among %d entries",
             len(out), int(out["exact"].sum()), int(out["near"].sum()), len(df))
    return out[RESULT_COLUMNS].reset_index(drop=True)
