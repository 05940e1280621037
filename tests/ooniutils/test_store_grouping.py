"""The grouping step follows a part's density (issue 16): rows are grouped by country
within the day, or within the hour where a day holds more than a part's rows. Parts of the
previous layout (always the hour, marked without a step) that are not that dense are
re-laid out once by a full compaction."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ooniutils.store import compaction, parts
from ooniutils.store.embedded import EmbeddedStore

T0 = pd.Timestamp("2025-01-01", tz="UTC")
HOUR, DAY = 3600, 86400  # fastpath's key is in seconds
CCS = ["US", "IT", "DE", "BR", "RU"]


def _frame(minutes: list[int], ccs: list[str], tag: str) -> pd.DataFrame:
    return pd.DataFrame({"measurement_uid": [f"{tag}-{i}" for i in range(len(minutes))], "probe_cc": ccs,
                         "measurement_start_time": T0 + pd.to_timedelta(minutes, unit="min")})


def _random_frame(rng: np.random.Generator, n: int, span_minutes: int, tag: str, start: int = 0) -> pd.DataFrame:
    return _frame((start + rng.integers(0, span_minutes, n)).tolist(), rng.choice(CCS, n).tolist(), tag)


def _layout(path: Path) -> list[tuple[int, str]]:
    t = pq.read_table(path, columns=["measurement_start_time", "probe_cc"])
    secs = t.column(0).cast(pa.timestamp("s", tz="UTC")).cast("int64").to_pylist()
    return list(zip(secs, t.column(1).to_pylist(), strict=True))


def _grouped_within(rows: list[tuple[int, str]], group: int) -> bool:
    """Sorted by the grouping step, then by country within it."""
    keys = [(k // group, cc) for k, cc in rows]
    return keys == sorted(keys)


T = parts.DENSE_STEP_ROWS


@pytest.mark.parametrize(("rows", "hours", "expected"), [
    ((T - 1) * 24, 24, DAY), (T * 24, 24, HOUR), (1, 1, DAY), (10**6, 1, HOUR), (T * 2, 3, DAY),
    (100_000_000 // (90 * 24) * 24, 24, DAY), (10_000_000 // (90 * 24) * 24, 24, DAY)])  # 100M and 10M over 90 days
def test_group_step_is_the_day_unless_a_day_holds_more_than_a_part(rows, hours, expected):
    assert parts.group_step(HOUR, rows, 0, hours * HOUR - 1, clustered=True) == expected
    assert parts.group_step(HOUR, rows, 0, hours * HOUR - 1, clustered=False) == HOUR  # nothing to group by
    assert parts.group_step(1, rows, 0, hours * HOUR - 1, clustered=True) == 1  # a key sorted exactly


@settings(max_examples=300, deadline=None)
@given(rows=st.integers(1, 10**9), lo=st.integers(-10**12, 10**12), span=st.integers(0, 10**9),
       step=st.sampled_from([HOUR, HOUR * 1000, HOUR * 10**6]))
def test_a_part_of_the_previous_layout_is_kept_unless_clearly_sparse(rows, lo, span, step):
    """Parts grouped within the hour before the grouping followed density are kept when
    the writer would group them within the hour today, and near the threshold; rewritten
    only when clearly sparse (under three quarters of the threshold)."""
    hi = lo + span
    density = rows / (hi // step - lo // step + 1)
    if parts.group_step(step, rows, lo, hi, clustered=True) == step:
        assert parts.hour_fits(step, rows, lo, hi)
    assert parts.hour_fits(step, rows, lo, hi) == (density >= parts.DENSE_STEP_ROWS * 3 / 4)


def test_a_sparse_part_is_grouped_by_country_within_the_day(tmp_path):
    """Three days of a few rows an hour: one part, grouped by day then country, marked with
    the day, read back as sorted with that step (what the writer remembered is what the
    footer says), and queried like any part."""
    store = EmbeddedStore(tmp_path)
    rng = np.random.default_rng(3)
    df = _random_frame(rng, 500, 3 * 24 * 60, "s")
    store.insert("fastpath", df)
    (path,) = store.parts("fastpath")
    rows = _layout(path)
    assert _grouped_within(rows, DAY) and not _grouped_within(rows, HOUR)
    assert pq.read_metadata(path).metadata[parts.SORTED_BY] == f"measurement_start_time/{HOUR},probe_cc/{DAY}".encode()
    written = store.part_infos("fastpath")
    parts._cache.clear()
    (info,) = store.part_infos("fastpath")
    assert info == written[0] and info.sorted and info.group == DAY and info.step == HOUR
    got = store.query("SELECT count() AS n FROM fastpath WHERE probe_cc = 'IT' "
                      "AND measurement_start_time >= {t:DateTime}", {"t": (T0 + pd.Timedelta(hours=30)).to_pydatetime()})
    cut = T0 + pd.Timedelta(hours=30)
    assert got["n"].iloc[0] == int(((df.probe_cc == "IT") & (df.measurement_start_time >= cut)).sum())


def test_a_dense_part_stays_grouped_within_the_hour(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", 20)  # a page an hour, at a testable size
    store = EmbeddedStore(tmp_path)
    store.insert("fastpath", _random_frame(np.random.default_rng(4), 600, 6 * 60, "d"))  # 100 rows an hour
    (info,) = store.part_infos("fastpath")
    rows = _layout(info.path)
    assert info.sorted and info.group == HOUR and _grouped_within(rows, HOUR) and not _grouped_within(rows, DAY)


def _write_previous_layout(store: EmbeddedStore, df: pd.DataFrame, name: str) -> None:
    """A part as the layout before density wrote it: grouped within the hour, the old mark."""
    from ooniutils.store import params as P
    from ooniutils.store.schema import FASTPATH

    arrow = P.to_arrow(FASTPATH, df)
    k = parts.key_ints(arrow.column("measurement_start_time"))
    order = parts.sort_order(k, HOUR, parts.cluster_ranks(arrow.column("probe_cc")))
    arrow = arrow.take(pa.array(order)) if order is not None else arrow
    meta = {**(arrow.schema.metadata or {}), parts.SORTED_BY: b"measurement_start_time/3600,probe_cc"}
    pq.write_table(arrow.replace_schema_metadata(meta), store.current_dir("fastpath") / name,
                   row_group_size=parts.ROW_GROUP_ROWS)


def test_a_full_compaction_relays_out_sparse_parts_of_the_previous_layout_once(tmp_path):
    """A store written before the grouping followed density (sparse parts grouped within
    the hour, marked without a grouping step) is re-laid out within the day by the next
    `data compact`, every row kept; the one after rewrites nothing."""
    rng = np.random.default_rng(5)
    store = EmbeddedStore(tmp_path)
    frames = [_random_frame(rng, 400, 2 * 24 * 60, f"p{i}", start=i * 2 * 24 * 60) for i in range(3)]
    for i, df in enumerate(frames):
        _write_previous_layout(store, df, f"part-2000010{i}T000000-x.parquet")
    infos = store.part_infos("fastpath")
    assert len(infos) == 3 and not any(p.sorted for p in infos) and all(p.group == HOUR for p in infos)
    store.compact("fastpath")
    infos = store.part_infos("fastpath")
    assert infos and all(p.sorted and p.group == DAY for p in infos)
    assert all(_grouped_within(_layout(p.path), DAY) for p in infos)
    got = store.query("SELECT measurement_uid FROM fastpath ORDER BY measurement_uid")["measurement_uid"].tolist()
    assert got == sorted(uid for df in frames for uid in df.measurement_uid)
    inodes = {p.name: p.stat().st_ino for p in store.parts("fastpath")}
    store.compact("fastpath")
    assert {p.name: p.stat().st_ino for p in store.parts("fastpath")} == inodes


def test_a_part_marked_with_its_step_is_kept_whatever_its_density(tmp_path, monkeypatch):
    """A part marked with its grouping step is laid out as this module chose when it wrote
    it: kept by a compaction even when the threshold would choose otherwise today (judging
    parts again made compaction rewrite some at every run: the hypothesis test found it)."""
    store = EmbeddedStore(tmp_path)
    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", 20)
    store.insert("fastpath", _random_frame(np.random.default_rng(7), 600, 6 * 60, "h"))  # 100 rows an hour
    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", 1000)
    parts._cache.clear()
    (info,) = store.part_infos("fastpath")
    assert info.sorted and info.group == HOUR
    inodes = {p.name: p.stat().st_ino for p in store.parts("fastpath")}
    store.compact("fastpath")
    assert {p.name: p.stat().st_ino for p in store.parts("fastpath")} == inodes


def test_a_dense_part_of_the_previous_layout_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", 20)
    store = EmbeddedStore(tmp_path)
    _write_previous_layout(store, _random_frame(np.random.default_rng(6), 600, 6 * 60, "d"),  # 100 rows an hour
                           "part-20000101T000000-x.parquet")
    (info,) = store.part_infos("fastpath")
    assert info.sorted and info.group == HOUR
    inodes = {p.name: p.stat().st_ino for p in store.parts("fastpath")}
    store.compact("fastpath")
    assert {p.name: p.stat().st_ino for p in store.parts("fastpath")} == inodes


batches = st.lists(st.tuples(st.integers(0, 6000), st.integers(1, 3000), st.integers(1, 40)), min_size=1, max_size=8)
"""(first minute, minutes spanned, rows) of each insert."""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, seed=st.integers(0, 1000), dense=st.sampled_from([2, 4, 8]))
@example(batches=[(0, 1, 22), (1504, 478, 32), (6, 87, 21), (1280, 432, 15), (0, 145, 25), (0, 141, 25),
                  (1, 101, 21), (60, 1, 21)], seed=0, dense=4)  # hour and day parts merged again for ever
def test_compaction_keeps_every_row_grouped_as_each_part_density_calls_for(small_parts, monkeypatch, batches,
                                                                           seed, dense):
    """Inserts of any density and overlap, compacted: every row once, parts disjoint (but
    for touching in a grouping step), each sorted by its grouping step (a country's rows
    may come in two runs where two concatenated parts meet inside a step). A merge that
    changes a part's grouping step changes the span it is compared by, so a second full
    compaction may still find a neighbour to merge it with; the third finds nothing."""
    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", dense)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp))
        uids = []
        for i, (start, span, n) in enumerate(batches):
            df = _random_frame(rng, n, span, f"b{i}", start=start)
            store.insert("fastpath", df)
            uids += df.measurement_uid.tolist()
        for _ in range(3):  # a part whose grouping step a merge changes may then overlap a neighbour
            store.compact("fastpath")
            if not compaction.plan(store.part_infos("fastpath"), mode="full", keyed=True):
                break
        assert compaction.plan(store.part_infos("fastpath"), mode="full", keyed=True) == []
        infos = store.part_infos("fastpath")
        span = {p.path: (p.lo // p.group * p.group, p.hi // p.group * p.group) for p in infos}  # whole steps
        infos.sort(key=lambda p: span[p.path])
        for p in infos:
            assert p.sorted and p.group in (HOUR, DAY)
            keys = [k // p.group for k, _ in _layout(p.path)]
            assert keys == sorted(keys)
        for a, b in zip(infos, infos[1:], strict=False):
            assert span[a.path][1] <= span[b.path][0], "compacted parts must not overlap (they may touch in a step)"
        got = store.query("SELECT measurement_uid FROM fastpath")["measurement_uid"].tolist()
        assert sorted(got) == sorted(uids)
