"""Parameter binding and DataFrame coercion (pure, no engine)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils.exceptions import QueryError, StoreError
from ooniutils.store import params as P
from ooniutils.store.schema import FASTPATH, LOGS, TEST_HELPER_INSTANCES


@pytest.mark.parametrize("value, expected", [
    ("x", "String"), (True, "Bool"), (3, "Int64"), (2**63, "UInt64"), (np.int32(4), "Int64"),
    (1.5, "Float64"), (dt.datetime(2024, 1, 1), "DateTime64(3)"), (dt.date(2024, 1, 1), "Date"),
    (None, "Nullable(String)"), (["a", "b"], "Array(String)"), ((1, 2), "Array(Int64)"),
    ([1, 2.5], "Array(Float64)"), ([], "Array(String)"), ([1, None], "Array(Nullable(Int64))"),
])
def test_infer_type(value, expected):
    assert P.infer_type(value) == expected


def test_infer_type_rejects_unknown_and_mixed():
    with pytest.raises(QueryError, match="cannot infer"):
        P.infer_type(object())
    with pytest.raises(QueryError, match="mixing"):
        P.infer_type(["a", 1])


def test_pyformat_rewritten_to_typed_placeholders():
    b = P.bind("SELECT * FROM t WHERE a = %(a)s AND b IN %(b)s AND c LIKE '50%%' AND d = %(d)s",
               {"a": "x", "b": [1, 2], "d": dt.datetime(2024, 5, 6, 7, 8, 9, 123456,
                                                         tzinfo=dt.timezone(dt.timedelta(hours=2)))})
    assert b.sql == ("SELECT * FROM t WHERE a = {a:String} AND b IN {b:Array(Int64)} "
                     "AND c LIKE '50%' AND d = {d:DateTime64(3)}")
    assert b.values == {"a": "x", "b": [1, 2], "d": "2024-05-06 05:08:09.123"}  # aware → UTC


def test_placeholders_inside_literals_are_not_parameters():
    b = P.bind("SELECT '%(a)s' AS lit, %(a)s AS p", {"a": "v"})
    assert b.sql == "SELECT '%(a)s' AS lit, {a:String} AS p"


def test_missing_pyformat_value_is_a_clear_error():
    with pytest.raises(QueryError, match=r"%\(cc\)s"):
        P.bind("SELECT %(cc)s", {})


def test_native_placeholders_take_precision_from_declared_type():
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000)
    b = P.bind("SELECT {a:DateTime}, {b:DateTime64(6)}, {c:Date}", {"a": when, "b": when, "c": when.date()})
    assert b.values == {"a": "2024-01-02 03:04:05", "b": "2024-01-02 03:04:05.678000", "c": "2024-01-02"}


def test_escaped_form_keeps_hostile_text_as_data():
    b = P.bind("SELECT {s:String}, {l:Array(String)}", {"s": "a\\b\t'\n", "l": ["x'y", "\\"]})
    esc = b.escaped()
    assert esc["s"] == "a\\\\b\\\t\\'\\\n"
    assert esc["l"] == "['x\\'y', '\\\\']"


def test_sql_without_params_is_untouched():
    assert P.bind("SELECT '%(x)s', 5 % 2", None).sql == "SELECT '%(x)s', 5 % 2"


def test_to_arrow_fills_defaults_and_orders_columns():
    t = P.to_arrow(FASTPATH, pd.DataFrame({"probe_cc": ["IT"], "probe_asn": [3269]}))
    assert t.column_names == FASTPATH.column_names
    row = t.to_pylist()[0]
    assert row["probe_cc"] == "IT" and row["probe_asn"] == 3269
    assert row["input"] == "" and row["page_len"] == 0 and row["ooni_run_link_id"] is None
    assert t.schema.field("update_time").type == pa.timestamp("ms", tz="UTC")
    logs = P.to_arrow(LOGS, pd.DataFrame({"host": ["h"], "__REALTIME_TIMESTAMP": [1], "_MACHINE_ID": ["m"],
                                          "_HOSTNAME": ["h"]}))
    inserted = logs.column("inserted_at")[0].as_py()
    assert abs((inserted - dt.datetime.now(dt.UTC)).total_seconds()) < 60  # DEFAULT now()


def test_to_arrow_names_unknown_columns():
    with pytest.raises(StoreError, match=r"no column\(s\) 'bogus', 'other'"):
        P.to_arrow(FASTPATH, pd.DataFrame({"bogus": [1], "other": [2], "probe_cc": ["IT"]}))


@pytest.mark.parametrize("df, column", [
    (pd.DataFrame({"probe_asn": ["not a number"]}), "probe_asn"),
    (pd.DataFrame({"probe_asn": [2**31]}), "probe_asn"),  # beyond Int32
    (pd.DataFrame({"is_ssl_expected": [300]}), "is_ssl_expected"),
    (pd.DataFrame({"measurement_start_time": ["yesterday-ish"]}), "measurement_start_time"),
    (pd.DataFrame({"measurement_start_time": [1700000000]}), "measurement_start_time"),
    (pd.DataFrame({"probe_cc": [None]}), "probe_cc"),
    (pd.DataFrame({"probe_cc": [5]}), "probe_cc"),
])
def test_to_arrow_names_the_bad_column(df, column):
    with pytest.raises(StoreError, match=f"column '{column}'"):
        P.to_arrow(FASTPATH, df)


def test_to_arrow_checks_ip_addresses():
    ok = {"ipaddr": ["1.2.3.4"], "ipv6addr": ["2001:db8::1"]}
    P.to_arrow(TEST_HELPER_INSTANCES, pd.DataFrame(ok))
    with pytest.raises(StoreError, match="'ipaddr'.*not an IP"):
        P.to_arrow(TEST_HELPER_INSTANCES, pd.DataFrame({"ipaddr": ["nope"]}))
    with pytest.raises(StoreError, match="'ipaddr'.*not an IPv4"):
        P.to_arrow(TEST_HELPER_INSTANCES, pd.DataFrame({"ipaddr": ["::1"]}))


def test_structure_drops_default_clauses():
    s = P.structure(LOGS)
    assert "`inserted_at` DateTime" in s and "DEFAULT" not in s


def test_fixedstring_is_stored_nul_padded_and_length_checked():
    from ooniutils.store.schema import CITIZENLAB

    t = P.to_arrow(CITIZENLAB, pd.DataFrame({"cc": ["ZZ"]}))
    assert t.column("cc")[0].as_py() == b"ZZ" + b"\0" * 30
    with pytest.raises(StoreError, match="'cc'.*longer than 32 bytes"):
        P.to_arrow(CITIZENLAB, pd.DataFrame({"cc": ["x" * 33]}))


def _fastpath_frame_with_categoricals(n: int = 30) -> pd.DataFrame:
    ccs = np.array(["IT", "DE", "BR", "IR"])
    return pd.DataFrame({
        "measurement_uid": [f"uid-{i:04d}" for i in range(n)],  # plain strings
        "probe_cc": pd.Categorical(ccs[np.arange(n) % 4], categories=[*ccs, "unused"]),
        "test_name": pd.Categorical(["web_connectivity", "signal"] * (n // 2)),
        "probe_asn": np.arange(n) % 7,
    })


def test_to_arrow_dictionary_keeps_categoricals_encoded_with_the_same_values():
    df = _fastpath_frame_with_categoricals()
    dense = P.to_arrow(FASTPATH, df)
    encoded = P.to_arrow(FASTPATH, df, dictionary=True)
    for name in ("probe_cc", "test_name"):
        assert dense.schema.field(name).type == pa.string()
        t = encoded.schema.field(name).type
        assert pa.types.is_dictionary(t) and t.value_type == pa.string(), (name, t)
        assert not encoded.schema.field(name).nullable  # String, not Nullable(String)
    # everything that was not a categorical keeps the declared type
    for field in encoded.schema:
        if field.name not in ("probe_cc", "test_name"):
            assert field == dense.schema.field(field.name), field.name
    assert encoded.schema.field("measurement_uid").type == pa.string()
    decoded = encoded.cast(dense.schema)
    # update_time is MATERIALIZED now64(): each conversion stamps its own time
    assert decoded.drop_columns(["update_time"]).equals(dense.drop_columns(["update_time"]))
    assert decoded.column("probe_cc").to_pylist() == list(df["probe_cc"].astype(str))


def test_to_arrow_dictionary_handles_nulls_in_categoricals():
    from ooniutils.store.schema import LOGS

    base = {"host": ["h"] * 4, "__REALTIME_TIMESTAMP": [1, 2, 3, 4], "_MACHINE_ID": ["m"] * 4,
            "_HOSTNAME": ["h"] * 4}
    df = pd.DataFrame({**base, "LOGGER": pd.Categorical(["a", None, "b", "a"])})  # LowCardinality(Nullable(String))
    encoded = P.to_arrow(LOGS, df, dictionary=True)
    assert pa.types.is_dictionary(encoded.schema.field("LOGGER").type)
    assert encoded.schema.field("LOGGER").nullable
    assert encoded.column("LOGGER").to_pylist() == ["a", None, "b", "a"]
    assert encoded.column("LOGGER").null_count == 1
    assert encoded.cast(P.to_arrow(LOGS, df).schema).equals(P.to_arrow(LOGS, df))
    # a null in a categorical of a non-Nullable String column is still refused
    with pytest.raises(StoreError, match=r"'probe_cc'.*1 null value"):
        P.to_arrow(FASTPATH, pd.DataFrame({"probe_cc": pd.Categorical(["IT", None])}), dictionary=True)


def test_to_arrow_dictionary_leaves_other_columns_dense():
    df = pd.DataFrame({
        "probe_cc": ["IT", "DE"],  # plain strings
        "probe_asn": pd.Categorical([3269, 3320]),  # categorical, but not of strings
        "test_name": pd.Categorical([1, 2]).rename_categories(["a", "b"]).astype("object"),
    })
    encoded = P.to_arrow(FASTPATH, df, dictionary=True)
    assert encoded.schema.equals(P.to_arrow(FASTPATH, pd.DataFrame()).schema)
    assert encoded.column("probe_asn").to_pylist() == [3269, 3320]
    assert encoded.column("test_name").to_pylist() == ["a", "b"]


# --- values the engine would change silently, and placeholders hidden in comments -------------

INT_TYPES = {f"{'U' if unsigned else ''}Int{bits}":
             (0, 2**bits - 1) if unsigned else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
             for bits in (8, 16, 32, 64) for unsigned in (False, True)}


@pytest.mark.parametrize("sql, value", [
    ("SELECT %(v)s", 2**64),
    ("SELECT %(v)s", -2**63 - 1),
    ("SELECT {v:Int8}", 128),
    ("SELECT {v:Nullable(UInt8)}", -1),
    ("SELECT {v:Array(Int16)}", [1, 2**15]),
    ("SELECT %(v)s", [1, 2**64]),
    ("SELECT {v:UInt64}", np.int64(-5)),
])
def test_out_of_range_integers_name_the_parameter(sql, value):
    with pytest.raises(QueryError, match=r"parameter 'v': -?\d+ is outside U?Int\d+ \("):
        P.bind(sql, {"v": value})


@pytest.mark.parametrize("value", [pd.NaT, [dt.datetime(2024, 1, 1), pd.NaT]])
def test_nat_is_refused_naming_the_parameter(value):
    with pytest.raises(QueryError, match=r"parameter 'when' is NaT"):
        P.bind("SELECT %(when)s", {"when": value})
    with pytest.raises(QueryError, match=r"parameter 'when' is NaT"):
        P.bind("SELECT {when:Array(DateTime)}" if isinstance(value, list) else "SELECT {when:DateTime}",
               {"when": value})


@pytest.mark.parametrize("sql", [
    "SELECT 1 -- don't\nWHERE x = %(v)s AND y = 'a'",
    "SELECT 1 # it's\nWHERE x = %(v)s AND y = 'a'",
    "SELECT 1 /* it's /* nested's */ still' */ WHERE x = %(v)s AND y = 'a'",
    "SELECT `it's` FROM t WHERE x = %(v)s AND y = 'a'",
    "SELECT \"it's\" FROM t WHERE x = %(v)s AND y = 'a'",
])
def test_apostrophes_in_comments_and_identifiers_do_not_hide_placeholders(sql):
    b = P.bind(sql, {"v": 5})
    assert "{v:Int64}" in b.sql and "%(v)s" not in b.sql and b.values == {"v": 5}


def test_placeholders_in_comments_are_not_parameters():
    b = P.bind("SELECT %(a)s -- %(a)s and 100%%\n /* %(b)s */ # %(c)s\n", {"a": 1})
    assert b.sql == "SELECT {a:Int64} -- %(a)s and 100%\n /* %(b)s */ # %(c)s\n"
    assert P.bind("SELECT '{a:Int8}', {b:Int8}", {"a": 1000, "b": 1}).values == {"b": 1}


# Property tests through the real embedded engine (chDB): what is bound comes back unchanged.

ENGINE = settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


@ENGINE
@given(value=st.integers(min_value=-2**70, max_value=2**70),
       ch_type=st.sampled_from([None, *INT_TYPES]))
def test_integers_bind_exactly_or_raise(embedded_store, value, ch_type):
    sql = "SELECT %(n)s AS v" if ch_type is None else f"SELECT {{n:{ch_type}}} AS v"
    lo, hi = INT_TYPES[ch_type] if ch_type else (-2**63, 2**64 - 1)
    if lo <= value <= hi:
        assert int(embedded_store.query(sql, {"n": value})["v"].iloc[0]) == value
    else:
        with pytest.raises(QueryError, match="parameter 'n'"):
            embedded_store.query(sql, {"n": value})


_TRICKY = st.sampled_from(["'", "''", '"', "`", "\\", "%", "%%", "%(v0)s", "--", "#", "# ", "/*",
                           "*/", "\n", "{v0:Int8}", "x", "é", " "])
_TEXT = st.lists(_TRICKY, max_size=8).map("".join)


def _literal(text: str) -> str:
    """``text`` as a ClickHouse string literal, with pyformat's %% for %."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("%", "%%") + "'"


