"""safefiles.locks: exclusive/shared, blocking/non-blocking with a timeout, across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safefiles.locks import LockTimeout, lock_fd, locked, try_locked

HOLDER = textwrap.dedent("""
    import sys, time
    from safefiles.locks import locked
    path, shared = sys.argv[1], sys.argv[2] == "shared"
    with locked(path, shared=shared) as fd:
        print("held", flush=True)
        sys.stdin.readline()          # hold until the test says so (or closes stdin)
""")


class Holder:
    """A second process holding the lock until :meth:`release`."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path),
                                      "shared" if shared else "exclusive"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def test_an_exclusive_lock_held_by_another_process_times_out_naming_the_path(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info, locked(path, timeout=0.2):
            pass
        assert time.monotonic() - started >= 0.2
        assert str(path) in str(info.value) and "0.2 s" in str(info.value)
        assert info.value.path == str(path) and info.value.timeout == 0.2
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(LockTimeout, match="held by another process$"), locked(path, timeout=0):
            pass
    finally:
        holder.release()
    with locked(path, timeout=0):
        pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    with try_locked(path) as got:
        assert not got
    holder.kill()
    with locked(path, timeout=5):
        pass


def test_shared_locks_coexist_and_keep_an_exclusive_one_out(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path, shared=True)
    try:
        with locked(path, shared=True, timeout=0):
            pass
        with try_locked(path) as got:
            assert not got
    finally:
        holder.release()
    with try_locked(path) as got:
        assert got


def test_a_blocking_lock_waits_for_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    timer = threading.Timer(0.3, holder.release)
    timer.start()
    try:
        started = time.monotonic()
        with locked(path):  # timeout None: waits as long as it takes
            waited = time.monotonic() - started
    finally:
        timer.join()
    assert waited >= 0.25


def test_a_timeout_waits_until_the_lock_frees(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    timer = threading.Timer(0.2, holder.release)
    timer.start()
    try:
        with locked(path, timeout=20):
            pass
    finally:
        timer.join()


def test_a_folder_is_locked_without_leaving_a_file(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    holder = Holder(folder)
    try:
        with try_locked(folder) as got:
            assert not got
    finally:
        holder.release()
    with locked(folder, timeout=0):
        pass
    assert list(folder.iterdir()) == []


def test_the_lock_file_is_created_with_its_mode_and_the_fd_is_usable(tmp_path):
    path = tmp_path / "x.lock"
    with locked(path, mode=0o600) as fd:
        os.write(fd, b"123\n")
    assert path.read_text() == "123\n"
    assert path.stat().st_mode & 0o777 == 0o600 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_lock_fd_on_an_open_file(tmp_path):
    path = tmp_path / "part.tmp"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        lock_fd(fd, timeout=0, path=path)
        with try_locked(path) as got:  # another open file description: refused
            assert not got
    finally:
        os.close(fd)
    with try_locked(path) as got:
        assert got


def test_a_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError), locked(tmp_path / "no" / "x.lock"):
        pass


@given(st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf"))))
@settings(max_examples=25, deadline=None)
def test_bad_timeouts_are_refused(tmp_path_factory, timeout):
    path = tmp_path_factory.mktemp("t") / "x.lock"
    with pytest.raises(ValueError, match="lock timeout"), locked(path, timeout=timeout):
        pass
    assert not path.exists()  # refused before anything was created


@given(st.floats(min_value=0, max_value=5), st.booleans())
@settings(max_examples=25, deadline=None)
def test_a_free_lock_is_taken_at_once_whatever_the_timeout(tmp_path_factory, timeout, shared):
    path = tmp_path_factory.mktemp("t") / "x.lock"
    started = time.monotonic()
    with locked(path, shared=shared, timeout=timeout):
        pass
    assert time.monotonic() - started < 1.0 + timeout  # never waited for the timeout
