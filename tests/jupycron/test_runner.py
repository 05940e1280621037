"""The runner against real kernels: every outcome provoked for real, nothing left behind.

Most notebooks run once, together, in a module fixture (like a tick would), and each test
checks one outcome; runs that need a hand on them (stop, delete mid-run) run on their own.
The batch runs twice: on fresh kernels and on kernels from a :class:`jupycron.kernels.KernelPool`
(started at the maximum cap, lowered to the notebook's at hand-out), so every outcome (oom,
timeout, crashed, failed) holds with the pool on.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupycron import discovery, execute, limits, runner
from jupycron.events import RunEvents
from jupycron.kernels import KernelPool
from jupycron.ledger import SqliteRunStore
from jupycron.models import Run, RunStatus, Trigger
from jupycron.paths import output_html

WEIRD = "sub dir/we'ird \"q\"; $(touch pwned) `touch pwned2` ü_autorun.ipynb"
BATCH = ["ok_autorun.ipynb", "raises_autorun.ipynb", "sysexit0_autorun.ipynb",
         "exit3_autorun.ipynb", "sleeps_autorun.ipynb", "memhog_autorun.ipynb",
         "hugeoutput_autorun.ipynb", WEIRD]


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=["fresh", "pooled"])
def batch(request, tmp_path_factory, jc):
    """Run every fixture notebook once, three at a time; map rel -> (Run, statuses seen)."""
    tmp = tmp_path_factory.mktemp("runner")
    settings = jc.make_settings(tmp)
    for name in BATCH[:-1]:
        jc.copy_notebook(name, settings.notebooks)
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks, WEIRD)
    digests = {rel: _digest(settings.notebooks / rel) for rel in BATCH}
    history = SqliteRunStore(settings.output_dir)
    seen: dict[str, list[tuple[RunStatus, int | None]]] = {rel: [] for rel in BATCH}

    kernels = KernelPool(settings, 3).start() if request.param == "pooled" else None

    def one(rel: str) -> Run:
        nb = discovery.read_notebook(settings.notebooks / rel, rel)
        return runner.run_notebook(settings, nb, Trigger.SCHEDULE, None, history,
                                   events=RunEvents(_Seen(seen[rel])), kernels=kernels)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(execute, "MAX_OUTPUT_BYTES", 256 * 1024)
        mp.chdir(tmp)
        try:
            with ThreadPoolExecutor(3) as threads:
                runs = dict(zip(BATCH, threads.map(one, BATCH), strict=True))
        finally:
            if kernels is not None:
                kernels.close()
    return {"settings": settings, "runs": runs, "seen": seen, "digests": digests,
            "history": history.load(), "tmp": tmp, "pooled": request.param == "pooled"}


class _Seen:
    """A run-event listener keeping (status, runner pid) of each event."""

    def __init__(self, seen: list[tuple[RunStatus, int | None]]) -> None:
        self.seen = seen

    def run_started(self, run: Run) -> None:
        self.seen.append((run.status, run.pid))

    def run_finished(self, run: Run) -> None:
        self.seen.append((run.status, run.pid))


def _no_leftovers(jc, run: Run, extra_pids=()) -> None:
    """The shared check, plus the pooled kernel's own marker."""
    jc.assert_no_leftovers(run, extra_pids=extra_pids)
    if marker := (run.kernel.marker if run.kernel else None):
        jc.wait_until(lambda: not jc.marked_processes(marker), timeout=10,
                      what=f"processes marked {marker} to be gone")


@pytest.mark.integration
def test_every_run_used_the_kind_of_kernel_asked_for(batch):
    for rel, run in batch["runs"].items():
        assert run.extra["timing"]["pooled"] is batch["pooled"], rel
        assert bool(run.kernel and run.kernel.marker) is batch["pooled"], rel


def _html(batch, rel: str) -> str:
    return output_html(batch["settings"].output_dir, rel).read_text(encoding="utf-8")


@pytest.mark.integration
def test_success_sees_autorun_and_cwd(batch, jc):
    run = batch["runs"]["ok_autorun.ipynb"]
    settings = batch["settings"]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    probe = json.loads((settings.notebooks / "ok-probe.json").read_text())
    assert probe["autorun"] == "1"
    assert Path(probe["cwd"]) == settings.notebooks  # the kernel ran in the notebooks folder
    assert probe["notebook"] in ("ok_autorun.ipynb", WEIRD)  # both write the probe
    assert probe["state_dir"] == str(settings.output_dir / ".state")  # alert sent-logs live here
    assert run.memory_limit == limits.detect_method()
    assert run.peak_mem_mb and run.peak_mem_mb > 1
    assert run.duration_s and run.duration_s > 0
    assert run.output == "ok_autorun.html"
    _no_leftovers(jc, run)


