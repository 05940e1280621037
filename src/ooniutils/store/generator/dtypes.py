"""pandas dtypes of generated frames, derived from the ClickHouse types in schema.py.

String columns are either pandas' default ``str`` (Arrow-backed) or, for low-cardinality
ones, ``category`` with string categories (cheap to build from codes; Arrow and Parquet
write them as dictionary-encoded strings, which chDB and ClickHouse read as String).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

_STRINGS = re.compile(r"^(String|FixedString\(\d+\)|IPv4|IPv6)$")
_PLAIN = {"UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
          "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
          "Float32": "float32", "Float64": "float64"}
_NULLABLE = {"UInt8": "UInt8", "UInt16": "UInt16", "UInt32": "UInt32", "UInt64": "UInt64",
             "Int8": "Int8", "Int16": "Int16", "Int32": "Int32", "Int64": "Int64",
             "Float32": "Float32", "Float64": "Float64"}


def pandas_dtype(ch_type: str) -> str:
    """The pandas dtype name for a ClickHouse column type; "str" for every string-like type.

    >>> pandas_dtype("Nullable(DateTime('UTC'))")
    'datetime64[s, UTC]'
    """
    t = re.split(r" (?:DEFAULT|MATERIALIZED) ", ch_type)[0].strip()
    if t.startswith("LowCardinality("):
        t = t[len("LowCardinality("):-1]
    nullable = t.startswith("Nullable(")
    if nullable:
        t = t[len("Nullable("):-1]
    if _STRINGS.match(t):
        return "str"
    if t in _PLAIN:
        return _NULLABLE[t] if nullable else _PLAIN[t]
    m = re.match(r"^DateTime(64)?(?:\((\d+)?(?:,?\s*'([^']+)')?\))?$", t)
    if m:
        unit = {None: "s", "3": "ms", "6": "us", "9": "ns"}[m.group(2) if m.group(1) else None]
        return f"datetime64[{unit}, {m.group(3)}]" if m.group(3) else f"datetime64[{unit}]"
    raise ValueError(f"no pandas dtype for ClickHouse type {ch_type!r}")


def conforms(series: pd.Series, ch_type: str) -> bool:
    """Whether ``series`` has the dtype :func:`pandas_dtype` gives (categories of strings
    count as a string column)."""
    want = pandas_dtype(ch_type)
    if want == "str":
        if isinstance(series.dtype, pd.CategoricalDtype):
            return pd.api.types.is_string_dtype(series.dtype.categories.dtype)
        return isinstance(series.dtype, pd.StringDtype)
    return str(series.dtype) == want


@lru_cache(maxsize=256)
def _cat_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(pd.Index(list(categories), dtype="str"))


def categorical(codes: np.ndarray, categories: list[str], unique: bool = True) -> pd.Categorical:
    """A Categorical from integer codes. With ``unique=False`` repeated category values
    (e.g. two tests sharing a version string) are merged first."""
    if unique:
        return pd.Categorical.from_codes(codes, dtype=_cat_dtype(tuple(categories)))
    values = sorted(set(categories))
    remap = np.array([values.index(c) for c in categories], np.int16)
    return pd.Categorical.from_codes(remap[codes], dtype=_cat_dtype(tuple(values)))


def str_series(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """An Arrow string array as a pandas ``str`` Series (no copy of the character data)."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    return values.to_pandas()


def null_uint64(n: int) -> pd.arrays.IntegerArray:
    """A nullable UInt64 column of ``n`` NULLs (fastpath.ooni_run_link_id)."""
    return pd.arrays.IntegerArray(np.zeros(n, np.uint64), np.ones(n, bool))
