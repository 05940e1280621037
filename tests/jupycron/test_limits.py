"""Memory caps: method detection over fake /proc trees, cgroup file writes over fake
cgroup folders, and the detected method capping a real process on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jupycron import limits
from jupycron.ledger import SqliteRunStore
from jupycron.scheduler import reap_orphans
from tests.support.services import IN_CI


def fake_system(tmp: Path, *, pid1: str = "init", mountinfo: str = "", cgroup: str = "",
                euid: int = 1000, systemd_run: str | None = None) -> limits.SystemView:
    proc = tmp / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "self").mkdir()
    (proc / "1" / "comm").write_text(pid1 + "\n")
    (proc / "self" / "mountinfo").write_text(mountinfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    return limits.SystemView(proc=proc, euid=euid, systemd_run=systemd_run)


def v2_tree(tmp: Path, own: str = "system.slice/jupycron.service") -> tuple[Path, str]:
    root = tmp / "cg2"
    d = root / own
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text("cpu io memory pids\n")
    (d / "cgroup.subtree_control").write_text("")
    (d / "cgroup.procs").write_text("4242\n")
    info = f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    return d, info


def test_systemd_pid1_and_root_uses_systemd_run(tmp_path):
    view = fake_system(tmp_path, pid1="systemd", euid=0, systemd_run="/usr/bin/systemd-run")
    assert limits.detect(view).method == "systemd-run"


def test_systemd_pid1_without_privileges_falls_through(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    d, info = v2_tree(tmp_path)
    view = fake_system(tmp_path, pid1="systemd", euid=1000, systemd_run="/usr/bin/systemd-run",
                       mountinfo=info, cgroup="0::/system.slice/jupycron.service\n")
    detected = limits.detect(view)
    assert (detected.method, detected.parent) == ("cgroup-v2", d)  # Delegate=yes subtree


def test_cgroup_v1_memory_controller(tmp_path):
    root = tmp_path / "memory"
    own = root / "process_api" / "abc"
    own.mkdir(parents=True)
    (own / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    info = (f"35 31 0:32 / {root} rw,relatime - cgroup cgroup rw,memory\n"
            f"41 31 0:38 / {tmp_path / 'unified'} rw,relatime - cgroup2 cgroup2 rw\n")
    view = fake_system(tmp_path, mountinfo=info,
                       cgroup="4:memory:/process_api/abc\n0::/\n")
    detected = limits.detect(view)
    assert (detected.method, detected.parent) == ("cgroup-v1", own)
    assert "cgroup-v1" in detected.describe()


def test_mount_root_inside_a_container(tmp_path):
    mnt = tmp_path / "memory"
    (mnt / "job").mkdir(parents=True)
    (mnt / "job" / "memory.limit_in_bytes").write_text("0")
    info = f"35 31 0:32 /docker/abc {mnt} rw - cgroup cgroup rw,memory\n"
    view = fake_system(tmp_path, mountinfo=info, cgroup="4:memory:/docker/abc/job\n")
    assert limits.detect(view).parent == mnt / "job"


def test_nothing_usable_is_rlimit(tmp_path):
    view = fake_system(tmp_path, cgroup="0::/\n")
    assert limits.detect(view).method == "rlimit"


def test_v2_cap_moves_us_to_a_leaf_and_writes_limits(tmp_path):
    d, _ = v2_tree(tmp_path)
    cap = limits.CgroupV2Cap(300, "20240101T000000-abcdef", d)
    # "no internal processes": our processes went to a leaf before +memory was enabled
    assert (d / limits.SUPERVISOR_CGROUP / "cgroup.procs").read_text() == "4242"
    assert (d / "cgroup.subtree_control").read_text() == "+memory"
    assert cap.path == d / "jupycron-20240101T000000-abcdef"
    assert (cap.path / "memory.max").read_text() == str(300 * 1024 * 1024)
    cap.attach(777)
    assert (cap.path / "cgroup.procs").read_text() == "777"
    (cap.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (cap.path / "memory.peak").write_text(str(123 * 1024 * 1024))
    assert cap.oom_killed() and cap.peak_mb() == 123


def test_systemd_run_wraps_the_argv(tmp_path):
    cap = limits.SystemdRunCap(250, "run 1", systemd_run="/usr/bin/systemd-run")
    cmd = cap.wrap_command(["python", "-m", "ipykernel_launcher", "-f", "x y.json"])
    assert cmd[:3] == ["/usr/bin/systemd-run", "--scope", "--quiet"]
    assert "--property=MemoryMax=250M" in cmd and "--unit=jupycron-run_1.scope" in cmd
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "ipykernel_launcher", "-f", "x y.json"]


def test_a_cap_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        limits.RlimitCap(0, "x")


_HOG = ("import sys; sys.stdin.readline(); "
        "data = b'x' * (400 << 20); print('survived', flush=True)")


def _assert_stopped_by_cap(cap: limits.MemoryCap, proc: subprocess.Popen[bytes], line: bytes) -> None:
    """Send ``line`` (the child then allocates past the cap): the OOM killer (cgroups) or a
    MemoryError (rlimit) stops it before it prints 'survived'."""
    out, err = proc.communicate(line, timeout=60)
    assert b"survived" not in out
    if cap.method in ("cgroup-v1", "cgroup-v2"):
        assert proc.returncode == -9 and cap.oom_killed()
    else:
        assert b"MemoryError" in err


@pytest.mark.integration
@pytest.mark.parametrize("method", ["detected", "rlimit"])
def test_a_real_process_cannot_exceed_the_cap(method):
    """The machine's own method (cgroup-v1 here) and the rlimit fallback stop a 400 MB hog
    under a 100 MB cap; the cgroup is removed afterwards."""
    cap = limits.create_cap(100, f"test-{method}") if method == "detected" \
        else limits.RlimitCap(100, "test-rlimit")
    proc = subprocess.Popen([sys.executable, "-c", _HOG], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cap.attach(proc.pid)
        _assert_stopped_by_cap(cap, proc, b"go\n")
        if cap.method in ("cgroup-v1", "cgroup-v2"):
            assert cap.peak_mb() is not None and 50 < cap.peak_mb() <= 101
    finally:
        proc.kill()
        proc.wait()
        cap.close()
    if isinstance(cap, limits._CgroupCap):
        assert not cap.path.exists()


_HOLDER = ("import sys; sys.stdin.readline(); data = b'x' * (60 << 20); print('holding', flush=True); "
           "sys.stdin.readline(); more = b'y' * (200 << 20); print('survived', flush=True)")


@pytest.mark.integration
@pytest.mark.parametrize("method", ["detected", "rlimit"])
def test_a_live_cap_is_lowered_or_refused(method):
    """A pooled kernel's cap: started at the maximum (1000 MB), then lowered on the live
    process. Lowering below what it holds is refused (CapError); lowering above it works,
    restarts the accounting (peak, OOM count) and is enforced from then on."""
    cap = limits.create_cap(1000, f"pool-test-{method}") if method == "detected" \
        else limits.RlimitCap(1000, "pool-test-rlimit")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        cap.attach(proc.pid)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"holding\n"
        with pytest.raises(limits.CapError, match="above 30 MB"):
            cap.set_limit(30)
        low = 150 if cap.method != "rlimit" else int(psutil.Process(proc.pid).memory_info().vms / limits.MB) + 100
        cap.set_limit(low)
        cap.begin_run()
        assert cap.limit_mb == low and not cap.oom_killed()
        if cap.method == "cgroup-v1":
            assert int((cap.path / "memory.limit_in_bytes").read_text()) == low * limits.MB
        _assert_stopped_by_cap(cap, proc, b"more\n")  # 200 MB more: over the new cap
    finally:
        proc.kill()
        proc.wait()
        cap.close()


def _cgroup_method() -> limits.Detected:
    d = limits._detected()
    if d.method not in ("cgroup-v1", "cgroup-v2"):
        msg = f"needs a writable memory cgroup (this machine: {d.describe()})"
        if IN_CI:
            pytest.fail(msg + " — CI=true, so this may not skip")
        pytest.skip(msg)
    return d


def _age(path: Path) -> None:
    """Back-date a cgroup past the sweep's 60 s grace (cgroupfs keeps utime)."""
    os.utime(path, (time.time() - 3600, time.time() - 3600))