@pytest.mark.integration
def test_running_row_is_written_first_and_replaced(batch):
    import os

    for rel, seen in batch["seen"].items():
        assert seen[0] == (RunStatus.RUNNING, os.getpid()), rel
        assert seen[-1][0] is batch["runs"][rel].status
    entry = batch["history"]["raises_autorun.ipynb"]
    assert [r.status for r in entry.runs] == [RunStatus.FAILED]  # upserted, not appended


@pytest.mark.integration
def test_notebook_files_are_never_modified(batch):
    for rel, digest in batch["digests"].items():
        assert _digest(batch["settings"].notebooks / rel) == digest, rel


@pytest.mark.integration
def test_html_is_offline_and_self_contained(batch):
    html = _html(batch, "ok_autorun.ipynb")
    assert "rich output" in html and "probe written" in html
    assert "<style" in html  # the theme CSS is embedded
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:)?//([^"'\s>]+)""", html)
    # The only external reference is the link written in the notebook's own markdown.
    assert [host for _, host in external] == ["ooni.org/"]
    assert not re.search(r"<script[^>]+src=", html)
    assert "cdnjs.cloudflare.com" not in html and "cdn.jsdelivr.net" not in html
    assert html.count("<!DOCTYPE html>") == 1


@pytest.mark.integration
def test_failed_runs_every_cell_and_keeps_first_error(batch, jc):
    run = batch["runs"]["raises_autorun.ipynb"]
    assert run.status is RunStatus.FAILED
    assert (run.error_name, run.error_value, run.error_cell) == ("ValueError", "boom from cell 2", 2)
    html = _html(batch, "raises_autorun.ipynb")
    assert "ran after the error" in html and "second error, not the first" in html
    _no_leftovers(jc, run)


