"""Fixtures for jupycron tests: a notebooks folder built from tests/notebooks/, settings
pointing at temporary folders, and checks that a run left no process or cgroup behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from jupycron.config import Settings
from jupycron.ledger import SqliteRunStore
from jupycron.models import Run
from tests.support.services import IN_CI

FIXTURES = Path(__file__).resolve().parents[1] / "notebooks"


def copy_notebook(src_name: str, notebooks: Path, dest_rel: str | None = None,
                  line: str | None = None) -> str:
    """Copy fixture ``src_name`` into ``notebooks`` (as ``dest_rel``); optionally replace its
    ``# jupycron:`` JSON with ``line``. Returns the relative path."""
    rel = dest_rel or src_name
    dest = notebooks / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if line is None:
        shutil.copyfile(FIXTURES / src_name, dest)
    else:
        nb = json.loads((FIXTURES / src_name).read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and cell["source"][0].startswith("# jupycron:"):
                cell["source"][0] = f"# jupycron: {line}\n"
                break
        else:
            raise AssertionError(f"{src_name} has no jupycron line")
        dest.write_text(json.dumps(nb))
    return rel


def make_settings(tmp: Path, **kw: object) -> Settings:
    nbdir = tmp / "notebooks"
    nbdir.mkdir(parents=True, exist_ok=True)
    values = {"notebooks": nbdir, "output": tmp / "out", "concurrency": 2, **kw}
    return Settings(**values)  # type: ignore[arg-type]


def seen_long_ago(settings: Settings, rels: Iterable[str], minutes: int = 10) -> None:
    """Record the notebooks as first seen ``minutes`` ago, so they are due right now."""
    SqliteRunStore(settings.output_dir).mark_deleted(
        list(rels), datetime.now(UTC) - timedelta(minutes=minutes))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marked_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries the run's JUPYCRON_RUN_ID marker."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("JUPYCRON_RUN_ID") == run_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def group_members(pgid: int) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return found


def wait_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``cond`` until it returns something truthy (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_no_leftovers(run: Run, extra_pids: Iterable[int] = ()) -> None:
    """No process of the run survives (kernel, group, marked children, given pids), its
    cgroup and private socket folder are gone. Killed processes may need a moment to go."""
    kernel = run.kernel
    pgid = kernel.pgid if kernel is not None else None

    def clean() -> bool:
        return not marked_processes(run.run_id) and not (pgid and group_members(pgid)) \
            and not any(alive(p) for p in extra_pids)

    wait_until(clean, timeout=10, what=f"processes of run {run.run_id} to be gone")
    if kernel is not None and kernel.cgroup:
        assert not Path(kernel.cgroup).exists()
    if kernel is not None and kernel.sockets:
        assert not Path(kernel.sockets).exists()


@pytest.fixture(scope="session")
def jc() -> SimpleNamespace:
    """The helpers above, for test modules (they cannot import this conftest)."""
    return SimpleNamespace(FIXTURES=FIXTURES, alive=alive, assert_no_leftovers=assert_no_leftovers,
                           copy_notebook=copy_notebook, group_members=group_members,
                           make_settings=make_settings, marked_processes=marked_processes,
                           seen_long_ago=seen_long_ago, wait_until=wait_until)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/out`` (the settings' outputs folder) on a 4 MB tmpfs, unmounted after."""
    mnt = tmp_path / "out"
    mnt.mkdir()
    why = None
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            why = f"cannot mount a tmpfs: {r.stderr.strip()}"
    if why:
        if IN_CI:
            pytest.fail(f"{why} — CI=true, so this may not skip")
        pytest.skip(why)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)
