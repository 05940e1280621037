"""The run history: upserts, cap, success copies, locking across processes, kill -9 safety,
corrupt-file recovery, orphan reaping, deletion and purge."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from jupycron.history import REBUILT_NOTE, History, NotebookHistory
from jupycron.models import Run, RunStatus, Trigger
from jupycron.paths import kept_html, output_html
from tests.support.threads import readers_during_writers

NB = "team/daily_autorun.ipynb"
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


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, text=True, env=env)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def test_record_roundtrip_and_upsert(tmp_path: Path) -> None:
    h = History(tmp_path)
    assert h.load() == {}
    running = make_run(1, RunStatus.RUNNING, pid=123, extra={"k": "v"})
    h.record(running)
    assert h.get(NB).runs == [running]
    done = make_run(1, RunStatus.FAILED, error_name="ZeroDivisionError",
                    error_value="division by zero", error_cell=3)
    h.record(done)
    entry = h.load()[NB]
    assert entry.runs == [done]
    assert entry.first_seen == done.started_at
    doc = json.loads((tmp_path / ".history.json").read_text())
    assert doc["version"] == 1
    assert doc["notebooks"][NB]["runs"][0]["status"] == "failed"
    assert doc["notebooks"][NB]["runs"][0]["started_at"] == "2024-05-01T10:01:00+00:00"
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_runs_newest_first_and_helpers(tmp_path: Path) -> None:
    h = History(tmp_path)
    statuses = [RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.TIMEOUT,
                RunStatus.OOM, RunStatus.RUNNING]
    for i, st in enumerate(statuses):
        h.record(make_run(i, st))
    h.record(make_run(10, RunStatus.SUCCESS, trigger=Trigger.MANUAL, slot=None))
    entry = h.load()[NB]
    assert [r.status for r in entry.runs] == [RunStatus.SUCCESS, *reversed(statuses)]
    assert entry.consecutive_failures == 0
    assert entry.last_scheduled_slot == T0 + timedelta(minutes=5)
    entry.runs = entry.runs[1:]
    # RUNNING and INTERRUPTED neither count nor break the streak
    assert entry.consecutive_failures == 3
    assert entry.latest.status is RunStatus.RUNNING  # type: ignore[union-attr]
    assert entry.last_finished.status is RunStatus.OOM  # type: ignore[union-attr]
    assert entry.last_success.run_id == make_run(0).run_id  # type: ignore[union-attr]


def test_cap_keeps_newest_and_never_drops_running(tmp_path: Path) -> None:
    h = History(tmp_path, keep=5)
    h.record(make_run(0, RunStatus.RUNNING, pid=1))
    for i in range(1, 9):
        h.record(make_run(i, RunStatus.FAILED))
    runs = h.load()[NB].runs
    assert [r.run_id for r in runs] == [make_run(i).run_id for i in (8, 7, 6, 5, 4, 0)]
    assert runs[-1].status is RunStatus.RUNNING


def test_success_copy_kept_and_superseded(tmp_path: Path) -> None:
    h = History(tmp_path)
    out = output_html(tmp_path, NB)
    out.parent.mkdir(parents=True)
    rel_out = "team/daily_autorun.html"

    out.write_text("run 1 ok")
    r1 = make_run(1, output=rel_out)
    h.record(r1)
    k1 = kept_html(tmp_path, NB, r1.run_id)
    assert k1.read_text() == "run 1 ok"
    assert h.load()[NB].last_success_output == f"team/daily_autorun.success-{r1.run_id}.html"

    out.write_text("run 2 failed")
    h.record(make_run(2, RunStatus.FAILED, output=rel_out))
    assert k1.read_text() == "run 1 ok"
    assert h.load()[NB].last_success_output == k1.relative_to(tmp_path).as_posix()

    out.write_text("run 3 ok")
    r3 = make_run(3, output=rel_out)
    h.record(r3)
    k3 = kept_html(tmp_path, NB, r3.run_id)
    assert k3.read_text() == "run 3 ok" and not k1.exists()
    assert h.load()[NB].last_success_output == k3.relative_to(tmp_path).as_posix()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "daily_autorun.html", f"daily_autorun.success-{r3.run_id}.html"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    code = """
        import sys
        from datetime import datetime, timedelta, timezone
        from jupycron.history import History
        from jupycron.models import Run, RunStatus
        out, who = sys.argv[1], int(sys.argv[2])
        h = History(out)
        t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
        for i in range(25):
            h.record(Run(notebook=f"n{i % 2}_autorun.ipynb", run_id=f"w{who}-{i}",
                         started_at=t0 + timedelta(seconds=i), status=RunStatus.SUCCESS))
    """
    procs = [run_child(code, str(tmp_path), str(w)) for w in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    data = History(tmp_path).load()
    ids = {r.run_id for e in data.values() for r in e.runs}
    assert ids == {f"w{w}-{i}" for w in range(3) for i in range(25)}


def test_threads_sharing_one_history_lose_nothing(tmp_path: Path) -> None:
    """The daemon's run threads share one History and read it without the lock while they
    record; a second History (another process: its own idea of the file) records too."""
    h, other = History(tmp_path), History(tmp_path)
    loads = 0

    def reader(stop: threading.Event) -> None:
        nonlocal loads
        while not stop.is_set():
            h.load()
            loads += 1

    def writer(w: int, hist: History) -> None:
        for i in range(15):
            hist.record(make_run(i, nb=f"n{w}_autorun.ipynb", run_id=f"w{w}-{i}"))

    readers_during_writers(reader, 2, writer, [(0, h), (1, h), (2, h), (3, other)])
    data = History(tmp_path).load()
    assert {r.run_id for e in data.values() for r in e.runs} == {
        f"w{w}-{i}" for w in range(4) for i in range(15)}
    assert loads > 0 and not list(tmp_path.glob(".history.json.corrupt-*"))


def test_record_never_trusts_its_own_text_after_an_edit_in_place(tmp_path: Path) -> None:
    """record reuses the text of its own last write only while the file is that write: an
    edit in place (same inode) is read and checked, however soon after the write."""
    h = History(tmp_path)
    for k in range(5):
        h.record(make_run(2 * k, nb="other_autorun.ipynb"))
        h.load()
        bad = json.loads((tmp_path / ".history.json").read_text())
        bad["notebooks"]["other_autorun.ipynb"]["runs"] = "nope"
        (tmp_path / ".history.json").write_text(json.dumps(bad))
        h.record(make_run(2 * k + 1))
        assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == k + 1


def test_kill_9_while_writing_leaves_a_valid_history(tmp_path: Path) -> None:
    code = """
        import sys, itertools
        from datetime import datetime, timezone
        from jupycron.history import History
        from jupycron.models import Run, RunStatus
        h = History(sys.argv[1], keep=1000)
        for i in itertools.count():
            h.record(Run(notebook="k_autorun.ipynb", run_id=f"r{i:06d}",
                         started_at=datetime.now(timezone.utc), status=RunStatus.SUCCESS,
                         extra={"pad": "x" * 2000}))
    """
    child = run_child(code, str(tmp_path))
    h = History(tmp_path)
    try:
        wait_for(lambda: len(h.get("k_autorun.ipynb").runs) >= 40)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    runs = h.load()["k_autorun.ipynb"].runs
    assert len(runs) >= 40
    assert not list(tmp_path.glob(".history.json.corrupt-*"))
    # the killed writer's lock is gone with it: we can write
    h.record(make_run(1, nb="k_autorun.ipynb"))
    assert len(h.load()["k_autorun.ipynb"].runs) == len(runs) + 1


def test_orphan_reaped_after_runner_is_killed(tmp_path: Path) -> None:
    code = """
        import os, socket, sys, time
        from datetime import datetime, timezone
        from jupycron.history import History
        from jupycron.models import Run, RunStatus
        History(sys.argv[1]).record(Run(
            notebook="o_autorun.ipynb", run_id="20240501T100000-abcdef",
            started_at=datetime.now(timezone.utc), status=RunStatus.RUNNING,
            pid=os.getpid(), host=socket.gethostname()))
        print("recorded", flush=True)
        time.sleep(600)
    """
    child = run_child(code, str(tmp_path))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        h = History(tmp_path)
        # our own live RUNNING row is left alone
        mine = make_run(5, RunStatus.RUNNING, nb="mine_autorun.ipynb", pid=os.getpid(),
                        host=socket.gethostname(), started_at=datetime.now(UTC))
        h.record(mine)
        assert h.reap_orphans() == []
        assert h.get("o_autorun.ipynb").runs[0].status is RunStatus.RUNNING
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    reaped = h.reap_orphans()
    assert [r.run_id for r in reaped] == ["20240501T100000-abcdef"]
    run = h.get("o_autorun.ipynb").runs[0]
    assert run.status is RunStatus.INTERRUPTED
    assert run.finished_at is not None and run.duration_s is not None
    assert run.error_name == "Interrupted" and f"process {child.pid}" in (run.error_value or "")
    assert run.extra["orphaned"] is True
    assert h.get("mine_autorun.ipynb").runs[0].status is RunStatus.RUNNING
    assert h.reap_orphans() == []


def test_reap_with_custom_is_alive(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.record(make_run(1, RunStatus.RUNNING, pid=111))
    h.record(make_run(2, RunStatus.RUNNING, pid=222, nb="other_autorun.ipynb"))
    reaped = h.reap_orphans(lambda pid: pid == 222, now=T0 + timedelta(hours=1))
    assert [r.pid for r in reaped] == [111]
    assert h.get(NB).runs[0].duration_s == pytest.approx(3540.0)


def test_corrupt_file_is_kept_aside_and_rebuilt_from_outputs(tmp_path: Path, caplog) -> None:
    h = History(tmp_path)
    # outputs on disk: a notebook whose latest run was the kept success, one whose latest
    # output differs from its kept success, and one with only a latest output
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
    (tmp_path / "summary.html").write_text("<html>")
    garbage = b'{"version": 1, "notebooks": {"x": {"runs": [ {"trunc'
    (tmp_path / ".history.json").write_bytes(garbage)

    with caplog.at_level(logging.WARNING, logger="jupycron.history"):
        data = h.load()

    aside = list(tmp_path.glob(".history.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert any("corrupt" in m and aside[0].name in m for m in caplog.messages)
    assert sorted(data) == ["a/ok_autorun.ipynb", "b/mixed_autorun.ipynb", "only_autorun.ipynb"]

    ok = data["a/ok_autorun.ipynb"]
    assert [(r.run_id, r.status) for r in ok.runs] == [(ok_id, RunStatus.SUCCESS)]
    assert ok.last_success_output == f"a/ok_autorun.success-{ok_id}.html"
    assert ok.runs[0].started_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

    mixed = data["b/mixed_autorun.ipynb"]
    assert [r.status for r in mixed.runs] == [RunStatus.INTERRUPTED, RunStatus.SUCCESS]
    unknown = mixed.runs[0]
    assert unknown.error_value == REBUILT_NOTE and unknown.extra["status_unknown"] is True
    assert unknown.output == "b/mixed_autorun.html"

    only = data["only_autorun.ipynb"]
    assert len(only.runs) == 1 and only.runs[0].extra["rebuilt_from_outputs"] is True
    assert only.last_success_output is None

    # the rebuilt history was written: a fresh reader sees it and nothing else is moved aside
    assert History(tmp_path).load() == data
    assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == 1


@pytest.mark.parametrize("content", [
    "[]", '{"version": 1, "notebooks": []}', '{"version": 2, "notebooks": {}}',
    '{"version": 1, "notebooks": {"a_autorun.ipynb": {"runs": [{"status": "bogus"}]}}}',
    '{"version": 1, "notebooks": {"a_autorun.ipynb": {"runs": "nope"}}}',
])
def test_wrong_shape_is_corrupt(tmp_path: Path, content: str) -> None:
    (tmp_path / ".history.json").write_text(content)
    h = History(tmp_path)
    h.record(make_run(1))
    assert [r.run_id for r in h.get(NB).runs] == [make_run(1).run_id]
    (aside,) = tmp_path.glob(".history.json.corrupt-*")
    assert aside.read_text() == content


def test_mark_deleted_and_first_seen(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.record(make_run(1, nb="gone_autorun.ipynb"))
    t1 = T0 + timedelta(days=1)
    assert h.mark_deleted(["new_autorun.ipynb"], t1) == ["gone_autorun.ipynb"]
    data = h.load()
    assert data["gone_autorun.ipynb"].deleted_at == t1
    assert data["new_autorun.ipynb"] == NotebookHistory(first_seen=t1)
    # nothing changes on a repeat: deleted_at keeps the first time, no rewrite
    mtime = (tmp_path / ".history.json").stat().st_mtime_ns
    assert h.mark_deleted(["new_autorun.ipynb"], t1 + timedelta(hours=1)) == []
    assert (tmp_path / ".history.json").stat().st_mtime_ns == mtime
    # it comes back
    assert h.mark_deleted(["new_autorun.ipynb", "gone_autorun.ipynb"], t1 + timedelta(hours=2)) == []
    back = h.load()["gone_autorun.ipynb"]
    assert back.deleted_at is None and back.first_seen == make_run(1).started_at
    assert len(back.runs) == 1


def test_purge_after_grace(tmp_path: Path) -> None:
    h = History(tmp_path)
    gone, kept_nb = "x/gone_autorun.ipynb", "stay_autorun.ipynb"
    out = output_html(tmp_path, gone)
    out.parent.mkdir(parents=True)
    out.write_text("latest")
    r = make_run(1, nb=gone, output="x/gone_autorun.html")
    h.record(r)
    h.record(make_run(2, nb=kept_nb))
    assert kept_html(tmp_path, gone, r.run_id).exists()
    deleted_at = T0 + timedelta(days=1)
    h.mark_deleted([kept_nb], deleted_at)

    grace = timedelta(days=7)
    assert h.purge(deleted_at + grace, grace) == []
    assert gone in h.load()

    (purged,) = h.purge(deleted_at + grace + timedelta(seconds=1), grace.total_seconds())
    assert purged.notebook == gone and purged.deleted_at == deleted_at
    assert sorted(p.name for p in purged.files) == sorted(
        ["gone_autorun.html", f"gone_autorun.success-{r.run_id}.html"])
    assert sorted(h.load()) == [kept_nb]
    assert not (tmp_path / "x").exists(), "empty output folders are removed"


def test_record_reserializes_only_its_own_notebook(tmp_path: Path, monkeypatch) -> None:
    """A run's start and end re-encode one run; the other runs and notebooks are copied on
    as JSON (a full history made every record cost ~0.8 s of CPU, a 100-run entry ~30 ms)."""
    h = History(tmp_path)
    for n in range(3):
        for i in range(5):
            h.record(make_run(i, nb=f"n{n}_autorun.ipynb"))
    calls: list[str] = []
    to_json = Run.to_json
    monkeypatch.setattr(Run, "to_json", lambda self: calls.append(self.notebook) or to_json(self))
    h.record(make_run(9, RunStatus.RUNNING, nb="n1_autorun.ipynb"))
    assert calls == ["n1_autorun.ipynb"]
    finished = make_run(9, RunStatus.FAILED, nb="n1_autorun.ipynb", error_name="E")
    h.record(finished)
    assert calls == ["n1_autorun.ipynb"] * 2
    loaded = History(tmp_path).load()
    assert [len(loaded[f"n{n}_autorun.ipynb"].runs) for n in range(3)] == [5, 6, 5]
    assert loaded["n1_autorun.ipynb"].runs[0] == finished
    assert loaded["n1_autorun.ipynb"].runs[1:] == History(tmp_path).get("n1_autorun.ipynb").runs[1:]


def test_record_rewrites_a_run_changed_in_place(tmp_path: Path) -> None:
    """The runs whose JSON is copied on are the unchanged ones: a run changed by the update
    function (same run_id, other fields) is encoded again."""
    h = History(tmp_path)
    for i in range(3):
        h.record(make_run(i))

    def touch(entry: NotebookHistory) -> None:
        entry.runs[1].extra["orphaned"] = True
        entry.runs[2].error_value = "changed"

    h.update_entry(NB, touch)
    runs = History(tmp_path).get(NB).runs
    assert runs[1].extra == {"orphaned": True} and runs[2].error_value == "changed"
    assert runs[0] == make_run(2)


def test_record_checks_entries_written_by_someone_else(tmp_path: Path) -> None:
    """Entries this History did not write itself are checked before being copied on: a
    corrupt one is found by record, not left for a later load (which would lose the run)."""
    h = History(tmp_path)
    h.record(make_run(1, nb="other_autorun.ipynb"))
    doc = json.loads((tmp_path / ".history.json").read_text())
    doc["notebooks"]["other_autorun.ipynb"]["runs"] = "nope"
    (tmp_path / ".history.json").write_text(json.dumps(doc))
    h.record(make_run(2))
    assert [r.run_id for r in h.get(NB).runs] == [make_run(2).run_id]
    assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == 1


# --- valid JSON, wrong types (issue 12 #10) ------------------------------------------------

OTHER = "other_autorun.ipynb"


def _sound_history(tmp: Path) -> dict:
    """Two notebooks, a RUNNING row among NB's runs; the document as written."""
    h = History(tmp)
    for i in range(3):
        h.record(make_run(i, pid=os.getpid(), host=socket.gethostname(),
                          extra={"kernel_pid": 123, "timing": {"total_s": 1.5}}))
    h.record(make_run(3, RunStatus.RUNNING, pid=os.getpid(), host=socket.gethostname()))
    h.record(make_run(4, nb=OTHER))
    return json.loads((tmp / ".history.json").read_text())


