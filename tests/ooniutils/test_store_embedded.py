"""The embedded store's layout and its multi-process behaviour (readers, appender, compaction)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ooniutils.store import params as P
from ooniutils.store.embedded import EmbeddedStore, parquet_options
from ooniutils.store.schema import FASTPATH
from tests.support.services import REPO
from tests.support.threads import PausedRace


def _count(store) -> int:
    return int(store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0])


def test_layout_and_atomic_parts(embedded_store, data_dir):
    store = embedded_store
    assert (data_dir / "fastpath" / "current").is_symlink()
    store.insert("fastpath", pd.DataFrame({"probe_cc": ["IT"] * 3}))
    store.insert("fastpath", pd.DataFrame({"probe_cc": ["DE"] * 2}))
    parts = store.parts("fastpath")
    assert len(parts) == 2 and all(p.name.startswith("part-") for p in parts)
    assert list((data_dir / "fastpath" / "tmp").iterdir()) == []  # temp names renamed away
    assert store.insert("fastpath", pd.DataFrame({"probe_cc": []})) == 0  # empty → no part
    assert len(store.parts("fastpath")) == 2


def test_compact_merges_parts_and_keeps_rows(embedded_store):
    store = embedded_store
    for i in range(4):
        store.insert("fastpath", pd.DataFrame({"probe_cc": [f"C{i}"] * (i + 1), "probe_asn": [i] * (i + 1)}))
    before = store.query("SELECT probe_cc, probe_asn FROM fastpath ORDER BY probe_cc, probe_asn")
    store.compact("fastpath")
    assert len(store.parts("fastpath")) == 1
    after = store.query("SELECT probe_cc, probe_asn FROM fastpath ORDER BY probe_cc, probe_asn")
    pd.testing.assert_frame_equal(before, after)
    gens = sorted(p.name for p in store.table_dir("fastpath").glob("gen-*"))
    assert gens == ["gen-000002"]  # the old generation is gone
    store.compact()  # all tables, nothing to do for the others
    store.insert("fastpath", pd.DataFrame({"probe_cc": ["X"]}))
    assert _count(store) == 11


class _RacingSession:
    """A chDB session whose first ``SELECT`` loses the race the stress test below found in CI:
    a compaction swaps ``current`` and removes the old folder while the query's glob lists
    it, so the query reads no part at all and returns a result without any error."""

    def __init__(self, real, store, table):
        self.real, self.store, self.table, self.raced = real, store, table, 0

    def query(self, sql, *args, **kwargs):
        if self.raced or not sql.lstrip().upper().startswith("SELECT"):
            return self.real.query(sql, *args, **kwargs)
        self.raced += 1
        old = self.store.current_dir(self.table)
        self.store.compact(self.table)
        assert not old.exists()
        return self.real.query(sql.replace(f"FROM {self.table}", f"FROM file('{old}/*.parquet', Parquet, "
                                           "'probe_asn UInt32')"), *args, **kwargs)


def test_query_rerun_when_a_compaction_swaps_the_generation_under_it(embedded_store, monkeypatch):
    from ooniutils.store import embedded

    store = embedded_store
    for i in range(3):
        store.insert("fastpath", pd.DataFrame({"probe_asn": [i] * (i + 1)}))
    _count(store)  # views created with the real session
    racing = _RacingSession(embedded._session(), store, "fastpath")
    monkeypatch.setattr(embedded, "_session", lambda: racing)
    assert int(store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]) == 6
    assert racing.raced == 1 and len(store.parts("fastpath")) == 1


def test_query_gives_up_with_a_clear_error_when_compactions_keep_swapping(embedded_store, monkeypatch):
    from ooniutils.exceptions import QueryError
    from ooniutils.store import embedded

    store = embedded_store
    store.insert("fastpath", pd.DataFrame({"probe_asn": [1]}))
    _count(store)
    real, n = embedded._session(), iter(range(100))

    class Swapping:  # every query sees a new generation (a compaction per query)
        def query(self, sql, *args, **kwargs):
            store.insert("fastpath", pd.DataFrame({"probe_asn": [next(n)]}))
            store.compact("fastpath")
            return real.query(sql, *args, **kwargs)

    monkeypatch.setattr(embedded, "_session", lambda: Swapping())
    with pytest.raises(QueryError, match="compacted under it 4 times in a row"):
        store.query("SELECT count() AS n FROM fastpath")
    monkeypatch.undo()
    assert _count(store) == 5  # nothing lost: 1 + the 4 rows inserted by the attempts


def test_two_compactions_at_once_do_not_double_rows(embedded_store, monkeypatch):
    """Compaction A has merged the parts and is about to swap; B starts then. Without one
    compaction at a time, B swaps first and A keeps B's merged part beside its own."""
    import contextlib

    store = embedded_store
    for i in range(4):
        store.insert("fastpath", pd.DataFrame({"probe_asn": [i] * (i + 1)}))
    race, real_lock = PausedRace(), EmbeddedStore._writer_lock

    @contextlib.contextmanager
    def lock(self, table, name=".lock"):
        if name == ".lock":  # the swap
            race.checkpoint()
        with real_lock(self, table, name):
            yield

    monkeypatch.setattr(EmbeddedStore, "_writer_lock", lock)
    race.run(lambda: store.compact("fastpath"))
    assert _count(store) == 10 and len(store.parts("fastpath")) == 1


