"""The daemon's idle rescan reuses what did not change: parsed notebooks (scan cache), the
ledger view (re-read where the ledger changed), the due answer (until the next slot) and the rendered
summary rows. Each reuse is checked against the answer computed from scratch, and every
way a notebook can change (edit in place with the same size, replacement by rename, mtime
going backwards, deletion, enable/disable) must be noticed by the next rescan."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest

from jupycron import discovery, scheduler, status, summary
from jupycron.config import Settings
from jupycron.ledger import SqliteRunStore
from jupycron.models import JobSpec, Notebook, Run, RunStatus, Trigger
from jupycron.paths import summary_file
from tests.support.threads import readers_during_writers

T0 = datetime(2024, 5, 1, 10, 5, tzinfo=UTC)


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust files written a moment ago (normally re-read for 2 s after a change)."""
    monkeypatch.setattr(discovery, "_RACY_NS", -3600 * 10**9)


@pytest.fixture
def sched(settings: Settings, trusted: None) -> Iterator[scheduler.Scheduler]:
    s = scheduler.Scheduler(settings, "daemon", threading.Event())
    try:
        yield s
    finally:
        s.close()


def write_nb(path: Path, line: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"# jupycron: {line}\nprint(1)")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


class Counting:
    """Wraps a function and counts its calls."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


def rescan(sched: scheduler.Scheduler, cache: discovery.ScanCache, now: datetime) -> list[tuple[str, datetime]]:
    """What one daemon rescan does; the due (path, slot) pairs."""
    sched.scan(now, cache)
    return [(nb.path, slot) for nb, slot in sched.due(now)]


def scanned(sched: scheduler.Scheduler, line: str) -> tuple[Path, discovery.ScanCache]:
    """``a_autorun.ipynb`` with ``line``, scanned once at T0 into a new cache."""
    a = write_nb(sched.settings.notebooks / "a_autorun.ipynb", line)
    cache = discovery.ScanCache()
    rescan(sched, cache, T0)
    return a, cache


def rescanned_to(sched: scheduler.Scheduler, cache: discovery.ScanCache, every: str,
                 wake: datetime) -> None:
    """Rescan 10 s after T0: ``a_autorun.ipynb`` now runs ``every`` and the next wake is ``wake``."""
    rescan(sched, cache, T0 + timedelta(seconds=10))
    assert specs(sched) == {"a_autorun.ipynb": every}
    assert sched.next_wake == wake


def specs(sched: scheduler.Scheduler) -> dict[str, str | None]:
    return {n.path: (n.spec.every or n.spec.cron) if n.spec else n.disabled_reason
            for n in sched.notebooks}


# --- the idle rescan does no work --------------------------------------------------------

def test_an_unchanged_rescan_reuses_the_history_the_due_answer_and_the_page(
        sched: scheduler.Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write_nb(sched.settings.notebooks / f"t{i}" / f"n{i}_autorun.ipynb", '{"every": "1 hour"}')
    cache = discovery.ScanCache()
    assert rescan(sched, cache, T0) == []
    sched.refresh(T0)
    due_runs = Counting(scheduler.due_runs)
    build_rows = Counting(status.build_rows)
    monkeypatch.setattr(scheduler, "due_runs", due_runs)
    monkeypatch.setattr(status, "build_rows", build_rows)
    parses, generation, first = sched.history.parses, sched.notebooks_generation, sched.notebooks
    for k in range(1, 6):
        now = T0 + timedelta(seconds=10 * k)
        assert rescan(sched, cache, now) == []
        sched.refresh(now)
    assert sched.next_wake == T0.replace(minute=0) + timedelta(hours=1)
    assert (due_runs.calls, build_rows.calls, sched.history.parses) == (0, 0, parses)
    assert sched.notebooks_generation == generation and all(
        a is b for a, b in zip(sched.notebooks, first, strict=True))
    # the slot passes: the due rule runs again and the notebooks are due
    slot = T0.replace(minute=0) + timedelta(hours=1)
    assert sorted(p for p, _ in rescan(sched, cache, slot)) == sorted(specs(sched))
    assert due_runs.calls == 1 and sched.next_wake == slot + timedelta(hours=1)


# --- notebooks that change are noticed ---------------------------------------------------

def test_an_in_place_edit_with_the_same_size_and_mtime_is_noticed(sched: scheduler.Scheduler) -> None:
    a, cache = scanned(sched, '{"every": "30 minute"}')
    assert sched.next_wake == T0.replace(minute=30)
    st = a.stat()
    with open(a, "r+b") as f:  # same file, same size: only the content (and ctime) change
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"30 minute", b"20 minute"))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = a.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    rescanned_to(sched, cache, "20 minute", T0.replace(minute=20))


def test_a_notebook_replaced_by_rename_is_noticed(sched: scheduler.Scheduler) -> None:
    a, cache = scanned(sched, '{"every": "30 minute"}')
    st = a.stat()
    tmp = write_nb(sched.settings.notebooks / ".a_autorun.ipynb.tmp", '{"every": "20 minute"}')
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tmp.stat().st_size == st.st_size
    os.replace(tmp, a)  # what editors and atomic writers do: a new inode
    rescanned_to(sched, cache, "20 minute", T0.replace(minute=20))


def test_an_edit_whose_mtime_goes_backwards_is_noticed(sched: scheduler.Scheduler) -> None:
    a, cache = scanned(sched, '{"every": "30 minute"}')
    st = a.stat()
    write_nb(a, '{"every": "1 hour"}')
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))  # e.g. restored from a backup
    rescanned_to(sched, cache, "1 hour", T0.replace(minute=0) + timedelta(hours=1))


def test_a_deleted_notebook_is_marked_and_leaves_the_agenda(sched: scheduler.Scheduler) -> None:
    nbs = sched.settings.notebooks
    write_nb(nbs / "a_autorun.ipynb", '{"every": "30 minute"}')
    write_nb(nbs / "b_autorun.ipynb", '{"every": "20 minute"}')
    cache = discovery.ScanCache()
    rescan(sched, cache, T0)
    assert sched.next_wake == T0.replace(minute=20)
    (nbs / "b_autorun.ipynb").unlink()
    later = T0 + timedelta(seconds=10)
    rescan(sched, cache, later)
    assert specs(sched) == {"a_autorun.ipynb": "30 minute"}
    assert sched.next_wake == T0.replace(minute=30)
    assert sched.history.load()["b_autorun.ipynb"].deleted_at == later
    assert SqliteRunStore(sched.output).load()["b_autorun.ipynb"].deleted_at == later
    assert len(cache) == 1


def test_disabling_and_enabling_in_the_line_is_noticed(sched: scheduler.Scheduler) -> None:
    a, cache = scanned(sched, '{"every": "30 minute"}')
    write_nb(a, '{"every": "30 minute", "enabled": false}')
    rescan(sched, cache, T0 + timedelta(seconds=10))
    assert specs(sched) == {"a_autorun.ipynb": "30 minute"} and not sched.notebooks[0].schedulable
    assert sched.next_wake is None
    write_nb(a, '{"every": "30 minute"}')
    # enabled again after its slot passed while disabled: that slot is caught up
    assert rescan(sched, cache, T0.replace(minute=40)) == [("a_autorun.ipynb", T0.replace(minute=30))]


def test_a_run_recorded_by_another_process_changes_the_due_answer(sched: scheduler.Scheduler) -> None:
    _, cache = scanned(sched, '{"every": "30 minute"}')
    slot = T0.replace(minute=30)
    assert rescan(sched, cache, slot + timedelta(seconds=5)) == [("a_autorun.ipynb", slot)]
    SqliteRunStore(sched.output).record(Run(notebook="a_autorun.ipynb", run_id="x", started_at=slot,
                                     status=RunStatus.SUCCESS, slot=slot))
    assert rescan(sched, cache, slot + timedelta(seconds=15)) == []


# --- the cached answers equal the ones computed from scratch ----------------------------

SPECS = [
    JobSpec(every="5 minute"), JobSpec(every="1 hour"), JobSpec(every="1 day"),
    JobSpec(every="1 month"), JobSpec(cron="30 2 * * *", tz="Europe/Berlin"),
    JobSpec(cron="0 * * * *", tz="America/New_York"), JobSpec(cron="15 1 * * *"),
    JobSpec(every="1 hour", enabled=False),
]


def test_due_and_next_wake_match_the_uncached_rule_across_dst_and_downtime(
        sched: scheduler.Scheduler) -> None:
    """Random walk over two days around the spring DST change: the scheduler's due answer
    and next wake always equal :func:`due_runs` / :func:`next_wake` on fresh data, while
    runs are recorded, notebooks come and go, and the daemon is down for hours."""
    rng = random.Random(7)
    start = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)
    pool = [Notebook(f"n{i}_autorun.ipynb", 0.0, 0, spec, None if spec.enabled else "disabled")
            for i, spec in enumerate(SPECS)]
    history = SqliteRunStore(sched.output, keep=6)  # short histories: hundreds of writes follow
    history.mark_deleted([n.path for n in pool], start - timedelta(days=1))
    sched.notebooks = list(pool)
    now = start
    recomputed = 0
    for step in range(300):
        now += timedelta(seconds=rng.choice([1, 10, 10, 10, 60, 290, 3600, 4 * 3600]))
        if step % 37 == 0:  # a notebook comes or goes
            sched.notebooks = sorted(rng.sample(pool, rng.randint(1, len(pool))), key=lambda n: n.path)
        before = sched._agenda
        got = sched.due(now)
        recomputed += sched._agenda is not before
        fresh = SqliteRunStore(sched.output).load()
        assert got == scheduler.due_runs(sched.notebooks, fresh, now), now
        assert sched.next_wake == scheduler.next_wake(sched.notebooks, now), now
        for nb, slot in got:
            if rng.random() < 0.8:  # most due runs happen (the rest wait, as if locked elsewhere)
                status = rng.choice([RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED])
                history.record(Run(notebook=nb.path, run_id=f"{step}-{nb.path}", started_at=now,
                                   status=status, trigger=Trigger.SCHEDULE, slot=slot))
    assert 0 < recomputed < 300  # the cache was used, and also invalidated


# --- the history cache -------------------------------------------------------------------

def test_the_ledger_view_is_read_once_per_change(settings: Settings) -> None:
    h = SqliteRunStore(settings.output_dir)
    assert h.load() == {}
    h.mark_deleted(["a_autorun.ipynb"], T0)
    h.load()
    parses, generation = h.parses, h.generation
    h.load()
    first = h.load()
    assert h.parses == parses and h.generation == generation   # unchanged: no read at all
    first.pop("a_autorun.ipynb")  # each load is a new dict
    assert "a_autorun.ipynb" in h.load()
    assert h.running_runs() == [] and h.earliest_deleted() is None
    SqliteRunStore(settings.output_dir).record(Run(notebook="a_autorun.ipynb", run_id="r",
                                                   started_at=T0))
    assert [r.run_id for r in h.running_runs()] == ["r"] and h.generation != generation
    SqliteRunStore(settings.output_dir).mark_deleted([], T0 + timedelta(hours=1))
    assert h.earliest_deleted() == T0 + timedelta(hours=1)
    assert h.parses == parses      # other processes' writes: only their notebooks re-read


def test_the_ledger_view_rereads_only_changed_notebooks(settings: Settings) -> None:
    """A run's start and end re-read the one notebook they changed (no read of the whole
    ledger per run), whoever wrote them; the view always equals a read from scratch, and
    after a purge the whole ledger is read again."""
    h = SqliteRunStore(settings.output_dir)
    rels = [f"n{i}_autorun.ipynb" for i in range(4)]
    for i, rel in enumerate(rels):
        h.record(Run(notebook=rel, run_id=f"old-{i}", started_at=T0, status=RunStatus.SUCCESS))
    h.load()
    parses, generation = h.parses, h.generation
    for i, rel in enumerate(rels):
        run = Run(notebook=rel, run_id=f"new-{i}", started_at=T0 + timedelta(minutes=1),
                  trigger=Trigger.SCHEDULE, slot=T0)
        h.record(run)
        assert h.load() == SqliteRunStore(settings.output_dir).load()
        run.status, run.finished_at = RunStatus.FAILED, T0 + timedelta(minutes=2)
        assert h.load()[rel].runs[0].status is RunStatus.RUNNING  # not the caller's object
        h.record(run)
        assert h.load() == SqliteRunStore(settings.output_dir).load()
    assert h.parses == parses and h.generation == generation + 2 * len(rels)
    SqliteRunStore(settings.output_dir).record(Run(notebook=rels[0], run_id="elsewhere",
                                                   started_at=T0))
    assert h.load() == SqliteRunStore(settings.output_dir).load() and h.parses == parses
    SqliteRunStore(settings.output_dir).mark_deleted(rels[1:], T0)
    SqliteRunStore(settings.output_dir).purge(T0 + timedelta(days=30), grace=0)
    assert h.load() == SqliteRunStore(settings.output_dir).load() and h.parses == parses + 1
    assert rels[0] not in h.load()


def test_cached_history_shared_by_threads_matches_the_file(settings: Settings) -> None:
    """Run threads record through one cached history while others load it and another
    History writes too: nothing is lost and the final view is the file's."""
    h = SqliteRunStore(settings.output_dir)
    other = SqliteRunStore(settings.output_dir)

    def reader(stop: threading.Event) -> None:
        while not stop.is_set():
            h.running_runs()
            h.load()

    def writer(w: int, hist: SqliteRunStore) -> None:
        for i in range(12):
            run = Run(notebook=f"n{w}_autorun.ipynb", run_id=f"w{w}-{i}",
                      started_at=T0 + timedelta(minutes=i))
            hist.record(run)
            run.status = RunStatus.SUCCESS
            hist.record(run)

    readers_during_writers(reader, 2, writer, [(0, h), (1, h), (2, h), (3, other)])
    fresh = SqliteRunStore(settings.output_dir).load()
    assert {r.run_id for e in fresh.values() for r in e.runs} == {
        f"w{w}-{i}" for w in range(4) for i in range(12)}
    assert h.load() == fresh and h.running_runs() == []


