"""Parquet parts of the embedded store: how a part is laid out and what its footer says.

A part is sorted by the table's *range key* — the leading ORDER BY column of
:mod:`.schema` when it is a number, a date or a time (``fastpath``:
``measurement_start_time``; ``logs``: ``__REALTIME_TIMESTAMP``), the column a MergeTree's
primary index would prune on. A time key is sorted by the hour (a stable sort on the key
truncated to :data:`TIME_STEP_SECONDS`). Rows are grouped by the table's *cluster column*
(:data:`CLUSTER_COLUMNS`: ``probe_cc``, what hourly notebooks filter by) in its value
order within a *grouping step* that follows the part's density (:func:`group_step`): the
day, or the hour where a day holds more than a part's rows — within an hour, a country's
rows fill a page or two at most and the page index skips little of a country filter. Otherwise rows keep their order — the generator's order by test and network
compresses smaller and writes faster than an exact sort. Rows go in row groups of
:data:`ROW_GROUP_ROWS` with min/max statistics for the key and the cluster column, pages
of at most :data:`PAGE_ROWS` rows and a page index, so ClickHouse's Parquet reader skips
the row groups a ``WHERE`` on the key rules out, and inside them the pages of other
countries; compaction (:mod:`.compaction`) keeps parts' key ranges disjoint, so a one-day
query reads a few row groups instead of every part. Tables without such a key
(``citizenlab``, ``test_helper_instances``) are written as they come.

The key column is written ``DELTA_BINARY_PACKED`` and uncompressed: every query reads it,
and decompressing its zstd pages was about half the cost of a time filter.

Nothing outside the store depends on this: any Parquet file with the table's columns is a
valid part (parts written before this layout — marked otherwise or not at all — are read
alike and rewritten in this layout when compacted).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from safefiles.locks import LockTimeout, lock_fd

from . import params as P
from .schema import Table

ROW_GROUP_ROWS = 65_536
"""Rows per row group: the unit ClickHouse skips by min/max (a one-day query on 10M rows
over 90 days touches ~2 of them per part it opens)."""
PART_ROWS = 2_097_152
"""Most rows a compaction writes into one part (32 row groups): fewer, bigger parts cost
less per query (each part's footer is read by every query)."""
TIME_STEP_SECONDS = 3600
"""A time key is sorted by this many seconds (see module doc); other keys exactly."""
SPARSE_STEPS = 24
"""The grouping step of a sparse part, in sort steps: a day (:func:`group_step`)."""
DENSE_STEP_ROWS = PART_ROWS // SPARSE_STEPS
"""A clustered part holding on average fewer rows a sort step (an hour) than this — a day
of less than a part's rows (~87k rows an hour) — is grouped within :data:`SPARSE_STEPS`
steps (:func:`group_step`): at 10M and at 100M rows over 90 days, the day."""
SORTED_BY = b"ooniutils.sorted_by"
"""Parquet key-value metadata marking a part sorted by ``<key>/<step>`` (in the key's unit),
``<key>/<step>,<cluster>/<group>`` when grouped by a cluster column within ``group`` key
units (:func:`group_step`; :func:`layout_mark`). ``<key>/<step>,<cluster>`` is the layout
before the grouping followed density (grouped within the step; kept when dense enough:
:func:`hour_fits`)."""
CLUSTER_COLUMNS = ("probe_cc",)
"""Columns rows are grouped by within a sort step, when a keyed table has one (the first
found): ``fastpath`` by ``probe_cc``, so a one-country query reads that country's pages only."""
PAGE_ROWS = 2048
"""Most rows in a data page of a clustered part: a country's rows of a day (the grouping
step, :func:`group_step`) come in pages of their own, and a time filter within the day
reads about one page of each country (36 × 2,048 rows, whatever the density), where 8,192
cost "last hour" ~60 % more at 100M rows; a scan pays no more than noise for the smaller
pages (BENCHMARKS.md, "Fifth round")."""
_DICT_SAMPLE = (8, 512)
"""Windows × rows sampled (evenly spaced windows) to decide if a column is worth a dictionary."""


def range_key(table: Table) -> str | None:
    """The column parts of ``table`` are sorted and ranged by, or None (see module doc)."""
    if not table.order_by:
        return None
    field = P.arrow_schema(table).field(table.order_by[0])
    t = field.type
    if field.nullable or not (pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return None
    return field.name


def key_ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A key column as int64 numbers (timestamps in their unit, dates in days)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_date(col.type):
        col = col.cast(pa.int32())
    ints = col.cast(pa.int64())
    if isinstance(ints, pa.ChunkedArray):
        ints = ints.combine_chunks() if ints.num_chunks != 1 else ints.chunk(0)
    return ints.to_numpy(zero_copy_only=False)


def sort_step(key_type: pa.DataType) -> int:
    """What the key is sorted by, in its own unit: an hour for a timestamp, else 1."""
    if pa.types.is_timestamp(key_type):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[key_type.unit]
        return TIME_STEP_SECONDS * per_second
    return 1


def group_step(step: int, rows: int, lo: int | None, hi: int | None, clustered: bool) -> int:
    """The step (in key units) rows of a part are grouped by the cluster column within: a
    day (:data:`SPARSE_STEPS` sort steps), or the sort ``step`` (an hour) when the part holds
    on average at least :data:`DENSE_STEP_ROWS` rows an hour over its key range (a day of
    more rows than a part).

    Grouped within the day, each country's rows of the day have pages of their own: a
    country filter reads its countries' pages only (within the hour, at 10M or 100M rows over
    90 days, a country's run is at most a page or two and the filter skips little), and a
    time filter reads about a page of each country for its hour (see BENCHMARKS.md,
    "Fifth round"). Without a cluster column, or for a key sorted exactly (``step`` 1), it
    is ``step``."""
    if not clustered or step <= 1 or rows <= 0 or lo is None or hi is None:
        return step
    return step * SPARSE_STEPS if _rows_per_step(step, rows, lo, hi) < DENSE_STEP_ROWS else step


def hour_fits(step: int, rows: int, lo: int | None, hi: int | None) -> bool:
    """Whether a clustered part of the layout before :func:`group_step` (grouped within the
    sort step, marked without a grouping step) is dense enough to keep: at least three
    quarters of :data:`DENSE_STEP_ROWS` rows a step. A sparser one is re-laid out within the
    day by the next full compaction. A part marked with its grouping step is kept whatever
    its density: a merge picks the step from all its rows, and its parts' own densities
    may differ a little; judging them again would rewrite some at every compaction."""
    if step <= 1 or rows <= 0 or lo is None or hi is None:
        return True
    return _rows_per_step(step, rows, lo, hi) >= DENSE_STEP_ROWS * 3 / 4


def _rows_per_step(step: int, rows: int, lo: int, hi: int) -> float:
    return rows / (hi // step - lo // step + 1)


def cluster_column(schema: pa.Schema, key: str | None) -> str | None:
    """The column rows of a part keyed by ``key`` are grouped by within a step (see
    :data:`CLUSTER_COLUMNS`), or None (no key, or no such column)."""
    if key is None:
        return None
    for name in CLUSTER_COLUMNS:
        if name != key and schema.get_field_index(name) >= 0:
            return name
    return None


def layout_mark(schema: pa.Schema, key: str, key_type: pa.DataType | None = None, group: int | None = None) -> bytes:
    """The :data:`SORTED_BY` value of a part of ``schema`` laid out by this module (the
    step in the unit of ``key_type``, by default the key's type in ``schema``), grouped
    within ``group`` key units (default: the sort step)."""
    step = sort_step(key_type or schema.field(key).type)
    cluster = cluster_column(schema, key)
    return (f"{key}/{step}" + (f",{cluster}/{group or step}" if cluster else "")).encode()


def _mark_group(mark: bytes | None, schema: pa.Schema, key: str, key_type: pa.DataType) -> tuple[int, bool] | None:
    """The grouping step a :data:`SORTED_BY` mark names and whether it is the layout
    before density (the step, unnamed), when it is a mark this module writes for
    ``schema``; else None."""
    step = sort_step(key_type)
    cluster = cluster_column(schema, key)
    if cluster is None:
        return (step, False) if mark == layout_mark(schema, key, key_type) else None
    if mark == f"{key}/{step},{cluster}".encode():
        return step, True
    for group in (step, step * SPARSE_STEPS):
        if mark == layout_mark(schema, key, key_type, group):
            return group, False
    return None


def cluster_ranks(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Each row's rank (uint16, 1-based) among the column's distinct values in ascending
    order, nulls after every value; None when there are too many distinct values to group by.

    A dictionary column (the generator's categoricals) costs only ranking its dictionary;
    other columns are dictionary-encoded first (a hash per row)."""
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
    dic, idx = enc.dictionary, enc.indices
    if len(dic) >= 2**16 - 1:
        return None
    table = np.empty(len(dic) + 1, np.uint16)  # a dictionary's values are distinct (Arrow's encoders)
    table[pc.array_sort_indices(dic, null_placement="at_end").to_numpy()] = np.arange(1, len(dic) + 1)
    table[len(dic)] = len(dic) + 1  # null indices
    return table[pc.fill_null(idx, len(dic)).to_numpy()]


def sort_order(k: np.ndarray, step: int, cluster: np.ndarray | None = None) -> np.ndarray | None:
    """Row order sorting ``k`` by ``step`` then by ``cluster`` (:func:`cluster_ranks`), stable,
    or None when already in that order.

    When the steps span fewer than 2¹⁶ values (a chunk of hours, a batch of logs), they
    are sorted as 16-bit offsets: NumPy's stable sort is then a radix sort, linear and
    with a quarter of the temporary memory of sorting 64-bit keys. With a cluster column,
    two such sorts (least significant first: the cluster ranks, then the steps)."""
    b = k // step if step > 1 else k
    if len(b) < 2:
        return None
    later = b[1:] > b[:-1]
    if cluster is None:
        in_order = bool(np.all(later | (b[1:] == b[:-1])))
    else:
        in_order = bool(np.all(later | ((b[1:] == b[:-1]) & (cluster[1:] >= cluster[:-1]))))
    del later
    if in_order:
        return None
    lo, hi = int(b.min()), int(b.max())
    if hi - lo < 2**16:
        if b is k:
            b = k - lo
        else:
            np.subtract(b, lo, out=b)
        b = b.astype(np.uint16)
    if cluster is None:
        return np.argsort(b, kind="stable")
    first = np.argsort(cluster, kind="stable")
    return first[np.argsort(b[first], kind="stable")]


def marked(schema: pa.Schema, key: str | None, group: int | None = None) -> pa.Schema:
    """``schema`` with the :data:`SORTED_BY` marker of ``key`` grouped within ``group``
    (default: the sort step; unchanged without a key)."""
    if key is None:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), SORTED_BY: layout_mark(schema, key, group=group)})


def write_sorted(arrow: pa.Table, path: Path, key: str | None) -> PartInfo:
    """Write ``arrow`` to ``path`` sorted by ``key``, grouped by its cluster column within
    the step its density calls for (:func:`group_step`), and marked so (:func:`marked`);
    returns the part's :class:`PartInfo`.

    Unsorted input is taken one row group at a time, so the sorted copy is never whole in
    memory (peak memory stays that of the input plus one row group and the sort order)."""
    opts = parquet_options(arrow, key)
    if key is None:
        pq.write_table(arrow, path, **opts)
        return info_from_groups(path, arrow.num_rows, None)
    k = key_ints(arrow.column(key))
    cluster = cluster_column(arrow.schema, key)
    step = sort_step(arrow.schema.field(key).type)
    group = group_step(step, len(k), int(k.min()) if len(k) else None, int(k.max()) if len(k) else None,
                       cluster is not None)
    ranks = cluster_ranks(arrow.column(cluster)) if cluster else None
    order = sort_order(k, group, ranks)
    del ranks
    schema = marked(arrow.schema, key, group)
    size = opts.pop("row_group_size")
    if order is None:
        pq.write_table(arrow.replace_schema_metadata(schema.metadata), path, row_group_size=size, **opts)
        return info_from_groups(path, len(k), _groups(k, size), step, group)
    groups = []
    with pq.ParquetWriter(path, schema, **opts) as writer:
        for off in range(0, len(order), size):
            rows = order[off:off + size]
            writer.write_table(arrow.take(pa.array(rows)), row_group_size=size)
            kk = k[rows]
            groups.append((int(kk.min()), int(kk.max()), len(kk)))
    return info_from_groups(path, len(k), tuple(groups), step, group)


def _groups(k: np.ndarray, size: int) -> tuple[tuple[int, int, int], ...]:
    """(lo, hi, rows) of each row group of ``size`` rows of the keys ``k`` (in written order)."""
    if len(k) == 0:
        return ()
    starts = np.arange(0, len(k), size)
    mins, maxs = np.minimum.reduceat(k, starts), np.maximum.reduceat(k, starts)
    sizes = np.diff(np.append(starts, len(k)))
    return tuple((int(a), int(b), int(n)) for a, b, n in zip(mins, maxs, sizes, strict=True))


def parquet_options(arrow: pa.Table, key: str | None = None) -> dict[str, Any]:
    """``pyarrow.parquet`` writer options for a part holding ``arrow`` (sorted by ``key``).

    zstd (Arrow's default level, 1): much smaller than lz4 or snappy for a little more
    write CPU. Dictionary encoding only for the columns that profit: Arrow dictionary
    columns (written as they are) and columns with at most one distinct value in four
    over an evenly spaced sample. Trying a dictionary on unique values (ids, timestamps,
    floats) costs hashing every value before Parquet falls back to plain encoding, a large
    share of the write time of generated fastpath rows. Row groups of
    :data:`ROW_GROUP_ROWS` and a page index. Min/max statistics only for ``key`` when
    there is one: in a part sorted by time every other column's row groups span about
    all its values (no row group would be skipped on them), and leaving them out cuts
    the write CPU and the size of each footer, read by every query. Not Parquet's
    ``sorting_columns``: the hour-wise order of a time key is not the exact order a
    reader could rely on.

    The key is written ``DELTA_BINARY_PACKED`` (sorted by the hour, its differences are
    small) and not compressed: every query reads it, and zstd's decompression was half the
    cost of reading it (a dictionary read as fast but is larger where rows are sparse).
    A clustered part (:func:`cluster_column`) also has statistics for its cluster column
    and pages of at most :data:`PAGE_ROWS` rows: the page index then narrows a filter on
    it to the pages holding its values.
    """
    use_dictionary = []
    for field in arrow.schema:
        col = arrow.column(field.name)
        if not pa.types.is_dictionary(field.type) and len(col) > 0:
            windows, size = _DICT_SAMPLE
            step = max(size, len(col) // windows)
            sample = pa.chunked_array([c for off in range(0, len(col), step) for c in col.slice(off, size).chunks],
                                      type=col.type)  # zero-copy slices
            if pc.count_distinct(sample, mode="all").as_py() > max(1, len(sample) // 4):
                continue
        use_dictionary.append(field.name)
    opts: dict[str, Any] = {"compression": "zstd", "use_dictionary": use_dictionary, "row_group_size": ROW_GROUP_ROWS,
                            "write_statistics": True, "write_page_index": True}
    if key is None:
        return opts
    cluster = cluster_column(arrow.schema, key)
    opts.update(use_dictionary=[c for c in use_dictionary if c != key],
                column_encoding={key: "DELTA_BINARY_PACKED"},
                compression={f.name: "none" if f.name == key else "zstd" for f in arrow.schema},
                write_statistics=[key, cluster] if cluster else [key])
    if cluster:
        opts["max_rows_per_page"] = PAGE_ROWS
    return opts


# ----------------------------------------------------------------------------- footers


@dataclass(frozen=True)
class PartInfo:
    """What a part's footer says, the range key's values as :func:`key_ints` numbers."""

    path: Path
    rows: int
    lo: int | None
    """Smallest key (None: no key, or no rows / statistics)."""
    hi: int | None
    sorted: bool
    """Marked sorted by the key (:data:`SORTED_BY`: parts written by this module)."""
    groups: tuple[tuple[int, int, int], ...]
    """(lo, hi, rows) of each row group (empty when there is no key)."""
    step: int = 1
    """The key's sort step (:func:`sort_step`): ranges are compared in whole steps."""
    group: int = 1
    """The step rows are grouped by the cluster column within (:func:`group_step`); for a
    part not :attr:`sorted`, what its mark says (or ``step``)."""


_cache: dict[tuple[str, str | None], PartInfo] = {}
_cache_lock = threading.Lock()


def _stat_int(value: Any, key_type: pa.DataType) -> int:
    return int(key_ints(pa.array([value], key_type))[0])


def part_info(path: Path, key: str | None, key_type: pa.DataType | None = None) -> PartInfo:
    """The :class:`PartInfo` of ``path`` (parts never change: cached by name per process)."""
    ck = (str(path), key)
    with _cache_lock:
        hit = _cache.get(ck)
    if hit is not None:
        return hit
    md = pq.read_metadata(path)
    groups: list[tuple[int, int, int]] = []
    schema = md.schema.to_arrow_schema()
    mark = None
    if key is not None and key_type is not None and md.num_row_groups > 0 and schema.get_field_index(key) >= 0:
        mark = _mark_group((md.metadata or {}).get(SORTED_BY), schema, key, key_type)
    if key is not None and key_type is not None:
        idx = schema.get_field_index(key)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            if rg.num_rows == 0:
                continue
            stats = rg.column(idx).statistics if idx >= 0 else None
            if stats is None or not stats.has_min_max:
                groups = []
                break
            groups.append((_stat_int(stats.min, key_type), _stat_int(stats.max, key_type), rg.num_rows))
        if not groups and md.num_rows:  # no statistics: read the key column itself
            k = key_ints(pq.read_table(path, columns=[key]).column(0).cast(key_type))
            groups = [(int(k.min()), int(k.max()), len(k))]
    lo = min((g[0] for g in groups), default=None)
    hi = max((g[1] for g in groups), default=None)
    step = sort_step(key_type) if key_type is not None else 1
    is_sorted = bool(mark is not None and groups and (not mark[1] or hour_fits(step, md.num_rows, lo, hi)))
    info = PartInfo(path, md.num_rows, lo, hi, is_sorted, tuple(groups), step, mark[0] if mark else step)
    with _cache_lock:
        if len(_cache) > 100_000:
            _cache.clear()
        _cache[ck] = info
    return info


def remember(info: PartInfo, key: str | None) -> None:
    """Cache the info of a part this process wrote (under its final path)."""
    with _cache_lock:
        _cache[(str(info.path), key)] = info


def relink(old: Path, new: Path, key: str | None) -> None:
    """Carry a cached info over to a hard link of the same part (the next generation)."""
    with _cache_lock:
        hit = _cache.get((str(old), key))
        if hit is not None:
            _cache[(str(new), key)] = dataclasses.replace(hit, path=new)


def info_from_groups(path: Path, rows: int, groups: tuple[tuple[int, int, int], ...] | None,
                     step: int = 1, group: int | None = None) -> PartInfo:
    """The :class:`PartInfo` of a part just written with row groups ``groups``, grouped
    within ``group`` (default ``step``): what :func:`part_info` reads back from its footer."""
    if not groups or rows == 0:
        return PartInfo(path, rows, None, None, False, ())
    return PartInfo(path, rows, min(g[0] for g in groups), max(g[1] for g in groups), True, groups, step,
                    group or step)


# ----------------------------------------------------------------------------- temp files


def open_locked(path: Path) -> int:
    """Create ``path`` and hold an exclusive flock on it (returns the fd; close to release).

    A temp part is locked by its writer for as long as it is being written, so
    :func:`stale_temp_files` can tell a live writer's file from one left by a killed process
    (the kernel drops a dead process's locks). Raises ``FileExistsError`` when taken."""
    for _ in range(10):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        lock_fd(fd, path=path)
        try:  # a cleaner may have removed it between create and lock: make a new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(f"cannot create and lock the temp file {path}")


def stale_temp_files(folder: Path) -> Iterator[Path]:
    """Files in ``folder`` that no live process holds a lock on (left by a killed writer).

    Each is yielded while this process holds its lock, so nobody else can be using it."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            continue
        try:
            try:
                lock_fd(fd, timeout=0, path=path)
            except LockTimeout:
                continue  # a live writer
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue
            except FileNotFoundError:
                continue
            yield path
        finally:
            os.close(fd)
