"""Which parts the embedded store merges, and the merge itself (writing the new parts).

Parts are sorted by the table's range key, grouped by a cluster column within each
grouping step (:mod:`.parts`: the hour, or the day for sparse parts). Compaction works
toward parts whose key ranges do not overlap and that hold up to
:data:`~.parts.PART_ROWS` rows, so a time filter skips whole parts' row groups and a query
opens few files. Ranges are compared as spans of whole grouping steps (:func:`_span`):
parts cut from one step's rows at a row count share that step and only touch. A merge
writes its parts in the grouping step its rows' density calls for; inputs grouped within
another step are merge-sorted, so a full compaction re-lays out parts of the earlier
layout that are too sparse for it.

* **full** (``ooniutils data compact``): parts whose ranges overlap are merge-sorted
  together; runs of neighbouring parts (in key order) that are not yet big (under half of
  ``PART_ROWS``) are concatenated; a big sorted part that overlaps nothing is kept as it
  is (hard-linked into the next generation), so a compaction rewrites what needs it,
  not the whole table.
* **auto** (after each insert): only small parts (under :data:`AUTO_SMALL` rows), and
  only when :data:`AUTO_RUN` neighbours of the same size tier (a factor of 4) are there —
  MergeTree's rule of merging parts of similar sizes, so each row is rewritten a few times
  (log₄ of the size ratio), never once per insert.
* **tiered** (a long-running writer, in the background: the ``logs ship`` daemon after
  each batch window): the same rule for every part under :data:`FULL_BIG` rows, so the
  parts that the automatic merges leave (up to ~4 × :data:`AUTO_SMALL` rows each) keep
  being merged up to settled ones, each row rewritten about log₄(``FULL_BIG`` / batch)
  times, instead of piling up until an operator runs ``data compact``.

A merge-sort reads its inputs window by window (key ranges of about ``PART_ROWS // 4``
rows, estimated from the row groups' statistics; 2M dense fastpath rows are ~1 GB of
Arrow memory), and writes each window's sorted copy a row group at a time, so memory
stays bounded by one window whatever the inputs' size; a concatenation streams row group
by row group, and string columns that every input stores with a dictionary stay Arrow
dictionaries from reading to writing (no dense copy to decode, hold and hash again:
``logs`` rows are mostly such columns). Parts are written by :class:`.part_writer.PartFile`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .part_writer import PartFile, Written
from .parts import (
    PART_ROWS,
    ROW_GROUP_ROWS,
    PartInfo,
    cluster_column,
    cluster_ranks,
    group_step,
    key_ints,
    sort_order,
)

AUTO_RUN = 4
"""Neighbouring small parts of one size tier that trigger an automatic merge."""
AUTO_SMALL = ROW_GROUP_ROWS // 2
"""Parts under this many rows (half a row group) are merged automatically after an
insert: the many tiny parts of ``logs ship --follow`` flushes or of notebooks' small
inserts. A bulk load's parts (generator chunks, a ``load-sql`` file) are not rewritten
while loading — that cost the load CPU and the merge's memory — but by ``data compact``,
which ``data generate`` and ``data load-sql`` run at their end (``logs ship --from-file``
streams its batches into parts of up to ``PART_ROWS`` rows that it leaves as they are:
:mod:`.part_writer`)."""
FULL_BIG = PART_ROWS // 2
"""Parts of at least this many rows that overlap nothing are kept by a full compaction."""


@dataclass(frozen=True)
class Job:
    inputs: tuple[PartInfo, ...]
    sort: bool
    """Inputs overlap or are not all sorted: merge-sort by key; else concatenate in key order."""

    def group(self, clustered: bool) -> int:
        """The grouping step of the parts this job writes: :func:`.parts.group_step` of all
        its rows over their whole key range, and the day whenever an input is grouped within
        the day. (Mixed inputs merged into the hour left hour- and day-grouped parts
        overlapping by the hour, which the next compaction merged again, for ever: the
        hypothesis test found it. A region grouped within the day stays so.)"""
        step = self.inputs[0].step
        if clustered and any(p.group > step for p in self.inputs):
            return max(p.group for p in self.inputs)
        lows = [p.lo for p in self.inputs if p.lo is not None]
        highs = [p.hi for p in self.inputs if p.hi is not None]
        rows = sum(p.rows for p in self.inputs)
        return group_step(step, rows, min(lows, default=None), max(highs, default=None), clustered)


def _span(p: PartInfo) -> tuple[float, float]:
    """A part's key range widened to whole grouping steps (:attr:`.parts.PartInfo.group`:
    the hour, or the day for a part grouped within the day). A compaction cuts its parts
    at a row count, inside a grouping step: parts grouped within the day that it cut from
    one day's rows interleave by the hour, but their spans only touch."""
    g = p.group
    lo = p.lo // g * g if p.lo is not None else -math.inf
    hi = p.hi // g * g if p.hi is not None else -math.inf
    return lo, hi


