"""ClickHouse types seen from Python: query-parameter binding and DataFrame coercion.

Two jobs, shared by both store back-ends so they behave the same:

* **Binding.** :func:`bind` turns ``%(name)s`` pyformat placeholders into ClickHouse
  ``{name:Type}`` placeholders (type inferred from the Python value) and returns each value
  in ClickHouse's *escaped text* form, the form the engine parses for ``{name:Type}``
  (the same text the HTTP interface takes as ``param_<name>``). Values never enter the SQL
  text: ClickHouse parses them as data of the declared type. Values the engine would
  silently change are refused with :class:`~ooniutils.exceptions.QueryError` naming the
  parameter: integers outside the declared (or inferred) type's range, which ClickHouse
  wraps or saturates, and ``NaT``. Only placeholders in SQL code count: literals, quoted
  identifiers and comments (``--``, ``#``, nested ``/* */``) are left as written.
* **Coercion.** :func:`to_arrow` converts a DataFrame to a :class:`pyarrow.Table` with the
  column order and types of a :class:`~ooniutils.store.schema.Table` (missing columns get
  their defaults; unknown columns and impossible conversions raise
  :class:`~ooniutils.exceptions.StoreError` naming the column).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver.binding import format_bind_value

from ..exceptions import QueryError, StoreError
from .schema import Table

# --------------------------------------------------------------------------- binding

# A pyformat placeholder or an escaped percent sign (searched in SQL code only, see _split_sql).
_PYFORMAT = re.compile(r"%\((?P<name>[A-Za-z_]\w*)\)s|%%")
_CH_PLACEHOLDER = re.compile(r"\{\s*(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<type>[^{}]+?)\s*\}")
# Where a literal, a quoted identifier or a comment may start (ClickHouse's lexer: '...',
# "...", `...`, -- to the line end, "# " or "#!" to the line end, nestable /* */).
_NOT_CODE_START = re.compile(r"['\"`]|--|#[ !]|/\*")
_QUOTED = {q: re.compile(q + r"(?:[^" + q + r"\\]|\\.|" + q + q + r")*" + q, re.S) for q in "'\"`"}
_COMMENT_EDGE = re.compile(r"/\*|\*/")

_INT_RANGES = {f"{'U' if unsigned else ''}Int{bits}": ((0, 2**bits - 1) if unsigned
                                                         else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
               for bits in (8, 16, 32, 64, 128, 256) for unsigned in (False, True)}


def _split_sql(sql: str) -> list[tuple[bool, str]]:
    """``sql`` as consecutive (is_code, text) parts: code, and the literals, quoted
    identifiers and comments in between (taken whole, so an apostrophe in a comment or a
    ``%(x)s`` in a literal is never mistaken for SQL). An unterminated literal or comment
    runs to the end (ClickHouse then reports it)."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    while (m := _NOT_CODE_START.search(sql, pos)) is not None:
        start, token = m.start(), m.group()
        if token in ("'", '"', "`"):
            q = _QUOTED[token].match(sql, start)
            end = q.end() if q else len(sql)
        elif token == "/*":
            depth, end = 0, len(sql)
            for edge in _COMMENT_EDGE.finditer(sql, start):
                depth += 1 if edge.group() == "/*" else -1
                if depth == 0:
                    end = edge.end()
                    break
        else:  # a line comment; its newline is code
            nl = sql.find("\n", start)
            end = len(sql) if nl < 0 else nl
        if start > pos:
            parts.append((True, sql[pos:start]))
        parts.append((False, sql[start:end]))
        pos = end
    if pos < len(sql):
        parts.append((True, sql[pos:]))
    return parts


