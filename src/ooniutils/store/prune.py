"""Which parts a query reads: simple queries name their table's files directly.

A store table is a view over ``file('<table>/current/*.parquet')`` (:mod:`.embedded`), so
every query opens every part's footer and goes through the view (and, for tables with
``MATERIALIZED`` columns, a ``Merge`` table) before ClickHouse's Parquet reader skips row
groups. For the queries notebooks run most — one ``SELECT`` on one table with a time
window — that fixed cost is most of the query (issue 16: "last hour" was 2.75× MergeTree).

So :func:`direct` recognises a **simple query**: one ``SELECT`` over exactly one store
table, written ``FROM <table>`` followed by ``WHERE``, ``GROUP``, ``ORDER``, ``LIMIT``,
``HAVING``, ``SETTINGS``, ``FORMAT`` or the end; no other mention of a store table, no
subquery, ``JOIN``, ``UNION``, ``WITH``, ``ARRAY JOIN``, ``FINAL``/``SAMPLE``, no quoted
identifier, and for a table with ``MATERIALIZED`` columns no ``*`` but ``count(*)``
(``SELECT *`` must not show them; the view hides them). For such a query the table reference becomes
``file('<generation>/{<part>,...}', Parquet, '<structure>') AS <table>``, and the parts
listed are the ones whose range-key span (from the footers, :mod:`.parts`) can hold rows
the ``WHERE`` clause keeps:

* the ``WHERE`` clause is split at its top-level ``AND`` s (no top-level ``OR``, ``?:`` or
  lambda, which would change what a conjunct means); a conjunct of exactly the form
  ``key <op> value``, ``value <op> key`` or ``key BETWEEN value AND value`` (``<op>`` one
  of ``>= > <= < = ==``) bounds the key, and every row of the result satisfies it;
* ``value`` is a bound parameter (``%(x)s`` / ``{x:Type}``) or a literal; a time key takes
  datetimes and ISO texts, an integer key integers. A time bound is widened by an hour
  when it is a ``DateTime``/``DateTime64``/``Date`` parameter without a time zone argument
  (bound as UTC text, read in the session's UTC: only the type's rounding can move it),
  by a day otherwise (texts, zoned types: no time zone can move a bound that far);
* the key's name is not redefined by an alias (each of its occurrences follows ``(``, ``,``,
  an operator or a keyword such as ``SELECT``/``WHERE``/``AND``/``BY``, never ``AS`` or an
  expression).

Anything else — a query this does not understand — reads every part through the view,
as before. Results are the same either way (the store contract tests run both paths).

For a query that reads many rows (:data:`PLAIN_ROWS`), the ``file()`` structure declares
``LowCardinality(T)`` columns as plain ``T`` (:data:`LOW_CARDINALITY`): ClickHouse's
Parquet reader would otherwise decode each dictionary-encoded value to a string and hash
it into a LowCardinality column, the largest CPU cost of a scan that reads ``probe_cc``
(issue 16, fourth round). Values, comparisons and orderings are the same; only the
result's ClickHouse types differ, which chDB shows in one place: a string column that
holds no value (an empty result, or only NULLs) comes back as pandas' ``str`` dtype where
a LowCardinality one comes back as ``object`` of ``None``.
:meth:`.embedded.EmbeddedStore.query` turns such columns back into what the views
return, so a notebook sees the same frames either way.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.binding import format_str

from . import params as P
from .parts import PartInfo
from .schema import TABLES, Table

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<ph>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*:[^{}]*\})
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>\d[\w.]*(?:[eE][+-]?\d+)?)
  | (?P<op>>=|<=|<>|!=|==|->|\|\||::|[-+*/%<>=(),.\[\]?:;{}])
  | (?P<other>.)
""", re.X | re.S)
_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
_FORBIDDEN = {"JOIN", "UNION", "WITH", "ARRAY", "INTERSECT", "EXCEPT", "FINAL", "SAMPLE", "COLUMNS",
              "PREWHERE", "INTO", "APPLY", "REPLACE"}