def _ordered(parts: list[PartInfo]) -> list[PartInfo]:
    """Parts in the order of their spans (:func:`_span`): parts that touch in one step
    come in an order that keeps their concatenation sorted by the step. In a tie, small
    parts before big ones (they make one run to merge), then by key, then by name."""
    def rank(p: PartInfo) -> tuple[float, float, bool, float, float, str]:
        lo, hi = _span(p)
        return (lo, hi, p.rows >= FULL_BIG, p.lo if p.lo is not None else -math.inf,
                p.hi if p.hi is not None else -math.inf, p.path.name)
    return sorted(parts, key=rank)


def _touching(ordered: list[PartInfo]) -> bool:
    """Whether each of ``ordered`` starts in or after the step the one before ends in
    (spans that share at most one step; :func:`_span`)."""
    return all(a.hi is not None and b.lo is not None and _span(a)[1] <= _span(b)[0]
               for a, b in zip(ordered, ordered[1:], strict=False))


def _concatenates(parts: list[PartInfo], group: int) -> bool:
    """Whether ``parts`` (in :func:`_ordered` order) concatenated are sorted by ``group``
    steps, grouped within each: all are grouped within ``group`` and touch."""
    return all(p.sorted and p.group == group for p in parts) and _touching(parts)


def _job(inputs: list[PartInfo], keyed: bool) -> Job:
    ordered = _ordered(inputs)
    return Job(tuple(ordered), keyed and not (_touching(ordered) and all(p.sorted for p in ordered)))


Mode = Literal["full", "auto", "tiered"]


def plan(parts: list[PartInfo], *, mode: Mode, keyed: bool) -> list[Job]:
    """The merges to run over ``parts`` (one generation's); empty when nothing is worth it.
    ``mode``: see the module doc. Key ranges are compared as spans of whole grouping steps
    (:func:`_span`): parts that share only one step touch, they do not overlap."""
    small_below = {"full": 0, "auto": AUTO_SMALL, "tiered": FULL_BIG}[mode]
    if not keyed:  # no range key: merge everything (full) or when small parts pile up
        if mode == "full":
            return [Job(tuple(sorted(parts, key=lambda p: p.path.name)), False)] if len(parts) > 1 else []
        small = [p for p in parts if p.rows < small_below]
        return [Job(tuple(sorted(small, key=lambda p: p.path.name)), False)] if len(small) >= 4 * AUTO_RUN else []
    return _plan_full(parts) if mode == "full" else _plan_tiers(parts, small_below)


def _clusters(parts: list[PartInfo]) -> list[list[PartInfo]]:
    """Parts in key order, grouped where their spans (:func:`_span`) overlap by more than
    touching in one step."""
    out: list[list[PartInfo]] = []
    hi: float | None = None
    for p in _ordered(parts):
        lo, p_hi = _span(p)
        if out and hi is not None and p.lo is not None and lo < hi:
            out[-1].append(p)
        else:
            out.append([p])
            hi = None
        if p.hi is not None:
            hi = p_hi if hi is None else max(hi, p_hi)
    return out