def _check_survives(tmp: Path, text: str, damaged_nb: str | None) -> None:
    """load() never raises, tick/list's consumers work on what it returns, a damaged file
    is moved aside and the notebook that was not touched keeps every run."""
    from jupycron import scheduler, status
    from jupycron.config import Settings

    before = History(tmp).load()[OTHER] if damaged_nb != OTHER else None
    (tmp / ".history.json").write_text(text)
    data = History(tmp).load()
    aside = list(tmp.glob(".history.json.corrupt-*"))
    assert len(aside) <= 1
    if aside:
        assert aside[0].read_text() == text
    if before is not None and damaged_nb is not None:
        assert data[OTHER].runs == before.runs
    # what tick and list do with it next
    scheduler.reap_orphans(History(tmp))
    settings = Settings(notebooks=tmp / "nbs", output=tmp)
    nbs = [scheduler.Notebook(rel, 0, 0, scheduler.schedule.JobSpec(every="1 hour"))
           for rel in data if not rel.startswith("/")]
    status.build_rows(settings, nbs, History(tmp).load(), T0 + timedelta(hours=1))
    History(tmp).record(make_run(9, nb=OTHER))  # and the next write works


@pytest.mark.parametrize("field, value", [
    ("pid", "abc"), ("duration_s", "12"), ("duration_s", 10**400), ("peak_mem_mb", 1e308 * 10),
    ("started_at", 5), ("status", None), ("run_id", "../../x"), ("output", "../../etc/passwd"),
    ("extra", {"cgroup": "DECOY"}), ("extra", {"sockets": "DECOY"}),
    ("extra", {"kernel_pgid": "1"}), ("extra", [1]), ("error_cell", True),
])
def test_a_run_with_a_wrong_field_is_left_out_and_the_rest_kept(tmp_path: Path, field: str,
                                                                 value: object) -> None:
    """Used to crash tick (the orphan check) or list on every call; or worse, let the
    orphan clean-up kill a cgroup or delete a folder that is not jupycron's."""
    # A folder the orphan clean-up must never remove (before the checks, a RUNNING row's
    # "sockets" was passed to shutil.rmtree as it was: never point it at anything real).
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("x")
    if isinstance(value, dict):
        value = {k: str(decoy) if v == "DECOY" else v for k, v in value.items()}
    doc = _sound_history(tmp_path)
    running = next(r for r in doc["notebooks"][NB]["runs"] if r["status"] == "running")
    running[field] = value
    text = json.dumps(doc).replace("Infinity", "1e999")
    _check_survives(tmp_path, text, NB)
    runs = History(tmp_path).load()[NB].runs
    assert [r.run_id for r in runs] == [make_run(i).run_id for i in (2, 1, 0)]  # only it went
    assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == 1
    assert (decoy / "keep").exists()