_CLAUSE_AFTER_TABLE = {"WHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "SETTINGS", "FORMAT"}
_WHERE_END = {"GROUP", "ORDER", "LIMIT", "HAVING", "SETTINGS", "FORMAT", "WINDOW", "QUALIFY"}
_BEFORE_KEY_OK = {"(", ",", ">=", "<=", "<>", "!=", "==", "<", ">", "=", "+", "-", "/", "%", "||", "SELECT",
                  "WHERE", "AND", "OR", "NOT", "BY", "DISTINCT", "HAVING", "WHEN", "THEN", "ELSE", "CASE",
                  "BETWEEN"}
_LOWER = {">=": True, ">": True, "<=": False, "<": False}
_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "=", "==": "=="}
ENABLED = True
"""Off: every query reads through the views (how tests and ``bench/query_suite.py``
compare both paths in one process)."""
LOW_CARDINALITY = False
"""On: the ``file()`` structure always keeps ``LowCardinality`` types, as the views do
(what ``bench/query_suite.py --compare-lc`` times beside the default, in the same process)."""
PLAIN_ROWS = 1 << 16
"""Rows a query is estimated to read (:func:`rows_within`) from which its ``file()``
declares ``LowCardinality`` columns plain (module doc); a query reading fewer (the last
hour, say) keeps them: their hashing then costs less than giving the result the views'
dtypes. Queries without a key window always read them plain."""
TIME_MARGIN = dt.timedelta(days=1)
"""How far a time bound is widened (see module doc)."""
UTC_MARGIN = dt.timedelta(hours=1)
"""How far a bound given as a ``DateTime``/``DateTime64``/``Date`` parameter without a time
zone argument is widened: the store binds such values as UTC text and its sessions read
them in UTC, so only rounding to the type's precision can move them (a margin of one sort
step)."""
_UTC_TIME_TYPE = re.compile(r":\s*(?:Nullable\()?(?:DateTime|DateTime64\(\s*\d+\s*\)|Date|Date32)\)?\s*\}$")
_GLOB_CHARS = set("*?{}[],'\\")


@dataclass(frozen=True)
class _Tok:
    kind: str  # ph, word, num, op, str, other
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


@dataclass(frozen=True)
class Shape:
    """What :func:`shape` found in a simple query's SQL (parameter values not yet known)."""

    table: Table
    span: tuple[int, int]
    """Where the table's name is in the SQL (replaced by the ``file()`` call)."""
    bounds: tuple[tuple[str, bool, _Tok], ...]
    """(op, key on the left, value token) of each bounding conjunct (see module doc)."""


def _tokens(sql: str) -> list[_Tok] | None:
    """Code tokens of ``sql`` (comments dropped, string literals as ``str``); None when the
    SQL holds a quoted identifier (a name this module would not see)."""
    out: list[_Tok] = []
    pos = 0
    for is_code, text in P._split_sql(sql):
        if not is_code:
            if text.startswith("'"):
                out.append(_Tok("str", text, pos, pos + len(text)))
            elif text.startswith(("`", '"')):
                return None
            pos += len(text)
            continue
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup or "other"
            if kind != "ws":
                out.append(_Tok(kind, m.group(), pos + m.start(), pos + m.end()))
        pos += len(text)
    return out


@functools.lru_cache(maxsize=512)
def shape(sql: str) -> Shape | None:
    """The :class:`Shape` of ``sql`` when it is a simple query (module doc), else None."""
    toks = _tokens(sql)
    if not toks:
        return None
    words = [t.upper for t in toks if t.kind == "word"]
    if words.count("SELECT") != 1 or _FORBIDDEN.intersection(words):
        return None
    at = [i for i, t in enumerate(toks) if t.kind == "word" and t.text in TABLES]
    if len(at) != 1:
        return None
    i = at[0]
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if i == 0 or toks[i - 1].upper != "FROM" or not (nxt is None or nxt.upper in _CLAUSE_AFTER_TABLE or nxt.text == ";"):
        return None
    table = TABLES[toks[i].text]
    if table.materialized:  # `SELECT *` must not show them: `*` only as count(*)
        for j, t in enumerate(toks):
            if t.text == "*" and not (0 < j < len(toks) - 1 and toks[j - 1].text == "(" and toks[j + 1].text == ")"):
                return None
    from .parts import range_key

    key = range_key(table)
    bounds: tuple[tuple[str, bool, _Tok], ...] = ()
    if key is not None and nxt is not None and nxt.upper == "WHERE" and _key_not_aliased(toks, key):
        bounds = _bounds(toks[i + 2:], key)
    return Shape(table, (toks[i].start, toks[i].end), bounds)


def _key_not_aliased(toks: Sequence[_Tok], key: str) -> bool:
    for i, t in enumerate(toks):
        if t.kind == "word" and t.text == key and (i == 0 or toks[i - 1].upper not in _BEFORE_KEY_OK):
            return False
    return True


def _bounds(toks: Sequence[_Tok], key: str) -> tuple[tuple[str, bool, _Tok], ...]:
    """Bounding conjuncts of a WHERE clause's tokens (those after ``WHERE``)."""
    conjuncts: list[list[_Tok]] = [[]]
    depth = 0
    between = False
    for t in toks:
        if t.text in ("(", "["):
            depth += 1
        elif t.text in (")", "]"):
            depth -= 1
            if depth < 0:
                return ()
        elif depth == 0:
            u = t.upper
            if u in _WHERE_END or t.text == ";":
                break
            if u == "OR" or t.text in ("?", ":", "->"):
                return ()
            if u == "BETWEEN":
                between = True
            elif u == "AND":
                if between:
                    between = False
                else:
                    conjuncts.append([])
                    continue
        conjuncts[-1].append(t)
    out = []
    for c in conjuncts:
        texts = [t.upper if t.kind == "word" else t.text for t in c]
        is_value = [t.kind in ("ph", "str", "num") for t in c]
        if len(c) == 3 and c[0].text == key and c[0].kind == "word" and texts[1] in _FLIP and is_value[2]:
            out.append((texts[1], True, c[2]))
        elif len(c) == 3 and c[2].text == key and c[2].kind == "word" and texts[1] in _FLIP and is_value[0]:
            out.append((_FLIP[texts[1]], True, c[0]))
        elif (len(c) == 5 and c[0].text == key and c[0].kind == "word" and texts[1] == "BETWEEN"
              and texts[3] == "AND" and is_value[2] and is_value[4]):
            out += [(">=", True, c[2]), ("<=", True, c[4])]
    return tuple(out)