def test_purge_waits_for_the_grace_period(sched: scheduler.Scheduler) -> None:
    nbs = sched.settings.notebooks
    write_nb(nbs / "a_autorun.ipynb", '{"every": "30 minute"}')
    cache = discovery.ScanCache()
    rescan(sched, cache, T0)
    (nbs / "a_autorun.ipynb").unlink()
    rescan(sched, cache, T0 + timedelta(seconds=10))
    grace = timedelta(seconds=sched.settings.deleted_grace_s)
    rescan(sched, cache, T0 + timedelta(seconds=10) + grace)  # not older than the grace yet
    assert "a_autorun.ipynb" in SqliteRunStore(sched.output).load()
    rescan(sched, cache, T0 + timedelta(seconds=11) + grace)
    assert "a_autorun.ipynb" not in SqliteRunStore(sched.output).load()


# --- summary.html ------------------------------------------------------------------------

def test_restamp_gives_the_page_a_fresh_render_would(settings: Settings) -> None:
    nbs = [Notebook("a_autorun.ipynb", 0.0, 0, JobSpec(every="1 hour")),
           Notebook("b_autorun.ipynb", 0.0, 0, None, "no jupycron line")]
    history = {"a_autorun.ipynb": SqliteRunStore(settings.output_dir).get("a_autorun.ipynb")}
    later = T0 + timedelta(minutes=20, seconds=7)
    page = summary.render_summary(status.build_rows(settings, nbs, history, T0), T0, "rlimit")
    fresh = summary.render_summary(status.build_rows(settings, nbs, history, later), later, "rlimit")
    assert page != fresh
    assert summary.restamp_summary(page, later) == fresh
    assert summary.restamp_summary("<html>no stamp</html>", later) is None


def test_the_page_is_rendered_again_once_a_slot_passes(sched: scheduler.Scheduler,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, cache = scanned(sched, '{"every": "1 hour", "enabled": true}')
    sched.refresh(T0)
    build_rows = Counting(status.build_rows)
    monkeypatch.setattr(status, "build_rows", build_rows)
    page = summary_file(sched.output)

    def a_minute_later(now: datetime) -> str:
        sched._summary_written = (sched._summary_written[0], sched._summary_written[1] - 61)
        sched.refresh(now)
        return page.read_text()

    text = a_minute_later(T0 + timedelta(minutes=30))
    assert build_rows.calls == 0 and "2024-05-01T10:35:00+00:00" in text  # restamped only
    slot = T0.replace(minute=0) + timedelta(hours=1)
    text = a_minute_later(slot + timedelta(seconds=1))  # the next run shown is now due
    assert build_rows.calls == 1 and "due now" in text
