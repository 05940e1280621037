"""Streamed inserts (store/part_writer.py): batches written into parts of whole batches, each
part committed with the mark of its last batch; readers see all of a part or none; a
failure keeps what was committed and nothing else (issue 16, fourth round)."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ooniutils.exceptions import StoreError
from ooniutils.store import compaction, parts
from ooniutils.store.embedded import EmbeddedStore


def _logs(keys: list[int], tag: str) -> pa.Table:
    """``logs`` rows with these ``__REALTIME_TIMESTAMP`` values (other columns: defaults)."""
    return pa.table({"__REALTIME_TIMESTAMP": pa.array(keys, pa.int64()),
                     "__CURSOR": pa.array([f"{tag}-{i}" for i in range(len(keys))])})


def _count(store: EmbeddedStore) -> tuple[int, int]:
    df = store.query("SELECT count() AS n, uniqExact(__CURSOR) AS u FROM logs")
    return int(df["n"].iloc[0]), int(df["u"].iloc[0])


def _temp_parts(store: EmbeddedStore) -> list[Path]:
    return sorted((store.table_dir("logs") / "tmp").iterdir())


def _check_parts(store: EmbeddedStore) -> None:
    """Each part sorted by the key, marked so, and its remembered info = its footer's."""
    infos = store.part_infos("logs")
    for p in infos:
        keys = pq.read_table(p.path, columns=["__REALTIME_TIMESTAMP"]).column(0).to_pylist()
        assert keys == sorted(keys) and p.sorted
    parts._cache.clear()
    assert sorted(store.part_infos("logs"), key=lambda p: p.path.name) == sorted(infos, key=lambda p: p.path.name)


