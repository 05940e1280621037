"""click_query_fsn refuses inputs that would give a plausible wrong answer (a quiet green).

Each of these returned a DataFrame before: a list for a ``{cc:String}`` placeholder matched
no row, ``None`` for a non-Nullable placeholder bound ``''``, a parameter the query never
used was dropped, an empty query gave an empty frame, a lone surrogate failed with a
pybind11 message that named no parameter.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils import click_query_logs
from ooniutils.clickhouse import click_query_fsn
from ooniutils.exceptions import QueryError
from ooniutils.store import get_store

_FIXTURE_OK = settings(max_examples=25, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])
_CC = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=8)


@pytest.fixture
def two_rows(data_dir):
    get_store().insert("fastpath", pd.DataFrame({
        "probe_cc": ["IT", "DE"],
        "measurement_start_time": ["2026-01-01 10:00:00", "2026-01-01 11:00:00"],
    }))


@_FIXTURE_OK
@given(ccs=st.lists(_CC, min_size=0, max_size=5),
       kind=st.sampled_from([list, tuple, set, pd.Series]))
def test_a_collection_for_a_one_value_placeholder_is_an_error(two_rows, ccs, kind):
    with pytest.raises(QueryError, match=r"'cc' is a .* takes one value.*IN \{cc:Array\(String\)\}"):
        click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc = {cc:String}", cc=kind(ccs))
    with pytest.raises(QueryError, match="'cc'"):
        click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc = {cc:LowCardinality(String)}",
                        cc=kind(ccs))


def test_a_list_for_an_array_placeholder_still_works(two_rows):
    df = click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc IN {cc:Array(String)}",
                         cc=["IT", "RU"])
    assert int(df.n[0]) == 1
    df = click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc IN %(cc)s", cc=("IT", "DE"))
    assert int(df.n[0]) == 2


@pytest.mark.parametrize("ch_type", ["String", "UInt32", "DateTime", "LowCardinality(String)"])
def test_none_for_a_placeholder_that_is_not_nullable_is_an_error(data_dir, ch_type):
    with pytest.raises(QueryError, match=rf"'x' is or holds None .*{ch_type.replace('(', '.').replace(')', '.')}.*Nullable"):
        click_query_fsn(f"SELECT {{x:{ch_type}}} AS x", x=None)


def test_none_for_a_nullable_placeholder_is_null(data_dir):
    df = click_query_fsn("SELECT isNull({x:Nullable(String)}) AS null", x=None)
    assert bool(df.null[0])
    df = click_query_fsn("SELECT isNull({x:LowCardinality(Nullable(String))}) AS null", x=None)
    assert bool(df.null[0])


@_FIXTURE_OK
@given(name=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), value=st.integers() | _CC)
def test_a_parameter_the_query_does_not_use_is_an_error(two_rows, name, value):
    with pytest.raises(QueryError, match=rf"'{name}' given but not used"):
        click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc = 'IT'", **{name: value})
    if name != "cc":  # a typo beside a used parameter
        with pytest.raises(QueryError, match=rf"'{name}' given but not used .*placeholders: cc"):
            click_query_fsn("SELECT count() AS n FROM fastpath WHERE probe_cc = {cc:String}",
                            cc="IT", **{name: value})


def test_a_placeholder_only_in_a_comment_or_literal_does_not_count(data_dir):
    with pytest.raises(QueryError, match="'cc' given but not used"):
        click_query_fsn("SELECT '{cc:String}' AS s -- %(cc)s", cc="IT")


@pytest.mark.parametrize("sql", ["", "   ", "\n;\n", "-- only a comment", "/* nothing */ ;"])
def test_an_empty_query_is_an_error(data_dir, sql):
    with pytest.raises(QueryError, match="query is empty"):
        click_query_fsn(sql)
    with pytest.raises(QueryError, match="query is empty"):
        click_query_logs(sql)


@pytest.mark.parametrize("sql", [5, None, b"SELECT 1", ["SELECT 1"]])
def test_a_query_that_is_not_a_string_is_an_error(data_dir, sql):
    with pytest.raises(QueryError, match="must be a string"):
        click_query_fsn(sql)


@_FIXTURE_OK
@given(prefix=_CC, surrogate=st.integers(0xD800, 0xDFFF), as_list=st.booleans())
def test_a_lone_surrogate_is_an_error_naming_the_parameter(data_dir, prefix, surrogate, as_list):
    text = prefix + chr(surrogate)
    value = [text] if as_list else text
    placeholder = "{s:Array(String)}" if as_list else "{s:String}"
    with pytest.raises(QueryError, match="'s' holds a lone surrogate"):
        click_query_fsn(f"SELECT {placeholder} AS s", s=value)


@_FIXTURE_OK
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_any_valid_text_round_trips(data_dir, text):
    """Quotes, backslashes, NULs, braces, percent signs: bound as data, returned as given."""
    df = click_query_fsn("SELECT {s:String} AS s, length({s:String}) AS n", s=text)
    assert df.s[0] == text and int(df.n[0]) == len(text.encode())


def test_an_aware_datetime_is_bound_in_utc(data_dir):
    plus5 = dt.timezone(dt.timedelta(hours=5))
    df = click_query_fsn("SELECT {t:DateTime} AS t", t=dt.datetime(2026, 1, 1, 12, 0, tzinfo=plus5))
    assert pd.Timestamp(df.t[0]) == pd.Timestamp("2026-01-01 07:00:00")


_WORDS = st.sampled_from(["DROP TABLE fastpath", "INSERT INTO fastpath (probe_cc) VALUES ('XX')",
                          "TRUNCATE TABLE fastpath", "ALTER TABLE fastpath DELETE WHERE 1",
                          "CREATE TABLE t (x Int32) ENGINE = Memory", "SET max_threads = 1",
                          "OPTIMIZE TABLE fastpath", "SELEC 1"])


@_FIXTURE_OK
@given(statement=_WORDS, prefix=st.sampled_from(["", "  ", "\n", "-- note\n", "/* c */ ", "("]))
def test_a_statement_that_does_not_read_is_an_error_and_changes_nothing(two_rows, statement, prefix):
    with pytest.raises(QueryError, match="is not a query that reads"):
        click_query_fsn(prefix + statement)
    assert int(click_query_fsn("SELECT count() AS n FROM fastpath").n[0]) == 2


@_FIXTURE_OK
@given(first=st.sampled_from(["SELECT 1 AS a", "SELECT count() AS n FROM fastpath"]),
       second=st.sampled_from(["SELECT 2 AS b", "DROP TABLE fastpath", "SELECT ';' AS s"]),
       gap=st.sampled_from([";", " ; ", ";\n", "; -- x\n"]))
def test_two_statements_are_an_error(two_rows, first, second, gap):
    with pytest.raises(QueryError, match="more than one statement"):
        click_query_fsn(first + gap + second)


@pytest.mark.parametrize("sql", ["SELECT ';' AS s;", "SELECT 1 AS x; -- done", "  (SELECT 1 AS x)  ;  ",
                                 "WITH 1 AS y SELECT y AS x", "/* ; */ SELECT 1 AS x",
                                 "SHOW TABLES", "DESCRIBE TABLE fastpath", "EXISTS TABLE fastpath",
                                 "EXPLAIN SELECT 1"])
def test_one_reading_statement_still_runs(two_rows, sql):
    assert not click_query_fsn(sql).empty


@pytest.mark.parametrize("fn", [click_query_fsn, click_query_logs])
def test_a_parameter_may_be_called_query(data_dir, fn):
    """Before: TypeError "got multiple values for argument 'query'"."""
    assert fn("SELECT {query:String} AS q", query="x").q[0] == "x"


_TZ = st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=5)), dt.timezone(dt.timedelta(hours=-9))])


@_FIXTURE_OK
@given(when=st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)), tz=_TZ,
       ch_type=st.sampled_from(["DateTime", "LowCardinality(Nullable(DateTime))", "Nullable(DateTime)"]))
def test_a_datetime_outside_datetime_is_an_error_inside_it_round_trips(data_dir, when, tz, ch_type):
    """Before: 1960 came back as 1970-01-01 00:00:00 and 2200 as 2106-02-07 06:28:15."""
    value = when.replace(tzinfo=tz)
    utc = value.astimezone(dt.UTC).replace(tzinfo=None) if tz else value
    inside = dt.datetime(1970, 1, 1) <= utc <= dt.datetime(2106, 2, 7, 6, 28, 15)
    sql = f"SELECT toString({{t:{ch_type}}}, 'UTC') AS t"
    if inside:
        assert click_query_fsn(sql, t=value).t[0] == utc.strftime("%Y-%m-%d %H:%M:%S")
    else:
        with pytest.raises(QueryError, match=r"'t': .* is outside DateTime"):
            click_query_fsn(sql, t=value)


@_FIXTURE_OK
@given(day=st.dates(), as_list=st.booleans())
def test_a_date_outside_date_is_an_error_named_or_pyformat(data_dir, day, as_list):
    inside = dt.date(1970, 1, 1) <= day <= dt.date(2149, 6, 6)
    for sql in (("SELECT toString(arrayJoin({d:Array(Date)})) AS d" if as_list else "SELECT toString({d:Date}) AS d"),
                ("SELECT toString(arrayJoin(%(d)s)) AS d" if as_list else "SELECT toString(%(d)s) AS d")):
        value = [day] if as_list else day
        if inside:
            assert click_query_fsn(sql, d=value).d[0] == day.isoformat()
        else:
            with pytest.raises(QueryError, match="is outside Date"):
                click_query_fsn(sql, d=value)


def test_a_placeholder_with_a_quoted_type_says_so(data_dir):
    """The store does not see {t:DateTime('UTC')} (the quote reads as a literal): before,
    the engine said "Substitution `t` is not set"."""
    with pytest.raises(QueryError, match=r"placeholder \{t:DateTime\('UTC'\)\} has a quoted type.*\{t:DateTime\}"):
        click_query_fsn("SELECT {t:DateTime('UTC')} AS t", t=dt.datetime(2026, 1, 1))


@_FIXTURE_OK
@given(items=st.lists(st.none() | st.text(alphabet="abc", max_size=3), min_size=1, max_size=6),
       nested=st.booleans())
def test_none_inside_an_array_that_is_not_nullable_is_an_error(data_dir, items, nested):
    """Before: ['a', None] for {l:Array(String)} came back as ['a', '']."""
    value = [items] if nested else items
    wrap = (lambda t: f"Array({t})") if nested else (lambda t: t)
    plain = "{l:Array(" + wrap("String") + ")}"
    nullable = "{l:Array(" + wrap("Nullable(String)") + ")}"
    if any(i is None for i in items):
        with pytest.raises(QueryError, match="'l' is or holds None"):
            click_query_fsn(f"SELECT {plain} AS l", l=value)
    else:
        assert list(click_query_fsn(f"SELECT {plain} AS l", l=value).l[0][0 if nested else slice(None)]) == items
    got = click_query_fsn(f"SELECT {nullable} AS l", l=value).l[0]
    assert [None if x is None else x for x in (got[0] if nested else got)] == items