def test_info_measures_one_generation_when_a_compaction_swaps_under_it(embedded_store, monkeypatch):
    from ooniutils.store import embedded

    store = embedded_store
    for i in range(3):
        store.insert("fastpath", pd.DataFrame({"probe_asn": [i] * (i + 1)}))
    real, compacted = embedded.pq.ParquetFile, []

    def parquet_file(path, *args, **kwargs):
        if not compacted and "fastpath" in str(path):
            compacted.append(path)
            store.compact("fastpath")  # removes `path` before it is opened
        return real(path, *args, **kwargs)

    monkeypatch.setattr(embedded.pq, "ParquetFile", parquet_file)
    info = {t.name: t for t in store.info()}
    assert compacted and info["fastpath"].rows == 6 and info["fastpath"].parts == 1


def test_two_stores_in_one_process_do_not_mix(tmp_path):
    a, b = EmbeddedStore(tmp_path / "a"), EmbeddedStore(tmp_path / "b")
    a.insert("fastpath", pd.DataFrame({"probe_cc": ["IT"] * 2}))
    b.insert("fastpath", pd.DataFrame({"probe_cc": ["DE"]}))
    assert (_count(a), _count(b), _count(a)) == (2, 1, 2)


def test_unwritable_folder_is_a_store_error(tmp_path):
    from ooniutils.exceptions import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the embedded store"):
        EmbeddedStore(blocker / "sub")


def _encodings(path) -> dict[str, set[str]]:
    """Encodings of each column chunk of the first row group of the Parquet file ``path``."""
    md = pq.ParquetFile(path).metadata
    rg = md.row_group(0)
    return {rg.column(i).path_in_schema: set(rg.column(i).encodings) for i in range(md.num_columns)}


