"""The kernel pool against real kernels: isolation between runs, dead idle kernels, the cap
at hand-out, preimport, the concurrency cap with a pool, and no kernel left after SIGTERM.

(Every run outcome with pooled kernels - oom, timeout, crashed, failed - is checked by the
"pooled" half of test_runner.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import discovery, limits, runner, scheduler
from jupycron.kernels import forkserver
from jupycron.kernels import pooled as pool
from jupycron.kernels.base import discard
from jupycron.ledger import SqliteRunStore
from jupycron.models import Notebook, RunStatus
from tests.support.ledger import read_heartbeat

PROBE = """# jupycron: {"every": "1 day", "MaxMem": 300}
import json, os, sys
probe = {"leaked_global": "leak_me" in globals(), "leaked_attr": getattr(json, "leaked", None),
         "leaked_env": os.environ.get("LEAK"), "autorun": os.environ.get("AUTORUN"),
         "cwd": os.getcwd(), "run_id": os.environ.get("JUPYCRON_RUN_ID"),
         "notebook": os.environ.get("JUPYCRON_NOTEBOOK"), "wave_loaded": "wave" in sys.modules,
         "wave_bound": "wave" in globals(), "count": get_ipython().execution_count}
with open(os.environ["JUPYCRON_NOTEBOOK"] + ".probe.json", "w") as fh:
    json.dump(probe, fh)
