"""Checks on a notebook's query and parameters before they reach a store.

The engine binds parameters as data, but some mistakes still return a plausible answer
instead of an error, which a monitoring notebook then reports as green:

* a list for a scalar placeholder (``{cc:String}`` with ``cc=["IT"]``) is bound as the
  text ``['IT']`` and matches no row;
* ``None`` for a placeholder that is not ``Nullable`` is bound as ``''`` or ``0``;
* a parameter the query never uses (a forgotten placeholder, a typo in its name) is
  dropped, so the filter the caller meant is not applied;
* an empty query returns an empty DataFrame, which reads as "no rows";
* a date or time outside its placeholder type's range (``{since:DateTime}`` with 1960 is
  bound as 1970-01-01, 2200 as 2106-02-07: ClickHouse saturates, as it wraps integers,
  which the store already refuses);
* two statements (``SELECT 1 AS a; SELECT 2 AS b``) come back as one garbled frame (the
  embedded store gave a column ``b`` holding 1 and 2), and a statement that changes
  something (``DROP TABLE fastpath``, ``INSERT``, ``SET``) came back as an empty frame: a
  notebook's queries read, the ``ooniutils data`` commands write.

:func:`check_query` refuses these with a :class:`~ooniutils.exceptions.QueryError` naming
the parameter, as well as text the engine cannot take (lone surrogates) and a query that is
not a string.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import QueryError
from .store.params import _CH_PLACEHOLDER, _PYFORMAT, _split_sql, infer_type

__all__ = ["check_query"]

_COLLECTIONS = (list, tuple, set, frozenset, dict, np.ndarray, pd.Series, pd.Index)
_CONTAINER_TYPES = ("Array(", "Tuple(", "Map(", "Nested(")
_SURROGATE = re.compile("[\ud800-\udfff]")
_READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
# A placeholder whose type holds a quote, {t:DateTime('UTC')}: the store's binding takes the
# quote for the start of a literal and does not see the placeholder.
_QUOTED_TYPE = re.compile(r"\{\s*(?P<name>[A-Za-z_]\w*)\s*:[^{}]*'[^{}]*\}")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")


def _unwrap(ch_type: str) -> tuple[str, bool]:
    """``ch_type`` without ``LowCardinality``/``Nullable`` wrappers, and whether it is
    Nullable."""
    t, nullable = ch_type.strip(), False
    while True:
        for wrapper in ("LowCardinality(", "Nullable("):
            if t.startswith(wrapper) and t.endswith(")"):
                nullable = nullable or wrapper == "Nullable("
                t = t[len(wrapper):-1].strip()
                break
        else:
            return t, nullable


# What Date and DateTime can hold (UTC); outside, the engine saturates silently. (Date32 and
# DateTime64 reach much further, by an amount that depends on the ClickHouse version.)
_DAY_RANGES = {"Date": (dt.date(1970, 1, 1), dt.date(2149, 6, 6))}
_TIME_RANGES = {"DateTime": (dt.datetime(1970, 1, 1), dt.datetime(2106, 2, 7, 6, 28, 15))}


def _check_time(name: str, value: Any, base: str, sql: str) -> None:
    """Refuse a date/datetime outside ``base``'s range (an Array's items one by one)."""
    if base.startswith("Array(") and base.endswith(")"):
        if isinstance(value, _COLLECTIONS) and not isinstance(value, dict):
            inner, _ = _unwrap(base[len("Array("):-1])
            for item in value:
                _check_time(name, item, inner, sql)
        return
    if not isinstance(value, dt.date) or _is_missing(value) or value is pd.NaT:
        return
    kind = "DateTime" if base == "DateTime" or base.startswith("DateTime(") else base
    if kind in _DAY_RANGES and not isinstance(value, dt.datetime):
        low_d, high_d = _DAY_RANGES[kind]
        if not low_d <= value <= high_d:
            raise QueryError(f"query parameter {name!r}: {value} is outside {base} ({low_d} to "
                             f"{high_d}; ClickHouse would silently use the nearest end)", sql)
    elif kind in _TIME_RANGES:
        when = value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        low, high = _TIME_RANGES[kind]
        if not low <= when <= high:
            raise QueryError(f"query parameter {name!r}: {value} is outside {base} ({low} to {high} "
                             "UTC; ClickHouse would silently use the nearest end)", sql)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA


def _check_text(name: str, value: Any, sql: str) -> None:
    if isinstance(value, str) and _SURROGATE.search(value):
        raise QueryError(f"query parameter {name!r} holds a lone surrogate (text that is not "
                         "valid Unicode, e.g. decoded with surrogateescape): fix or drop it", sql)
    if isinstance(value, _COLLECTIONS) and not isinstance(value, dict):
        for item in value:
            _check_text(name, item, sql)


def _check_declared(name: str, value: Any, ch_type: str, sql: str) -> None:
    base, nullable = _unwrap(ch_type)
    if _is_missing(value) and not nullable:
        raise QueryError(f"query parameter {name!r} is or holds None but its type {ch_type} "
                         f"is not Nullable (the engine would bind '' or 0): pass a value, or "
                         f"declare Nullable({base})", sql)
    if (base.startswith("Array(") and base.endswith(")") and isinstance(value, _COLLECTIONS)
            and not isinstance(value, dict)):
        inner = base[len("Array("):-1]
        for item in value:  # None in Array(String) was bound as '', in Array(UInt32) as 0
            _check_declared(name, item, inner, sql)
        return
    if isinstance(value, _COLLECTIONS) and not base.startswith(_CONTAINER_TYPES):
        raise QueryError(f"query parameter {name!r} is a {type(value).__name__} but its "
                         f"placeholder type {ch_type} takes one value (the engine would bind "
                         f"the list's text and match nothing): pass one value, or write "
                         f"IN {{{name}:Array({base})}}", sql)
    _check_time(name, value, base, sql)


def check_query(sql: Any, params: Mapping[str, Any]) -> None:
    """Raise :class:`QueryError` for the mistakes listed in the module doc."""
    if not isinstance(sql, str):
        raise QueryError(f"the query must be a string of SQL, not a {type(sql).__name__}")
    code = [text for is_code, text in _split_sql(sql) if is_code]
    text = "".join(code)
    if not text.strip(" \t\r\n;"):
        raise QueryError("the query is empty (no SQL outside comments): nothing to run", sql)
    first, _, rest = text.strip(" \t\r\n;").partition(";")
    if rest.strip(" \t\r\n;"):
        raise QueryError("the query holds more than one statement (a ';' with SQL after it): "
                         "run one statement per call", sql)
    m = _FIRST_WORD.match(first)
    word = m.group(1).upper() if m else first.strip()[:20]
    if word not in _READ_STATEMENTS:
        raise QueryError(f"{word!r} is not a query that reads: notebooks read with "
                         f"{', '.join(_READ_STATEMENTS)} (the `ooniutils data` commands load "
                         "and change data)", sql)
    declared: dict[str, str] = {}
    pyformat: set[str] = set()
    for text in code:
        for m in _CH_PLACEHOLDER.finditer(text):
            declared.setdefault(m.group("name"), m.group("type"))
        pyformat.update(m.group("name") for m in _PYFORMAT.finditer(text) if m.group("name"))
    unused = sorted(set(params) - set(declared) - pyformat)
    quoted = {m.group("name"): m.group() for m in _QUOTED_TYPE.finditer(sql)}
    for name in unused:
        if name in quoted:
            raise QueryError(f"placeholder {quoted[name]} has a quoted type, which cannot be "
                             f"bound: write the type without its time zone, e.g. "
                             f"{{{name}:DateTime}} (parameters are sent in UTC)", sql)
    if unused:
        used = sorted(set(declared) | pyformat)
        raise QueryError(f"query parameter(s) {', '.join(map(repr, unused))} given but not used "
                         f"by the query (placeholders: {', '.join(used) if used else 'none'}); "
                         "write {name:Type} or %(name)s where the value goes, or drop it", sql)
    for name, value in params.items():
        if name in declared:
            _check_declared(name, value, declared[name], sql)
        elif name in pyformat:  # the type the store will infer for it
            _check_time(name, value, _unwrap(infer_type(value))[0], sql)
        _check_text(name, value, sql)
