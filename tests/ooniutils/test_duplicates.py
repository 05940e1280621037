"""Duplicate test-list URLs: handcrafted cases, the real sample checked against an
independent normaliser, and the citizenlab table through the embedded store."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        ("https://a.org/", "ZZ"): "exact+near", ("https://a.org/", "IR"): "exact+near",
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


def test_fragments_do_not_distinguish_urls():
    df = entries(("https://www.ted.com/", "ZZ"), ("https://www.ted.com/#/", "US"),
                 ("http://twitter.com/#!/a", "IR"), ("http://twitter.com/#!/b", "IR"),
                 ("https://c.org/page#top", "IT"))
    out = find_duplicates(df)
    got = {(r.url, r.normalized_url, r.kind) for r in out.itertuples()}
    assert got == {  # the listed string, fragment included, stays in the report
        ("https://www.ted.com/", "//ted.com", "near"), ("https://www.ted.com/#/", "//ted.com", "near"),
        ("http://twitter.com/#!/a", "//twitter.com", "near"),
        ("http://twitter.com/#!/b", "//twitter.com", "near"),
    }


def test_near_group_of_exact_duplicates_reports_both_relations():
    df = entries(("http://1xbet.com/", "ZZ"), ("http://1xbet.com/", "RU"),
                 ("https://1xbet.com/", "IR"), ("https://1xbet.com/", "TR"))
    out = find_duplicates(df)
    assert set(out["kind"]) == {"exact+near"}
    assert out["exact"].all() and out["near"].all()
    assert len(out) == 4


@settings(deadline=None, max_examples=60)  # a shared, loaded machine: no per-example deadline
@given(st.lists(st.tuples(
    st.sampled_from(["http", "https", "HTTP"]), st.sampled_from(["", "www."]),
    st.sampled_from(["a.org", "B.org", "a.org:443", "a.org:8080"]),
    st.sampled_from(["", "/", "/x", "/x/", "/X"]), st.sampled_from(["", "?q=1"]),
    st.sampled_from(["", "#", "#/", "#!/a", "#frag"]),
    st.sampled_from(["ZZ", "IT", "BR"])), min_size=1, max_size=12))
def test_duplicates_agree_with_their_definition(parts):
    urls = [(f"{s}://{w}{h}{p}{q}{f}", cc) for s, w, h, p, q, f, cc in parts]
    out = find_duplicates(entries(*urls))
    # An independent statement of the rules: host case, www., default port, trailing
    # slash, scheme and fragment never matter; path case, query and other ports do.
    def form(u: str) -> tuple[str, str, str]:
        m = re.match(r"^[a-zA-Z]+://([^/?#]*)([^?#]*)(\?[^#]*)?", u)
        assert m is not None
        host = re.sub(r":(80|443)$", "", m.group(1).lower()).removeprefix("www.")
        return host, m.group(2).rstrip("/"), m.group(3) or ""

    count = {u: sum(1 for v, _ in urls if v == u) for u, _ in urls}
    forms: dict[tuple[str, str, str], set[str]] = {}
    for u, _ in urls:
        forms.setdefault(form(u), set()).add(u)
    expected = sorted((u, cc, count[u] > 1, len(forms[form(u)]) > 1) for u, cc in urls
                      if count[u] > 1 or len(forms[form(u)]) > 1)
    got = sorted(zip(out["url"], out["cc"], out["exact"], out["near"], strict=True))
    assert got == expected
    assert all(k == "+".join(n for n, b in (("exact", e), ("near", nr)) if b)
               for k, e, nr in zip(out["kind"], out["exact"], out["near"], strict=True))


def test_empty_csv_is_a_clear_error(tmp_path):
    (tmp_path / "it.csv").write_text("")
    with pytest.raises(LoadError, match=r"it\.csv.*empty file"):
        find_duplicate_test_list_urls(tmp_path)
    from ooniutils.store.loaders import read_test_list
    with pytest.raises(LoadError, match=r"it\.csv.*empty file"):
        read_test_list(tmp_path / "it.csv", "IT")


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
        rest = m.group(3).split("#", 1)[0]  # the fragment never reaches the server
        path, sep, tail = rest.partition("?")
        return host + path.rstrip("/") + sep + tail

    rows = []
    for path in sorted(folder.glob("*.csv")):
        cc = "ZZ" if path.stem == "global" else path.stem.lower()
        with path.open(newline="") as fh:
            rows += [(r["url"].strip(), cc) for r in csv.DictReader(fh)]
    by_url = Counter(u for u, _ in rows)
    forms: dict[str, set[str]] = {}
    for u, _ in rows:
        forms.setdefault(norm(u), set()).add(u)
    out = set()
    for u, cc in rows:
        kinds = [k for k, holds in (("exact", by_url[u] > 1), ("near", len(forms[norm(u)]) > 1))
                 if holds]
        if kinds:
            out.add((u, cc, "+".join(kinds)))
    return pd.DataFrame(sorted(out), columns=["url", "cc", "kind"])


@pytest.mark.shared_data
def test_sample_lists_match_an_independent_computation():
    folder = require_shared_data("test-lists-sample")
    got = find_duplicate_test_list_urls(folder)
    expected = _independent_expectation(folder)
    got_set = set(zip(got["url"], got["cc"], got["kind"], strict=True))
    assert got_set == set(expected.itertuples(index=False, name=None))
    assert (got["kind"] == "exact").any() and (got["kind"] == "near").any()
    assert (got["kind"] == "exact+near").any()
    assert got["date_added"].notna().all()
    assert set(got["cc"]) <= {"ZZ", "br", "cn", "de", "eg", "in", "ir", "it", "mm", "ru", "tr", "us", "ve"}


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
