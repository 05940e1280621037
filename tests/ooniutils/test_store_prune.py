"""Simple queries name the parts their time window needs (store/prune.py, issue 16):
which queries qualify, which parts they read, and the same results as through the views."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils.store import params as P
from ooniutils.store import parts, prune
from ooniutils.store.embedded import EmbeddedStore

T0 = dt.datetime(2025, 1, 1)



def _bounds(sql: str, params: dict | None = None) -> tuple | None:
    b = P.bind(sql, params or {})
    sh = prune.shape(b.sql)
    if sh is None:
        return None
    key = parts.range_key(sh.table)
    if key is None:
        return (sh.table.name, None)
    return (sh.table.name, prune.window(sh, b.values, P.arrow_schema(sh.table).field(key).type))


DAY = 86400
H = 3600
S = int(T0.replace(tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(("sql", "params", "expected"), [
    ("SELECT count() AS n FROM fastpath WHERE measurement_start_time >= %(a)s", {"a": T0},
     ("fastpath", (S - H, None))),  # a DateTime64 parameter: read in UTC, widened by an hour
    ("SELECT count() AS n FROM fastpath WHERE measurement_start_time >= {a:DateTime('Asia/Tokyo')}", {"a": T0},
     ("fastpath", (None, None))),  # a zoned type: not read as a bound
    ("SELECT count() AS n FROM fastpath WHERE probe_cc = 'IT' AND measurement_start_time < %(b)s "
     "AND measurement_start_time >= %(a)s GROUP BY probe_cc", {"a": T0, "b": T0 + dt.timedelta(hours=1)},
     ("fastpath", (S - H, S + 2 * H))),
    ("SELECT 1 FROM fastpath WHERE '2025-01-01' <= measurement_start_time", {}, ("fastpath", (S - DAY, None))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time BETWEEN '2025-01-01' AND '2025-01-01 00:30:00' AND 1",
     {}, ("fastpath", (S - DAY, S + 1800 + DAY))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time = {t:DateTime}", {"t": T0}, ("fastpath", (S - H, S + H))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time < {t:String}", {"t": "2025-01-01"}, ("fastpath", (None, S + DAY))),
    ("SELECT * FROM logs WHERE __REALTIME_TIMESTAMP >= {a:Int64} AND __REALTIME_TIMESTAMP < {b:Int64}",
     {"a": 10, "b": 20}, ("logs", (10, 20))),
    ("SELECT count() FROM fastpath", {}, ("fastpath", (None, None))),
    ("SELECT count(*) FROM fastpath -- a comment naming logs\n", {}, ("fastpath", (None, None))),
    ("SELECT domain FROM citizenlab WHERE cc = 'IT'", {}, ("citizenlab", None)),
    # bounds that are not read: the query still names its parts, all of them
    ("SELECT 1 FROM fastpath WHERE measurement_start_time >= '2025-01-01' OR probe_cc = 'IT'", {},
     ("fastpath", (None, None))),
    ("SELECT 1 FROM fastpath WHERE NOT measurement_start_time >= '2025-01-01'", {}, ("fastpath", (None, None))),
    ("SELECT 1 FROM fastpath WHERE (measurement_start_time >= '2025-01-01')", {}, ("fastpath", (None, None))),
    ("SELECT toStartOfDay(measurement_start_time) AS measurement_start_time FROM fastpath "
     "WHERE measurement_start_time >= '2025-01-01'", {}, ("fastpath", (None, None))),
    ("SELECT measurement_start_time + 86400 measurement_start_time FROM fastpath "
     "WHERE measurement_start_time >= '2025-01-01'", {}, ("fastpath", (None, None))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time >= 1735689600", {}, ("fastpath", (None, None))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time >= now() - INTERVAL 1 HOUR", {}, ("fastpath", (None, None))),
    ("SELECT 1 FROM fastpath WHERE measurement_start_time >= %(a)s ? 1 : 0", {"a": T0}, ("fastpath", (None, None))),
    ("SELECT 1 FROM logs WHERE __REALTIME_TIMESTAMP >= {a:String}", {"a": "10"}, ("logs", (None, None))),
    # not simple: read through the views
    ("SELECT * FROM fastpath WHERE measurement_start_time >= '2025-01-01'", {}, None),  # MATERIALIZED columns
    ("SELECT 1 FROM fastpath AS f WHERE measurement_start_time >= '2025-01-01'", {}, None),
    ("SELECT 1 FROM fastpath f", {}, None),
    ("SELECT 1 FROM `fastpath`", {}, None),
    ("SELECT `measurement_start_time` FROM fastpath", {}, None),
    ("SELECT 1 FROM default.fastpath", {}, None),
    ("SELECT 1 FROM fastpath WHERE probe_cc IN (SELECT cc FROM citizenlab)", {}, None),
    ("SELECT count() FROM (SELECT * FROM fastpath WHERE measurement_start_time >= '2025-01-01')", {}, None),
    ("SELECT 1 FROM fastpath UNION ALL SELECT 1 FROM fastpath", {}, None),
    ("WITH 1 AS x SELECT x FROM fastpath", {}, None),
    ("SELECT 1 FROM fastpath FINAL", {}, None),
    ("SELECT 1 FROM fastpath ARRAY JOIN [1] AS a", {}, None),
    ("SELECT 1 FROM fastpath JOIN logs ON 1", {}, None),
    ("SELECT 1 FROM numbers(3)", {}, None),
])
def test_which_queries_name_their_parts(sql, params, expected):
    assert _bounds(sql, params) == expected


def _fill(store: EmbeddedStore, rng: np.random.Generator, n_parts: int) -> None:
    for i in range(n_parts):
        start = int(rng.integers(0, 20 * 24))  # hours over 20 days
        minutes = (start * 60 + rng.integers(0, 60 * int(rng.integers(1, 72)), 12)).tolist()
        store.insert("fastpath", pd.DataFrame({
            "measurement_uid": [f"p{i}-{j}" for j in range(len(minutes))],
            "probe_cc": [["IT", "DE", "BR"][j % 3] for j in range(len(minutes))],
            "measurement_start_time": [T0 + dt.timedelta(minutes=m) for m in minutes]}))


QUERIES = [
    "SELECT probe_cc, count() AS n FROM fastpath WHERE measurement_start_time >= %(a)s "
    "AND measurement_start_time < %(b)s GROUP BY probe_cc ORDER BY probe_cc",
    "SELECT count() AS n, min(measurement_start_time) AS lo FROM fastpath WHERE measurement_start_time > %(a)s",
    "SELECT measurement_uid FROM fastpath WHERE %(b)s >= measurement_start_time AND probe_cc = 'IT' "
    "ORDER BY measurement_uid",
    "SELECT count() AS n FROM fastpath WHERE measurement_start_time BETWEEN %(a)s AND %(b)s",
    "SELECT count() AS n FROM fastpath WHERE measurement_start_time = %(a)s",
    "SELECT count() AS n FROM fastpath WHERE measurement_start_time >= {a:DateTime64(3)} "
    "AND measurement_start_time <= {b:String}",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_parts=st.integers(1, 12), compact=st.booleans(),
       a=st.integers(-48, 22 * 24), span=st.integers(0, 72), which=st.integers(0, len(QUERIES) - 1))
def test_named_parts_give_the_views_results(small_parts, seed, n_parts, compact, a, span, which):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp))
        _fill(store, rng, n_parts)
        if compact:
            store.compact("fastpath")
        since = T0 + dt.timedelta(hours=a, minutes=int(rng.integers(0, 60)))
        params = {"a": since, "b": since + dt.timedelta(hours=span)}
        if "String" in QUERIES[which]:
            params["b"] = params["b"].strftime("%Y-%m-%d %H:%M:%S")
        direct = store.query(QUERIES[which], params)
        prune.ENABLED = False
        try:
            through_views = store.query(QUERIES[which], params)
        finally:
            prune.ENABLED = True
        pd.testing.assert_frame_equal(direct, through_views)


def test_a_time_window_reads_only_the_parts_it_overlaps(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    for day in range(6):  # one part a day (20 rows: not merged automatically)
        store.insert("fastpath", pd.DataFrame({
            "measurement_uid": [f"d{day}-{i}" for i in range(20)], "probe_cc": ["IT"] * 20,
            "measurement_start_time": [T0 + dt.timedelta(days=3 * day, hours=i) for i in range(20)]}))
    infos = sorted(store.part_infos("fastpath"), key=lambda p: p.lo)
    assert len(infos) == 6
    sql = ("SELECT count() AS n FROM fastpath WHERE measurement_start_time >= %(a)s "
           "AND measurement_start_time < %(b)s")
    a = T0 + dt.timedelta(days=9, hours=5)  # inside the 4th part (days 9–9.8)
    bound = P.bind(sql, {"a": a, "b": a + dt.timedelta(hours=1)})
    rewritten = store._direct(bound, prune.shape(bound.sql))
    named = {p.path.name for p in infos if p.path.name in rewritten}
    assert named == {infos[3].path.name}  # widened by an hour: still only that part
    assert store.query(sql, {"a": a, "b": a + dt.timedelta(hours=1)})["n"].iloc[0] == 1
    far = P.bind(sql, {"a": T0 + dt.timedelta(days=100), "b": T0 + dt.timedelta(days=101)})
    assert sum(p.path.name in store._direct(far, prune.shape(far.sql)) for p in infos) == 1  # one, for the schema
    assert store.query(sql, {"a": T0 + dt.timedelta(days=100), "b": T0 + dt.timedelta(days=101)})["n"].iloc[0] == 0
    everything = P.bind("SELECT count() AS n FROM fastpath", {})
    assert all(p.path.name in store._direct(everything, prune.shape(everything.sql)) for p in infos)
    assert store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0] == 120


def test_an_empty_table_reads_through_the_view(tmp_path):
    store = EmbeddedStore(tmp_path)
    assert store.query("SELECT count() AS n FROM fastpath WHERE measurement_start_time >= %(a)s",
                       {"a": T0})["n"].iloc[0] == 0
    assert store.query("SELECT * FROM logs WHERE __REALTIME_TIMESTAMP > 5").empty