@pytest.mark.integration
def test_sys_exit_zero_is_success_and_stops(batch):
    run = batch["runs"]["sysexit0_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS
    assert run.extra["sys_exit"] == "0"
    html = _html(batch, "sysexit0_autorun.ipynb")
    assert "before exit" in html
    assert "STALE OUTPUT" not in html  # saved outputs of cells that did not run are cleared
    assert batch["history"]["sysexit0_autorun.ipynb"].last_success_output


@pytest.mark.integration
def test_os_exit_is_crashed(batch, jc):
    run = batch["runs"]["exit3_autorun.ipynb"]
    assert run.status is RunStatus.CRASHED
    assert run.error_name == "KernelDied" and "code 3" in run.error_value
    assert run.error_cell == 2
    assert "about to die" in _html(batch, "exit3_autorun.ipynb")
    _no_leftovers(jc, run)


@pytest.mark.integration
def test_timeout_kills_kernel_and_grandchildren(batch, jc):
    run = batch["runs"]["sleeps_autorun.ipynb"]
    assert run.status is RunStatus.TIMEOUT
    assert run.error_name == "Timeout" and run.extra["max_runtime_s"] == 3
    pids = [int(p) for p in (batch["settings"].notebooks / "sleeps-pids.txt").read_text().split()]
    assert len(pids) == 2  # one in the kernel's group, one that left it with setsid
    _no_leftovers(jc, run, extra_pids=pids)
    assert not any(jc.alive(p) for p in pids)
    assert "Timeout: MaxRuntime of 3 s exceeded" in _html(batch, "sleeps_autorun.ipynb")


@pytest.mark.integration
def test_memory_hog_is_oom(batch, jc):
    run = batch["runs"]["memhog_autorun.ipynb"]
    assert run.status is RunStatus.OOM, (run.error_name, run.error_value)
    assert run.extra["max_mem_mb"] == 200
    if run.memory_limit in ("cgroup-v1", "cgroup-v2"):
        assert run.peak_mem_mb is not None and run.peak_mem_mb <= 201
    _no_leftovers(jc, run)


@pytest.mark.integration
def test_huge_output_is_truncated(batch):
    run = batch["runs"]["hugeoutput_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS
    assert run.extra["output_truncated"] is True
    path = output_html(batch["settings"].output_dir, "hugeoutput_autorun.ipynb")
    assert path.stat().st_size < 1_000_000  # 1.5 MB printed, 256 KB kept
    assert "output truncated" in path.read_text(encoding="utf-8")


@pytest.mark.integration
def test_hostile_file_name_runs_without_a_shell(batch):
    run = batch["runs"][WEIRD]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    assert output_html(batch["settings"].output_dir, WEIRD).is_file()
    tmp = batch["tmp"]
    assert not list(tmp.rglob("pwned*")) and not Path("pwned").exists()


@pytest.mark.integration
def test_notebook_deleted_mid_run(settings, monkeypatch, jc):
    monkeypatch.setenv("STAMP_SLEEP", "2")
    rel = jc.copy_notebook("stamp_autorun.ipynb", settings.notebooks)
    history = SqliteRunStore(settings.output_dir)
    nb = discovery.read_notebook(settings.notebooks / rel, rel)
    result: list[Run] = []
    t = threading.Thread(target=lambda: result.append(runner.run_notebook(settings, nb, history=history)))
    t.start()
    def kernel_started() -> bool:
        entry = history.load().get(rel)
        return bool(entry and entry.runs and entry.runs[0].kernel)

    jc.wait_until(kernel_started, what="the kernel to start")
    (settings.notebooks / rel).unlink()
    t.join(60)
    run = result[0]
    assert run.status is RunStatus.SUCCESS  # the notebook was read before it vanished
    assert history.load()[rel].runs[0].status is RunStatus.SUCCESS
    assert output_html(settings.output_dir, rel).is_file()
    # Gone before the run starts: a recorded failure, no crash.
    again = runner.run_notebook(settings, nb, history=history)
    assert again.status is RunStatus.FAILED and again.error_name == "FileNotFoundError"


@pytest.mark.integration
def test_stop_event_interrupts_and_cleans_up(settings, jc):
    rel = jc.copy_notebook("sleeps_autorun.ipynb", settings.notebooks,
                        line='{"every": "1 minute", "MaxRuntime": 120}')
    history = SqliteRunStore(settings.output_dir)
    nb = discovery.read_notebook(settings.notebooks / rel, rel)
    stop = threading.Event()
    result: list[Run] = []
    t = threading.Thread(target=lambda: result.append(
        runner.run_notebook(settings, nb, history=history, stop_event=stop)))
    t.start()
    pid_file = settings.notebooks / "sleeps-pids.txt"
    jc.wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2,
               what="the notebook's children")
    stop.set()
    t.join(60)
    run = result[0]
    assert run.status is RunStatus.INTERRUPTED
    jc.assert_no_leftovers(run, extra_pids=[int(p) for p in pid_file.read_text().split()])


def test_effective_limits_are_bounded(settings):
    from dataclasses import replace

    from jupycron.models import JobSpec, Notebook

    s = replace(settings, default_max_mem_mb=300, max_mem_mb=500, default_max_runtime_s=60,
                max_runtime_s=100)
    assert runner.effective_limits(s, Notebook("a_autorun.ipynb", 0, 0, JobSpec(every="1 day"))) == (300, 60)
    big = JobSpec(every="1 day", max_mem_mb=9000, max_runtime_s=9000)
    assert runner.effective_limits(s, Notebook("a_autorun.ipynb", 0, 0, big)) == (500, 100)
    small = JobSpec(every="1 day", max_mem_mb=50, max_runtime_s=5)
    assert runner.effective_limits(s, Notebook("a_autorun.ipynb", 0, 0, small)) == (50, 5)


def test_fixture_notebooks_are_valid(jc):
    import nbformat

    for p in jc.FIXTURES.glob("*.ipynb"):
        nbformat.validate(nbformat.read(p, as_version=4))


# --- output floods and the time limit (issue 12 #2) ---------------------------------------

def _write_nb(settings, rel: str, max_runtime: int, *sources: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    first = f'# jupycron: {{"every": "1 hour", "MaxRuntime": {max_runtime}}}\n'
    nb.cells = [nbformat.v4.new_code_cell(first + sources[0]),
                *(nbformat.v4.new_code_cell(s) for s in sources[1:])]
    nbformat.write(nb, settings.notebooks / rel)
    return discovery.read_notebook(settings.notebooks / rel, rel)


def _streams(n: int, text: str = "x\n"):
    import nbformat

    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i} {text}")
                    for i in range(n)]
    return cell


