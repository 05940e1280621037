"""A full disk under the outputs folder (a real tmpfs of 4 MB, filled by a filler
file): failing writes are logged once per episode, a run whose outcome could not be written
is recorded once the disk frees, and the notebook's later slots run."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import recording, scheduler
from jupycron.exceptions import HistoryError
from jupycron.ledger import SqliteRunStore
from jupycron.models import Run, RunStatus, Trigger


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.name.startswith("jupycron")]


def test_write_failures_log_once_per_episode_then_once_a_minute(caplog):
    clock = FakeClock()
    failures = recording.WriteFailures("the outputs folder /x", clock=clock)
    caplog.set_level(logging.DEBUG, logger="jupycron")
    full = OSError(errno.ENOSPC, "No space left on device")
    for _ in range(121):             # two minutes of one retry a second, two kinds of write
        failures.failed("heartbeat", full)
        failures.failed("history", full)
        clock.t += 1.0
    lines = [r for r in caplog.records if r.name == "jupycron.recording"]
    assert len(_tracebacks(caplog)) == 1 and lines[0].exc_info
    assert len(lines) == 3           # the first failure, then one line a minute
    assert "heartbeat, history" in lines[1].getMessage() and "121 failed" in lines[1].getMessage()
    failures.ok("heartbeat")         # still failing: no recovery line yet
    assert len(caplog.records) == 3 and failures.failing == {"history": str(full)}
    failures.ok("history")
    assert "work again" in caplog.records[-1].getMessage()
    assert "242 failed write(s) in 121 s" in caplog.records[-1].getMessage()
    failures.ok("history")           # no episode: nothing
    assert len(caplog.records) == 4
    failures.failed("history", full)  # a new episode: its traceback again
    assert len(_tracebacks(caplog)) == 2 and failures.episodes == 2


class _Lines(logging.Handler):
    """Keeps (fake clock time, record)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.lines: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.clock.t, record))


_EVENTS = st.lists(st.tuples(st.sampled_from(["fail", "ok"]),
                             st.sampled_from(["heartbeat", "history", "summary page"]),
                             st.floats(0, 200)), max_size=200)


@given(_EVENTS)
def test_write_failures_episodes_hold_for_any_sequence(events):
    clock = FakeClock()
    logger = logging.getLogger("test.write_failures")
    logger.propagate, logger.level = False, logging.DEBUG
    handler = _Lines(clock)
    logger.handlers = [handler]
    failures = recording.WriteFailures("/x", clock=clock, logger=logger)
    failing: set[str] = set()
    episodes = 0
    for op, kind, dt in events:
        clock.t += dt
        if op == "fail":
            episodes += not failing
            failing.add(kind)
            failures.failed(kind, OSError(errno.ENOSPC, "No space left on device"))
        else:
            failing.discard(kind)
            failures.ok(kind)
        assert set(failures.failing) == failing
    starts = [t for t, r in handler.lines if r.exc_info]
    recovered = [t for t, r in handler.lines if "work again (recovered" in r.getMessage()]
    assert len(starts) == episodes == failures.episodes
    assert len(recovered) == episodes - (1 if failing else 0)
    # every line is an episode's start, its end, or at least a minute after the last line
    previous = None
    for t, r in handler.lines:
        if not r.exc_info and "still cannot" in r.getMessage():
            assert previous is not None and t - previous >= recording.LOG_EVERY_S
        previous = None if "work again (recovered" in r.getMessage() else t


def test_a_running_row_of_this_process_that_it_no_longer_owns_is_reaped(tmp_path):
    history = SqliteRunStore(tmp_path / "out")
    now = datetime.now(UTC)

    def row(run_id: str) -> Run:
        return Run("a_autorun.ipynb", run_id, now, RunStatus.RUNNING, trigger=Trigger.SCHEDULE,
                   slot=now, pid=os.getpid(), host=socket.gethostname())

    history.record(row("20240501T103000-aaaaaa"))
    history.record(row("20240501T103000-bbbbbb"))
    recording.claim("20240501T103000-bbbbbb")   # still being run / recorded by this process
    try:
        reaped = scheduler.reap_orphans(history)
    finally:
        recording.release("20240501T103000-bbbbbb")
    assert [r.run_id for r in reaped] == ["20240501T103000-aaaaaa"]
    runs = {r.run_id: r for r in history.load()["a_autorun.ipynb"].runs}
    assert runs["20240501T103000-aaaaaa"].status is RunStatus.INTERRUPTED
    assert "could not be written" in (runs["20240501T103000-aaaaaa"].error_value or "")
    assert runs["20240501T103000-bbbbbb"].status is RunStatus.RUNNING