def _dictionary_encoded(encodings: set[str]) -> bool:
    return bool(encodings & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"})


def test_parquet_options_use_dictionaries_only_where_values_repeat(tmp_path):
    n = 4000
    df = pd.DataFrame({
        "measurement_uid": [f"uid-{i:06d}" for i in range(n)],  # unique
        "input": [f"https://example.org/{i}" for i in range(n)],  # unique
        "test_runtime": np.linspace(0.1, 9.9, n),  # unique floats
        "probe_cc": pd.Categorical(np.array(["IT", "DE", "BR"])[np.arange(n) % 3]),  # Arrow dictionary
        "platform": np.array(["android", "ios", "linux"])[np.arange(n) % 3],  # few values, plain strings
        "probe_asn": np.arange(n) % 10,  # few numbers
    })
    arrow = P.to_arrow(FASTPATH, df, dictionary=True)
    assert pa.types.is_dictionary(arrow.schema.field("probe_cc").type)
    opts = parquet_options(arrow)
    assert opts["compression"] == "zstd"
    chosen = set(opts["use_dictionary"])
    assert {"probe_cc", "platform", "probe_asn", "page_len"} <= chosen  # page_len: all default 0
    assert not {"measurement_uid", "input", "test_runtime"} & chosen
    pq.write_table(arrow, tmp_path / "p.parquet", **opts)
    enc = _encodings(tmp_path / "p.parquet")
    for name in ("probe_cc", "platform", "probe_asn"):
        assert _dictionary_encoded(enc[name]), (name, enc[name])
    for name in ("measurement_uid", "input", "test_runtime"):
        assert not _dictionary_encoded(enc[name]), (name, enc[name])
    assert pq.read_table(tmp_path / "p.parquet").cast(arrow.schema).equals(arrow)


def test_parquet_options_sample_the_whole_column_not_its_head():
    """A column constant for its first rows, then unique, is not worth a dictionary."""
    n = 8192
    head = pa.table({"v": pa.array(["same"] * 1024)})
    tail = pa.table({"v": pa.array([f"x{i}" for i in range(n - 1024)])})
    arrow = pa.concat_tables([head, tail])  # two chunks
    assert parquet_options(arrow)["use_dictionary"] == []
    repeated = pa.concat_tables([tail.slice(0, 100)] * 40)  # 100 values over 4000 rows, 40 chunks
    assert parquet_options(repeated)["use_dictionary"] == ["v"]
    assert parquet_options(pa.table({"v": pa.nulls(50, pa.string())}))["use_dictionary"] == ["v"]


def test_insert_writes_categoricals_as_dictionaries_and_reads_them_back(embedded_store):
    store = embedded_store
    n = 600
    df = pd.DataFrame({"measurement_uid": [f"u{i:05d}" for i in range(n)],
                       "probe_cc": pd.Categorical(np.array(["IT", "DE", "BR"])[np.arange(n) % 3])})
    store.insert("fastpath", df)
    (part,) = store.parts("fastpath")
    assert pa.types.is_dictionary(pq.read_schema(part).field("probe_cc").type)
    enc = _encodings(part)
    assert _dictionary_encoded(enc["probe_cc"]) and not _dictionary_encoded(enc["measurement_uid"])
    got = store.query("SELECT probe_cc, count() AS n FROM fastpath GROUP BY probe_cc ORDER BY probe_cc")
    assert got.to_dict("list") == {"probe_cc": ["BR", "DE", "IT"], "n": [200, 200, 200]}


def _old_style_part(store, df: pd.DataFrame, stamp: str) -> None:
    """A part as the store wrote it before dictionaries: dense strings, zstd, default options."""
    path = store.current_dir("fastpath") / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
    pq.write_table(P.to_arrow(FASTPATH, df), path, compression="zstd")


def _batch(first: int, n: int, ccs: list[str]) -> pd.DataFrame:
    idx = np.arange(first, first + n)
    return pd.DataFrame({
        "measurement_uid": [f"uid-{i:06d}" for i in idx],
        "input": [f"https://example.org/{i}" for i in idx],
        "probe_cc": pd.Categorical(np.array(ccs)[idx % len(ccs)]),
        "test_name": pd.Categorical(np.array(["web_connectivity", "signal", "dnscheck"])[idx % 3]),
        "probe_asn": (idx % 11).astype("uint32"),
        "measurement_start_time": pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(idx, unit="min"),
    })


@pytest.mark.parametrize("old_first", [True, False], ids=["old-part-first", "new-part-first"])
def test_compact_mixes_old_dense_parts_and_new_dictionary_parts(embedded_store, old_first):
    store = embedded_store
    batches = [_batch(0, 700, ["IT", "DE"]), _batch(700, 500, ["BR", "IT", "RU"]), _batch(1200, 300, ["IR"])]
    # old parts sort before (or after) the parts insert() names with today's time stamp
    stamp = "20000101T000000" if old_first else "29991231T235959"
    _old_style_part(store, batches[0], stamp)
    store.insert("fastpath", batches[1])
    _old_style_part(store, batches[2], stamp)
    parts = store.parts("fastpath")
    assert len(parts) == 3
    kinds = [pa.types.is_dictionary(pq.read_schema(p).field("probe_cc").type) for p in parts]
    assert kinds == ([False, False, True] if old_first else [True, False, False])

    everything = pd.concat(batches, ignore_index=True)
    cols = "measurement_uid, input, probe_cc, test_name, probe_asn, measurement_start_time"
    queries = {
        "count": "SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath",
        "by_cc": "SELECT probe_cc, test_name, count() AS n FROM fastpath GROUP BY probe_cc, test_name "
                 "ORDER BY probe_cc, test_name",
        "rows": f"SELECT {cols} FROM fastpath WHERE measurement_uid IN ('uid-000000', 'uid-000699', "
                "'uid-000700', 'uid-001199', 'uid-001499') ORDER BY measurement_uid",
        "all": "SELECT * FROM fastpath ORDER BY measurement_uid",
    }
    before = {k: store.query(q) for k, q in queries.items()}
    store.compact("fastpath")
    (merged,) = store.parts("fastpath")
    assert pq.read_schema(merged).field("probe_cc").type == pa.string()  # dense: parts' dictionaries differ
    after = {k: store.query(q) for k, q in queries.items()}
    for k in queries:
        pd.testing.assert_frame_equal(before[k], after[k], obj=k)

    assert after["count"].to_dict("list") == {"n": [1500], "u": [1500]}
    expected = (everything.astype({"probe_cc": str, "test_name": str})
                .groupby(["probe_cc", "test_name"]).size().reset_index(name="n"))
    assert after["by_cc"][["probe_cc", "test_name"]].values.tolist() == expected[["probe_cc", "test_name"]].values.tolist()
    assert after["by_cc"]["n"].tolist() == expected["n"].tolist()
    rows = after["rows"]
    want = everything.set_index("measurement_uid").loc[rows["measurement_uid"]]
    assert rows["measurement_uid"].tolist() == ["uid-000000", "uid-000699", "uid-000700", "uid-001199", "uid-001499"]
    assert rows["probe_cc"].tolist() == want["probe_cc"].astype(str).tolist()
    assert rows["test_name"].tolist() == want["test_name"].astype(str).tolist()
    assert rows["input"].tolist() == want["input"].tolist()
    assert rows["probe_asn"].tolist() == want["probe_asn"].tolist()
    got_times = pd.to_datetime(rows["measurement_start_time"], utc=True).tolist()
    assert got_times == want["measurement_start_time"].tolist()
    assert len(after["all"]) == 1500


READER = textwrap.dedent("""
    import json, os, sys, time
    from ooniutils.store import get_store
    stop, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
    store, counts = get_store(), []
    while time.monotonic() < deadline:
        done = os.path.exists(stop)
        counts.append(int(store.query("SELECT count() AS n FROM fastpath")["n"].iloc[0]))
        open(stop + f".ready-{os.getpid()}", "w").close()
        if done:
            break
    print(json.dumps(counts))
""")


@pytest.mark.integration
def test_readers_appender_and_compaction_in_parallel(data_dir, tmp_path):
    """4 reader processes query while this process appends parts and compacts.

    Part k holds 2**k rows, so every sum of whole parts is unique and a consistent snapshot
    of an append-only table is always 2**j - 1. Counts must be such values and never go
    down (a compaction must neither double-count nor lose a part).
    """
    store = EmbeddedStore(data_dir)
    stop = tmp_path / "stop"
    env = {**os.environ, "OONI_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO / "src")}
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(stop), "90"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        n_parts = 11
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("stop.ready-*"))) < len(readers):  # all readers querying
            assert time.monotonic() < deadline and all(r.poll() is None for r in readers)
            time.sleep(0.05)
        for k in range(n_parts):
            store.insert("fastpath", pd.DataFrame({"probe_asn": [k] * (2 ** k)}))
            if k % 3 == 2:
                store.compact("fastpath")
            time.sleep(0.15)  # give readers a chance to see each state
        assert time.monotonic() < deadline
        stop.write_text("1")
        outs = [r.communicate(timeout=120) for r in readers]
    finally:
        stop.write_text("1")
        for r in readers:
            if r.poll() is None:
                r.kill()
                r.wait()
    allowed = {2 ** j - 1 for j in range(n_parts + 1)}
    seen: list[int] = []
    for (out, err), r in zip(outs, readers, strict=True):
        assert r.returncode == 0, err
        counts = json.loads(out)
        assert counts, "a reader made no query"
        assert set(counts) <= allowed, sorted(set(counts) - allowed)
        assert counts == sorted(counts), "count went down"
        assert counts[-1] == 2 ** n_parts - 1
        seen.append(len(set(counts)))
    assert max(seen) > 3, f"readers saw too few intermediate states: {seen}"
    assert _count(store) == 2 ** n_parts - 1


