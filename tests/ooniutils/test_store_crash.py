"""kill -9 of a process writing to the embedded store, at chosen points (issue 12 #14).

Each test starts a real child process that pauses at one point of a write (a temp part
written and locked, a compaction's next generation built but not yet swapped in...),
kills it with SIGKILL, and checks that ``info`` reports what it left, that the next
write or compaction removes it and succeeds, and that no row is lost or counted twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.store.embedded import EmbeddedStore
from tests.support.services import REPO

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import pandas as pd
    from ooniutils.store import embedded, compaction
    from ooniutils.store.embedded import EmbeddedStore

    data, point, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def pause():
        ready.write_text(str(os.getpid()))
        time.sleep(600)

    real_write = embedded.pq.write_table

    def write_then_pause(table, where, **kw):  # a temp part written (locked), not renamed
        real_write(table, where, **kw)
        pause()

    store = EmbeddedStore(data)
    if point == "insert":
        embedded.pq.write_table = write_then_pause
        store.insert("fastpath", pd.DataFrame({"measurement_uid": ["killed"], "probe_asn": [99]}))
    elif point == "load-sql":
        embedded.pq.write_table = write_then_pause
        from ooniutils.cli import cli
        cli(["data", "load-sql", sys.argv[4]])
    elif point == "stream":  # a streamed part half written: rows in its temp file, not committed
        import pyarrow as pa
        from ooniutils.store import part_writer
        real_write_now = part_writer.PartFile.write_now
        def write_now_then_pause(self, table):
            real_write_now(self, table)
            pause()
        part_writer.PartFile.write_now = write_now_then_pause
        with store.insert_stream("fastpath", lambda mark, rows: None) as stream:
            stream.add(pa.table({"measurement_uid": ["killed"] * 40_000, "probe_asn": [99] * 40_000}), "m")
    elif point == "merge":
        real_finish = compaction._Output._finish
        def finish_then_pause(self):
            real_finish(self)
            pause()
        compaction._Output._finish = finish_then_pause
        store.compact("fastpath")
    elif point == "before-swap":  # next generation built, `current` not yet moved
        real_symlink = Path.symlink_to
        def symlink_then_pause(self, target, *a, **kw):
            if str(target).startswith("gen-"):
                pause()
            return real_symlink(self, target, *a, **kw)
        Path.symlink_to = symlink_then_pause
        store.compact("fastpath")
    elif point == "after-swap":  # `current` moved, the old generation not yet removed
        embedded.shutil.rmtree = lambda *a, **kw: pause()
        store.compact("fastpath")
    else:
        sys.exit(f"unknown point {point}")
    sys.exit("the child was not paused")
""")


def _kill_at(data: Path, point: str, tmp_path: Path, *extra: str) -> None:
    ready = tmp_path / f"ready-{point}"
    env = {**os.environ, "OONI_DATA_DIR": str(data), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), point, str(ready), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the child ended before reaching {point!r}: {err[-2000:]}")
            assert time.monotonic() < deadline, f"the child never reached {point!r}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _rows(store: EmbeddedStore) -> list[tuple[str, int]]:
    df = store.query("SELECT measurement_uid, probe_asn FROM fastpath ORDER BY measurement_uid")
    return list(df.itertuples(index=False, name=None))


def _fill(store: EmbeddedStore, parts: int = 3) -> list[tuple[str, int]]:
    for i in range(parts):
        store.insert("fastpath", pd.DataFrame({
            "measurement_uid": [f"u{i}-{j}" for j in range(i + 2)], "probe_asn": [i] * (i + 2),
            "measurement_start_time": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(i, unit="D")}))
    return _rows(store)


def _leftovers(store: EmbeddedStore) -> tuple[int, int]:
    lo = {t.name: t.leftovers for t in store.info()}["fastpath"]
    assert lo is not None
    return lo.temp_parts, lo.generations


def _info_text() -> str:
    r = CliRunner().invoke(cli, ["data", "info"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("point", ["insert", "load-sql", "stream"])
def test_kill_during_a_write_leaves_a_temp_part_the_next_write_removes(data_dir, tmp_path, point):
    store = EmbeddedStore(data_dir)
    before = _fill(store)
    extra = []
    if point == "load-sql":
        sql = tmp_path / "rows.sql"
        sql.write_text("INSERT INTO fastpath (measurement_uid, probe_asn) VALUES ('killed', 99)\n")
        extra = [str(sql)]
    _kill_at(data_dir, point, tmp_path, *extra)
    assert _rows(store) == before  # the killed write is not visible, nothing else changed
    assert _leftovers(store) == (1, 0)
    assert "fastpath: 1 temp part(s)" in _info_text()
    store.insert("fastpath", pd.DataFrame({"measurement_uid": ["after"], "probe_asn": [7]}))
    assert list((data_dir / "fastpath" / "tmp").iterdir()) == []
    assert _leftovers(store) == (0, 0) and "left by an interrupted" not in _info_text()
    assert _rows(store) == sorted([*before, ("after", 7)])


@pytest.mark.parametrize("point", ["merge", "before-swap", "after-swap"])
def test_kill_during_a_compaction_then_the_next_one_succeeds(data_dir, tmp_path, point):
    store = EmbeddedStore(data_dir)
    before = _fill(store)
    gen = os.readlink(data_dir / "fastpath" / "current")
    _kill_at(data_dir, point, tmp_path)
    assert _rows(store) == before
    expected = {"merge": (1, 0), "before-swap": (0, 1), "after-swap": (0, 1)}[point]
    assert _leftovers(store) == expected
    assert "left by an interrupted write or compaction" in _info_text()
    if point == "after-swap":
        assert os.readlink(data_dir / "fastpath" / "current") != gen
    store.compact("fastpath")  # used to fail with "[Errno 17] File exists" after before-swap
    assert _leftovers(store) == (0, 0)
    assert _rows(store) == before and len(store.parts("fastpath")) == 1
    gens = sorted(p.name for p in (data_dir / "fastpath").glob("gen-*"))
    assert gens == [os.readlink(data_dir / "fastpath" / "current")]
    assert list((data_dir / "fastpath" / "tmp").iterdir()) == []


def test_a_live_writers_temp_part_is_neither_removed_nor_reported(data_dir, tmp_path):
    """A temp part still being written (its writer alive and holding its lock) is not a
    leftover: a cleanup run by another process must leave it alone."""
    store = EmbeddedStore(data_dir)
    before = _fill(store)
    ready = tmp_path / "ready-insert"
    env = {**os.environ, "OONI_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), "insert", str(ready)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert _leftovers(store) == (0, 0)
        store.insert("fastpath", pd.DataFrame({"measurement_uid": ["other"], "probe_asn": [5]}))
        store.compact("fastpath")
        assert len(list((data_dir / "fastpath" / "tmp").iterdir())) == 1  # still there
    finally:
        proc.kill()
        proc.wait()
    assert _rows(store) == sorted([*before, ("other", 5)])
    assert _leftovers(store) == (1, 0)
