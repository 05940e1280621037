"""chDB session folders left by killed processes are swept (real chDB in subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ooniutils.store import session_dirs

NAME = "clickhouse-embedded-12345678-1234-1234-1234-123456789abc"

_SESSION = """
import os, sys
from chdb.session import Session
s = Session()
s.query("SELECT 1")
print("ready", flush=True)
if sys.argv[1] == "exit":
    os._exit(0)   # what a forked kernel does: no interpreter clean-up
sys.stdin.readline()
"""


def _chdb_process(tmp: Path, mode: str) -> subprocess.Popen[str]:
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-c", _SESSION, mode], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _folders(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if session_dirs.NAME.fullmatch(p.name))


def test_folders_of_killed_sessions_are_removed_live_ones_kept(tmp_path: Path) -> None:
    exited = _chdb_process(tmp_path, "exit")
    exited.wait(timeout=30)
    killed = _chdb_process(tmp_path, "wait")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    leftovers = _folders(tmp_path)
    assert len(leftovers) == 2, "chDB no longer leaves its folder behind on os._exit / kill -9"
    live = _chdb_process(tmp_path, "wait")
    try:
        live_folder = [p for p in _folders(tmp_path) if p not in leftovers]
        assert len(live_folder) == 1
        assert sorted(session_dirs.sweep(tmp_path)) == leftovers
        assert _folders(tmp_path) == live_folder  # the live session's folder is untouched
        assert session_dirs.sweep(tmp_path) == []
    finally:
        assert live.stdin is not None
        live.stdin.write("\n")
        live.stdin.close()
        live.wait(timeout=30)
    assert _folders(tmp_path) == []  # a normal exit cleans up after itself


def test_first_session_of_a_process_sweeps(tmp_path: Path) -> None:
    exited = _chdb_process(tmp_path, "exit")
    exited.wait(timeout=30)
    assert len(_folders(tmp_path)) == 1
    code = ("from ooniutils.store import embedded; embedded._session().query('SELECT 1');"
            "import os, glob; print(len(glob.glob(os.environ['TMPDIR'] + '/clickhouse-embedded-*')))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TMPDIR=str(tmp_path)),
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"  # its own folder only; the dead one is gone


def test_only_chdb_named_folders_are_considered(tmp_path: Path) -> None:
    other = tmp_path / "clickhouse-embedded-not-a-uuid"
    other.mkdir()
    (other / "status").write_text("PID: 1\n")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / NAME).symlink_to(target)  # a link named like chDB's folder is not followed
    plain_file = tmp_path / NAME.replace("1234-1234", "1234-5678")
    plain_file.write_text("not a folder")
    assert session_dirs.sweep(tmp_path) == []
    assert (other / "status").exists() and (target / "keep").exists() and plain_file.exists()


def test_folder_without_status_is_removed_only_when_old(tmp_path: Path) -> None:
    folder = tmp_path / NAME
    (folder / "store").mkdir(parents=True)
    assert session_dirs.sweep(tmp_path) == []  # maybe being created right now
    old = time.time() - session_dirs.INCOMPLETE_AGE_SECONDS - 60
    os.utime(folder, (old, old))
    assert session_dirs.sweep(tmp_path) == [folder]
    assert not folder.exists()


def test_unlistable_temp_folder_is_not_an_error(tmp_path: Path) -> None:
    assert session_dirs.sweep(tmp_path / "missing") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a folder owned by another user")
def test_folders_of_other_users_are_left(tmp_path: Path) -> None:
    folder = tmp_path / NAME
    folder.mkdir()
    (folder / "status").write_text("PID: 1\n")
    os.chown(folder, 65534, 65534)
    assert session_dirs.sweep(tmp_path) == []
    assert folder.exists()