def infer_type(value: Any) -> str:
    """ClickHouse type for a Python value used as a pyformat parameter.

    str→String, bool→Bool, int→Int64 (UInt64 above 2**63-1), float→Float64,
    datetime→DateTime64(3) (aware values converted to UTC, naive ones taken as UTC),
    date→Date, None→Nullable(String), list/tuple→Array(T) with T from the elements
    (ints and floats mixed → Float64; an empty list → Array(String)).
    """
    if value is None:
        return "Nullable(String)"
    if isinstance(value, bool | np.bool_):
        return "Bool"
    if isinstance(value, numbers.Integral):
        return "UInt64" if int(value) > 2**63 - 1 else "Int64"
    if isinstance(value, numbers.Real):
        return "Float64"
    if isinstance(value, str):
        return "String"
    if isinstance(value, dt.datetime):
        return "DateTime64(3)"
    if isinstance(value, dt.date):
        return "Date"
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Series):
        items = list(value)
        if not items:
            return "Array(String)"
        types = {infer_type(v) for v in items if v is not None}
        if not types:
            return "Array(Nullable(String))"
        if types <= {"Int64", "UInt64"}:
            inner = "UInt64" if "UInt64" in types else "Int64"
        elif types <= {"Int64", "UInt64", "Float64"}:
            inner = "Float64"
        elif len(types) == 1:
            inner = types.pop()
        else:
            raise QueryError(f"cannot infer one ClickHouse type for a list mixing {sorted(types)}")
        if any(v is None for v in items) and not inner.startswith(("Array", "Nullable")):
            inner = f"Nullable({inner})"
        return f"Array({inner})"
    raise QueryError(
        f"cannot infer a ClickHouse type for a parameter of Python type {type(value).__name__}; "
        "use a {name:Type} placeholder and pass a str"
    )


def _normalize(value: Any, ch_type: str | None) -> Any:
    """Python value → value that :func:`format_bind_value` renders as ClickHouse expects.

    Datetimes become UTC text with the precision of the declared type (DateTime: seconds,
    DateTime64(p): p digits), numpy scalars become Python ones, sequences become lists.
    """
    if value is None:
        return None
    base = _strip_wrappers(ch_type) if ch_type else None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        if base == "DateTime" or (base and base.startswith("DateTime(")):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        digits = 3
        if base and (m := re.match(r"DateTime64\((\d+)", base)):
            digits = int(m.group(1))
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if digits:
            text += "." + f"{value.microsecond:06d}{'0' * 3}"[:digits]
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Series):
        inner = None
        if base and base.startswith("Array(") and base.endswith(")"):
            inner = base[len("Array("):-1]
        return [_normalize(v, inner) for v in value]
    return value


def _strip_wrappers(ch_type: str) -> str:
    t = ch_type.strip()
    while True:
        for w in ("LowCardinality(", "Nullable("):
            if t.startswith(w) and t.endswith(")"):
                t = t[len(w):-1].strip()
                break
        else:
            return t


