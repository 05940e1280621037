"""Duplicate URLs across (and within) Citizen Lab test lists.

Two kinds of duplicate are reported:

* **exact** — the identical URL string appears in two or more places (two lists, or twice
  in one list);
* **near** — different strings that become equal after :func:`normalize_url`, which folds
  the scheme (``http`` and ``https`` are the same site), drops a leading ``www.``, lower-cases
  scheme and host, drops the default ports ``:80``/``:443`` and a trailing ``/``.

A row that is an exact duplicate of another row *and* a near duplicate of a third gets
``kind='exact'``: the identical string elsewhere is the stronger, actionable finding (the
same entry is listed twice); ``near`` is reserved for rows whose string is unique but whose
normalised form is not.

Pure functions over DataFrames: reading CSVs or the ``citizenlab`` table is in
:mod:`ooniutils.testlists`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pandas as pd

from ..exceptions import AnalysisError

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["url", "normalized_url", "cc", "category_code", "date_added", "kind"]
_DEFAULT_PORTS = {None, 80, 443}


def normalize_url(url: str) -> str:
    """Canonical form used to spot near duplicates.

    ``"HTTP://www.Example.com:80/"`` and ``"https://example.com"`` both become
    ``"//example.com"``: the scheme is dropped because http and https point at the same
    site for test-list purposes. Path, query and fragment keep their case
    (paths are case-sensitive on most servers). A string that does not parse as a URL with a
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
    if parts.fragment:
        out += "#" + parts.fragment
    return out


def find_duplicates(entries: pd.DataFrame) -> pd.DataFrame:
    """Every row whose URL occurs more than once, exactly or after normalisation.

    ``entries`` needs columns ``url``, ``cc``, ``category_code`` (``date_added`` optional: it
    is filled with ``NaT`` when absent). Returns one row per input row that is a duplicate,
    with columns :data:`RESULT_COLUMNS`, sorted by ``normalized_url``, ``url``, ``cc``.
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
    out["kind"] = "near"
    out.loc[exact[keep], "kind"] = "exact"
    out = out.sort_values(["normalized_url", "url", "cc"], kind="stable")
    log.info("found %d duplicate rows (%d exact) among %d entries",
             len(out), int((out["kind"] == "exact").sum()), len(df))
    return out[RESULT_COLUMNS].reset_index(drop=True)
