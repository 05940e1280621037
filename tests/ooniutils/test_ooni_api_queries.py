"""OONI's own API queries, as OONI wrote them, against both store back-ends.

The SQL below is taken from OONI's API (ooni/backend: ``api/ooniapi/private.py``,
``api/ooniapi/aggregation.py`` and the measurements service); only the parameters are
rewritten, from SQLAlchemy's ``:name`` to ClickHouse's ``{name:Type}`` (:func:`ooni_sql`).
The data is the real fastpath sample and the real test lists of ``../shared/data``, plus a
copy of the sample folded into the four weeks before three days ago (OONI's private queries
look at the last 30 days relative to ``today()``; the sample spans four years): a row's new
time is ``anchor - ((last - t) mod 28 days)``. Every answer is checked against
an independent parse of the dump and the CSVs, on the embedded store and on the server path.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ooniutils.store.base import Store
from ooniutils.store.loaders import load_sql_file, load_test_lists
from ooniutils.store.schema import TEST_GROUPS
from tests.support.services import require_shared_data

pytestmark = pytest.mark.shared_data

_TOKEN = re.compile(r"'((?:[^'\\]|\\.)*)'|(\\N|NULL)|([-+0-9.eE]+)")
_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", "b": "\b", "f": "\f"}
RECENT = "recent-"  # prefix of the moved copy's measurement_uid and report_id


def parse_dump(path: Path) -> list[dict[str, str | None]]:
    """The dump's rows, decoded without ClickHouse (a tokenizer over each VALUES tuple)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("INSERT"):
            continue
        m = re.search(r"INSERT INTO fastpath ?\(([^)]*)\)", line)
        assert m, line[:80]
        cols = m.group(1).split(",")
        body = line[line.index(" VALUES ") + 8:].strip().rstrip(";").strip()[1:-1]
        values: list[str | None] = []
        for t in _TOKEN.finditer(body):
            if t.group(1) is not None:
                values.append(re.sub(r"\\(.)", lambda x: _UNESCAPE.get(x.group(1), x.group(1)), t.group(1)))
            else:
                values.append(None if t.group(2) else t.group(3))
        assert len(values) == len(cols), line[:80]
        rows.append(dict(zip(cols, values, strict=True)))
    return rows


def ooni_sql(query: str, **types: str) -> str:
    """OONI's SQLAlchemy ``:name`` parameters as ClickHouse ``{name:Type}``; nothing else
    of the query changes."""
    def sub(m: re.Match[str]) -> str:
        return "{" + f"{m.group(1)}:{types[m.group(1)]}" + "}"
    out = re.sub(r"(?<![:\w]):(\w+)", sub, query)
    assert not set(types) - set(re.findall(r"\{(\w+):", out)), "a parameter was not used"
    return out