def test_parts_hold_whole_batches_and_commit_with_the_last_mark(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    commits: list[tuple[str, int]] = []
    with store.insert_stream("logs", lambda mark, rows: commits.append((mark, rows))) as stream:
        for b in range(5):
            stream.add(_logs(list(range(b * 100, b * 100 + 12)), f"b{b}"), f"m{b}")
            if b == 2:
                assert commits == [] and _count(store) == (0, 0)  # 36 rows, not yet committed
    # PART_ROWS 40: a fourth batch of 12 would not fit, so the first part closed after 3
    assert commits == [("m2", 36), ("m4", 24)]
    assert _count(store) == (60, 60)
    assert sorted(p.rows for p in store.part_infos("logs")) == [24, 36]
    assert _temp_parts(store) == []
    _check_parts(store)


def test_a_batch_is_sorted_and_one_out_of_order_starts_a_new_part(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    commits: list[tuple[str, int]] = []
    with store.insert_stream("logs", lambda mark, rows: commits.append((mark, rows))) as stream:
        stream.add(_logs([500, 400, 450, 420, 401], "a"), "a")  # unsorted within: sorted in the part
        stream.add(_logs([600, 700], "b"), "b")
        stream.add(_logs([300, 800], "c"), "c")  # starts before what the part holds
        stream.add(_logs([800, 900], "d"), "d")  # starts at the last key: joins in order
    assert commits == [("b", 7), ("d", 4)]
    assert sorted((p.lo, p.hi, p.rows) for p in store.part_infos("logs")) == [(300, 900, 4), (400, 700, 7)]
    _check_parts(store)
    store.compact("logs")  # the two overlapping parts are merge-sorted into one
    (merged,) = store.part_infos("logs")
    assert (merged.lo, merged.hi, merged.rows, merged.sorted) == (300, 900, 11, True)
    assert _count(store) == (11, 11)


def test_big_batches_are_written_as_they_come_in_row_groups_of_at_most_a_group(tmp_path, small_parts):
    """A batch of at least half a row group is written at once (nothing waits in memory
    for the next batch); small ones fill whole row groups."""
    store = EmbeddedStore(tmp_path)
    with store.insert_stream("logs", lambda mark, rows: None) as stream:
        stream.add(_logs(list(range(0, 13)), "a"), "a")  # 8 + 5: written at once
        assert len(_temp_parts(store)) == 1
        assert _count(store) == (0, 0)  # a temp part is not read
        stream.add(_logs(list(range(100, 103)), "b"), "b")  # 3 rows: wait for more
        stream.add(_logs(list(range(200, 206)), "c"), "c")  # 9 pending: one group of 8 written
    (part,) = store.parts("logs")
    md = pq.read_metadata(part)
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [8, 5, 8, 1]
    _check_parts(store)


def test_a_failure_keeps_what_was_committed_and_drops_the_open_part(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    commits: list[tuple[str, int]] = []
    with pytest.raises(StoreError, match="has no column.*'nope'"), \
            store.insert_stream("logs", lambda mark, rows: commits.append((mark, rows))) as stream:
        for b in range(4):  # 48 rows: the first part (36) committed, the 4th batch open
            stream.add(_logs(list(range(b * 100, b * 100 + 12)), f"b{b}"), f"m{b}")
        assert len(_temp_parts(store)) == 1
        stream.add(pa.table({"nope": [1]}), "bad")
    assert commits == [("m2", 36)]
    assert _count(store) == (36, 36)
    assert _temp_parts(store) == []  # the open part was removed, not left for a cleanup


def test_an_empty_batch_commits_its_mark_when_nothing_waits(tmp_path):
    store = EmbeddedStore(tmp_path)
    commits: list[tuple[str, int]] = []
    with store.insert_stream("logs", lambda mark, rows: commits.append((mark, rows))) as stream:
        stream.add(_logs([], "e"), "empty")  # e.g. a batch whose lines were all stored already
        assert commits == [("empty", 0)]
        stream.add(_logs([1, 2], "a"), "a")
        stream.add(_logs([], "e2"), "after")  # rides with the open part
        assert commits == [("empty", 0)]
    assert commits == [("empty", 0), ("after", 2)]


def test_readers_see_whole_parts_only_while_a_stream_commits(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        reader = EmbeddedStore(tmp_path)
        try:
            while not done.is_set():
                seen.append(_count(reader)[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    try:
        with store.insert_stream("logs", lambda mark, rows: None) as stream:
            for b in range(40):  # 13-row batches: parts of 3 batches (39 rows)
                stream.add(_logs(list(range(b * 100, b * 100 + 13)), f"b{b}"), f"m{b}")
    finally:
        done.set()
        t.join(60)
    assert errors == []
    assert len(seen) > 1 and set(seen) <= {39 * k for k in range(14)} | {520}
    assert _count(store) == (520, 520)


def test_a_compaction_racing_a_stream_keeps_every_row_once(tmp_path, small_parts):
    store = EmbeddedStore(tmp_path)
    done = threading.Event()
    errors: list[BaseException] = []

    def compact() -> None:
        other = EmbeddedStore(tmp_path)
        try:
            while not done.is_set():
                other.compact("logs")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=compact)
    t.start()
    try:
        with store.insert_stream("logs", lambda mark, rows: None) as stream:
            for b in range(30):
                stream.add(_logs(list(range(b * 100, b * 100 + 13)), f"b{b}"), f"m{b}")
    finally:
        done.set()
        t.join(60)
    assert errors == []
    assert _count(store) == (390, 390)
    store.compact("logs")
    infos = sorted(store.part_infos("logs"), key=lambda p: p.lo)
    assert all(p.sorted and p.rows <= compaction.PART_ROWS for p in infos)
    assert all(a.hi < b.lo for a, b in zip(infos, infos[1:], strict=False))


def _fastpath(minutes: list[int], ccs: list[str], tag: str) -> pa.Table:
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    return pa.Table.from_pandas(pd.DataFrame({
        "measurement_uid": [f"{tag}-{i}" for i in range(len(minutes))], "probe_cc": ccs,
        "measurement_start_time": t0 + pd.to_timedelta(minutes, unit="min")}), preserve_index=False)


def test_a_clustered_table_keeps_each_hour_grouped_by_country_across_batches(tmp_path, small_parts):
    """fastpath parts are grouped by probe_cc within each hour: the rows of the last hour
    wait for the next batch (which may bring more of it), and a batch that starts in an
    hour already written starts a new part instead of breaking the grouping."""
    store = EmbeddedStore(tmp_path)
    commits: list[tuple[str, int]] = []
    with store.insert_stream("fastpath", lambda mark, rows: commits.append((mark, rows))) as stream:
        stream.add(_fastpath(list(range(10)), ["IT", "DE"] * 5, "a"), "a")  # hour 0: all wait
        assert _temp_parts_of(store, "fastpath") == []
        stream.add(_fastpath([10, 11, 12, 13, 14, 60, 61, 62, 63, 64], ["IT", "BR"] * 5, "b"), "b")
        assert len(_temp_parts_of(store, "fastpath")) == 1  # hour 0 written, hour 1 waits
        stream.add(_fastpath([20, 21, 22, 23], ["DE"] * 4, "c"), "c")  # hour 0 again
    assert commits == [("b", 20), ("c", 4)]
    for info in store.part_infos("fastpath"):
        t = pq.read_table(info.path, columns=["measurement_start_time", "probe_cc"]).to_pandas()
        hours = t["measurement_start_time"].dt.floor("h")
        assert hours.is_monotonic_increasing and info.sorted
        for _, cc in t.groupby(hours)["probe_cc"]:
            assert list(cc) == sorted(cc)  # grouped by country within the hour
        assert pq.read_metadata(info.path).metadata[parts.SORTED_BY] == b"measurement_start_time/3600,probe_cc/3600"
    df = store.query("SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath")
    assert df.to_dict("list") == {"n": [24], "u": [24]}


def _temp_parts_of(store: EmbeddedStore, table: str) -> list[Path]:
    return sorted((store.table_dir(table) / "tmp").iterdir())
