"""The fork server against a real template process and real forked kernels.

Checked here: which kernel commands it can start, the child's set-up (own session and
process group, cwd, the environment *replaced*), exit codes relayed as ``Popen`` does
(``-signal`` for a kill), an exited kernel kept a zombie until reaped, a template that dies
replaced (or the normal start used), and the runner's fall-back with the setting off.
(Every run outcome with forked kernels - oom, timeout, crashed, failed - is checked by
test_runner.py, where ``kernel_forkserver`` is on by default.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import discovery, runner
from jupycron.kernels import forkserver
from jupycron.models import RunStatus

LAUNCH = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher"]


def test_kernel_args_accepts_only_a_python_ipykernel_command():
    assert forkserver.kernel_args([*LAUNCH, "-f", "k.json", "--x=1"]) == (
        sys.executable, ("-Xfrozen_modules=off",), ["-f", "k.json", "--x=1"])
    assert forkserver.kernel_args(["/usr/bin/python3", "-m", "ipykernel", "-f", "k"]) == (
        "/usr/bin/python3", (), ["-f", "k"])
    wrapped = ["systemd-run", "--scope", "--", *LAUNCH, "-f", "k.json"]
    assert forkserver.kernel_args(wrapped) is None  # the cap wraps the command: no fork
    assert forkserver.kernel_args(["/usr/bin/R", "-m", "ipykernel_launcher"]) is None
    assert forkserver.kernel_args([sys.executable, "-m", "other_kernel", "-f", "k"]) is None
    assert forkserver.kernel_args([sys.executable, "-c", "x", "-m", "ipykernel"]) is None


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("JUPYCRON_TEMPLATE_ONLY", "1")  # in the template's env, not a kernel's
    srv = forkserver.ForkServer(sys.executable, ("-Xfrozen_modules=off",)).start()
    try:
        yield srv
    finally:
        srv.close()
    assert srv.proc is not None and srv.proc.poll() is not None


def _fake_kernel(server: forkserver.ForkServer, tmp_path: Path, code: str,
                 env: dict[str, str] | None = None) -> forkserver.ForkedProcess:
    """Fork a kernel that runs ``code`` while it initializes (``code_to_run``), before any
    client connects; the code ends the process."""
    env = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    return server.spawn(["--IPKernelApp.code_to_run=" + code, "-f", str(tmp_path / "k.json"),
                         "--HistoryManager.hist_file=:memory:"], env, str(tmp_path))


@pytest.mark.integration
def test_forked_child_has_its_own_session_cwd_and_exactly_the_given_env(server, tmp_path, jc):
    out = tmp_path / "probe.json"
    code = ("import json, os, sys; json.dump({'cwd': os.getcwd(), 'env': dict(os.environ), "
            "'sid': os.getsid(0), 'pgid': os.getpgid(0), 'pid': os.getpid(), "
            f"'ppid': os.getppid(), 'path': sys.path}}, open({str(out)!r}, 'w')); os._exit(0)")
    proc = _fake_kernel(server, tmp_path, code, env={"AUTORUN": "1", "MARK": "x",
                                                     "PYTHONPATH": str(tmp_path / "lib")})
    assert proc.wait(30) == 0
    probe = json.loads(out.read_text())
    assert probe["pid"] == proc.pid and probe["sid"] == proc.pid and probe["pgid"] == proc.pid
    assert probe["ppid"] == server.pid
    assert Path(probe["cwd"]) == tmp_path and Path(probe["path"][0]) == tmp_path
    assert Path(probe["path"][1]) == tmp_path / "lib"  # the run's PYTHONPATH, as python would
    # the template runs as a script from jupycron's folder: that folder is not importable
    # (a notebook's `import config` must not find jupycron/config.py)
    assert str(Path(forkserver.__file__).parent) not in probe["path"]
    cmdline = psutil.Process(server.pid).cmdline()
    assert cmdline[-3] == str(Path(forkserver.__file__).with_name("template.py"))
    assert probe["env"]["AUTORUN"] == "1" and probe["env"]["MARK"] == "x"
    assert "JUPYCRON_TEMPLATE_ONLY" not in probe["env"]  # replaced, not merged


@pytest.mark.integration
def test_exit_codes_are_relayed_like_popen_and_the_zombie_is_kept_until_reaped(server, tmp_path, jc):
    proc = _fake_kernel(server, tmp_path, "import os; os._exit(3)")
    assert proc.wait(30) == 3
    sleeper = _fake_kernel(server, tmp_path, "import time; time.sleep(600)")
    assert sleeper.poll() is None
    os.kill(sleeper.pid, signal.SIGKILL)
    # Dead but not reaped yet: its pid (and process group id) cannot be reused meanwhile.
    known = jc.wait_until(lambda: server.exit_status(sleeper.pid)[0], timeout=30,
                          what="the exit notice")
    assert known and psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE
    assert sleeper.wait(5) == -signal.SIGKILL
    jc.wait_until(lambda: not psutil.pid_exists(sleeper.pid), timeout=10, what="the reap")
    sleeper.send_signal(signal.SIGKILL)  # a reaped kernel is never signalled (no error either)


@pytest.mark.integration
def test_a_bad_cwd_fails_the_spawn_and_the_template_keeps_serving(server, tmp_path):
    with pytest.raises(forkserver.TemplateError, match="FileNotFoundError"):
        server.spawn(["-f", str(tmp_path / "k.json")], {}, str(tmp_path / "missing"))
    assert server.alive()
    assert _fake_kernel(server, tmp_path, "import os; os._exit(0)").wait(30) == 0


@pytest.mark.integration
def test_closing_the_template_kills_its_kernels(tmp_path, jc):
    srv = forkserver.ForkServer(sys.executable, ("-Xfrozen_modules=off",)).start()
    sleeper = _fake_kernel(srv, tmp_path, "import time; time.sleep(600)")
    srv.close()
    jc.wait_until(lambda: not jc.alive(sleeper.pid), timeout=10, what="the kernel to die")


@pytest.mark.integration
def test_a_dead_template_is_replaced_and_a_broken_one_means_normal_starts(tmp_path, monkeypatch,
                                                                        settings, jc):
    forkserver.shutdown_all()
    first = forkserver.get_server(sys.executable, ("-Xfrozen_modules=off",))
    assert first is not None and first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    jc.wait_until(lambda: not first.alive(), timeout=10, what="the template to be seen dead")
    second = forkserver.get_server(sys.executable, ("-Xfrozen_modules=off",))
    assert second is not None and second.pid != first.pid and second.alive()
    forkserver.shutdown_all()
    # A template that cannot start (here: a preloaded module that does not exist is skipped,
    # but an interpreter without ipykernel is unusable) leaves runs on normal starts.
    monkeypatch.setattr(forkserver, "_failed_at", {})
    assert forkserver.get_server("/bin/false-python", ()) is None
    nbformat.write(new_notebook(cells=[new_code_cell("import os; x = os.getpid()")]),
                   settings.notebooks / "a_autorun.ipynb")
    nb = discovery.read_notebook(settings.notebooks / "a_autorun.ipynb", "a_autorun.ipynb")
    run = runner.run_notebook(settings, nb)
    assert run.status is RunStatus.SUCCESS and run.kernel is not None and run.kernel.forked is True
    off = runner.run_notebook(replace(settings, kernel_forkserver=False), nb)
    assert off.status is RunStatus.SUCCESS and off.kernel is not None and off.kernel.forked is False
    jc.assert_no_leftovers(run)
    jc.assert_no_leftovers(off)


@pytest.mark.integration
def test_state_set_by_one_forked_run_never_reaches_the_next(settings, jc):
    """A variable, a module attribute, an env var: nothing flows back into the template."""
    cell = ("import json, os\nprobe = {'global': 'leak' in globals(), "
            "'attr': getattr(json, 'leaked', None), 'env': os.environ.get('LEAK')}\n"
            "open(os.environ['JUPYCRON_NOTEBOOK'] + '.json', 'w').write(json.dumps(probe))\n"
            "leak = 1\njson.leaked = 1\nos.environ['LEAK'] = '1'")
    runs = []
    for rel in ("a_autorun.ipynb", "b_autorun.ipynb"):
        nbformat.write(new_notebook(cells=[new_code_cell(cell)]), settings.notebooks / rel)
        runs.append(runner.run_notebook(settings,
                                        discovery.read_notebook(settings.notebooks / rel, rel)))
    assert all(r.status is RunStatus.SUCCESS and r.kernel is not None and r.kernel.forked for r in runs)
    second = json.loads((settings.notebooks / "b_autorun.ipynb.json").read_text())
    assert second == {"global": False, "attr": None, "env": None}
    for r in runs:
        jc.assert_no_leftovers(r)


@pytest.mark.integration
def test_crash_exit_code_reaches_the_runner_through_the_template(settings, jc):
    nbformat.write(new_notebook(cells=[new_code_cell("import os, signal\n"
                                                     "os.kill(os.getpid(), signal.SIGSEGV)")]),
                   settings.notebooks / "segv_autorun.ipynb")
    nb = discovery.read_notebook(settings.notebooks / "segv_autorun.ipynb", "segv_autorun.ipynb")
    run = runner.run_notebook(settings, nb)
    assert run.kernel is not None and run.kernel.forked is True
    assert run.status is RunStatus.CRASHED and "SIGSEGV" in (run.error_value or "")
    jc.assert_no_leftovers(run)


@pytest.mark.integration
def test_template_refuses_to_serve_when_a_preload_starts_a_thread(tmp_path, monkeypatch):
    """A fork copies only the forking thread: a template with threads would hand kernels
    half-copied state, so it exits and kernels are started normally."""
    (tmp_path / "starts_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), "
        "daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    srv = forkserver.ForkServer(sys.executable, (), preload=("starts_thread",))
    with pytest.raises(forkserver.TemplateError, match="threads after import"):
        srv.start(timeout=60)
    assert srv.proc is not None and srv.proc.poll() is not None  # not left running


@pytest.mark.integration
def test_a_template_with_numpy_and_pandas_forks_kernels_that_use_them(tmp_path, jc):
    """numpy starts OpenBLAS threads and pandas (pyarrow) jemalloc's background thread at
    import. OpenBLAS stops its threads at a fork and jemalloc is fork-aware, so the template
    serves: its kernels start with both imported, each with its own numpy random state, and
    multi-threaded linear algebra works in them."""
    srv = forkserver.ForkServer(sys.executable, ("-Xfrozen_modules=off",),
                                preload=(*forkserver.PRELOAD, "numpy", "pandas")).start()
    try:
        assert srv.skipped == []
        probes = []
        for i in range(2):
            out = tmp_path / f"probe{i}.json"
            code = ("import json, os, sys; loaded = 'pandas' in sys.modules; import numpy as np; "
                    "m = np.ones((400, 400)); s = float((m @ m).sum()); "
                    f"json.dump({{'loaded': loaded, 'r': float(np.random.random()), 's': s}}, "
                    f"open({str(out)!r}, 'w')); os._exit(0)")
            assert _fake_kernel(srv, tmp_path, code).wait(60) == 0
            probes.append(json.loads(out.read_text()))
        assert all(p["loaded"] and p["s"] == 400.0 ** 3 for p in probes)
        assert probes[0]["r"] != probes[1]["r"]
    finally:
        srv.close()


@pytest.mark.integration
def test_template_refuses_to_serve_when_a_preload_starts_a_native_thread(tmp_path, monkeypatch):
    """A thread the threading module does not know of (started by ``_thread``, as C code
    would) that is still there after the trial fork makes the template unusable."""
    (tmp_path / "starts_native.py").write_text(
        "import _thread, time\n_thread.start_new_thread(time.sleep, (60,))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    srv = forkserver.ForkServer(sys.executable, (), preload=("starts_native",))
    with pytest.raises(forkserver.TemplateError, match="threads after import: python"):
        srv.start(timeout=60)
    assert srv.proc is not None and srv.proc.poll() is not None