def _value(tok: _Tok, values: Mapping[str, Any]) -> tuple[Any, bool]:
    """The value of a token, and whether it is a time parameter read in UTC for sure."""
    if tok.kind == "ph":
        m = _PLACEHOLDER.match(tok.text)
        if not m:
            return None, False
        return values.get(m.group(1)), bool(_UTC_TIME_TYPE.search(tok.text))
    if tok.kind == "str":
        body = tok.text[1:-1]
        return (None if "\\" in body or "'" in body else body), False
    return (int(tok.text) if tok.text.isdigit() else None), False


def _key_number(value: Any, key_type: pa.DataType, utc: bool = False) -> tuple[int, int] | None:
    """``value`` as the key's numbers (its unit), with the margin to widen it by
    (:data:`UTC_MARGIN` for a ``utc`` time parameter, else :data:`TIME_MARGIN`); None
    when it is not a value this module reads safely."""
    if pa.types.is_timestamp(key_type):
        margin = UTC_MARGIN if utc else TIME_MARGIN
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime(value.year, value.month, value.day)
        if not isinstance(value, dt.datetime):
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[key_type.unit]
        seconds = (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(seconds=1)
        return seconds * per_second, int(margin.total_seconds()) * per_second
    if pa.types.is_integer(key_type) and isinstance(value, int) and not isinstance(value, bool):
        return value, 0
    return None


def window(sh: Shape, values: Mapping[str, Any], key_type: pa.DataType) -> tuple[int | None, int | None]:
    """The key range (inclusive, widened) every row of the result lies in; None: open."""
    lo: int | None = None
    hi: int | None = None
    for op, _, tok in sh.bounds:
        value, utc = _value(tok, values)
        got = _key_number(value, key_type, utc)
        if got is None:
            continue
        number, margin = got
        if op in ("=", "=="):
            lo = number - margin if lo is None else max(lo, number - margin)
            hi = number + margin if hi is None else min(hi, number + margin)
        elif _LOWER[op]:
            lo = number - margin if lo is None else max(lo, number - margin)
        else:
            hi = number + margin if hi is None else min(hi, number + margin)
    return lo, hi


def select(infos: Sequence[PartInfo], lo: int | None, hi: int | None) -> list[PartInfo]:
    """The parts whose key span meets [lo, hi] (parts without statistics always); at least
    one part when there are any (no row of another part can pass the bounds either)."""
    keep = [p for p in infos
            if p.lo is None or p.hi is None or ((lo is None or p.hi >= lo) and (hi is None or p.lo <= hi))]
    return keep or list(infos[:1])


def rows_within(infos: Sequence[PartInfo], lo: int | None, hi: int | None) -> int | None:
    """Estimated rows of ``infos`` with keys in [lo, hi]: each row group's rows times the
    share of its key range inside (rows spread evenly); None when a part has no row-group
    key ranges."""
    total = 0.0
    for p in infos:
        if not p.groups:
            return None
        for g_lo, g_hi, rows in p.groups:
            a = g_lo if lo is None else max(g_lo, lo)
            b = g_hi if hi is None else min(g_hi, hi)
            if a <= b:
                total += rows * (b - a + 1) / (g_hi - g_lo + 1)
    return int(total)


def file_source(folder: Path, parts: Sequence[Path], table: Table, *, low_cardinality: bool = False) -> str | None:
    """The ``file(...)`` call reading ``parts`` of ``folder`` (``LowCardinality`` columns as
    their plain type unless ``low_cardinality``); None when a name would need escaping in
    a glob."""
    if not parts or _GLOB_CHARS.intersection(str(folder)) or any(_GLOB_CHARS.intersection(p.name) for p in parts):
        return None
    names = [p.name for p in parts]
    pattern = f"{folder}/{names[0]}" if len(names) == 1 else f"{folder}/{{{','.join(names)}}}"
    structure = P.structure(table, low_cardinality=low_cardinality)
    return f"file({format_str(pattern)}, Parquet, {format_str(structure)})"


def rewrite(sql: str, sh: Shape, source: str) -> str:
    """``sql`` reading ``source`` under the table's name."""
    a, b = sh.span
    return f"{sql[:a]}{source} AS {sh.table.name}{sql[b:]}"
