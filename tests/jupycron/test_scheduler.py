"""Scheduling: the due rule, locks and slots (unit); ticks, the daemon and crash recovery
against real kernels and real `python -m jupycron` processes (integration)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jupycron import scheduler, slots
from jupycron.exceptions import NotebookNotFound
from jupycron.ledger import NotebookHistory, SqliteRunStore
from jupycron.models import JobSpec, Notebook, Run, RunStatus, Trigger
from jupycron.paths import output_html, summary_file
from tests.support.ledger import read_heartbeat

T0 = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
HOURLY = Notebook("h_autorun.ipynb", 0, 0, JobSpec(every="1 hour"))


def _run(slot: datetime, status: RunStatus, trigger: Trigger = Trigger.SCHEDULE) -> Run:
    return Run(notebook=HOURLY.path, run_id=f"{slot:%Y%m%dT%H%M%S}-{status}", started_at=slot,
               status=status, trigger=trigger, slot=slot if trigger is Trigger.SCHEDULE else None)


def _due(runs: list[Run], now: datetime, first_seen: datetime = T0 - timedelta(days=1)):
    hist = {HOURLY.path: NotebookHistory(runs=runs, first_seen=first_seen)}
    return [slot for _, slot in scheduler.due_runs([HOURLY], hist, now)]


def test_a_served_slot_is_not_due_until_the_next_one():
    ten = T0.replace(minute=0)
    assert _due([_run(ten, RunStatus.SUCCESS)], T0) == []
    assert _due([_run(ten, RunStatus.SUCCESS)], T0 + timedelta(minutes=35)) == [ten + timedelta(hours=1)]


def test_failures_wait_for_the_next_slot_but_interruptions_are_retried():
    ten = T0.replace(minute=0)
    assert _due([_run(ten, RunStatus.FAILED)], T0) == []
    assert _due([_run(ten, RunStatus.INTERRUPTED)], T0) == [ten]
    three = [_run(ten, RunStatus.INTERRUPTED) for _ in range(scheduler.INTERRUPTED_RETRIES)]
    assert _due(three, T0) == []


def test_running_disabled_and_new_notebooks_are_not_due():
    ten = T0.replace(minute=0)
    assert _due([_run(ten - timedelta(hours=1), RunStatus.SUCCESS), _run(ten, RunStatus.RUNNING)], T0) == []
    disabled = Notebook("d_autorun.ipynb", 0, 0, None, "no jupycron line")
    assert scheduler.due_runs([disabled], {}, T0) == []
    # never run: only a slot after it was first seen counts; manual runs do not serve slots
    assert _due([], T0, first_seen=ten + timedelta(minutes=1)) == []
    assert _due([_run(ten, RunStatus.SUCCESS, Trigger.MANUAL)], T0, first_seen=ten - timedelta(minutes=1)) == [ten]


def test_locks_are_exclusive_and_slots_are_bounded(tmp_path):
    a = slots.try_lock(tmp_path / "x.lock")
    assert a is not None and slots.try_lock(tmp_path / "x.lock") is None
    slots.release(a)
    b = slots.try_lock(tmp_path / "x.lock")
    assert b is not None
    slots.release(b)
    stop = threading.Event()
    held = [slots.acquire_slot(tmp_path, 2, stop) for _ in range(2)]
    assert all(fd is not None for fd in held)
    stop.set()
    assert slots.acquire_slot(tmp_path, 2, stop) is None  # all taken: waits until stopped
    for fd in held:
        slots.release(fd)


@pytest.mark.parametrize("rel, message", [
    ("/etc/passwd_autorun.ipynb", "relative"),
    ("../x_autorun.ipynb", "'..'"),
    ("a/../../x_autorun.ipynb", "'..'"),
    ("missing_autorun.ipynb", "no notebook"),
    ("plain.ipynb", "not an autorun notebook"),
    ("x_autorun.txt", ".ipynb"),
])
def test_run_now_rejects_bad_paths(settings, rel, message):
    (settings.notebooks / "plain.ipynb").write_text("{}")
    with pytest.raises(NotebookNotFound, match=message):
        scheduler.resolve_notebook(settings, rel)


@pytest.mark.integration
def test_tick_runs_due_notebooks_then_purges_deleted_ones(settings, jc):
    settings = replace(settings, deleted_grace_s=0.0)
    for name in ("ok_autorun.ipynb", "raises_autorun.ipynb"):
        jc.copy_notebook(name, settings.notebooks)
    now = datetime.now(UTC)
    assert scheduler.tick(settings, now=now) == []   # first seen: waits for its next slot
    runs = scheduler.tick(settings, now=now + timedelta(minutes=2))
    assert sorted((r.notebook, r.status) for r in runs) == [
        ("ok_autorun.ipynb", RunStatus.SUCCESS), ("raises_autorun.ipynb", RunStatus.FAILED)]
    assert all(r.slot is not None and r.trigger is Trigger.SCHEDULE for r in runs)
    assert scheduler.tick(settings, now=now + timedelta(minutes=2)) == []  # slot served
    state = read_heartbeat(settings.output_dir)
    assert state["mode"] == "tick" and state["running"] == [] and state["pid"] == os.getpid()
    assert "raises_autorun.ipynb" in summary_file(settings.output_dir).read_text()

    (settings.notebooks / "raises_autorun.ipynb").unlink()
    later = now + timedelta(minutes=2, seconds=10)
    scheduler.tick(settings, now=later)
    assert SqliteRunStore(settings.output_dir).load()["raises_autorun.ipynb"].deleted_at == later
    scheduler.tick(settings, now=later + timedelta(seconds=1), stop_event=_stopped())
    assert "raises_autorun.ipynb" not in SqliteRunStore(settings.output_dir).load()
    assert not output_html(settings.output_dir, "raises_autorun.ipynb").exists()


def _stopped() -> threading.Event:
    e = threading.Event()
    e.set()
    return e


def _jupycron(settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "jupycron", "--notebooks", str(settings.notebooks),
            "--output", str(settings.output_dir), "--concurrency", str(settings.concurrency), *args]


def _overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


@pytest.mark.integration
def test_two_ticks_in_two_processes_share_locks_and_the_global_cap(settings, jc, tmp_path):
    """End to end: `python -m jupycron tick` and an in-process tick start together. Every
    notebook runs exactly once and never more than `concurrency` (2) run at once."""
    rels = [jc.copy_notebook("stamp_autorun.ipynb", settings.notebooks, f"s{i}_autorun.ipynb")
            for i in range(4)]
    jc.seen_long_ago(settings, rels)
    env = {**os.environ, "STAMP_SLEEP": "1.5"}
    log = (tmp_path / "tick.log").open("wb")
    proc = subprocess.Popen(_jupycron(settings, "tick"), env=env, stdout=log, stderr=subprocess.STDOUT)
    def other_running() -> bool:
        return any(r.status is RunStatus.RUNNING and r.pid == proc.pid
                   for e in SqliteRunStore(settings.output_dir).load().values() for r in e.runs)

    try:
        jc.wait_until(other_running, timeout=60, what="the other tick's first run")
        os.environ["STAMP_SLEEP"] = "1.5"
        mine = scheduler.tick(settings)
    finally:
        os.environ.pop("STAMP_SLEEP", None)
        assert proc.wait(120) == 0, (tmp_path / "tick.log").read_text()
    hist = SqliteRunStore(settings.output_dir).load()
    assert {rel: [r.status for r in hist[rel].runs] for rel in rels} == \
        {rel: [RunStatus.SUCCESS] for rel in rels}
    assert 1 <= len(mine) < 4  # both processes ran some of them
    stamps = [tuple(map(float, p.read_text().split()))
              for p in (settings.notebooks / "stamps").iterdir()]
    assert len(stamps) == 4
    assert _overlap(stamps) <= 2  # type: ignore[arg-type]


def _wait_kernel(settings, rel: str, jc) -> Run:
    def started() -> Run | None:
        entry = SqliteRunStore(settings.output_dir).load().get(rel)
        run = entry.runs[0] if entry and entry.runs else None
        pids = settings.notebooks / "sleeps-pids.txt"
        ok = run and run.status is RunStatus.RUNNING and run.kernel is not None \
            and pids.exists() and len(pids.read_text().split()) == 2
        return run if ok else None

    return jc.wait_until(started, timeout=60, what="the notebook's kernel and children")  # type: ignore[return-value]


def _long_sleeper(settings, jc) -> str:
    rel = jc.copy_notebook("sleeps_autorun.ipynb", settings.notebooks,
                           line='{"every": "1 minute", "MaxRuntime": 300}')
    jc.seen_long_ago(settings, [rel])
    return rel


@pytest.mark.integration
def test_kill_9_of_the_tick_is_reaped_by_the_next_tick(settings, jc, tmp_path):
    rel = _long_sleeper(settings, jc)
    proc = subprocess.Popen(_jupycron(settings, "tick"), stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "tick.log").open("wb"))
    try:
        running = _wait_kernel(settings, rel, jc)
    finally:
        proc.kill()
        proc.wait()
    children = [int(p) for p in (settings.notebooks / "sleeps-pids.txt").read_text().split()]
    assert running.pid == proc.pid
    # The next tick reaps the orphan (and, being told to stop, starts nothing new).
    scheduler.tick(settings, stop_event=_stopped())
    run = SqliteRunStore(settings.output_dir).load()[rel].runs[0]
    assert run.run_id == running.run_id
    assert run.status is RunStatus.INTERRUPTED and run.extra.get("orphaned") is True
    jc.assert_no_leftovers(run, extra_pids=[running.kernel.pid, *children])


@pytest.mark.integration
def test_daemon_sigterm_interrupts_the_run_and_exits_0(settings, jc, tmp_path):
    rel = _long_sleeper(settings, jc)
    proc = subprocess.Popen(_jupycron(settings, "daemon"), stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "daemon.log").open("wb"))
    try:
        running = _wait_kernel(settings, rel, jc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "daemon.log").read_text()
    finally:
        proc.kill()
        proc.wait()
    children = [int(p) for p in (settings.notebooks / "sleeps-pids.txt").read_text().split()]
    run = SqliteRunStore(settings.output_dir).load()[rel].runs[0]
    assert run.run_id == running.run_id and run.status is RunStatus.INTERRUPTED
    jc.assert_no_leftovers(run, extra_pids=[running.kernel.pid, *children])
    state = read_heartbeat(settings.output_dir)
    assert state["mode"] == "stopped" and state["running"] == []


@pytest.mark.integration
def test_daemon_notices_added_and_deleted_notebooks(settings, jc, monkeypatch):
    monkeypatch.setattr(scheduler, "RESCAN_S", 0.2)
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "first_autorun.ipynb")
    stop = threading.Event()
    t = threading.Thread(target=scheduler.run_forever, args=(settings, stop))
    t.start()
    try:
        history = SqliteRunStore(settings.output_dir)
        jc.wait_until(lambda: "first_autorun.ipynb" in history.load(), what="first notebook seen")
        jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "later/added_autorun.ipynb")
        jc.wait_until(lambda: "later/added_autorun.ipynb" in history.load(), what="added notebook seen")
        (settings.notebooks / "first_autorun.ipynb").unlink()
        jc.wait_until(lambda: history.load()["first_autorun.ipynb"].deleted_at, what="deletion seen")
        state = read_heartbeat(settings.output_dir)
        assert state["mode"] == "daemon" and state["next_wake"]
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert "added_autorun.ipynb" in Path(summary_file(settings.output_dir)).read_text()


def test_a_missing_notebooks_folder_marks_nothing_deleted(settings):
    history = SqliteRunStore(settings.output_dir)
    now = datetime.now(UTC)
    history.mark_deleted(["a_autorun.ipynb"], now - timedelta(days=30))
    settings.notebooks.rmdir()
    assert scheduler.tick(replace(settings, deleted_grace_s=1.0), now=now) == []
    assert history.load()["a_autorun.ipynb"].deleted_at is None


def test_idle_refresh_rewrites_the_heartbeat_but_not_an_unchanged_summary(settings, jc):
    """The daemon refreshes every rescan; summary.html is only re-rendered when something it
    shows changed (a recorded run, a notebook added) or it is older than a minute."""

    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    sched = scheduler.Scheduler(settings, "daemon", threading.Event())
    try:
        now = datetime.now(UTC)
        sched.scan(now)
        sched.refresh(now)
        page = summary_file(settings.output_dir)
        first = page.stat().st_mtime_ns
        beat_before = read_heartbeat(settings.output_dir)
        time.sleep(0.02)
        sched.refresh(now + timedelta(seconds=10))
        assert page.stat().st_mtime_ns == first  # unchanged: not rewritten
        assert read_heartbeat(settings.output_dir) != beat_before   # the heartbeat still moves
        jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, "new_autorun.ipynb")
        sched.scan(now)
        sched.refresh(now + timedelta(seconds=20))
        assert page.stat().st_mtime_ns != first and "new_autorun.ipynb" in page.read_text()
        second = page.stat().st_mtime_ns
        sched._summary_written = (sched._summary_written[0], time.monotonic() - 61)
        sched.refresh(now + timedelta(seconds=90))
        assert page.stat().st_mtime_ns != second  # older than a minute: refreshed anyway
    finally:
        sched.close()


def test_a_burst_of_changes_refreshes_the_page_once_per_interval_and_at_the_end(
        settings, monkeypatch):
    """Runs finishing one after another must not each cost a summary render: while changes
    keep coming the background refresh runs at most once per REFRESH_BURST_S, and close()
    writes the final state, which shows every run recorded during the burst."""
    monkeypatch.setattr(scheduler, "REFRESH_DELAY_S", 0.0)
    monkeypatch.setattr(scheduler, "REFRESH_BURST_S", 3600.0)  # no second refresh in the test
    rels = [f"n{i}_autorun.ipynb" for i in range(6)]
    for rel in rels:
        (settings.notebooks / rel).write_text(
            '{"cells": [{"cell_type": "code", "source": "# jupycron: {\\"every\\": \\"1 hour\\"}", '
            '"metadata": {}, "outputs": [], "execution_count": null}], "metadata": {}, '
            '"nbformat": 4, "nbformat_minor": 5}')
    sched = scheduler.Scheduler(settings, "tick", threading.Event())
    refreshes: list[bool] = []
    real_refresh = sched.refresh

    def counting(now=None, force=False):
        refreshes.append(force)
        real_refresh(now, force)

    monkeypatch.setattr(sched, "refresh", counting)
    try:
        sched.scan(T0)
        statuses = [RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.OOM,
                    RunStatus.INTERRUPTED, RunStatus.RUNNING]
        first = True
        for rel, status in zip(rels, statuses, strict=True):
            run = Run(notebook=rel, run_id=f"r-{rel.removesuffix('.ipynb')}", started_at=T0, status=status)
            sched.history.record(run)
            if status is RunStatus.RUNNING:
                sched.events.started(run)
            else:
                sched.events.finished(run)
            if first:  # the first change is written promptly
                deadline = time.monotonic() + 30
                while not refreshes and time.monotonic() < deadline:
                    time.sleep(0.01)
                first = False
    finally:
        sched.close()
    assert refreshes == [False, True]
    page = summary_file(settings.output_dir).read_text()
    for rel, state in zip(rels, ("success", "failed", "timeout", "oom", "interrupted",
                                 "running"), strict=True):
        assert f'data-path="{rel}" data-state="{state}"' in page


# --- a schedule that overflows disables only its notebook (issue 12 #3) --------------------

@pytest.mark.integration
def test_an_overflowing_schedule_disables_only_its_notebook(settings, jc):
    """``{"every": "99999 month"}`` and friends used to crash tick, list and /metrics for
    every notebook (OverflowError/ValueError out of the slot maths)."""
    from prometheus_client.parser import text_string_to_metric_families

    from jupycron.metrics import make_registry, render_metrics

    bad = {"m_autorun.ipynb": "99999 month", "w_autorun.ipynb": "1000000 week",
           "n_autorun.ipynb": "99999999999999999999 minute"}
    for rel, every in bad.items():
        jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, rel, line=json.dumps({"every": every}))
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    now = datetime.now(UTC)
    assert scheduler.tick(settings, now=now) == []
    runs = scheduler.tick(settings, now=now + timedelta(minutes=2))
    assert [(r.notebook, r.status) for r in runs] == [("ok_autorun.ipynb", RunStatus.SUCCESS)]
    page = summary_file(settings.output_dir).read_text()
    assert page.count("at most") == 3
    out = subprocess.run(_jupycron(settings, "list"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("at most") == 3 and "ok_autorun.ipynb" in out.stdout
    text = render_metrics(make_registry(settings)).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "jupycron_notebook_info" in names


def test_a_schedule_out_of_range_at_display_time_is_a_disabled_row(settings):
    """A spec that parses but has no slot at ``now`` (the year 9999 is near) is shown
    disabled with the reason; the other rows are unaffected."""
    from jupycron.status import build_rows

    late = datetime(9995, 1, 1, tzinfo=UTC)
    nbs = [Notebook("far_autorun.ipynb", 0, 0, JobSpec(every="1200 month")),
           Notebook("h_autorun.ipynb", 0, 0, JobSpec(every="1 hour"))]
    far, hourly = build_rows(settings, nbs, {}, late)
    assert far.state == "disabled" and "no slot near" in (far.reason or "")
    assert hourly.state == "never" and hourly.next_run is not None


# --- alerts never on a run's path (issue 12 #4) ---------------------------------------------

@pytest.mark.integration
def test_a_stuck_alert_channel_never_holds_a_run_worker(settings, jc, monkeypatch):
    """A run's worker only asks for an alert check: with a channel that trickles its answer
    (and a delivery allowed 10 minutes) run_job still returns at once, the next run starts,
    and stopping the scheduler (SIGTERM sets the stop event) cancels the delivery."""
    from jupycron import discovery, run_alerts, senders
    from tests.support.services import poll_until
    from tests.support.trickle import trickling_server

    monkeypatch.setattr(run_alerts, "SEND_TIMEOUT_S", 600.0)
    # what the CLI does when alert_channels is set (undone after the test)
    monkeypatch.setattr(senders, "_installed", senders.load())
    settings = replace(settings, alert_channels="slack")
    rel = jc.copy_notebook("raises_autorun.ipynb", settings.notebooks)
    nb = discovery.read_notebook(settings.notebooks / rel, rel)
    with trickling_server(every=0.3) as server:
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", server.url("/services/T0/B0/x"))
        sched = scheduler.Scheduler(settings, "daemon", threading.Event())
        try:
            first = sched.run_job(nb, Trigger.MANUAL, None)
            assert first is not None and first.status is RunStatus.FAILED
            poll_until(lambda: server.requests, timeout=30)  # the failure alert is stuck
            second = sched.run_job(nb, Trigger.MANUAL, None)
            assert second is not None and second.status is RunStatus.FAILED
            assert server.connections == 1  # still the first delivery: nothing waited on it
            sched.stop_event.set()
        finally:
            sched.close()
        assert not sched.alerts._thread.is_alive()
    told = SqliteRunStore(settings.output_dir).alert_state("run_alerts")
    slack = told["notebooks"][rel]["failing"]["channels"]["slack"]
    assert slack["told"] is None and "cancelled" in slack["last_error"]


def test_the_tick_unit_has_a_finite_start_timeout():
    """A stuck tick must not hold the timer's unit for ever (systemd starts no new tick
    while one is active): TimeoutStartSec is finite and above the default MaxRuntime."""
    import configparser

    from jupycron.config import Settings as S

    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "jupycron-tick.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(unit.read_text())
    value = parser["Service"]["TimeoutStartSec"].strip()
    assert value not in ("infinity", "0"), value
    units = {"s": 1, "min": 60, "h": 3600}
    num = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    seconds = float(num) * units[value[len(num):] or "s"]
    default = S.__dataclass_fields__["default_max_runtime_s"].default
    assert default + 60 <= seconds <= 6 * 3600


def test_a_running_row_written_before_run_kernel_existed_is_reaped_by_its_legacy_keys(tmp_path):
    """Rows of an older jupycron kept the kernel's ids as ``extra`` keys: they load as a
    typed ``run.kernel`` (KernelInfo.from_legacy_extra) and the orphan clean-up kills that
    kernel's process group and removes its socket folder."""
    import socket
    import tempfile

    import psutil

    from jupycron.models import KernelInfo

    kernel = subprocess.Popen(["sleep", "60"], start_new_session=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # the dead runner's pid
    sockets = Path(tempfile.mkdtemp(prefix="jupycron-kernel-"))
    try:
        extra = {"kernel_pid": kernel.pid, "kernel_pgid": kernel.pid,
                 "kernel_create_time": psutil.Process(kernel.pid).create_time(),
                 "sockets": str(sockets), "kernel_forked": False, "timing": {"total_s": 1.0}}
        row = Run(notebook=HOURLY.path, run_id="20240501T103000-abcdef",
                  started_at=datetime.now(UTC) - timedelta(seconds=5), pid=gone.pid,
                  host=socket.gethostname()).to_json()
        row["extra"] = extra
        doc = {"version": 1, "notebooks": {HOURLY.path: {"runs": [row]}}}
        (tmp_path / ".history.json").write_text(json.dumps(doc))
        loaded = SqliteRunStore(tmp_path).load()[HOURLY.path].runs[0]  # imports the old file
        assert loaded.kernel == KernelInfo.from_legacy_extra(extra)
        assert loaded.kernel is not None and loaded.kernel.sockets == str(sockets)
        assert loaded.extra == {"timing": {"total_s": 1.0}}  # the legacy keys are gone
        reaped = scheduler.reap_orphans(SqliteRunStore(tmp_path))
        assert [r.run_id for r in reaped] == [row["run_id"]]
        assert kernel.wait(10) == -signal.SIGKILL
        assert not sockets.exists()
        assert SqliteRunStore(tmp_path).load()[HOURLY.path].runs[0].status is RunStatus.INTERRUPTED
    finally:
        kernel.kill()
        kernel.wait()
        if sockets.is_dir():
            sockets.rmdir()


def test_legacy_extra_without_a_kernel_pid_names_no_kernel():
    from jupycron.models import KernelInfo

    assert KernelInfo.from_legacy_extra({}) is None
    assert KernelInfo.from_legacy_extra({"kernel_pid": "12"}) is None
    info = KernelInfo.from_legacy_extra({"kernel_pid": 12, "kernel_marker": "pool-1-ab"})
    assert info == KernelInfo(pid=12, pgid=12, create_time=0.0, marker="pool-1-ab")


def test_run_events_reach_every_listener_even_after_one_fails(caplog):
    from jupycron.events import RunEvents

    heard: list[tuple[str, str]] = []

    class Broken:
        def run_started(self, run: Run) -> None:
            raise RuntimeError("boom")

        def run_finished(self, run: Run) -> None:
            raise RuntimeError("boom")

    class Ear:
        def run_started(self, run: Run) -> None:
            heard.append(("started", run.run_id))

        def run_finished(self, run: Run) -> None:
            heard.append(("finished", run.run_id))

    events = RunEvents(Broken())
    events.subscribe(Ear())
    run = _run(T0, RunStatus.RUNNING)
    events.started(run)
    events.finished(run)
    assert heard == [("started", run.run_id), ("finished", run.run_id)]
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [("ERROR", True)] * 2


_SOUND_KERNEL = {"pid": 4242, "pgid": 4242, "create_time": 1.5, "forked": True,
                 "sockets": "/tmp/jupycron-kernel-ab12", "marker": "pool-1-ab",
                 "cgroup": "/sys/fs/cgroup/memory/jupycron.o-1/jupycron-x"}


@pytest.mark.parametrize("bad", [
    {"sockets": "/etc"}, {"sockets": "/tmp/jupycron-kernel-x/../.."}, {"cgroup": "/sys/fs/cgroup"},
    {"pid": "1"}, {"pgid": 0}, {"create_time": -1}, {"marker": 5}, {"forked": "yes"}, {"pid": None},
])
def test_a_typed_kernel_the_orphan_clean_up_must_not_touch_is_refused(bad):
    """The orphan clean-up signals ``kernel.pgid`` and deletes ``kernel.sockets``: a row whose
    kernel is not jupycron's is left out of the history (the same checks as the legacy keys)."""
    from jupycron.history_check import check_run

    row = _run(T0, RunStatus.RUNNING).to_json()
    row["kernel"] = _SOUND_KERNEL
    check_run(row)  # the sound one passes
    row["kernel"] = {**_SOUND_KERNEL, **bad}
    with pytest.raises(ValueError, match="kernel"):
        check_run(row)
    row["kernel"] = [1]
    with pytest.raises(ValueError, match='"kernel" must be an object'):
        check_run(row)