leak_me = 1
json.leaked = 1
os.environ["LEAK"] = "1"
"""


def _write(settings, rel: str, source: str = PROBE) -> Notebook:
    nbformat.write(new_notebook(cells=[new_code_cell(source)]), settings.notebooks / rel)
    return discovery.read_notebook(settings.notebooks / rel, rel)


def _probe(settings, rel: str) -> dict:
    return json.loads((settings.notebooks / f"{rel}.probe.json").read_text())


def test_settings_map_to_pool_size_and_modules(settings):
    assert pool.pool_size(replace(settings, pool_size=0)) == 0
    assert pool.pool_size(replace(settings, pool_size=-1)) == settings.concurrency
    assert pool.pool_size(replace(settings, pool_size=9)) == settings.concurrency  # never above the cap
    with pytest.raises(ValueError, match="pool_size"):
        pool.pool_size(replace(settings, pool_size=-2))
    assert pool.preimport_modules(replace(settings, pool_preimport=" pandas, altair.vegalite ,")) \
        == ("pandas", "altair.vegalite")
    with pytest.raises(ValueError, match="not a module name"):
        pool.preimport_modules(replace(settings, pool_preimport="os; rm -rf /"))


def test_stats_measure_pss_at_most_once_a_minute(settings, monkeypatch):
    """PSS costs a page-table walk per process: the heartbeat, written at every run start,
    reuses the last figures for PSS_MAX_AGE_S (RSS is measured at every call)."""
    calls, clock = [], [1000.0]
    monkeypatch.setattr(pool, "memory_mb", lambda pids, children=True, pss=False: calls.append(pss) or 7.0)
    monkeypatch.setattr(pool.time, "monotonic", lambda: clock[0])
    kernels = pool.KernelPool(settings, 1)  # not started: no idle kernel, no template
    assert kernels.stats()["idle_pss_mb"] == 7.0 and calls.count(True) == 2  # kernels + templates
    clock[0] += pool.PSS_MAX_AGE_S - 1
    kernels.stats()
    assert calls.count(True) == 2 and calls.count(False) == 2
    clock[0] += 1
    kernels.stats()
    assert calls.count(True) == 4


@pytest.mark.integration
def test_no_state_leaks_from_one_pooled_run_to_the_next(settings, jc):
    """Run A sets a global, a module attribute and an env var; run B (next pooled kernel)
    sees none of them, but sees the run environment and preimported modules."""
    a, b = _write(settings, "a_autorun.ipynb"), _write(settings, "b_autorun.ipynb")
    with pool.KernelPool(settings, 1, preimport=("wave",)) as kernels:
        first = runner.run_notebook(settings, a, kernels=kernels)
        second = runner.run_notebook(settings, b, kernels=kernels)
        assert kernels.stats()["handed_out"] == 2
    for run in (first, second):
        assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
        assert run.extra["timing"]["pooled"] is True
        jc.assert_no_leftovers(run)
    assert first.kernel and second.kernel and first.kernel.pid != second.kernel.pid  # one kernel per run
    pa, pb = _probe(settings, a.path), _probe(settings, b.path)
    assert (pb["leaked_global"], pb["leaked_attr"], pb["leaked_env"]) == (False, None, None)
    assert (pa["autorun"], Path(pa["cwd"])) == ("1", settings.notebooks)
    assert (pa["run_id"], pa["notebook"]) == (first.run_id, a.path)
    assert (pb["run_id"], pb["notebook"]) == (second.run_id, b.path)
    assert pb["wave_loaded"] is True and pb["wave_bound"] is False  # preimport binds no name
    fresh = runner.run_notebook(settings, _write(settings, "fresh_autorun.ipynb"))
    assert fresh.extra["timing"]["pooled"] is False
    # Warm-up and hand-out executions are silent: the counter is that of a fresh kernel.
    assert pb["count"] == _probe(settings, "fresh_autorun.ipynb")["count"]


@pytest.mark.integration
def test_a_kernel_that_died_idle_is_replaced_not_handed_out(settings, jc):
    kernels = pool.KernelPool(settings, 1).start()
    try:
        first = jc.wait_until(lambda: kernels.stats()["idle_pids"], timeout=60,
                              what="an idle kernel")[0]
        os.kill(first, signal.SIGKILL)
        # kill() returns before the process is torn down: wait until it is really dead
        jc.wait_until(lambda: not jc.alive(first), timeout=10, what="the killed kernel to die")
        handle = kernels.take(500, timeout=60)
        assert handle is not None and handle.pid != first and handle.alive()
        assert kernels.stats()["died_idle"] == 1
        assert handle.cap is not None and handle.cap.limit_mb == 500
        import asyncio

        asyncio.run(discard(handle))
        assert not jc.alive(handle.pid)
        run = runner.run_notebook(settings, _write(settings, "c_autorun.ipynb"), kernels=kernels)
        assert run.status is RunStatus.SUCCESS and run.extra["timing"]["pooled"] is True
    finally:
        kernels.close()
    assert not jc.alive(first)


@pytest.mark.integration
def test_a_kernel_above_the_notebooks_cap_is_refused_and_the_run_starts_fresh(settings, jc):
    """A pooled kernel holding pandas and altair it imported itself (~130 MB charged to its
    cap; started, not forked, as when the fork server is off) cannot take a 55 MB cap: it is
    discarded and the run gets a fresh kernel, which fits (~32 MB started)."""
    settings = replace(settings, kernel_forkserver=False)
    nb = _write(settings, "small_autorun.ipynb")
    assert nb.spec is not None
    small = replace(nb, spec=replace(nb.spec, max_mem_mb=55))
    with pool.KernelPool(settings, 1, preimport=("pandas", "altair")) as kernels:
        pid = jc.wait_until(lambda: kernels.stats()["idle_pids"], timeout=60,
                            what="an idle kernel")[0]
        run = runner.run_notebook(settings, small, kernels=kernels)
        assert kernels.stats()["refused"] == 1
    assert run.extra["timing"]["pooled"] is False
    if run.memory_limit in ("cgroup-v1", "cgroup-v2", "systemd-run"):
        assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
        assert _probe(settings, small.path)["wave_loaded"] is False
    jc.wait_until(lambda: not jc.alive(pid), timeout=10, what="the refused kernel to be killed")


@pytest.mark.integration
def test_preimported_modules_come_from_the_template_and_cost_the_kernel_nothing(settings, jc):
    """With the fork server, pandas and altair are imported once in a template of their own
    and each pooled kernel is forked with them loaded: its cap is charged only what the run
    allocates (pages shared with the template are the template's), so the same kernel now
    takes the 55 MB cap it could not take above."""
    source = PROBE + "import numpy\nprobe['np'] = float(numpy.random.random())\n" \
        "probe['pd_loaded'] = 'pandas' in sys.modules\n" \
        "json.dump(probe, open(os.environ['JUPYCRON_NOTEBOOK'] + '.probe.json', 'w'))\n"
    runs, rels = [], ("p_autorun.ipynb", "q_autorun.ipynb")
    with pool.KernelPool(settings, 1, preimport=("pandas", "altair")) as kernels:
        for rel in rels:
            nb = _write(settings, rel, source)
            assert nb.spec is not None
            runs.append(runner.run_notebook(settings, replace(nb, spec=replace(nb.spec, max_mem_mb=55)),
                                            kernels=kernels))
        assert "refused" not in kernels.stats()
        stats = jc.wait_until(lambda: (st := kernels.stats())["idle"] and st["idle_pss_mb"] and st,
                              timeout=60, what="a refilled pool, measured")
    # the idle kernel shares pandas and altair with its template: PSS splits those pages
    assert 0 < stats["idle_pss_mb"] < stats["idle_rss_mb"] * 0.75
    assert stats["templates"] >= 1 and stats["templates_pss_mb"] > 20
    key = next(k for k in forkserver._servers if k[2] == ("pandas", "altair"))
    assert forkserver._servers[key].skipped == []  # both really preloaded in the template
    for run in runs:
        assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
        assert run.extra["timing"]["pooled"] is True and run.kernel is not None and run.kernel.forked is True
        if run.memory_limit in ("cgroup-v1", "cgroup-v2"):
            assert run.peak_mem_mb is not None and run.peak_mem_mb < 55
        jc.assert_no_leftovers(run)
    first, second = (_probe(settings, rel) for rel in rels)
    assert first["pd_loaded"] and second["pd_loaded"]
    assert first["np"] != second["np"]  # numpy's global generator reseeded per kernel
    print("peaks", [r.peak_mem_mb for r in runs])


@pytest.mark.integration
def test_a_preimport_the_template_cannot_hold_falls_back_to_the_plain_template(settings, jc, tmp_path,
                                                                            monkeypatch):
    """A preimported module that starts a thread cannot be in a template (forking it would
    be unsafe): the pooled kernel is forked from the plain template and imports it itself."""
    (tmp_path / "starts_thread_pool.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    source = PROBE + "probe['mod_loaded'] = 'starts_thread_pool' in sys.modules\n" \
        "json.dump(probe, open(os.environ['JUPYCRON_NOTEBOOK'] + '.probe.json', 'w'))\n"
    nb = _write(settings, "t_autorun.ipynb", source)
    with pool.KernelPool(settings, 1, preimport=("starts_thread_pool",)) as kernels:
        run = runner.run_notebook(settings, nb, kernels=kernels)
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    assert run.extra["timing"]["pooled"] is True and run.kernel is not None and run.kernel.forked is True
    assert _probe(settings, nb.path)["mod_loaded"] is True
    assert not any(k[2] == ("starts_thread_pool",) for k in forkserver._servers)
    assert any(k[2] == ("starts_thread_pool",) for k in forkserver._failed_at)
    jc.assert_no_leftovers(run)


@pytest.mark.integration
def test_a_failing_preimport_turns_preimport_off(settings):
    with pool.KernelPool(settings, 1, preimport=("no_such_module_jupycron",)) as kernels:
        handle = kernels.take(500, timeout=60)  # waits through the failed warm-up
        assert handle is not None
        assert kernels.preimport == () and kernels.stats()["start_failed"] >= 1
        import asyncio

        asyncio.run(discard(handle))


@pytest.mark.integration
def test_tick_with_a_pool_keeps_the_concurrency_cap(settings, jc, monkeypatch):
    settings = replace(settings, pool_size=-1)
    monkeypatch.setenv("STAMP_SLEEP", "0.5")
    rels = [jc.copy_notebook("stamp_autorun.ipynb", settings.notebooks, f"s{i}_autorun.ipynb")
            for i in range(5)]
    jc.seen_long_ago(settings, rels)
    runs = scheduler.tick(settings)
    assert sorted(r.notebook for r in runs) == rels
    assert all(r.status is RunStatus.SUCCESS for r in runs), [(r.error_name, r.error_value) for r in runs]
    assert any(r.extra["timing"]["pooled"] for r in runs)
    stamps = [tuple(map(float, p.read_text().split()))
              for p in (settings.notebooks / "stamps").iterdir()]
    events = sorted([(s, 1) for s, _ in stamps] + [(e, -1) for _, e in stamps])
    at_once = peak = 0
    for _, d in events:
        at_once += d
        peak = max(peak, at_once)
    assert len(stamps) == 5 and peak <= settings.concurrency
    for r in runs:
        jc.assert_no_leftovers(r)
    state = read_heartbeat(settings.output_dir)
    assert state["pool"]["idle"] == 0 and state["pool"]["started"] <= len(rels)  # budget


@pytest.mark.integration
def test_daemon_sigterm_leaves_no_pooled_kernel(settings, jc, tmp_path):
    env = {**os.environ, "JUPYCRON_POOL_SIZE": "-1"}
    cmd = [sys.executable, "-m", "jupycron", "--notebooks", str(settings.notebooks),
           "--output", str(settings.output_dir), "--concurrency", "2", "daemon"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "daemon.log").open("wb"))
    def idle_pool() -> list[int] | None:
        state = read_heartbeat(settings.output_dir)
        if state is None:
            return None
        p = state.get("pool") or {}
        return p.get("idle_pids") if p.get("idle") == 2 and p.get("idle_rss_mb", 0) > 0 else None

    try:
        pids = jc.wait_until(idle_pool, timeout=60, what="the daemon's pool to fill")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "daemon.log").read_text()
    finally:
        proc.kill()
        proc.wait()
    jc.wait_until(lambda: not any(jc.alive(p) for p in pids), timeout=10,
                  what="the idle kernels to be gone")
    d = limits._detected()
    if d.parent is not None:
        own = d.parent / limits.instance_key(settings.output_dir)
        assert not list(own.glob(f"{limits.CGROUP_PREFIX}{limits.POOL_PREFIX}{proc.pid}-*"))
    assert not SqliteRunStore(settings.output_dir).load()  # nothing ran
