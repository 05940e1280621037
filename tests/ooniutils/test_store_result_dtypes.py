"""Simple queries read LowCardinality columns as plain ones (store/prune.py, issue 16, fourth
round), yet return the frames the views return: same values and the same pandas dtypes,
also for empty results and columns holding only NULLs (where chDB gives ``str`` for a
String column but ``object`` for a LowCardinality one)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils.store import embedded, prune
from ooniutils.store import params as P
from ooniutils.store.embedded import EmbeddedStore
from ooniutils.store.schema import FASTPATH, LOGS

T0 = dt.datetime(2025, 1, 1)
US = 1_735_689_600 * 10**6  # T0 in µs


@pytest.fixture(autouse=True)
def plain_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every windowed query reads plain strings (these tables are far below PLAIN_ROWS)."""
    monkeypatch.setattr(prune, "PLAIN_ROWS", 0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedStore:
    s = EmbeddedStore(Path(tmp_path_factory.mktemp("dtypes")))
    n = 60
    s.insert("fastpath", pd.DataFrame({
        "measurement_uid": [f"m{i}" for i in range(n)],
        "probe_cc": [["IT", "DE", "BR"][i % 3] for i in range(n)],
        "test_name": ["web_connectivity"] * n,
        "measurement_start_time": [T0 + dt.timedelta(minutes=10 * i) for i in range(n)]}))
    s.insert("logs", pd.DataFrame({
        "__REALTIME_TIMESTAMP": [US + i * 10**6 for i in range(n)],
        "_HOSTNAME": ["h"] * n,
        "_MACHINE_ID": ["m"] * n,
        "SYSLOG_IDENTIFIER": [None if i % 2 else "kernel" for i in range(n)],  # some NULLs
        "_COMM": [None] * n,  # only NULLs
        "_UID": [None if i % 3 else 1000 for i in range(n)],
        "PRIORITY": [3] * n}))
    return s


def _through_views(store: EmbeddedStore, sql: str, params: dict) -> pd.DataFrame:
    prune.ENABLED = False
    try:
        return store.query(sql, params)
    finally:
        prune.ENABLED = True


def _low_cardinality(store: EmbeddedStore, sql: str, params: dict) -> pd.DataFrame:
    prune.LOW_CARDINALITY = True
    try:
        return store.query(sql, params)
    finally:
        prune.LOW_CARDINALITY = False


FP = "measurement_start_time >= %(a)s AND measurement_start_time < %(b)s"
LG = "__REALTIME_TIMESTAMP >= %(a)s AND __REALTIME_TIMESTAMP < %(b)s"
QUERIES = [
    f"SELECT probe_cc, count() AS n FROM fastpath WHERE {FP} GROUP BY probe_cc ORDER BY probe_cc",
    f"SELECT measurement_uid, probe_cc, test_name, measurement_start_time FROM fastpath WHERE {FP} "
    "ORDER BY measurement_uid",
    f"SELECT lower(probe_cc) AS cc, concat(probe_cc, '-', test_name) AS k, if(1, probe_cc, 'x') AS s, "
    f"any(probe_cc) AS a, groupArray(probe_cc) AS g FROM fastpath WHERE {FP} GROUP BY probe_cc, test_name ORDER BY cc",
    f"SELECT toStartOfHour(measurement_start_time) AS t, count() AS n FROM fastpath WHERE probe_cc IN %(ccs)s "
    f"AND {FP} GROUP BY t ORDER BY t",
    f"SELECT SYSLOG_IDENTIFIER, _COMM, _UID, _EXE, coalesce(_SYSTEMD_UNIT, UNIT, SYSLOG_IDENTIFIER, '') AS unit, "
    f"__REALTIME_TIMESTAMP FROM logs WHERE {LG} ORDER BY __REALTIME_TIMESTAMP",
    f"SELECT _COMM, count() AS n FROM logs WHERE {LG} AND PRIORITY <= 3 GROUP BY _COMM",
    f"SELECT _COMM AS c FROM logs WHERE {LG} ORDER BY c LIMIT 3;",  # a trailing ";"
    f"SELECT probe_cc FROM fastpath WHERE {FP} ORDER BY probe_cc -- a trailing comment",
    f"SELECT probe_cc FROM fastpath WHERE {FP} ORDER BY probe_cc FORMAT JSON",  # not DESCRIBE-able
]


@pytest.mark.parametrize("hours", [0, 1, 5, 24], ids=["empty", "one hour", "some hours", "all"])
@pytest.mark.parametrize("sql", QUERIES)
def test_plain_strings_give_the_views_frames(store, sql, hours):
    embedded._low_cardinality_columns.clear()
    if "logs" in sql:
        params = {"a": US + 30 * 10**6, "b": US + 30 * 10**6 + hours * 3 * 10**6}
    else:
        params = {"a": T0 + dt.timedelta(hours=2), "b": T0 + dt.timedelta(hours=2 + hours),
                  "ccs": ["IT", "DE"]}
    got = store.query(sql, params)
    pd.testing.assert_frame_equal(got, _through_views(store, sql, params))
    pd.testing.assert_frame_equal(got, _low_cardinality(store, sql, params))
    assert (len(got) == 0) == (hours == 0)
    assert list(got.dtypes) == list(store.query(sql, params).dtypes)  # again, with the remembered types


def test_the_query_reads_plain_strings(store):
    sql = f"SELECT probe_cc, count() AS n FROM fastpath WHERE {FP} GROUP BY probe_cc"
    bound = P.bind(sql, {"a": T0, "b": T0 + dt.timedelta(hours=1)})
    run = store._direct(bound, prune.shape(bound.sql))
    assert "probe_cc\\` String," in run and "LowCardinality" not in run  # backticks escaped in the literal
    assert P.structure(FASTPATH, low_cardinality=False).count("LowCardinality") == 0
    assert "`_UID` Nullable(UInt32)" in P.structure(LOGS, low_cardinality=False)
    assert "`_UID` LowCardinality(Nullable(UInt32))" in P.structure(LOGS)
    with_lc = store._direct(bound, prune.shape(bound.sql), low_cardinality=True)
    assert "probe_cc\\` LowCardinality(String)," in with_lc


def test_empty_and_null_columns_are_objects_of_none(store):
    """What the views have always given (and what a notebook's ``df.probe_cc.dtype`` sees)."""
    empty = store.query("SELECT probe_cc, measurement_uid FROM fastpath WHERE measurement_start_time >= %(a)s",
                        {"a": T0 + dt.timedelta(days=30)})
    assert empty.empty
    assert empty["probe_cc"].dtype == np.dtype(object)  # LowCardinality(String)
    assert isinstance(empty["measurement_uid"].dtype, pd.StringDtype)  # String
    nulls = store.query(f"SELECT _COMM, SYSLOG_IDENTIFIER, _CMDLINE FROM logs WHERE {LG}",
                        {"a": US, "b": US + 10 * 10**6})
    assert len(nulls) == 10
    assert nulls["_COMM"].dtype == np.dtype(object) and nulls["_COMM"].tolist() == [None] * 10
    assert isinstance(nulls["SYSLOG_IDENTIFIER"].dtype, pd.StringDtype)  # has values
    assert isinstance(nulls["_CMDLINE"].dtype, pd.StringDtype)  # Nullable(String), only NULLs


def test_types_are_asked_once_per_sql_text(store, monkeypatch):
    sql = "SELECT probe_cc FROM fastpath WHERE measurement_start_time >= %(a)s"
    embedded._low_cardinality_columns.clear()
    store.query(sql, {"a": T0})  # values: nothing to ask
    assert embedded._low_cardinality_columns == {}
    store.query(sql, {"a": T0 + dt.timedelta(days=30)})  # empty: asked
    assert list(embedded._low_cardinality_columns.values()) == [(True,)]
    asked: list[str] = []
    real = embedded._session

    class Spy:
        def __init__(self, sess):
            self.sess = sess

        def query(self, q, *args, **kw):
            asked.append(q)
            return self.sess.query(q, *args, **kw)

    monkeypatch.setattr(embedded, "_session", lambda: Spy(real()))
    got = store.query(sql, {"a": T0 + dt.timedelta(days=40)})
    assert got["probe_cc"].dtype == np.dtype(object)
    assert not any(q.startswith("DESCRIBE") for q in asked) and len(asked) == 1


def test_small_windows_keep_low_cardinality(store, monkeypatch):
    """Below PLAIN_ROWS estimated rows the structure keeps LowCardinality (no dtype work)."""
    monkeypatch.setattr(prune, "PLAIN_ROWS", 1 << 16)
    sql = f"SELECT probe_cc, count() AS n FROM fastpath WHERE {FP} GROUP BY probe_cc"
    bound = P.bind(sql, {"a": T0, "b": T0 + dt.timedelta(hours=1)})
    run, plain = store._plan(bound, prune.shape(bound.sql))
    assert not plain and "probe_cc\\` LowCardinality(String)," in run
    monkeypatch.setattr(prune, "PLAIN_ROWS", 10)  # 60 rows over 10 hours: the 3-hour window holds ~18
    run, plain = store._plan(bound, prune.shape(bound.sql))
    assert plain and "LowCardinality" not in run
    monkeypatch.setattr(prune, "PLAIN_ROWS", 30)
    assert not store._plan(bound, prune.shape(bound.sql))[1]
    whole = P.bind("SELECT probe_cc, count() AS n FROM fastpath GROUP BY probe_cc", {})
    monkeypatch.setattr(prune, "PLAIN_ROWS", 1 << 16)
    assert store._plan(whole, prune.shape(whole.sql))[1]  # no window: a scan


def test_rows_within_spreads_rows_over_each_group():
    from ooniutils.store.parts import PartInfo

    a = PartInfo(Path("a"), 300, 0, 299, True, ((0, 99, 100), (100, 199, 100), (200, 299, 100)))
    b = PartInfo(Path("b"), 10, 1000, 1000, True, ((1000, 1000, 10),))
    assert prune.rows_within([a, b], None, None) == 310
    assert prune.rows_within([a, b], 50, 149) == 100
    assert prune.rows_within([a, b], 250, 1000) == 60
    assert prune.rows_within([a, b], 300, 999) == 0
    assert prune.rows_within([a, PartInfo(Path("c"), 5, None, None, False, ())], 0, 10) is None


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_parts=st.integers(1, 8), compact=st.booleans(),
       a=st.integers(-48, 22 * 24), span=st.integers(0, 72), which=st.integers(0, 5))
def test_plain_strings_on_random_layouts(tmp_path_factory, small_parts, seed, n_parts, compact, a, span, which):
    """test_store_prune's comparison with the views, every windowed query reading plain strings."""
    from test_store_prune import QUERIES as PRUNE_QUERIES
    from test_store_prune import T0 as P_T0
    from test_store_prune import _fill

    rng = np.random.default_rng(seed)
    store = EmbeddedStore(tmp_path_factory.mktemp("random"))
    _fill(store, rng, n_parts)
    if compact:
        store.compact("fastpath")
    since = P_T0 + dt.timedelta(hours=a, minutes=int(rng.integers(0, 60)))
    params = {"a": since, "b": since + dt.timedelta(hours=span)}
    if "String" in PRUNE_QUERIES[which]:
        params["b"] = params["b"].strftime("%Y-%m-%d %H:%M:%S")
    sql = PRUNE_QUERIES[which]
    pd.testing.assert_frame_equal(store.query(sql, params), _through_views(store, sql, params))
