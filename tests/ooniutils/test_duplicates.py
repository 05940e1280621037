"""Duplicate test-list URLs: handcrafted cases, the real sample checked against an
independent normaliser, and the citizenlab table through the embedded store."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ooniutils.analyses.duplicates import RESULT_COLUMNS, find_duplicates, normalize_url
from ooniutils.exceptions import AnalysisError, LoadError
from ooniutils.testlists import find_duplicate_test_list_urls, read_test_list_folder
from tests.support.services import require_shared_data


def entries(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"url": u, "cc": cc, "category_code": "NEWS"} for u, cc in rows])


@pytest.mark.parametrize("url, expected", [
    ("https://example.com/", "//example.com"),
    ("HTTP://WWW.Example.COM:80/", "//example.com"),
    ("https://example.com:443", "//example.com"),
    ("http://example.com:8080/", "//example.com:8080"),
    ("https://www.example.com/Path/?q=1", "//example.com/Path?q=1"),
    ("not a url", "not a url"),
])
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_exact_and_near_duplicates():
    df = entries(
        ("https://a.org/", "ZZ"), ("https://a.org/", "IR"),     # exact across lists
        ("http://www.a.org", "BR"),                              # near of both
        ("https://b.org/", "IT"), ("https://b.org/", "IT"),      # exact within one list
        ("https://c.org/", "ZZ"),                                # unique
        ("https://d.org/x", "RU"), ("https://d.org/X", "RU"),   # paths differ in case: distinct
    )
    out = find_duplicates(df)
    assert list(out.columns) == RESULT_COLUMNS
    got = {(r.url, r.cc): r.kind for r in out.itertuples()}
    assert got == {
        ("https://a.org/", "ZZ"): "exact", ("https://a.org/", "IR"): "exact",
        ("http://www.a.org", "BR"): "near",
        ("https://b.org/", "IT"): "exact",
    }
    assert len(out) == 5  # the two b.org rows are both reported
    assert out["date_added"].isna().all()


def test_empty_and_bad_input():
    empty = find_duplicates(pd.DataFrame(columns=["url", "cc", "category_code"]))
    assert empty.empty and list(empty.columns) == RESULT_COLUMNS
    blank = find_duplicates(entries(("", "IT"), ("  ", "IT")))
    assert blank.empty
    with pytest.raises(AnalysisError, match="category_code"):
        find_duplicates(pd.DataFrame({"url": ["x"], "cc": ["IT"]}))


def test_folder_errors(tmp_path):
    with pytest.raises(LoadError, match="no <cc>.csv"):
        read_test_list_folder(tmp_path)
    (tmp_path / "00-LEGEND-category_codes.csv").write_text("a,b\n1,2\n")
    (tmp_path / "it.csv").write_text("link,category_code\nx,NEWS\n")
    with pytest.raises(LoadError, match="it.csv.*url"):
        read_test_list_folder(tmp_path)


def _independent_expectation(folder) -> pd.DataFrame:
    """The same question answered differently: regex normaliser, csv module, counters."""
    import csv
    from collections import Counter

    def norm(u: str) -> str:
        m = re.match(r"^\s*([a-zA-Z]+)://([^/?#]*)(.*?)\s*$", u)
        if not m:
            return u.strip()
        host = m.group(2).lower()
        host = re.sub(r":(80|443)$", "", host)
        host = host[4:] if host.startswith("www.") else host
        rest = m.group(3)
        path, sep, tail = rest.partition("?") if "?" in rest else (rest, "", "")
        if "#" in path and not sep:
            path, sep2, frag = path.partition("#")
            tail, sep = frag, "#"
        return host + path.rstrip("/") + sep + tail

    rows = []
    for path in sorted(folder.glob("*.csv")):
        cc = "ZZ" if path.stem == "global" else path.stem.upper()
        with path.open(newline="") as fh:
            rows += [(r["url"].strip(), cc) for r in csv.DictReader(fh)]
    by_url = Counter(u for u, _ in rows)
    forms: dict[str, set[str]] = {}
    for u, _ in rows:
        forms.setdefault(norm(u), set()).add(u)
    out = set()
    for u, cc in rows:
        if by_url[u] > 1:
            out.add((u, cc, "exact"))
        elif len(forms[norm(u)]) > 1:
            out.add((u, cc, "near"))
    return pd.DataFrame(sorted(out), columns=["url", "cc", "kind"])


@pytest.mark.shared_data
def test_sample_lists_match_an_independent_computation():
    folder = require_shared_data("test-lists-sample")
    got = find_duplicate_test_list_urls(folder)
    expected = _independent_expectation(folder)
    got_set = set(zip(got["url"], got["cc"], got["kind"], strict=True))
    assert got_set == set(expected.itertuples(index=False, name=None))
    assert (got["kind"] == "exact").any() and (got["kind"] == "near").any()
    assert got["date_added"].notna().all()
    assert set(got["cc"]) <= {"ZZ", "BR", "CN", "DE", "EG", "IN", "IR", "IT", "MM", "RU", "TR", "US", "VE"}


@pytest.mark.shared_data
def test_citizenlab_table_through_the_store(tmp_path, monkeypatch):
    folder = require_shared_data("test-lists-sample")
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "data"))
    from ooniutils.store import get_store
    from ooniutils.store.loaders import load_test_lists

    store = get_store(create=True)
    store.init()
    load_test_lists(store, folder)
    from_table = find_duplicate_test_list_urls()
    from_csv = find_duplicate_test_list_urls(folder)
    assert from_table["date_added"].isna().all()
    assert (set(zip(from_table["url"], from_table["cc"], from_table["kind"], strict=True))
            == set(zip(from_csv["url"], from_csv["cc"], from_csv["kind"], strict=True)))