# --- a real full filesystem ----------------------------------------------------------------

def fill(folder: Path) -> Path:
    """Fill ``folder``'s filesystem to the last byte with ``folder/filler``."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="No space left"):
        (folder / "probe").write_bytes(b"x")
    return filler


def gated_notebook(settings, gate: Path) -> str:
    """A notebook (every minute) that runs until ``gate`` exists."""
    rel = "gated_autorun.ipynb"
    src = ('# jupycron: {"every": "1 minute", "MaxRuntime": 120}\n'
           "import pathlib, time\n"
           f"while not pathlib.Path({str(gate)!r}).exists():\n"
           "    time.sleep(0.05)\n"
           "print('through the gate')\n")
    nbformat.write(new_notebook(cells=[new_code_cell(src)]), settings.notebooks / rel)
    return rel


@pytest.mark.integration
@pytest.mark.parametrize("pool", [0, 1], ids=["fresh-kernel", "pooled-kernel"])
def test_a_full_disk_before_a_slot_logs_one_traceback_and_the_run_starts_once_it_frees(
        small_disk, tmp_path, jc, caplog, pool):
    settings = jc.make_settings(tmp_path, pool_size=pool)
    assert settings.output_dir == small_disk
    rel = jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, line='{"every": "1 minute"}')
    jc.seen_long_ago(settings, [rel])
    sched = scheduler.Scheduler(settings, "daemon")
    try:
        sched.start_pool()
        sched.scan(datetime.now(UTC))
        [(nb, slot)] = sched.due(datetime.now(UTC))
        if pool:
            jc.wait_until(lambda: sched.pool.stats()["idle"], what="a pooled kernel")
        filler = fill(small_disk)
        caplog.set_level(logging.INFO)
        caplog.clear()
        for _ in range(5):          # a daemon retrying for a while
            sched.refresh(force=True)
            sched.scan(datetime.now(UTC))
            assert sched.run_job(nb, Trigger.SCHEDULE, slot) is None
        assert len(_tracebacks(caplog)) == 1, [r.getMessage() for r in _tracebacks(caplog)]
        assert sched.write_failures.failing.keys() >= {"heartbeat", "summary page", "history"}
        assert SqliteRunStore(settings.output_dir).load()[rel].runs == []   # nothing half-recorded

        filler.unlink()
        run = jc.wait_until(lambda: sched.run_job(nb, Trigger.SCHEDULE, slot), timeout=60,
                            what="the run to start once the disk has room")
        assert run.status is RunStatus.SUCCESS and run.slot == slot
        sched.refresh(force=True)
        assert sched.write_failures.failing == {}
        recovered = [r for r in caplog.records if "work again (recovered" in r.getMessage()]
        assert len(recovered) == 1
        assert len(_tracebacks(caplog)) == 1
    finally:
        sched.close()


@pytest.mark.integration
def test_an_outcome_the_full_disk_refused_is_recorded_when_it_frees_and_later_slots_run(
        small_disk, tmp_path, jc, caplog, monkeypatch):
    monkeypatch.setattr(scheduler, "RESCAN_S", 0.2)
    caplog.set_level(logging.INFO)
    settings = jc.make_settings(tmp_path, pool_size=0)
    gate = tmp_path / "gate"
    rel = gated_notebook(settings, gate)
    jc.seen_long_ago(settings, [rel])
    history = SqliteRunStore(settings.output_dir)
    stop = threading.Event()
    daemon = threading.Thread(target=scheduler.run_forever, args=(settings, stop))
    daemon.start()
    try:
        def running() -> Run | None:  # the runner's RUNNING row with its kernel (not the claim's)
            runs = history.load().get(rel)
            latest = runs.latest if runs else None
            return latest if latest and latest.status is RunStatus.RUNNING \
                and latest.kernel is not None else None

        first = jc.wait_until(running, timeout=60, what="the run to start")
        filler = fill(small_disk)
        gate.touch()   # the run ends while the disk is full: its outcome cannot be written
        jc.wait_until(lambda: any("could not be written to the history" in r.getMessage()
                                  for r in caplog.records), timeout=60, what="the failed write")
        assert history.load()[rel].latest.status is RunStatus.RUNNING
        filler.unlink()
        def first_run() -> Run:  # by id: a minute boundary may start the next slot's run
            return next(r for r in history.load()[rel].runs if r.run_id == first.run_id)

        jc.wait_until(lambda: first_run().status is not RunStatus.RUNNING,
                      timeout=60, what="the outcome to be recorded once the disk frees")
        done = first_run()
        # the cells ran but the page could not be written on the full disk: no page, no
        # success (issue 15) - the outcome is recorded as such once the disk frees
        assert done.status is RunStatus.FAILED and done.error_name == "ExportError"
        assert "No space left on device" in done.extra["html_error"]
        assert done.slot == first.slot and done.finished_at is not None
        assert len(_tracebacks(caplog)) == 1, [r.getMessage() for r in _tracebacks(caplog)]
        assert any("recorded after" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        daemon.join(60)
        gate.touch()
    assert not daemon.is_alive()
    # The notebook's next slot runs (a tick with the clock at that slot).
    runs = scheduler.tick(settings, now=first.slot + timedelta(minutes=1, seconds=1))
    assert [(r.notebook, r.status) for r in runs] == [(rel, RunStatus.SUCCESS)]
    assert runs[0].slot == first.slot + timedelta(minutes=1)


def test_a_history_that_cannot_be_written_raises_history_error(small_disk, caplog):
    history = SqliteRunStore(small_disk)
    (small_disk / "a_autorun.html").write_text("<html>the run's page</html>")
    fill(small_disk)
    run = Run("a_autorun.ipynb", "20240501T103000-aaaaaa", datetime.now(UTC), RunStatus.SUCCESS,
              output="a_autorun.html")
    with pytest.raises(HistoryError, match=r"run ledger .*disk is full"):
        history.record(run)
    assert [r.levelname for r in caplog.records] == ["WARNING"]   # the kept copy failed
    caplog.clear()
    with pytest.raises(HistoryError, match=r"run ledger .*disk is full"):
        history.record(run, retry=True)    # a retry: that warning is not repeated
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.integration
def test_run_now_whose_outcome_cannot_be_written_fails_and_its_row_is_reaped(
        small_disk, tmp_path, jc, caplog):
    settings = jc.make_settings(tmp_path, pool_size=0)
    gate = tmp_path / "gate"
    rel = gated_notebook(settings, gate)
    history = SqliteRunStore(settings.output_dir)
    result: list[BaseException | Run] = []

    def run_now() -> None:
        try:
            result.append(scheduler.run_now(settings, rel))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    t = threading.Thread(target=run_now)
    t.start()
    try:
        # The runner's own RUNNING row, with its kernel: the claim's row comes first, and a
        # disk filled before the runner rewrote it would test "a run that never started".
        row = jc.wait_until(lambda: (e := history.load().get(rel)) and e.latest
                            and e.latest.kernel is not None and e.latest, timeout=60,
                            what="the RUNNING row with its kernel")
        assert row.status is RunStatus.RUNNING and row.pid == os.getpid()
        filler = fill(small_disk)
        gate.touch()
        t.join(60)
    finally:
        gate.touch()
        t.join(60)
    [exc] = result
    assert isinstance(exc, HistoryError) and "could not be written" in str(exc)
    assert any("gave up writing its outcome" in r.getMessage() for r in caplog.records)
    filler.unlink()
    # The row was written by this (live) process, which no longer owns the run: reaped.
    reaped = scheduler.reap_orphans(SqliteRunStore(settings.output_dir))
    assert [r.run_id for r in reaped] == [row.run_id]
    assert history.load()[rel].latest.status is RunStatus.INTERRUPTED


@pytest.mark.integration
def test_a_tick_on_a_full_disk_fails_visibly_and_runs_once_it_frees(small_disk, tmp_path, jc):
    settings = jc.make_settings(tmp_path, pool_size=0)
    rel = jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, line='{"every": "1 minute"}')
    jc.seen_long_ago(settings, [rel])
    filler = fill(small_disk)
    with pytest.raises(HistoryError, match="cannot be written"):
        scheduler.tick(settings)
    assert SqliteRunStore(settings.output_dir).load()[rel].runs == []
    filler.unlink()
    assert [r.status for r in scheduler.tick(settings)] == [RunStatus.SUCCESS]