def test_a_deleted_entry_named_with_dotdot_is_never_purged(tmp_path: Path) -> None:
    """Purging a deleted ``../victim_autorun.ipynb`` entry would remove files outside the
    outputs folder: the entry is left out instead."""
    out = tmp_path / "out"
    doc = _sound_history(out)
    victim = tmp_path / "victim_autorun.html"
    victim.write_text("keep me")
    doc["notebooks"]["../victim_autorun.ipynb"] = {
        "runs": [], "deleted_at": "2020-01-01T00:00:00+00:00", "last_success_output": None,
        "first_seen": "2020-01-01T00:00:00+00:00"}
    _check_survives(out, json.dumps(doc), "../victim_autorun.ipynb")
    History(out).purge(T0 + timedelta(days=3650), grace=0)
    assert victim.read_text() == "keep me"
    assert "../victim_autorun.ipynb" not in History(out).load()


def test_deep_nesting_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    _sound_history(tmp_path)
    deep = '{"version": 1, "notebooks": {"a_autorun.ipynb": ' + "[" * 200_000 + "]" * 200_000 + "}}"
    _check_survives(tmp_path, deep, None)
    assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == 1


_JSON_VALUES = hst.recursive(
    hst.none() | hst.booleans() | hst.integers(min_value=-(10**400), max_value=10**400)
    | hst.floats(allow_nan=False, allow_infinity=False) | hst.text(max_size=20)
    | hst.sampled_from(["../x", "../x/y", "running", "2024-05-01T10:00:00+00:00", "a_autorun.ipynb"]),
    lambda children: hst.lists(children, max_size=3) | hst.dictionaries(hst.text(max_size=8),
                                                                        children, max_size=3),
    max_leaves=8)