@pytest.mark.integration
def test_an_instance_sweeps_only_its_own_dead_cgroups(tmp_path):
    """Instance Y's orphan sweep (its tick) must not kill instance X's long-running kernel,
    even when X's cgroup is old and Y's history does not know the run; X's own sweep still
    removes X's cgroup once X's history says the run is not live. A cgroup directly under
    the shared parent (an older version's, or a test's) belongs to no instance: untouched."""
    d = _cgroup_method()
    out_x, out_y = tmp_path / "x", tmp_path / "y"
    out_x.mkdir()
    out_y.mkdir()
    assert limits.instance_key(out_x) != limits.instance_key(out_y)
    cap = limits.create_cap(200, "run-x", instance=limits.instance_key(out_x))
    shared = limits.create_cap(200, f"shared-{os.getpid()}")
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
    try:
        assert isinstance(cap, limits._CgroupCap) and isinstance(shared, limits._CgroupCap)
        assert cap.path.parent == d.parent / limits.instance_key(out_x)
        cap.attach(sleepers[0].pid)
        shared.attach(sleepers[1].pid)
        _age(cap.path)
        _age(shared.path)
        reap_orphans(SqliteRunStore(out_y))  # Y's tick
        assert limits.sweep_stale_cgroups(keep=frozenset(), min_age_s=0,
                                          instance=limits.instance_key(out_y)) == []
        time.sleep(0.2)
        assert sleepers[0].poll() is None and cap.path.is_dir()
        assert sleepers[1].poll() is None and shared.path.is_dir()
        # X's own sweep keeps a live run, removes it once X's history no longer holds it.
        assert limits.sweep_stale_cgroups(keep=frozenset({"run-x"}), min_age_s=0,
                                          instance=limits.instance_key(out_x)) == []
        assert sleepers[0].poll() is None
        reap_orphans(SqliteRunStore(out_x))  # X's tick: no RUNNING row for run-x
        assert sleepers[0].wait(10) == -9 and not cap.path.exists()
        assert sleepers[1].poll() is None and shared.path.is_dir()
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
        cap.close()
        shared.close()
