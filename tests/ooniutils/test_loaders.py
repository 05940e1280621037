"""Loaders against the real samples in ../shared/data and against malformed input."""

from __future__ import annotations

import csv
import re

import pandas as pd
import pytest

from ooniutils.exceptions import LoadError
from ooniutils.store.loaders import country_code, load_sql_file, load_test_lists
from ooniutils.store.schema import FASTPATH
from tests.support.services import require_shared_data
from tests.support.threads import PausedRace

pytestmark = pytest.mark.shared_data

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")
_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", "b": "\b", "f": "\f"}


def _parse_line(line: str) -> dict[str, str | None]:
    """The sample's statements quote every value; decode them independently of ClickHouse."""
    cols = re.search(r"INSERT INTO fastpath ?\(([^)]*)\)", line).group(1).split(",")
    values_part = line[line.index(" VALUES ") :]
    raw = _QUOTED.findall(values_part)
    assert len(raw) == len(cols), line[:200]
    out: dict[str, str | None] = {}
    for c, v in zip(cols, raw, strict=True):
        out[c] = None if v == "\\N" else re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), v)
    return out


def test_fastpath_sample_loads_exactly(embedded_store):
    path = require_shared_data("ooni-fastpath-sample.sql")
    before = pd.Timestamp.now(tz="UTC").floor("ms")
    result = load_sql_file(embedded_store, path)
    after = pd.Timestamp.now(tz="UTC")
    assert result.rows == {"fastpath": 1080}
    assert "update_time" not in embedded_store.query("SELECT * FROM fastpath LIMIT 1").columns
    df = embedded_store.query("SELECT *, update_time FROM fastpath")
    assert len(df) == 1080
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("INSERT")]
    types = dict(FASTPATH.columns)
    for line in (lines[0], lines[len(lines) // 2], lines[-1]):
        expected = _parse_line(line)
        row = df[df["measurement_uid"] == expected["measurement_uid"]].iloc[0]
        for col, want in expected.items():
            got = row[col]
            t = types[col]
            if want is None:
                assert pd.isna(got), col
            elif t.startswith(("UInt", "Int")):
                assert int(got) == int(want), col
            elif t.startswith("Float"):
                assert float(got) == pytest.approx(float(want), rel=1e-6), col
            elif t.startswith("DateTime"):
                assert pd.Timestamp(got) == pd.Timestamp(want), col
            else:
                assert got == want, col
        # MATERIALIZED now64(): the time of the insert, as a server sets it
        assert before <= pd.Timestamp(row["update_time"]).tz_localize(None).tz_localize("UTC") <= after


def test_test_lists_sample_loads_exactly(embedded_store):
    folder = require_shared_data("test-lists-sample")
    expected: dict[str, int] = {}
    samples = []
    for path in sorted(folder.glob("*.csv")):
        cc = "ZZ" if path.stem == "global" else path.stem.lower()
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        expected[cc] = len(rows)
        samples.append((cc, rows[0]))
    result = load_test_lists(embedded_store, folder)
    assert result.rows == expected and result.skipped == []
    df = embedded_store.query("SELECT toString(cc) AS cc, count() AS n FROM citizenlab GROUP BY cc")
    got = {c.rstrip("\0"): int(n) for c, n in zip(df["cc"], df["n"], strict=True)}
    assert got == expected
    for cc, rec in samples:
        hit = embedded_store.query(
            "SELECT domain, category_code FROM citizenlab WHERE url = {u:String} AND cc = {cc:FixedString(32)}",
            {"u": rec["url"], "cc": cc})
        assert len(hit) >= 1
        assert hit["category_code"].iloc[0] == rec["category_code"]
        assert hit["domain"].iloc[0] == re.match(r"\w+://([^/:]+)", rec["url"]).group(1).lower()


def test_two_test_list_loads_at_once_insert_each_row_once(embedded_store, tmp_path, monkeypatch):
    """Load A has worked out the missing rows and is about to insert them when load B
    starts. B must wait for A (and then insert nothing), not insert the same rows too."""
    (tmp_path / "it.csv").write_text("url,category_code\nhttps://a.example/,NEWS\nhttps://b.example/,GRP\n")
    race, real_insert = PausedRace(), type(embedded_store).insert

    def insert(self, table, df):
        race.checkpoint()
        return real_insert(self, table, df)

    monkeypatch.setattr(type(embedded_store), "insert", insert)
    results = race.run(lambda: load_test_lists(embedded_store, tmp_path))
    assert len(embedded_store.query("SELECT url FROM citizenlab")) == 2
    assert (results["A"].already_stored, results["B"].already_stored) == (0, 2)


def test_country_codes():
    assert (country_code("it"), country_code("global"), country_code("IT"), country_code("readme")) == \
        ("it", "ZZ", "it", None)


def test_test_lists_skip_other_files_and_reject_bad_rows(embedded_store, tmp_path):
    (tmp_path / "it.csv").write_text("url,category_code,category_description,date_added,source,notes\n"
                                     "https://www.Example.org:8443/a,NEWS,News,2020-01-01,x,\n")
    (tmp_path / "00-LEGEND.csv").write_text("code,description\n")
    result = load_test_lists(embedded_store, tmp_path)
    assert result.rows == {"it": 1} and result.skipped == ["00-LEGEND.csv"]
    assert embedded_store.query("SELECT domain FROM citizenlab")["domain"].tolist() == ["www.example.org"]
    (tmp_path / "de.csv").write_text("url,category_code\nnot a url,NEWS\n")
    with pytest.raises(LoadError, match=r"de\.csv:2: no host name"):
        load_test_lists(embedded_store, tmp_path)
    (tmp_path / "de.csv").write_text("address,code\n")
    with pytest.raises(LoadError, match=r"de\.csv:1: header lacks column\(s\) category_code, url"):
        load_test_lists(embedded_store, tmp_path)
    assert len(embedded_store.query("SELECT * FROM citizenlab")) == 1  # failed loads wrote nothing


def _write(tmp_path, *lines):
    p = tmp_path / "dump.sql"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = "INSERT INTO fastpath (measurement_uid,probe_cc,probe_asn) VALUES ('u1','IT','3269');"


@pytest.mark.parametrize("bad, message", [
    ("INSERT INTO nosuch (a) VALUES ('x');", r"dump\.sql:3: unknown table 'nosuch'"),
    ("DELETE FROM fastpath;", r"dump\.sql:3: not an INSERT"),
    ("INSERT INTO fastpath (measurement_uid,probe_asn) VALUES ('u2','not-a-number');", r"dump\.sql:3: ClickHouse cannot parse"),
    ("INSERT INTO fastpath (measurement_uid,nosuchcol) VALUES ('u2','x');", r"dump\.sql:3: ClickHouse cannot parse"),
    ("INSERT INTO fastpath (measurement_uid) VALUES ('u2'); DROP TABLE fastpath;", r"dump\.sql:3: more than one statement"),
    ("INSERT INTO fastpath (measurement_uid) VALUES ('a;b'), ('u2'", r"dump\.sql:3: ClickHouse cannot parse"),
])
def test_malformed_sql_names_file_and_line_and_writes_nothing(embedded_store, tmp_path, bad, message):
    load_sql_file(embedded_store, _write(tmp_path, GOOD))
    dump = _write(tmp_path, "-- a comment", GOOD.replace("u1", "u9"), bad, GOOD)
    with pytest.raises(LoadError, match=message):
        load_sql_file(embedded_store, dump)
    assert embedded_store.query("SELECT measurement_uid FROM fastpath")["measurement_uid"].tolist() == ["u1"]


def test_sql_loader_into_server_store(server_store):
    path = require_shared_data("ooni-fastpath-sample.sql")
    assert load_sql_file(server_store, path).rows == {"fastpath": 1080}
    assert int(server_store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 1080


def test_test_lists_reload_is_idempotent_and_adds_only_new_rows(embedded_store, tmp_path):
    head = "url,category_code\n"
    (tmp_path / "it.csv").write_text(head + "https://a.example/,NEWS\nhttps://a.example/,NEWS\n"
                                     "https://b.example/,GAME\n")
    (tmp_path / "global.csv").write_text(head + "https://a.example/,NEWS\n")

    def stored() -> list[tuple[str, str, str]]:
        df = embedded_store.query("SELECT url, toString(cc) AS cc, category_code FROM citizenlab "
                                  "ORDER BY url, cc, category_code")
        return [(u, c.rstrip("\0"), k) for u, c, k in zip(df["url"], df["cc"], df["category_code"],
                                                          strict=True)]

    first = load_test_lists(embedded_store, tmp_path)
    assert first.rows == {"it": 3, "ZZ": 1} and first.already_stored == 0
    # a URL listed twice in one file is kept twice: the duplicates analysis reports it
    assert stored() == [("https://a.example/", "ZZ", "NEWS"), ("https://a.example/", "it", "NEWS"),
                        ("https://a.example/", "it", "NEWS"), ("https://b.example/", "it", "GAME")]
    again = load_test_lists(embedded_store, tmp_path)
    assert again.rows == {"it": 3, "ZZ": 1} and again.already_stored == 4
    assert len(stored()) == 4
    # the list gains a URL and a recategorised entry: only those two rows are added
    (tmp_path / "it.csv").write_text(head + "https://a.example/,NEWS\nhttps://a.example/,NEWS\n"
                                     "https://b.example/,GAME\nhttps://c.example/,NEWS\n"
                                     "https://b.example/,GMB\n")
    grown = load_test_lists(embedded_store, tmp_path)
    assert grown.already_stored == 4
    assert stored()[-3:] == [("https://b.example/", "it", "GAME"), ("https://b.example/", "it", "GMB"),
                             ("https://c.example/", "it", "NEWS")]