@st.composite
def _comment(draw) -> str:
    text = draw(_TEXT)
    kind = draw(st.sampled_from(["line", "hash", "block"]))
    if kind == "block":
        return "/*" + text.replace("/*", "").replace("*/", "").replace("/", "").replace("*", "") + "*/"
    return ("-- " if kind == "line" else "# ") + text.replace("\n", " ") + "\n"


@st.composite
def _select(draw) -> tuple[str, dict, list]:
    """A SELECT of literals and %(vN)s placeholders with comments between the items; the
    parameters; the values expected back, in column order."""
    items, params, expected = [], {}, []
    for i in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            value = draw(st.one_of(st.integers(-2**63, 2**63 - 1), _TEXT))
            params[f"v{i}"] = value
            expr = f"%(v{i})s"
        else:
            value = draw(_TEXT)
            expr = _literal(value)
        expected.append(value)
        items.append(f"{draw(st.lists(_comment(), max_size=2).map(' '.join))} {expr} AS c{i}")
    return "SELECT " + ",".join(items) + draw(st.lists(_comment(), max_size=2).map("".join)), params, expected


@ENGINE
@given(query=_select())
def test_only_real_placeholders_are_bound(embedded_store, query):
    sql, params, expected = query
    if not params:  # without placeholders pyformat does not apply: %% stays %%
        sql = sql.replace("%%", "%")
    bound = P.bind(sql, params)
    assert set(bound.values) == set(params)
    row = embedded_store.query(sql, params).iloc[0].tolist()
    assert [int(v) if isinstance(e, int) else v for v, e in zip(row, expected, strict=True)] == expected