@pytest.fixture(params=["embedded", "server"])
def ooni(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A store holding the sample, its moved copy and the test lists; the parsed truth."""
    dump = require_shared_data("ooni-fastpath-sample.sql")
    lists = require_shared_data("test-lists-sample")
    store: Store = request.getfixturevalue("store" if request.param == "embedded" else "server_store")
    load_sql_file(store, dump)
    load_test_lists(store, lists)
    rows = parse_dump(dump)
    today = dt.datetime.now(dt.UTC).date()
    last = max(dt.datetime.fromisoformat(r["measurement_start_time"] or "") for r in rows)
    anchor = dt.datetime.combine(today - dt.timedelta(days=3), dt.time(23, 59, 59))
    fold = dt.timedelta(days=28)
    moved = store.query("SELECT * FROM fastpath")
    moved["measurement_uid"] = RECENT + moved["measurement_uid"]
    moved["report_id"] = RECENT + moved["report_id"]
    mst = pd.to_datetime(moved["measurement_start_time"]).dt.tz_localize(None)
    new = pd.Timestamp(anchor) - ((pd.Timestamp(last) - mst) % pd.Timedelta(fold))
    moved["test_start_time"] = pd.to_datetime(moved["test_start_time"]).dt.tz_localize(None) + (new - mst)
    moved["measurement_start_time"] = new
    store.insert("fastpath", moved)
    recent = []
    for r in rows:
        t = dt.datetime.fromisoformat(r["measurement_start_time"] or "")
        copy = dict(r, measurement_uid=RECENT + (r["measurement_uid"] or ""))
        copy["measurement_start_time"] = str(anchor - ((last - t) % fold))
        recent.append(copy)
    citizenlab = []
    for path in sorted(lists.glob("*.csv")):
        cc = "ZZ" if path.stem == "global" else path.stem.lower()
        with path.open(newline="", encoding="utf-8") as fh:
            citizenlab += [(rec["url"], cc, rec["category_code"]) for rec in csv.DictReader(fh)]
    return {"store": store, "rows": rows, "recent": recent, "today": today,
            "citizenlab": citizenlab, "kind": request.param}


def _day(r: dict[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(r["measurement_start_time"]).date()


def test_countries(ooni):
    q = """
    SELECT probe_cc, COUNT() AS measurement_count
    FROM fastpath
    GROUP BY probe_cc ORDER BY probe_cc
    """
    got = ooni["store"].query(q)
    want = collections.Counter(r["probe_cc"] for r in ooni["rows"])
    assert list(got["probe_cc"]) == sorted(want)
    assert [int(n) for n in got["measurement_count"]] == [2 * want[c] for c in sorted(want)]


def test_test_groups_and_test_coverage(ooni):
    groups = ooni["store"].query("SELECT DISTINCT(test_group) FROM test_groups ORDER BY test_group")
    assert list(groups["test_group"]) == sorted({g for _, g in TEST_GROUPS.seed})
    q = ooni_sql("""SELECT
        toDate(measurement_start_time) as measurement_start_day,
        test_group,
        COUNT() as msmt_cnt
    FROM fastpath
    ANY LEFT JOIN test_groups USING (test_name)
    WHERE measurement_start_day >= today() - interval 32 day
    AND measurement_start_day < today() - interval 2 day
    AND probe_cc = :probe_cc
    GROUP BY measurement_start_day, test_group
    """, probe_cc="String")
    group_of = dict(TEST_GROUPS.seed)
    today = ooni["today"]
    for cc in ("US", "BR"):
        got = ooni["store"].query(q, {"probe_cc": cc})
        got_set = {(pd.Timestamp(d).date(), g, int(n))
                   for d, g, n in zip(got["measurement_start_day"], got["test_group"], got["msmt_cnt"], strict=True)}
        want = collections.Counter(
            (_day(r), group_of.get(r["test_name"], "")) for r in ooni["recent"]
            if r["probe_cc"] == cc and today - dt.timedelta(days=32) <= _day(r) < today - dt.timedelta(days=2))
        assert got_set == {(d, g, n) for (d, g), n in want.items()}, cc
    assert got_set, "the moved copy puts BR measurements in the window"


def test_network_coverage_with_fill(ooni):
    q = ooni_sql("""SELECT
        toDate(measurement_start_time) AS test_day,
        COUNT(DISTINCT probe_asn) as count
    FROM fastpath
    WHERE test_day >= today() - interval 31 day
        AND test_day < today() - interval 1 day
        AND probe_cc = :probe_cc
        AND test_name IN :test_names
    GROUP BY test_day ORDER BY test_day
    WITH FILL
        FROM today() - interval 31 day
        TO today() - interval 1 day
    """, probe_cc="String", test_names="Array(String)")
    names = sorted(t for t, g in TEST_GROUPS.seed if g in ("websites", "im"))
    got = ooni["store"].query(q, {"probe_cc": "BR", "test_names": names})
    today = ooni["today"]
    assert len(got) == 30  # one row per day, filled
    asns: dict[dt.date, set[str]] = collections.defaultdict(set)
    for r in ooni["recent"]:
        if r["probe_cc"] == "BR" and r["test_name"] in names \
                and today - dt.timedelta(days=31) <= _day(r) < today - dt.timedelta(days=1):
            asns[_day(r)].add(r["probe_asn"] or "")
    got_map = {pd.Timestamp(d).date(): int(n) for d, n in zip(got["test_day"], got["count"], strict=True)}
    assert {d: n for d, n in got_map.items() if n} == {d: len(s) for d, s in asns.items()}
    assert asns


def test_website_networks_stats_and_urls(ooni):
    store, today = ooni["store"], ooni["today"]
    in_window = [r for r in ooni["recent"] if r["probe_cc"] == "BR"
                 and today - dt.timedelta(days=31) <= _day(r) < today]
    networks = store.query(ooni_sql("""SELECT
        COUNT() AS count,
        probe_asn
        FROM fastpath
        WHERE
            measurement_start_time >= today() - interval '31 day'
        AND measurement_start_time < today()
        AND probe_cc = :probe_cc
        GROUP BY probe_asn
        ORDER BY count DESC
        """, probe_cc="String"), {"probe_cc": "BR"})
    want = collections.Counter(int(r["probe_asn"] or 0) for r in in_window)
    assert dict(zip(map(int, networks["probe_asn"]), map(int, networks["count"]), strict=True)) == dict(want)
    assert list(networks["count"]) == sorted(networks["count"], reverse=True)
    asn = want.most_common(1)[0][0]
    web = [r for r in in_window if int(r["probe_asn"] or 0) == asn and r["test_name"] == "web_connectivity"]
    url = collections.Counter(r["input"] for r in web).most_common(1)[0][0]

    stats = store.query(ooni_sql("""SELECT
        toDate(measurement_start_time) AS test_day,
        countIf(anomaly = 't') as anomaly_count,
        countIf(confirmed = 't') as confirmed_count,
        countIf(msm_failure = 't') as failure_count,
        COUNT() AS total_count
        FROM fastpath
        WHERE measurement_start_time >= today() - interval '31 day'
        AND measurement_start_time < today()
        AND probe_cc =  :probe_cc
        AND probe_asn = :probe_asn
        AND input = :input
        GROUP BY test_day ORDER BY test_day
    """, probe_cc="String", probe_asn="Int32", input="String"), {"probe_cc": "BR", "probe_asn": asn, "input": url})
    mine = [r for r in in_window if int(r["probe_asn"] or 0) == asn and r["input"] == url]
    assert int(stats["total_count"].sum()) == len(mine)
    assert int(stats["anomaly_count"].sum()) == sum(r["anomaly"] == "t" for r in mine)

    total = store.query(ooni_sql("""
        SELECT COUNT(DISTINCT(input)) as input_count
        FROM fastpath
        WHERE measurement_start_time >= today() - interval '31 day'
        AND measurement_start_time < today()
        AND test_name = 'web_connectivity'
        AND probe_cc = :probe_cc
        AND probe_asn = :probe_asn
    """, probe_cc="String", probe_asn="Int32"), {"probe_cc": "BR", "probe_asn": asn})
    assert int(total["input_count"].iloc[0]) == len({r["input"] for r in web})
    page = store.query(ooni_sql("""SELECT input,
        countIf(anomaly = 't') as anomaly_count,
        countIf(confirmed = 't') as confirmed_count,
        countIf(msm_failure = 't') as failure_count,
        COUNT() AS total_count
        FROM fastpath
        WHERE measurement_start_time >= today() - interval '31 day'
        AND measurement_start_time < today()
        AND test_name = 'web_connectivity'
        AND probe_cc =  :probe_cc
        AND probe_asn = :probe_asn
        GROUP BY input
        ORDER BY confirmed_count DESC, total_count DESC,
                anomaly_count DESC, input ASC
        LIMIT :limit
        OFFSET :offset
        """, probe_cc="String", probe_asn="Int32", limit="UInt32", offset="UInt32"),
        {"probe_cc": "BR", "probe_asn": asn, "limit": 5, "offset": 1})
    per_input = collections.Counter(r["input"] for r in web)
    order = sorted(per_input, key=lambda u: (-sum(r["confirmed"] == "t" for r in web if r["input"] == u),
                                             -per_input[u],
                                             -sum(r["anomaly"] == "t" for r in web if r["input"] == u), u))
    assert list(page["input"]) == order[1:6]


def test_aggregation_by_category_reads_lowercase_citizenlab_cc(ooni):
    """OONI's aggregation query lowercases the countries to match ``citizenlab.cc``."""
    q = ooni_sql("""SELECT countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS anomaly_count,
        countIf(confirmed = 't' AND msm_failure = 'f') AS confirmed_count,
        countIf(msm_failure = 't') AS failure_count,
        countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS ok_count,
        COUNT(*) AS measurement_count
    FROM fastpath JOIN citizenlab ON citizenlab.url = fastpath.input
    WHERE citizenlab.category_code = :category_code
    AND (citizenlab.cc IN :lccs OR citizenlab.cc = 'ZZ')
    AND probe_cc IN :probe_cc_s
    AND measurement_start_time >= :since
    AND measurement_start_time < :until""",
                 category_code="String", lccs="Array(String)", probe_cc_s="Array(String)",
                 since="DateTime", until="DateTime")
    params = {"category_code": "POLR", "lccs": ["br"], "probe_cc_s": ["BR"],
              "since": dt.datetime(2021, 1, 1), "until": dt.datetime(2025, 8, 1)}  # the sample, not the copy
    got = ooni["store"].query(q, params)
    lists = collections.defaultdict(list)
    for url, cc, cat in ooni["citizenlab"]:
        lists[url].append((cc, cat))
    want = sum(1 for r in ooni["rows"] if r["probe_cc"] == "BR"
               for cc, cat in lists.get(r["input"] or "", []) if cat == "POLR" and cc in ("br", "ZZ"))
    assert want == 18
    assert int(got["measurement_count"].iloc[0]) == want


def test_measurement_meta_reads_is_verified_and_no_update_time(ooni):
    row = ooni["rows"][len(ooni["rows"]) // 2]
    q = ooni_sql("""SELECT * FROM fastpath
        LEFT OUTER JOIN citizenlab ON citizenlab.url = fastpath.input
        WHERE measurement_uid = :uid
        LIMIT 1
    """, uid="String")
    got = ooni["store"].query(q, {"uid": row["measurement_uid"]})
    assert len(got) == 1
    assert "is_verified" in got.columns and got["is_verified"].iloc[0] == ""
    assert "update_time" not in got.columns  # MATERIALIZED: not part of SELECT *
    assert got["report_id"].iloc[0] == row["report_id"] and int(got["probe_asn"].iloc[0]) == int(row["probe_asn"] or 0)
    cats = {cat for url, _, cat in ooni["citizenlab"] if url == row["input"]}
    assert (got["category_code"].iloc[0] in cats) if cats else got["category_code"].iloc[0] == ""


def test_asn_and_countries_by_month(ooni):
    for col in ("probe_asn", "probe_cc"):
        got = ooni["store"].query(f"""SELECT
        COUNT(DISTINCT({col})) AS value,
        toStartOfMonth(measurement_start_time) AS date
    FROM fastpath
    WHERE measurement_start_time < toStartOfMonth(addMonths(now(), 1))
    AND measurement_start_time > toStartOfMonth(subtractMonths(now(), 24))
    GROUP BY date ORDER BY date
    """)
        today = ooni["today"]
        m = today.year * 12 + today.month - 1 - 24
        start = dt.datetime(m // 12, m % 12 + 1, 1)
        want: dict[dt.date, set[str]] = collections.defaultdict(set)
        for r in ooni["rows"] + ooni["recent"]:
            t = dt.datetime.fromisoformat(r["measurement_start_time"])
            if t > start:
                want[t.date().replace(day=1)].add(r[col] or "")
        assert {pd.Timestamp(d).date(): int(v) for d, v in zip(got["date"], got["value"], strict=True)} == \
            {d: len(s) for d, s in want.items()}, col