def test_insert_arrow_writes_dictionary_columns_as_dictionaries(embedded_store):
    store = embedded_store
    n = 600
    arrow = pa.table({"measurement_uid": pa.array([f"u{i:05d}" for i in range(n)]),
                      "probe_cc": pa.array(np.array(["IT", "DE", "BR"])[np.arange(n) % 3]).dictionary_encode(),
                      "probe_asn": pa.array(np.arange(n) % 7, pa.int16())})
    assert store.insert_arrow("fastpath", arrow) == n
    (part,) = store.parts("fastpath")
    schema = pq.read_schema(part)
    assert pa.types.is_dictionary(schema.field("probe_cc").type)
    assert schema.field("probe_asn").type == pa.int32()  # cast to the column's type (Int32, as OONI)
    assert schema.names == list(FASTPATH.column_names)
    got = store.query("SELECT probe_cc, count() AS n, sum(probe_asn) AS s FROM fastpath "
                      "GROUP BY probe_cc ORDER BY probe_cc")
    assert got["probe_cc"].tolist() == ["BR", "DE", "IT"] and got["n"].tolist() == [200, 200, 200]
    assert int(got["s"].sum()) == int((np.arange(n) % 7).sum())


def test_conform_arrow_keeps_columns_already_of_the_right_type_without_a_copy():
    from ooniutils.store.schema import LOGS

    schema = P.arrow_schema(LOGS)
    assert schema == P.to_arrow(LOGS, pd.DataFrame()).schema
    rows = P.to_arrow(LOGS, pd.DataFrame({"__REALTIME_TIMESTAMP": [1, 2], "host": ["a", "b"],
                                           "_HOSTNAME": ["a", "b"], "_MACHINE_ID": ["m", "m"]}))
    out = P.conform_arrow(LOGS, rows)
    assert out.equals(rows)
    for name in ("__REALTIME_TIMESTAMP", "host", "inserted_at"):
        assert out.column(name).chunk(0).buffers()[1].address == rows.column(name).chunk(0).buffers()[1].address