def test_merging_100k_stream_outputs_joins_them_once():
    """The 100k outputs of a print(flush=True) loop become one output with every line, in
    order (the old repeated ``+`` copied the growing text for each: minutes at this size)."""
    cell = _streams(100_000, "y" * 100 + "\n")
    execute.merge_streams(cell)
    assert len(cell.outputs) == 1
    lines = cell.outputs[0]["text"].splitlines()
    assert len(lines) == 100_000 and lines[0].startswith("0 y") and lines[-1].startswith("99999 y")


@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(max_size=5)),
    st.tuples(st.just("display"), st.text(max_size=3))), max_size=30))
def test_merge_streams_keeps_every_text_in_order(items):
    """Adjacent streams of one name are joined; nothing else moves or is lost."""
    import nbformat

    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name=k, text=t) if k != "display"
                    else nbformat.v4.new_output("display_data", data={"text/plain": t})
                    for k, t in items]
    expected: list[tuple[str, str]] = []
    for k, t in items:
        if expected and k != "display" and expected[-1][0] == k:
            expected[-1] = (k, expected[-1][1] + t)
        else:
            expected.append((k, t))
    execute.merge_streams(cell)
    got = [(o["name"], o["text"]) if o["output_type"] == "stream"
           else ("display", o["data"]["text/plain"]) for o in cell.outputs]
    assert got == expected


@pytest.mark.integration
def test_the_time_limit_holds_while_the_run_loop_is_busy(settings, monkeypatch, jc):
    """Whatever keeps the run's event loop busy (here a merge that does not return until
    the kernel is gone, at most 30 s), MaxRuntime kills the kernel on time: the watchdog
    does not wait for a turn on the loop."""
    nb = _write_nb(settings, "busy_autorun.ipynb", 2, 'print("hello", flush=True)',
                   "import time\ntime.sleep(600)")
    seen: dict[str, object] = {}
    merge = execute.merge_streams

    def busy_merge(cell) -> None:
        if "killed_while_busy" not in seen:  # the first cell: hold the loop
            runs = SqliteRunStore(settings.output_dir).load()["busy_autorun.ipynb"].runs
            pids = [runs[0].kernel.pid]
            assert jc.alive(pids[0])
            seen["killed_while_busy"] = _gone_within(jc, pids, 30)
        merge(cell)

    monkeypatch.setattr(execute, "merge_streams", busy_merge)
    run = runner.run_notebook(settings, nb, history=SqliteRunStore(settings.output_dir))
    assert seen["killed_while_busy"] is True
    assert run.status is RunStatus.TIMEOUT, (run.status, run.error_value)
    jc.assert_no_leftovers(run)


def _gone_within(jc, pids, timeout: float) -> bool:
    try:
        jc.wait_until(lambda: not any(jc.alive(p) for p in pids), timeout=timeout,
                      what="the kernel to be killed")
    except AssertionError:
        return False
    return True


@pytest.mark.integration
def test_a_chatty_notebook_still_times_out_at_its_limit(settings, jc):
    """5000 print(flush=True) of 2000 characters (10 MB, under the output cap), then a
    sleep, with MaxRuntime 10 s: ends as ``timeout`` near 10 s, with the output kept as one
    block (before: the quadratic merge held the loop for 10-45 s first, so the run ended
    long after its limit; with a single cell it even ended as ``success``)."""
    nb = _write_nb(settings, "chatty_autorun.ipynb", 10,
                   'for i in range(5000):\n    print(i, "x" * 2000, flush=True)',
                   "import time\ntime.sleep(600)")
    run = runner.run_notebook(settings, nb, history=SqliteRunStore(settings.output_dir))
    assert run.status is RunStatus.TIMEOUT, (run.status, run.error_value)
    assert run.duration_s is not None and run.duration_s < 10 + 8, run.extra.get("timing")
    page = output_html(settings.output_dir, "chatty_autorun.ipynb").read_text(encoding="utf-8")
    # What arrived before the kill (all of it unless the machine is very busy) is one block.
    assert "<pre>0 xxx" in page and "\n1 xxx" in page and page.count("<pre>") < 10
    jc.assert_no_leftovers(run)