def _plan_full(parts: list[PartInfo]) -> list[Job]:
    jobs: list[Job] = []
    run: list[PartInfo] = []

    def close_run() -> None:
        if len(run) > 1 or (run and not run[0].sorted):
            jobs.append(_job(run, True))
        run.clear()

    for cluster in _clusters(parts):
        settled = len(cluster) == 1 and cluster[0].sorted and cluster[0].rows >= FULL_BIG
        if settled:
            close_run()
        else:
            run.extend(cluster)
    close_run()
    return jobs


def _tier(rows: int) -> int:
    return int(math.log(max(rows, 1), 4))


def _plan_tiers(parts: list[PartInfo], small_below: int) -> list[Job]:
    """Runs of :data:`AUTO_RUN` or more key-order neighbours under ``small_below`` rows
    in one size tier."""
    jobs: list[Job] = []
    run: list[PartInfo] = []
    for p in _ordered(parts):
        if p.rows >= small_below or (run and _tier(p.rows) != _tier(run[0].rows)):
            if len(run) >= AUTO_RUN:
                jobs.append(_job(run, True))
            run = []
        if p.rows < small_below:
            run.append(p)
    if len(run) >= AUTO_RUN:
        jobs.append(_job(run, True))
    return jobs


# ----------------------------------------------------------------------------- merging


@dataclass
class _Output:
    """Writes sorted batches as parts of at most ``PART_ROWS`` rows and full row groups."""

    new_path: Callable[[], Path]
    schema: pa.Schema
    key: str | None
    group: int | None = None
    written: list[Written] = field(default_factory=list)
    _file: PartFile | None = None

    def write(self, batch: pa.Table) -> None:
        while batch.num_rows:
            if self._file is None:
                self._file = PartFile(self.new_path(), self.schema, self.key, ROW_GROUP_ROWS, self.group)
            take = batch.slice(0, PART_ROWS - self._file.rows)
            batch = batch.slice(take.num_rows)
            self._file.write(take)
            if self._file.rows >= PART_ROWS:
                self._finish()

    def _finish(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            self.written.append(file.close())
        except BaseException:
            file.abort()
            raise

    def close(self) -> list[Written]:
        self._finish()
        return self.written

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None
        for w in self.written:
            w.path.unlink(missing_ok=True)
            os.close(w.fd)
        self.written = []


def merge(job: Job, schema: pa.Schema, key: str | None, new_path: Callable[[], Path]) -> list[Written]:
    """Write ``job``'s rows, in key order, as new locked temp parts (see :class:`Written`).

    Arrow memory that the caller freed is handed back to the system first, so the merge's
    buffers take the place of memory that is no longer used instead of adding to it (e.g.
    right after a load's parsing buffers); the merge's own is handed back at its end, for
    what the process does next (queries)."""
    pa.default_memory_pool().release_unused()
    group = job.group(cluster_column(schema, key) is not None) if key else None
    inputs = _ordered(list(job.inputs)) if group else list(job.inputs)
    if key and group and not _concatenates(inputs, group):  # covers job.sort: overlapping or unsorted inputs
        out = _Output(new_path, schema, key, group)
        batches = _sorted_windows(job, schema, key, group)
    else:
        files = [(part.path, pq.read_metadata(part.path)) for part in inputs]
        dictionaries = _dictionary_columns([md for _, md in files], schema)
        out = _Output(new_path, _with_dictionaries(schema, dictionaries), key, group)
        batches = _in_order(files, out.schema, dictionaries)
    try:
        for batch in batches:
            out.write(batch)
        return out.close()
    except BaseException:
        out.abort()
        raise
    finally:
        pa.default_memory_pool().release_unused()


def _read_groups(path: Path, groups: list[int], schema: pa.Schema) -> pa.Table:
    pf = pq.ParquetFile(path)
    return pf.read_row_groups(groups).cast(schema)


_READ_BATCH = ROW_GROUP_ROWS // 4
"""Rows read (and made dense) at a time by a concatenation: wide rows (``logs``: ~1 KB
dense) would otherwise hold a whole input row group twice besides the output buffer."""


def _dictionary_columns(footers: list[pq.FileMetaData], schema: pa.Schema) -> list[str]:
    """String columns of ``schema`` stored with a dictionary in every row group of every
    footer: a concatenation reads them as Arrow dictionaries and writes them as they are,
    never as dense strings (28 of the 44 ``logs`` columns: unit names, boot ids, command
    lines), which saves decoding them, hashing them again and much of the merge's memory."""
    names = {f.name for f in schema if pa.types.is_string(f.type)}
    for md in footers:
        index = {md.schema.column(i).path: i for i in range(md.num_columns)}
        names &= index.keys()
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            names = {n for n in names if rg.column(index[n]).has_dictionary_page}
    return [f.name for f in schema if f.name in names]


def _with_dictionaries(schema: pa.Schema, names: list[str]) -> pa.Schema:
    """``schema`` with the string columns ``names`` as ``dictionary<int32, string>``."""
    chosen = set(names)
    return pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in chosen else f
                      for f in schema], metadata=schema.metadata)


