"""The embedded store's layout and its multi-process behaviour (readers, appender, compaction)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from ooniutils.store.embedded import EmbeddedStore
from tests.support.services import REPO


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
