"""The run ledger's contract (:class:`jupycron.ledger.RunStore`), run against both
implementations (``store`` is parametrised, as apscheduler's ``raw_datastore``): record,
the cap, retention of success pages, the claim rule, orphan reaping, deletion and purge,
first_seen, the alert state and the heartbeat. Then what only a file shared by processes
has: claims racing in several processes, writers killed with -9, a full disk and a
read-only folder (HistoryError, and PendingOutcomes retrying ``record``), a corrupt file."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jupycron import recording
from jupycron.exceptions import AlreadyRunning, HistoryError
from jupycron.ledger import (
    INTERRUPTED_RETRIES,
    MemoryRunStore,
    RunStore,
    SqliteRunStore,
    ledger_file,
)
from jupycron.ledger.sqlite import SCHEMA_VERSION
from jupycron.models import Finding, FindingLevel, KernelInfo, Run, RunStatus, Trigger
from jupycron.paths import kept_html, output_html
from jupycron.retention import REBUILT_NOTE

NB = "team/daily_autorun.ipynb"
OTHER = "other_autorun.ipynb"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SRC = str(Path(__file__).resolve().parents[2] / "src")


def make_run(i: int, status: RunStatus = RunStatus.SUCCESS, nb: str = NB, **kw: object) -> Run:
    start = T0 + timedelta(minutes=i)
    fields = dict(notebook=nb, run_id=f"{start:%Y%m%dT%H%M%S}-{i:06x}", started_at=start,
                  status=status, slot=start, trigger=Trigger.SCHEDULE)
    if status is not RunStatus.RUNNING:
        fields.update(finished_at=start + timedelta(seconds=30), duration_s=30.0)
    fields.update(kw)
    return Run(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    out = tmp_path / "out"
    out.mkdir()
    s: RunStore = MemoryRunStore(out, keep=5) if request.param == "memory" \
        else SqliteRunStore(out, keep=5)
    yield s
    s.close()


# --- record, read model, cap ---------------------------------------------------------------

def test_record_roundtrip_and_upsert(store: RunStore) -> None:
    run = make_run(1, RunStatus.RUNNING, pid=os.getpid(), host="h", memory_limit="rlimit",
                   kernel=KernelInfo(pid=42, pgid=42, create_time=1714557600.25,
                                     sockets="/tmp/jupycron-kernel-x", marker="m",
                                     cgroup="/sys/fs/cgroup/jupycron-1", forked=True),
                   extra={"timing": {"total_s": 1.5}, "kernel": "python3"})
    store.record(run)
    assert store.get(NB).runs == [run]
    assert store.get(NB).first_seen == run.started_at
    done = make_run(1, RunStatus.FAILED, error_name="ValueError", error_value="bad",
                    error_cell=3, peak_mem_mb=12.5,
                    finding=Finding(FindingLevel.ALARM, "IR down 40 %", [{"cc": "IR", "n": 3}]))
    store.record(done)
    assert store.get(NB).runs == [done]            # replaced by run_id, every field kept
    assert store.get("nothing_autorun.ipynb").runs == []


def test_the_store_keeps_a_copy(store: RunStore) -> None:
    run = make_run(1, RunStatus.RUNNING)
    store.record(run)
    run.status, run.extra["x"] = RunStatus.SUCCESS, 1      # the runner changes its object...
    assert store.get(NB).runs[0].status is RunStatus.RUNNING   # ...the ledger does not follow
    before = store.load()[NB]
    store.record(run)
    assert before.runs[0].status is RunStatus.RUNNING       # entries read earlier stay as read
    assert store.get(NB).runs[0] == run


def test_runs_newest_first_and_helpers(store: RunStore) -> None:
    store.record(make_run(2, RunStatus.FAILED))
    store.record(make_run(0, RunStatus.SUCCESS))
    store.record(make_run(3, RunStatus.INTERRUPTED))
    store.record(make_run(1, RunStatus.TIMEOUT))
    store.record(make_run(4, RunStatus.RUNNING, trigger=Trigger.MANUAL, slot=None))
    e = store.get(NB)
    assert [r.started_at for r in e.runs] == [T0 + timedelta(minutes=i) for i in (4, 3, 2, 1, 0)]
    assert e.latest is not None and e.latest.status is RunStatus.RUNNING
    assert [r.status for r in e.running] == [RunStatus.RUNNING]
    assert e.last_finished is not None and e.last_finished.status is RunStatus.INTERRUPTED
    assert e.last_success is not None and e.last_success.started_at == T0
    assert e.last_scheduled_slot == T0 + timedelta(minutes=3)
    assert e.consecutive_failures == 2


def test_cap_keeps_newest_and_never_drops_running(store: RunStore) -> None:
    store.record(make_run(0, RunStatus.RUNNING))
    for i in range(1, 9):
        store.record(make_run(i))
    runs = store.get(NB).runs
    assert [r.started_at.minute for r in runs] == [8, 7, 6, 5, 4, 0]  # keep=5, plus RUNNING


def test_success_copy_kept_and_superseded(store: RunStore) -> None:
    out = store.output_dir
    assert out is not None

    def succeed(i: int, text: str) -> Run:
        page = output_html(out, NB)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text)
        run = make_run(i, output=page.relative_to(out).as_posix())
        store.record(run)
        return run

    first = succeed(1, "first")
    kept1 = kept_html(out, NB, first.run_id)
    assert kept1.read_text() == "first"
    assert store.get(NB).last_success_output == kept1.relative_to(out).as_posix()
    second = succeed(2, "second")
    kept2 = kept_html(out, NB, second.run_id)
    assert kept2.read_text() == "second" and not kept1.exists()
    store.record(make_run(3, RunStatus.FAILED, output=output_html(out, NB).name))
    assert store.get(NB).last_success_output == kept2.relative_to(out).as_posix()
    assert kept2.exists()


def test_generation_moves_with_runs_and_notebooks_only(store: RunStore) -> None:
    g0 = store.generation
    store.record(make_run(1))
    g1 = store.generation
    assert g1 != g0
    store.write_heartbeat({"pid": 1})
    store.save_alert_state("run_alerts", {"version": 1, "notebooks": {}})
    assert store.generation == g1
    store.mark_deleted([NB, OTHER], T0)
    assert store.generation != g1


# --- the claim rule --------------------------------------------------------------------------

def test_a_notebook_is_claimed_once(store: RunStore) -> None:
    first = make_run(1, RunStatus.RUNNING, pid=os.getpid())
    assert store.claim(first) is True
    assert store.get(NB).running == [first]
    with pytest.raises(AlreadyRunning, match=first.run_id):
        store.claim(make_run(2, RunStatus.RUNNING))
    assert store.claim(make_run(2, RunStatus.RUNNING, nb=OTHER)) is True  # another notebook
    assert store.claim(first) is True   # its own row: claiming again is no conflict
    store.record(make_run(1, RunStatus.SUCCESS))
    assert store.claim(make_run(3, RunStatus.RUNNING, trigger=Trigger.MANUAL, slot=None))
    with pytest.raises(ValueError, match="RUNNING"):
        store.claim(make_run(4, RunStatus.SUCCESS))


def test_a_served_slot_is_not_claimed_again_unless_interrupted(store: RunStore) -> None:
    slot = T0 + timedelta(hours=1)
    store.record(make_run(1, RunStatus.FAILED, slot=slot))
    assert store.claim(make_run(2, RunStatus.RUNNING, slot=slot)) is False
    assert store.get(NB).running == []                      # nothing written
    nxt = make_run(3, RunStatus.RUNNING, slot=slot + timedelta(hours=1))
    assert store.claim(nxt) is True
    store.record(make_run(3, RunStatus.SUCCESS, slot=slot + timedelta(hours=1)))
    # an interrupted run serves its slot only after INTERRUPTED_RETRIES attempts
    later = slot + timedelta(hours=5)
    for i in range(INTERRUPTED_RETRIES):
        retry = make_run(10 + i, RunStatus.RUNNING, slot=later)
        assert store.claim(retry) is True, f"attempt {i + 1}"
        store.record(make_run(10 + i, RunStatus.INTERRUPTED, slot=later))
    assert store.claim(make_run(30, RunStatus.RUNNING, slot=later)) is False


def test_a_claim_can_be_discarded_while_running_only(store: RunStore) -> None:
    run = make_run(1, RunStatus.RUNNING)
    assert store.claim(run)
    assert store.discard_claim(run) is True
    assert store.get(NB).runs == [] and store.discard_claim(run) is False
    store.record(make_run(2))
    assert store.discard_claim(make_run(2)) is False and len(store.get(NB).runs) == 1


# --- orphans, deletion, purge ---------------------------------------------------------------

def test_reap_with_custom_is_alive(store: RunStore) -> None:
    store.record(make_run(1, RunStatus.RUNNING, pid=111))
    store.record(make_run(2, RunStatus.RUNNING, pid=222, nb=OTHER))
    reaped = store.reap_orphans(lambda pid: pid == 222, now=T0 + timedelta(hours=1))
    assert [r.pid for r in reaped] == [111]
    run = store.get(NB).runs[0]
    assert run.status is RunStatus.INTERRUPTED and run.duration_s == pytest.approx(3540.0)
    assert run.error_name == "Interrupted" and "process 111" in (run.error_value or "")
    assert run.extra["orphaned"] is True
    assert store.get(OTHER).runs[0].status is RunStatus.RUNNING
    assert store.reap_orphans(lambda pid: pid == 222) == []


def test_reap_leaves_a_row_that_finished_meanwhile(store: RunStore) -> None:
    store.record(make_run(1, RunStatus.RUNNING, pid=111))
    done = make_run(1, RunStatus.SUCCESS, pid=111)

    def finished_meanwhile(run: Run) -> bool:
        store.record(done)          # the runner writes its outcome while we decide
        return False

    assert store.reap_orphans(run_alive=finished_meanwhile) == []
    assert store.get(NB).runs == [done]


def test_orphan_reaped_after_runner_is_killed(store: RunStore) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        store.record(make_run(1, RunStatus.RUNNING, pid=child.pid, host=socket.gethostname(),
                              started_at=datetime.now(UTC)))
        mine = make_run(2, RunStatus.RUNNING, nb=OTHER, pid=os.getpid(),
                        host=socket.gethostname(), started_at=datetime.now(UTC))
        store.record(mine)
        assert store.reap_orphans() == []
    finally:
        child.kill()
        child.wait(30)
    assert [r.pid for r in store.reap_orphans()] == [child.pid]
    assert store.get(OTHER).runs == [mine]


def test_mark_deleted_and_first_seen(store: RunStore) -> None:
    store.record(make_run(1, nb="gone_autorun.ipynb"))
    t1 = T0 + timedelta(days=1)
    assert store.mark_deleted([NB], t1) == ["gone_autorun.ipynb"]
    data = store.load()
    assert data["gone_autorun.ipynb"].deleted_at == t1
    assert data[NB].first_seen == t1 and data[NB].runs == []
    assert store.mark_deleted([NB], t1 + timedelta(hours=1)) == []     # once
    assert store.load()["gone_autorun.ipynb"].deleted_at == t1
    assert store.mark_deleted([NB, "gone_autorun.ipynb"], t1 + timedelta(hours=2)) == []
    back = store.load()["gone_autorun.ipynb"]
    assert back.deleted_at is None and back.first_seen == make_run(1).started_at


def test_purge_after_grace_removes_runs_and_outputs(store: RunStore) -> None:
    out = store.output_dir
    assert out is not None
    rel = "sub/gone_autorun.ipynb"
    page = output_html(out, rel)
    page.parent.mkdir(parents=True)
    page.write_text("page")
    store.record(make_run(1, nb=rel, output=page.relative_to(out).as_posix()))
    kept = kept_html(out, rel, make_run(1).run_id)
    assert kept.exists()
    store.record(make_run(2, nb=NB))
    store.mark_deleted([NB], T0)
    assert store.purge(T0 + timedelta(hours=1), grace=timedelta(days=1)) == []
    assert rel in store.load()
    (purged,) = store.purge(T0 + timedelta(days=2), grace=86400)
    assert purged.notebook == rel and set(purged.files) == {page, kept}
    assert rel not in store.load() and not page.parent.exists()
    assert len(store.get(NB).runs) == 1
    assert store.earliest_deleted() is None


def test_running_runs_and_earliest_deleted(store: RunStore) -> None:
    store.record(make_run(1, RunStatus.RUNNING))
    store.record(make_run(2, RunStatus.SUCCESS, nb=OTHER))
    assert [r.run_id for r in store.running_runs()] == [make_run(1).run_id]
    assert store.earliest_deleted() is None
    store.mark_deleted([NB], T0)
    assert store.earliest_deleted() == T0


# --- alert state, heartbeat -----------------------------------------------------------------

def test_alert_state_and_heartbeat(store: RunStore) -> None:
    assert store.alert_state("run_alerts") is None and store.heartbeat() is None
    state = {"version": 1, "notebooks": {NB: {"failing": {"active": True, "channels": {}}}}}
    store.save_alert_state("run_alerts", state)
    assert store.alert_state("run_alerts") == state
    state["notebooks"] = {}
    assert store.alert_state("run_alerts") != state       # a copy was kept
    store.save_alert_state("run_alerts", state)
    assert store.alert_state("run_alerts") == state
    assert store.alert_state("other") is None
    beat = {"pid": 1, "mode": "daemon", "heartbeat": T0.isoformat(), "running": []}
    store.write_heartbeat(beat)
    store.write_heartbeat({**beat, "pid": 2})
    assert store.heartbeat() == {**beat, "pid": 2}


def test_threads_sharing_one_store_lose_nothing(store: RunStore) -> None:
    def writer(w: int) -> None:
        for i in range(20):
            store.record(make_run(i, nb=f"w{w}_autorun.ipynb"))
            store.load()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = store.load()
    assert all(len(data[f"w{w}_autorun.ipynb"].runs) == 5 for w in range(4))


# --- one file, several processes ------------------------------------------------------------

def _claim_in_child(out: str, i: int, start: object, results: object) -> None:
    store = SqliteRunStore(out)
    run = make_run(100 + i, RunStatus.RUNNING, slot=T0 + timedelta(hours=1), pid=os.getpid())
    start.wait(30)  # type: ignore[attr-defined]
    try:
        results.put((i, "won" if store.claim(run) else "served"))  # type: ignore[attr-defined]
    except AlreadyRunning:
        results.put((i, "refused"))  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((i, repr(exc)))  # type: ignore[attr-defined]


def test_processes_claiming_the_same_slot_exactly_one_wins(tmp_path: Path) -> None:
    SqliteRunStore(tmp_path).mark_deleted([NB], T0)   # the ledger exists
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(str(tmp_path), i, start, results))
             for i in range(6)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let them import and open the ledger: the claims then race
    start.set()
    outcomes = sorted(results.get(timeout=120)[1] for _ in procs)
    for p in procs:
        p.join(60)
    assert outcomes == ["refused"] * 5 + ["won"], outcomes
    assert len(SqliteRunStore(tmp_path).get(NB).running) == 1


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_concurrent_writer_processes_lose_nothing(tmp_path: Path) -> None:
    code = """
        import sys
        from datetime import datetime, timedelta, timezone
        from jupycron.ledger import SqliteRunStore
        from jupycron.models import Run, RunStatus
        store, w = SqliteRunStore(sys.argv[1], keep=100), sys.argv[2]
        t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
        for i in range(30):
            store.record(Run(notebook=f"w{w}_autorun.ipynb", run_id=f"r{w}-{i:03d}",
                             started_at=t0 + timedelta(minutes=i), status=RunStatus.SUCCESS))
            store.mark_deleted([f"w{k}_autorun.ipynb" for k in range(4)], t0)
    """
    children = [_child(code, str(tmp_path), str(w)) for w in range(4)]
    assert [c.wait(120) for c in children] == [0] * 4
    data = SqliteRunStore(tmp_path).load()
    assert {rel: len(e.runs) for rel, e in data.items()} == \
        {f"w{w}_autorun.ipynb": 30 for w in range(4)}


def test_kill_9_while_writing_leaves_a_sound_ledger(tmp_path: Path) -> None:
    code = """
        import sys, itertools
        from datetime import datetime, timezone
        from jupycron.ledger import SqliteRunStore
        from jupycron.models import Run, RunStatus
        h = SqliteRunStore(sys.argv[1], keep=1000)
        for i in itertools.count():
            h.record(Run(notebook="k_autorun.ipynb", run_id=f"r{i:06d}",
                         started_at=datetime.now(timezone.utc), status=RunStatus.SUCCESS,
                         extra={"pad": "x" * 2000}))
    """
    child = _child(code, str(tmp_path))
    h = SqliteRunStore(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(h.get("k_autorun.ipynb").runs) < 40:
            assert time.monotonic() < deadline, "the writer did not get going"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    runs = h.load()["k_autorun.ipynb"].runs
    assert len(runs) >= 40
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not list(tmp_path.glob("*.corrupt-*"))
    h.record(make_run(1, nb="k_autorun.ipynb"))   # the killed writer held nothing
    assert len(h.load()["k_autorun.ipynb"].runs) == len(runs) + 1


# --- a full disk, a read-only folder, a corrupt file ----------------------------------------

def test_a_full_disk_gives_a_clear_history_error_and_pending_outcomes_retry(small_disk: Path) -> None:
    from tests.jupycron.test_disk_full import fill
    store = SqliteRunStore(small_disk)
    store.record(make_run(1, RunStatus.RUNNING, nb=OTHER))
    filler = fill(small_disk)
    run = make_run(2, extra={"pad": "x" * 200_000})
    with pytest.raises(HistoryError, match=r"cannot write the run ledger .*full"):
        store.record(run)
    assert store.get(NB).runs == []                 # nothing half-written, reads work
    recorded: list[Run] = []
    failures = recording.WriteFailures("test")
    pending = recording.PendingOutcomes(store, failures, recorded.append, first_s=0.05,
                                        max_s=0.1)
    pending.add(run, HistoryError("full"))
    time.sleep(0.3)
    assert recorded == [] and pending.runs() == [run]
    filler.unlink()
    deadline = time.monotonic() + 30
    while not recorded:
        assert time.monotonic() < deadline, "the pending outcome was not recorded"
        time.sleep(0.05)
    assert pending.close() == []
    assert store.get(NB).runs == [run] and failures.failing == {}


def test_a_read_only_folder_gives_a_clear_history_error(small_disk: Path) -> None:
    store = SqliteRunStore(small_disk)
    store.record(make_run(1))
    store.close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        ro = SqliteRunStore(small_disk)
        with pytest.raises(HistoryError, match=r"run ledger .*(read-?only|readonly|open)"):
            ro.record(make_run(2))
        with pytest.raises(HistoryError, match=r"run ledger"):
            ro.write_heartbeat({"pid": 1})
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


def test_a_corrupt_ledger_is_kept_aside_and_rebuilt_from_outputs(tmp_path: Path,
                                                                   caplog) -> None:
    ok_id, old_id = "20240501T100000-aaaaaa", "20240430T090000-bbbbbb"
    for rel, latest, kept in [
        ("a/ok_autorun.ipynb", "same", (ok_id, "same")),
        ("b/mixed_autorun.ipynb", "newer failure?", (old_id, "older success")),
        ("only_autorun.ipynb", "something", None),
    ]:
        out = output_html(tmp_path, rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(latest)
        if kept:
            kept_html(tmp_path, rel, kept[0]).write_text(kept[1])
    garbage = b"this is not an SQLite file, it was overwritten" * 100
    ledger_file(tmp_path).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="jupycron.ledger"):
        data = SqliteRunStore(tmp_path).load()
    (aside,) = tmp_path.glob(".jupycron.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage
    assert any("corrupt" in m and aside.name in m for m in caplog.messages)
    assert sorted(data) == ["a/ok_autorun.ipynb", "b/mixed_autorun.ipynb", "only_autorun.ipynb"]
    ok = data["a/ok_autorun.ipynb"]
    assert [(r.run_id, r.status) for r in ok.runs] == [(ok_id, RunStatus.SUCCESS)]
    assert ok.last_success_output == f"a/ok_autorun.success-{ok_id}.html"
    mixed = data["b/mixed_autorun.ipynb"]
    assert [r.status for r in mixed.runs] == [RunStatus.INTERRUPTED, RunStatus.SUCCESS]
    assert mixed.runs[0].error_value == REBUILT_NOTE and mixed.runs[0].extra["status_unknown"]
    assert data["only_autorun.ipynb"].runs[0].extra["rebuilt_from_outputs"] is True
    assert SqliteRunStore(tmp_path).load() == data      # written: a fresh reader sees it
    assert len(list(tmp_path.glob(".jupycron.sqlite.corrupt-*"))) == 1


def test_an_unreadable_row_is_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    store = SqliteRunStore(tmp_path)
    store.record(make_run(1))
    store.record(make_run(2))
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        conn.execute("UPDATE runs SET extra = '[1]' WHERE run_id = ?", (make_run(2).run_id,))
    with caplog.at_level(logging.WARNING, logger="jupycron.ledger"):
        runs = SqliteRunStore(tmp_path).get(NB).runs
    assert [r.run_id for r in runs] == [make_run(1).run_id]
    assert any(make_run(2).run_id in m and "unreadable" in m for m in caplog.messages)


def test_a_ledger_of_another_schema_version_is_refused_clearly(tmp_path: Path) -> None:
    SqliteRunStore(tmp_path).record(make_run(1))
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(HistoryError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteRunStore(tmp_path).load()


def test_the_ledger_is_one_wal_file_with_a_schema_version(tmp_path: Path) -> None:
    SqliteRunStore(tmp_path).record(make_run(1))
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert {"kernel_pid", "kernel_pgid", "kernel_cgroup", "finding_level", "extra"} <= cols