def _in_order(files: list[tuple[Path, pq.FileMetaData]], schema: pa.Schema,
              dictionaries: list[str]) -> Iterator[pa.Table]:
    for path, md in files:
        pf = pq.ParquetFile(path, metadata=md, read_dictionary=dictionaries)
        for batch in pf.iter_batches(batch_size=_READ_BATCH):
            yield pa.Table.from_batches([batch]).cast(schema)


def _windows(job: Job, group: int) -> list[tuple[int, int]]:
    """Key ranges [a, b) (the last one closed) of about ``PART_ROWS // 4`` rows each,
    estimated from the inputs' row-group statistics (rows spread evenly in a group), cut
    at whole grouping steps (a step's rows are sorted together: grouped by the cluster column)."""
    size = max(PART_ROWS // 4, 1)
    groups = np.array([g for p in job.inputs for g in p.groups], dtype=np.float64).reshape(-1, 3)
    lo, hi = int(groups[:, 0].min()), int(groups[:, 1].max())
    total = groups[:, 2].sum()
    if total <= size or hi == lo:
        return [(lo, hi)]
    cand = np.unique(np.concatenate([groups[:, 0], groups[:, 1],
                                     np.linspace(lo, hi, 64)]))
    span = np.maximum(groups[:, 1] - groups[:, 0], 1.0)
    below = (np.clip((cand[:, None] - groups[None, :, 0]) / span[None, :], 0.0, 1.0) * groups[None, :, 2]).sum(axis=1)
    cuts, last = [lo], 0.0
    for value, rows in zip(cand, below, strict=True):
        cut = int(value) // group * group
        if rows - last >= size and cut > cuts[-1]:
            cuts.append(cut)
            last = rows
    cuts.append(hi)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a] or [(lo, hi)]


def _sorted_windows(job: Job, schema: pa.Schema, key: str, group: int) -> Iterator[pa.Table]:
    windows = _windows(job, group)
    for i, (a, b) in enumerate(windows):
        last = i == len(windows) - 1
        pieces = []
        for part in job.inputs:
            want = [g for g, (glo, ghi, _) in enumerate(part.groups) if ghi >= a and (glo <= b if last else glo < b)]
            if not want:
                continue
            data = _read_groups(part.path, want, schema)
            k = key_ints(data.column(key))
            keep = (k >= a) & ((k <= b) if last else (k < b))
            if not keep.all():
                data = data.filter(pa.array(keep))
            pieces.append(data)
        if not pieces:
            continue
        data = pa.concat_tables(pieces)
        cluster = cluster_column(schema, key)
        ranks = cluster_ranks(data.column(cluster)) if cluster else None
        order = sort_order(key_ints(data.column(key)), group, ranks)
        del ranks
        if order is None:
            yield data
            continue
        for off in range(0, len(order), ROW_GROUP_ROWS):  # a sorted copy of one row group at a time
            yield data.take(pa.array(order[off:off + ROW_GROUP_ROWS]))