def rewrite_pyformat(sql: str, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Replace ``%(name)s`` by ``{name:Type}``; returns the new SQL and name → type.

    ``%%`` becomes ``%`` (DB-API pyformat rules, also inside literals as in
    ``LIKE '%%.ru'``) only when the query has pyformat placeholders; placeholders inside
    literals, quoted identifiers and comments (``--``, ``#``, ``/* */``) are left alone.
    """
    types: dict[str, str] = {}
    parts = _split_sql(sql)
    if not any(code and m.group("name") for code, text in parts for m in _PYFORMAT.finditer(text)):
        return sql, types

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name is None:  # "%%"
            return "%"
        if name not in params:
            raise QueryError(f"query uses parameter %({name})s but no value was given for it", sql)
        types[name] = infer_type(params[name])
        return "{" + f"{name}:{types[name]}" + "}"

    out = [_PYFORMAT.sub(repl, text) if code else text.replace("%%", "%") for code, text in parts]
    return "".join(out), types


def _check_value(name: str, value: Any, ch_type: str, sql: str) -> None:
    """Refuse what the engine would silently change: an integer outside its type's range
    (ClickHouse wraps or saturates it), and NaT (no time to send)."""
    base = _strip_wrappers(ch_type)
    if value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):
        raise QueryError(f"query parameter {name!r} is NaT (a missing time): pass a real time, "
                         "or None with a Nullable type", sql)
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Series):
        inner = base[len("Array("):-1] if base.startswith("Array(") and base.endswith(")") else base
        for v in value:
            _check_value(name, v, inner, sql)
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        bounds = _INT_RANGES.get(base)
        if bounds is not None and not bounds[0] <= int(value) <= bounds[1]:
            raise QueryError(f"query parameter {name!r}: {int(value)} is outside {base} "
                             f"({bounds[0]}..{bounds[1]})", sql)


@dataclass(frozen=True)
class Bound:
    """A query ready for the engine: SQL with only ``{name:Type}`` placeholders."""

    sql: str
    values: dict[str, Any]
    """name → normalized Python value (what clickhouse-connect takes)."""

    def escaped(self) -> dict[str, str]:
        """name → escaped text form (what chDB's ``params`` and HTTP ``param_<name>`` take)."""
        return {k: format_bind_value(v) for k, v in self.values.items()}


def bind(sql: str, params: Mapping[str, Any] | None) -> Bound:
    """Prepare ``sql`` + ``params`` for engine-side binding (see module doc)."""
    params = dict(params or {})
    sql, inferred = rewrite_pyformat(sql, params)
    declared = {m.group("name"): m.group("type")
                for code, text in _split_sql(sql) if code for m in _CH_PLACEHOLDER.finditer(text)}
    declared.update(inferred)
    for name, ch_type in declared.items():
        if name in params:
            _check_value(name, params[name], ch_type, sql)
    values = {name: _normalize(v, declared.get(name)) for name, v in params.items() if name in declared}
    return Bound(sql, values)


# --------------------------------------------------------------------------- coercion

_INTS = {
    "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
    "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
}
_FLOATS = {"Float32": pa.float32(), "Float64": pa.float64()}


@dataclass(frozen=True)
class ColumnType:
    """A column's ClickHouse type split into what coercion needs."""

    declared: str
    """Type without its DEFAULT clause, e.g. ``LowCardinality(Nullable(String))``."""
    base: str
    """Inner type, e.g. ``String``, ``DateTime64(3, 'UTC')``."""
    nullable: bool
    default_expr: str | None

    @classmethod
    def parse(cls, text: str) -> ColumnType:
        declared, _, default = text.partition(" DEFAULT ")
        if not default:  # filled on insert like a DEFAULT (the stores keep it out of SELECT *)
            declared, _, default = text.partition(" MATERIALIZED ")
        declared = declared.strip()
        nullable = "Nullable(" in declared
        return cls(declared, _strip_wrappers(declared), nullable, default.strip() or None)

    @property
    def fixed_size(self) -> int:
        """N of FixedString(N) (0 for other types)."""
        m = re.fullmatch(r"FixedString\((\d+)\)", self.base)
        return int(m.group(1)) if m else 0

    def arrow_type(self) -> pa.DataType:
        b = self.base
        if b in _INTS:
            return _INTS[b]
        if b in _FLOATS:
            return _FLOATS[b]
        if b == "Bool":
            return pa.bool_()
        if b in ("Date", "Date32"):
            return pa.date32()
        if b == "DateTime" or b.startswith("DateTime("):
            return pa.timestamp("s", tz="UTC")
        if b.startswith("DateTime64("):
            precision = int(re.match(r"DateTime64\((\d+)", b).group(1))  # type: ignore[union-attr]
            unit = "ms" if precision <= 3 else ("us" if precision <= 6 else "ns")
            return pa.timestamp(unit, tz="UTC")
        if b.startswith("FixedString("):
            # Stored NUL-padded, as ClickHouse holds it: Parquet filter push-down then
            # compares like ClickHouse does (an unpadded string would match nothing).
            return pa.binary(self.fixed_size)
        if b in ("String", "IPv4", "IPv6", "UUID"):
            return pa.string()
        raise StoreError(f"unsupported ClickHouse column type {self.declared}")


@functools.lru_cache(maxsize=64)
def structure(table: Table, *, low_cardinality: bool = True) -> str:
    """``file()`` structure of ``table`` (types only, DEFAULT clauses dropped).

    With ``low_cardinality=False``, ``LowCardinality(T)`` columns are declared as ``T``:
    ClickHouse then reads a Parquet dictionary column into plain values instead of
    hashing every value into a LowCardinality column (same values, other result types:
    see :mod:`.prune`)."""
    def declared(text: str) -> str:
        d = ColumnType.parse(text).declared
        if not low_cardinality and d.startswith("LowCardinality(") and d.endswith(")"):
            d = d[len("LowCardinality("):-1].strip()
        return d

    return ", ".join(f"`{c}` {declared(t)}" for c, t in table.columns)


@functools.lru_cache(maxsize=64)
def has_low_cardinality(table: Table) -> bool:
    """Whether any column of ``table`` is declared ``LowCardinality(...)``."""
    return any(ColumnType.parse(t).declared.startswith("LowCardinality(") for _, t in table.columns)


def _default_array(ct: ColumnType, n: int) -> pa.Array:
    at = ct.arrow_type()
    if ct.default_expr is not None:
        if ct.default_expr.replace(" ", "") in ("now()", "now64()", "now64(3)"):
            now = dt.datetime.now(dt.UTC)
            return pa.array([now] * n, type=at)
        if pa.types.is_string(at) and re.fullmatch(r"'[^'\\]*'", ct.default_expr):  # a literal
            return pa.array([ct.default_expr[1:-1]] * n, type=at)
        raise StoreError(f"unsupported DEFAULT expression {ct.default_expr!r}")
    if ct.nullable:
        return pa.nulls(n, type=at)
    if pa.types.is_timestamp(at):
        zero: Any = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    elif pa.types.is_date(at):
        zero = dt.date(1970, 1, 1)
    elif pa.types.is_boolean(at):
        zero = False
    elif pa.types.is_fixed_size_binary(at):
        zero = b"\0" * ct.fixed_size
    elif pa.types.is_string(at):
        zero = {"IPv4": "0.0.0.0", "IPv6": "::", "UUID": "00000000-0000-0000-0000-000000000000"}.get(ct.base, "")
    else:
        zero = 0
    return pa.array([zero] * n, type=at)


def _column_array(name: str, series: pd.Series, ct: ColumnType, dictionary: bool = False) -> pa.Array:
    """``series`` as an Arrow array of ``ct``'s type; with ``dictionary``, a categorical of
    strings for a String column stays dictionary-encoded (same values, no dense copy)."""
    at = ct.arrow_type()
    what = f"column {name!r} (ClickHouse type {ct.declared})"
    try:
        if pa.types.is_timestamp(at):
            is_time = pd.api.types.is_datetime64_any_dtype(series.dtype) or (
                isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_timestamp(series.dtype.pyarrow_dtype))
            if not is_time and pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
                raise StoreError(f"{what}: expected datetimes or date strings, got numbers")
            values = pd.to_datetime(series, utc=True, format="mixed")
            arr = pa.array(values, type=pa.timestamp("ns", tz="UTC"), from_pandas=True).cast(at, safe=False)
        elif pa.types.is_fixed_size_binary(at):
            arr = pa.array([_pad(name, v, ct) for v in series], type=at)
        elif pa.types.is_date(at):
            values = pd.to_datetime(series, format="mixed").dt.date
            arr = pa.array(values.where(series.notna(), None), type=at, from_pandas=True)
        elif isinstance(series.dtype, pd.CategoricalDtype) and pa.types.is_string(at):
            # dictionary → dense strings in Arrow (C++), not via Python objects: much faster
            arr = pa.array(series, from_pandas=True)
            if dictionary and pd.api.types.is_string_dtype(series.dtype.categories.dtype):
                arr = arr.cast(pa.dictionary(arr.type.index_type, at))
            else:
                arr = arr.cast(at)
        else:
            arr = pa.array(series, type=at, from_pandas=True)
    except StoreError:
        raise
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"{what}: cannot convert values of dtype {series.dtype}: {exc}") from exc
    if arr.null_count and not ct.nullable:
        raise StoreError(f"{what}: {arr.null_count} null value(s) in a column that is not Nullable")
    _validate_text(name, arr, ct)
    return arr


def _pad(name: str, value: Any, ct: ColumnType) -> bytes | None:
    """A FixedString(N) value as N bytes, NUL-padded (None stays None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray):
        raise StoreError(f"column {name!r} ({ct.declared}): expected text, got {type(value).__name__}")
    if len(value) > ct.fixed_size:
        raise StoreError(f"column {name!r} ({ct.declared}): value {value!r} is longer than {ct.fixed_size} bytes")
    return bytes(value).ljust(ct.fixed_size, b"\0")


def _validate_text(name: str, arr: pa.Array, ct: ColumnType) -> None:
    b = ct.base
    if b not in ("IPv4", "IPv6"):
        return
    for v in arr.to_pylist():
        if v is None:
            continue
        try:
            addr = ipaddress.ip_address(v)
        except ValueError as exc:
            raise StoreError(f"column {name!r} ({ct.declared}): {v!r} is not an IP address") from exc
        if addr.version != (4 if b == "IPv4" else 6) and not (b == "IPv6" and addr.version == 4):
            raise StoreError(f"column {name!r} ({ct.declared}): {v!r} is not an {b} address")


def to_arrow(table: Table, df: pd.DataFrame, *, dictionary: bool = False) -> pa.Table:
    """Coerce ``df`` to ``table``'s columns and types (see module doc).

    With ``dictionary=True``, String columns given as pandas categoricals of strings keep
    their encoding: their fields are ``dictionary<int, string>`` instead of ``string``
    (same values). The embedded store uses this so Parquet writes the dictionary as is
    rather than expanding every value and hashing it again (about twice as fast for the
    generator's frames); ClickHouse and chDB read such columns as plain String.
    """
    unknown = [str(c) for c in df.columns if c not in set(table.column_names)]
    if unknown:
        raise StoreError(
            f"table {table.name} has no column(s) {', '.join(map(repr, unknown))}; "
            f"its columns are: {', '.join(table.column_names)}"
        )
    n = len(df)
    arrays, fields = [], []
    for col, type_text in table.columns:
        ct = ColumnType.parse(type_text)
        arr = _column_array(col, df[col], ct, dictionary) if col in df.columns else _default_array(ct, n)
        arrays.append(arr)
        fields.append(pa.field(col, arr.type if pa.types.is_dictionary(arr.type) else ct.arrow_type(),
                               nullable=ct.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema :func:`to_arrow` produces for ``table`` (dense columns)."""
    fields = []
    for col, type_text in table.columns:
        ct = ColumnType.parse(type_text)
        fields.append(pa.field(col, ct.arrow_type(), nullable=ct.nullable))
    return pa.schema(fields)


def _conform_column(name: str, arr: pa.ChunkedArray, ct: ColumnType, dictionary: bool) -> pa.ChunkedArray:
    """``arr`` as ``ct``'s Arrow type: kept as is when it already is (no copy), else cast."""
    at = ct.arrow_type()
    what = f"column {name!r} (ClickHouse type {ct.declared})"
    typ = arr.type
    if pa.types.is_dictionary(typ) and typ.value_type == at:
        if not dictionary:
            arr = arr.cast(at)
    elif typ != at:
        if pa.types.is_fixed_size_binary(at):  # needs NUL padding: see ColumnType.arrow_type
            raise StoreError(f"{what}: expected Arrow type {at} (NUL-padded), got {typ}")
        try:
            # Timestamps may lose sub-unit precision (as in to_arrow); other casts must be exact.
            safe = not (pa.types.is_timestamp(typ) and pa.types.is_timestamp(at))
            arr = arr.cast(at, safe=safe)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StoreError(f"{what}: cannot convert Arrow values of type {typ}: {exc}") from exc
    if arr.null_count and not ct.nullable:
        raise StoreError(f"{what}: {arr.null_count} null value(s) in a column that is not Nullable")
    if ct.base in ("IPv4", "IPv6"):
        _validate_text(name, arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0), ct)
    return arr


def conform_arrow(table: Table, arrow: pa.Table, *, dictionary: bool = False) -> pa.Table:
    """Coerce an Arrow table to ``table``'s columns and types, like :func:`to_arrow` does
    for a DataFrame, without going through pandas.

    Columns already of the target type are kept without a copy; others are cast (exact
    casts only, except timestamps, which are truncated to the column's unit); missing
    columns get their defaults. With ``dictionary=True``, dictionary columns whose values
    have the target type stay dictionary-encoded. Unknown columns, impossible casts and
    nulls in a column that is not Nullable raise :class:`StoreError` naming the column.
    """
    unknown = [c for c in arrow.column_names if c not in set(table.column_names)]
    if unknown:
        raise StoreError(
            f"table {table.name} has no column(s) {', '.join(map(repr, unknown))}; "
            f"its columns are: {', '.join(table.column_names)}"
        )
    if len(set(arrow.column_names)) != arrow.num_columns:
        raise StoreError(f"an Arrow table for {table.name} has duplicate column names: {arrow.column_names}")
    n = arrow.num_rows
    arrays: list[pa.ChunkedArray | pa.Array] = []
    fields = []
    for col, type_text in table.columns:
        ct = ColumnType.parse(type_text)
        if col in arrow.column_names:
            arr: pa.ChunkedArray | pa.Array = _conform_column(col, arrow.column(col), ct, dictionary)
        else:
            arr = _default_array(ct, n)
        arrays.append(arr)
        fields.append(pa.field(col, arr.type if pa.types.is_dictionary(arr.type) else ct.arrow_type(),
                               nullable=ct.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