_RUN_FIELDS = hst.sampled_from(["notebook", "run_id", "started_at", "status", "trigger", "slot",
                               "finished_at", "duration_s", "error_name", "error_value",
                               "error_cell", "peak_mem_mb", "output", "pid", "host",
                               "memory_limit", "extra", "unknown_key"])
_ENTRY_FIELDS = hst.sampled_from(["runs", "deleted_at", "last_success_output", "first_seen"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=hst.sampled_from(["run", "entry", "key", "top"]), run_field=_RUN_FIELDS,
       entry_field=_ENTRY_FIELDS, value=_JSON_VALUES, index=hst.integers(0, 3))
def test_damaged_history_files_never_crash_and_lose_nothing_else(
        where: str, run_field: str, entry_field: str, value: object, index: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        doc = _sound_history(tmp)
        damaged = NB
        if where == "run":
            doc["notebooks"][NB]["runs"][index][run_field] = value
        elif where == "entry":
            doc["notebooks"][NB][entry_field] = value
        elif where == "key":
            damaged = value if isinstance(value, str) else "../x_autorun.ipynb"
            doc["notebooks"][damaged] = doc["notebooks"].pop(NB)
        else:
            doc["version"] = value
            damaged = None
        _check_survives(tmp, json.dumps(doc), damaged)
