"""One contract, every back-end: the embedded store and the server store (over the chDB-backed
ClickHouse HTTP stand-in of conftest.py — no real server is installable here)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from ooniutils.exceptions import QueryError, StoreError

HOSTILE = [
    "'; DROP TABLE fastpath; --",
    "it's",
    "back\\slash\\",
    "new\nline\tand tab",
    "{other:String}",
    "%(cc)s",
    "\\N",
    "",
    "ünïcødé ✓",
]


def _fastpath(n: int, cc: str = "IT") -> pd.DataFrame:
    start = dt.datetime(2024, 3, 1)
    return pd.DataFrame({
        "measurement_uid": [f"uid-{cc}-{i}" for i in range(n)],
        "probe_cc": [cc] * n,
        "probe_asn": [3269 + i for i in range(n)],
        "measurement_start_time": [start + dt.timedelta(minutes=30 * i) for i in range(n)],
        "anomaly": ["t" if i % 2 else "f" for i in range(n)],
        "blocking_general": [0.5] * n,
        "ooni_run_link_id": [None if i % 2 else 7 for i in range(n)],
    })


def test_empty_tables_query_fine(any_store):
    df = any_store.query("SELECT count() AS n FROM fastpath")
    assert int(df["n"].iloc[0]) == 0
    assert len(any_store.query("SELECT * FROM citizenlab")) == 0


def test_insert_then_query_round_trip(any_store):
    assert any_store.insert("fastpath", _fastpath(4)) == 4
    df = any_store.query("SELECT measurement_uid, probe_asn, measurement_start_time, anomaly, "
                         "ooni_run_link_id, input FROM fastpath ORDER BY measurement_uid")
    assert list(df["measurement_uid"]) == [f"uid-IT-{i}" for i in range(4)]
    assert list(df["probe_asn"]) == [3269, 3270, 3271, 3272]
    assert pd.Timestamp(df["measurement_start_time"].iloc[1]) == pd.Timestamp("2024-03-01 00:30:00")
    assert list(df["anomaly"]) == ["f", "t", "f", "t"]
    assert [None if pd.isna(v) else int(v) for v in df["ooni_run_link_id"]] == [7, None, 7, None]
    assert set(df["input"]) == {""}  # missing column → default


def test_special_types_round_trip(any_store):
    rows = pd.DataFrame({
        "rdn": ["0"], "dns_zone": ["th.ooni.org"], "name": ["0.th.ooni.org"], "provider": ["Hetzner"],
        "region": ["eu"], "ipaddr": ["192.0.2.7"], "ipv6addr": ["2001:db8::7"],
        "draining_at": [pd.Timestamp("2024-05-01 12:00:00", tz="UTC")], "sign": [1],
    })
    any_store.insert("test_helper_instances", rows)
    df = any_store.query("SELECT toString(ipaddr) AS ip, toString(ipv6addr) AS ip6, draining_at, "
                         "destroyed_at, sign, toTypeName(ipaddr) AS t FROM test_helper_instances")
    r = df.iloc[0]
    assert (r["ip"], r["ip6"], int(r["sign"]), r["t"]) == ("192.0.2.7", "2001:db8::7", 1, "IPv4")
    assert pd.Timestamp(r["draining_at"]).tz_localize(None) == pd.Timestamp("2024-05-01 12:00:00")
    assert pd.isna(r["destroyed_at"])
    any_store.insert("citizenlab", pd.DataFrame({"domain": ["x.org"], "url": ["https://x.org/"], "cc": ["ZZ"],
                                                 "category_code": ["NEWS"]}))
    # FixedString(32) equals a short string literal, and a FixedString-typed parameter
    # (a String-typed parameter is not padded, as on a real server).
    got = any_store.query("SELECT countIf(cc = 'ZZ') AS a, countIf(cc = {cc:FixedString(32)}) AS b "
                          "FROM citizenlab", {"cc": "ZZ"})
    assert (int(got["a"].iloc[0]), int(got["b"].iloc[0])) == (1, 1)


@pytest.mark.parametrize("value", HOSTILE)
def test_parameters_stay_data(any_store, value):
    any_store.insert("fastpath", pd.DataFrame({"input": [value], "probe_cc": ["IT"]}))
    pyf = any_store.query("SELECT %(v)s AS v, count() AS n FROM fastpath WHERE input = %(v)s", {"v": value})
    nat = any_store.query("SELECT {v:String} AS v, count() AS n FROM fastpath WHERE input = {v:String}",
                          {"v": value})
    for df in (pyf, nat):
        assert df["v"].iloc[0] == value
        assert int(df["n"].iloc[0]) == 1
    assert int(any_store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 1  # table intact


def test_array_and_typed_parameters(any_store):
    any_store.insert("fastpath", pd.concat([_fastpath(3, "IT"), _fastpath(2, "DE"), _fastpath(1, "RU")]))
    df = any_store.query(
        "SELECT probe_cc, count() AS n FROM fastpath WHERE probe_cc IN %(ccs)s "
        "AND measurement_start_time >= %(since)s AND probe_asn > %(asn)s GROUP BY probe_cc ORDER BY probe_cc",
        {"ccs": ["IT", "DE", "it's"], "since": dt.datetime(2024, 3, 1, tzinfo=dt.UTC), "asn": 3269},
    )
    assert dict(zip(df["probe_cc"], df["n"].astype(int), strict=True)) == {"DE": 1, "IT": 2}


def test_bad_query_raises_query_error_with_clickhouse_message(any_store):
    with pytest.raises(QueryError) as err:
        any_store.query("SELEC 1")
    assert "Syntax error" in err.value.server_message and "SYNTAX_ERROR" in str(err.value)
    assert err.value.query == "SELEC 1"


def test_unknown_table_and_column(any_store):
    with pytest.raises(QueryError, match="UNKNOWN_TABLE|nosuchtable"):
        any_store.query("SELECT * FROM nosuchtable")
    with pytest.raises(QueryError, match="nosuchcol"):
        any_store.query("SELECT nosuchcol FROM fastpath")


def test_insert_errors_name_the_problem(any_store):
    with pytest.raises(StoreError, match="'bogus'"):
        any_store.insert("fastpath", pd.DataFrame({"bogus": [1]}))
    with pytest.raises(StoreError, match="unknown table 'nope'"):
        any_store.insert("nope", pd.DataFrame({"a": [1]}))
    with pytest.raises(StoreError, match="'probe_asn'"):
        any_store.insert("fastpath", pd.DataFrame({"probe_asn": ["AS3269"]}))
    assert int(any_store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 0


def test_info_reports_rows_and_time_range(any_store):
    any_store.insert("fastpath", _fastpath(3))
    info = {i.name: i for i in any_store.info()}
    assert info["fastpath"].rows == 3 and info["citizenlab"].rows == 0
    assert pd.Timestamp(info["fastpath"].time_min) == pd.Timestamp("2024-03-01 00:00:00")
    assert pd.Timestamp(info["fastpath"].time_max) == pd.Timestamp("2024-03-01 01:00:00")


def test_init_is_idempotent(any_store):
    any_store.insert("fastpath", _fastpath(2))
    any_store.init()
    assert int(any_store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 2


def _arrow_rows() -> pa.Table:
    return pa.table({
        "measurement_uid": pa.array(["uid-a", "uid-b", "uid-c"]),
        "probe_cc": pa.array(["IT", "DE", "IT"]).dictionary_encode(),
        "probe_asn": pa.array([3269, 3320, 2147483647], pa.int64()),  # cast to Int32 (OONI: probe_asn Int32)
        "measurement_start_time": pa.array(
            [dt.datetime(2024, 3, 1, 0, 0, 0, 900_000, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC")),
        "ooni_run_link_id": pa.array([7, None, 9], pa.int32()),
    })


def test_insert_arrow_casts_keeps_dictionaries_and_fills_defaults(any_store):
    from ooniutils.store.schema import FASTPATH

    assert any_store.insert_arrow("fastpath", _arrow_rows()) == 3
    assert any_store.insert_arrow(FASTPATH, _arrow_rows().slice(0, 1)) == 1  # a Table works too
    df = any_store.query("SELECT measurement_uid, probe_cc, probe_asn, measurement_start_time, "
                         "ooni_run_link_id, input FROM fastpath ORDER BY measurement_uid, probe_asn")
    assert list(df["measurement_uid"]) == ["uid-a", "uid-a", "uid-b", "uid-c"]
    assert list(df["probe_cc"]) == ["IT", "IT", "DE", "IT"]
    assert [int(v) for v in df["probe_asn"]] == [3269, 3269, 3320, 2147483647]
    # DateTime has whole seconds: the sub-second part is dropped, as insert() does
    assert pd.Timestamp(df["measurement_start_time"].iloc[0]).tz_localize(None) == pd.Timestamp("2024-03-01")
    assert [None if pd.isna(v) else int(v) for v in df["ooni_run_link_id"]] == [7, 7, None, 9]
    assert set(df["input"]) == {""}


def test_insert_arrow_errors_name_the_column_and_write_nothing(any_store):
    rows = _arrow_rows()
    with pytest.raises(StoreError, match="'bogus'"):
        any_store.insert_arrow("fastpath", rows.append_column("bogus", pa.array([1, 2, 3])))
    with pytest.raises(StoreError, match="'probe_asn'"):  # 2**31 does not fit Int32
        any_store.insert_arrow("fastpath", rows.set_column(2, "probe_asn", pa.array([1, 2**31, 2])))
    with pytest.raises(StoreError, match="'probe_asn'"):
        any_store.insert_arrow("fastpath", rows.set_column(2, "probe_asn", pa.array(["AS3269"] * 3)))
    with pytest.raises(StoreError, match="'measurement_uid'.*null"):
        any_store.insert_arrow("fastpath", rows.set_column(0, "measurement_uid", pa.array(["a", None, "c"])))
    with pytest.raises(StoreError, match="unknown table 'nope'"):
        any_store.insert_arrow("nope", rows)
    assert int(any_store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 0


def test_insert_arrow_default_goes_through_insert():
    """A back-end that only implements insert() gets insert_arrow() with the same coercion."""
    from ooniutils.store.base import Store

    class FrameStore(Store):
        kind = "test"

        def __init__(self) -> None:
            self.frames: list[tuple[str, pd.DataFrame]] = []

        def query(self, sql, params=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def command(self, sql, params=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def insert(self, table: str, df: pd.DataFrame) -> int:
            self.frames.append((table, df))
            return len(df)

        def init(self) -> None:
            pass

        def info(self):  # type: ignore[no-untyped-def]
            return []

    store = FrameStore()
    assert store.insert_arrow("fastpath", _arrow_rows()) == 3
    table, df = store.frames[0]
    assert table == "fastpath" and list(df["probe_asn"]) == [3269, 3320, 2147483647]
    assert list(df["probe_cc"]) == ["IT", "DE", "IT"] and set(df["input"]) == {""}
    with pytest.raises(StoreError, match="'probe_asn'"):
        store.insert_arrow("fastpath", _arrow_rows().set_column(2, "probe_asn", pa.array([1, 2**31, 2])))


def test_materialized_update_time_is_filled_on_insert_and_left_out_of_select_star(any_store):
    before = pd.Timestamp.now(tz="UTC").floor("ms")
    any_store.insert("fastpath", _fastpath(2))
    after = pd.Timestamp.now(tz="UTC").ceil("ms")
    star = any_store.query("SELECT * FROM fastpath")
    assert "update_time" not in star.columns and "is_verified" in star.columns
    stamped = any_store.query("SELECT update_time FROM fastpath")["update_time"]
    assert all(before <= pd.Timestamp(t).tz_localize(None).tz_localize("UTC") <= after for t in stamped)
    # a value given by the caller (the generator's processing time) is kept, as with
    # ClickHouse's insert_allow_materialized_columns
    given = _fastpath(1, cc="DE").assign(update_time=[dt.datetime(2024, 3, 1, 12)])
    any_store.insert("fastpath", given)
    kept = any_store.query("SELECT update_time FROM fastpath WHERE probe_cc = 'DE'")["update_time"]
    assert pd.Timestamp(kept.iloc[0]).tz_localize(None) == pd.Timestamp("2024-03-01 12:00")


def test_test_groups_are_seeded_once(any_store):
    from ooniutils.store.loaders import seed_tables
    from ooniutils.store.schema import TEST_GROUPS

    any_store.init()  # a second init adds nothing
    assert seed_tables(any_store) == 0
    got = any_store.query("SELECT test_name, test_group FROM test_groups ORDER BY test_name")
    assert list(zip(got["test_name"], got["test_group"], strict=True)) == sorted(TEST_GROUPS.seed)


def test_insert_stream_stores_what_it_committed_and_nothing_else(any_store):
    """Every back-end: the rows stored are those of the marks committed (the embedded store
    commits parts of several batches, a server each batch); a failure drops the rest."""
    commits: list[tuple[str, int]] = []
    with any_store.insert_stream("fastpath", lambda mark, rows: commits.append((mark, rows))) as stream:
        for b in range(3):
            stream.add(pa.Table.from_pandas(_fastpath(4, cc=f"A{b}"), preserve_index=False), f"m{b}")
    assert commits[-1] == ("m2", 4 if any_store.kind == "server" else 12)
    assert sum(rows for _, rows in commits) == 12
    with pytest.raises(StoreError, match="no column"), \
            any_store.insert_stream("fastpath", lambda mark, rows: commits.append((mark, rows))) as stream:
        stream.add(pa.Table.from_pandas(_fastpath(4, cc="B0"), preserve_index=False), "n0")
        stream.add(pa.table({"nope": [1]}), "bad")
    committed = sum(rows for _, rows in commits)
    df = any_store.query("SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath")
    assert (int(df["n"].iloc[0]), int(df["u"].iloc[0])) == (committed, committed)
    assert committed == (16 if any_store.kind == "server" else 12)
