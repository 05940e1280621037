"""Memory caps enforced by the operating system, one per run.

A :class:`MemoryCap` is created for a run, then *attached* to the kernel process (by pid)
before the notebook's first cell runs; every process the kernel starts inherits it. After the
run it reports the peak memory and whether the OOM killer fired, kills whatever is still
inside it and is removed. Four methods, chosen by :func:`detect_method` in this order:

``systemd-run``
    systemd is PID 1 and we may ask it for a transient scope (root, or a user manager is
    reachable): the kernel command is prefixed with ``systemd-run --scope -p MemoryMax=...``.
    This is the one method that has to wrap the command instead of attaching to a pid.
``cgroup-v2``
    our own cgroup (unified hierarchy) has the memory controller and is writable, e.g. a
    systemd service with ``Delegate=yes``: a child ``jupycron-<run>`` cgroup with
    ``memory.max`` (and ``memory.swap.max = 0``); ``memory.peak`` / ``memory.events``.
``cgroup-v1``
    the legacy memory controller is mounted and our own memory cgroup is writable: a child
    cgroup with ``memory.limit_in_bytes`` (and ``memsw`` when swap accounting is on);
    ``memory.max_usage_in_bytes`` for the peak, ``memory.oom_control``'s ``oom_kill`` counter
    (``memory.failcnt`` on old kernels) to tell an OOM kill from other deaths.
``rlimit``
    nothing better: ``RLIMIT_AS`` set on the kernel with ``prlimit``. A warning is logged:
    address space is not memory (large mappings can fail far below the cap), an allocation
    fails with ``MemoryError`` instead of an OOM kill, and the peak is sampled RSS.

Creating a cgroup can still fail at run time (permissions changed, controller gone);
:func:`create_cap` then logs a warning and falls back to ``rlimit`` for that run.

Usage::

    cap = create_cap(limit_mb=500, name=run_id)
    cmd = cap.wrap_command(kernel_cmd)        # identity except for systemd-run
    proc = start(cmd); cap.attach(proc.pid)   # before any user code runs
    ...
    cap.sample()                              # call now and then (rlimit/systemd peaks)
    peak, oom = cap.peak_mb(), cap.oom_killed()
    cap.close()                               # kills leftovers, removes the cgroup

Instances: several jupycron instances (different outputs folders) may share one parent
cgroup. Each keeps its run cgroups under its own child, ``jupycron.o-<hash of the resolved
outputs folder>`` (:func:`instance_key`), and :func:`sweep_stale_cgroups` only ever looks
inside that child, so one instance can never kill another's runs.

Pooled kernels (:mod:`jupycron.kernels.pooled`) start under a cap at the configured maximum (named
``pool-<owner pid>-<hex>``) and get the notebook's own cap when handed a notebook:
:meth:`MemoryCap.set_limit` lowers the limit on the live process (cgroup files, ``prlimit``)
and raises :class:`CapError` when the kernel already uses more than the new limit, and
:meth:`MemoryCap.begin_run` forgets the warm-up's peak and OOM count, so a run reports its own.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

METHODS = ("systemd-run", "cgroup-v2", "cgroup-v1", "rlimit")
CGROUP_PREFIX = "jupycron-"
SUPERVISOR_CGROUP = "jupycron-supervisor"  # cgroup v2: where we move ourselves ("no internal processes")
MB = 1024 * 1024
#: Name prefix (after ``jupycron-``) of a pooled kernel's cap: ``pool-<owner pid>-<hex>``.
POOL_PREFIX = "pool-"
#: Prefix of an instance's own parent cgroup (no ``jupycron-``: never a run cgroup, so
#: neither this version's sweep nor an older one's touches another instance's parent).
INSTANCE_PREFIX = "jupycron.o-"


def instance_key(output_dir: str | Path) -> str:
    """The name of the parent cgroup of the instance writing to ``output_dir``."""
    digest = hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()
    return f"{INSTANCE_PREFIX}{digest[:16]}"


class CapError(RuntimeError):
    """A cap cannot be lowered to the requested limit (the process already uses more)."""


def pool_cap_name(token: str) -> str:
    """The cap name of a pooled kernel owned by this process (see :func:`sweep_stale_cgroups`)."""
    return f"{POOL_PREFIX}{os.getpid()}-{token}"


def _pool_owner_alive(name: str) -> bool:
    """Whether the process owning the pool cap ``name`` (``pool-<pid>-...``) is alive."""
    owner = name[len(POOL_PREFIX):].split("-", 1)[0]
    if not owner.isdigit():
        return False
    try:
        return psutil.Process(int(owner)).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass(frozen=True)
class SystemView:
    """Where the OS facts are read from; tests point it at a fake tree."""

    proc: Path = Path("/proc")
    euid: int = -1  # -1: os.geteuid()
    systemd_run: str | None = "auto"  # path, None (absent) or "auto" (shutil.which)

    @property
    def effective_euid(self) -> int:
        return os.geteuid() if self.euid == -1 else self.euid

    @property
    def systemd_run_path(self) -> str | None:
        return shutil.which("systemd-run") if self.systemd_run == "auto" else self.systemd_run


@dataclass(frozen=True)
class Detected:
    """The chosen method and, for cgroups, the directory runs' cgroups are created in."""

    method: str
    parent: Path | None = None
    user: bool = False  # systemd-run --user

    def describe(self) -> str:
        return f"{self.method} ({self.parent})" if self.parent else self.method


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _mounts(view: SystemView) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of cgroup mounts in mountinfo."""
    out = []
    for line in _read(view.proc / "self" / "mountinfo").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((lf[3], lf[4].replace("\\040", " "), rf[0], set(rf[2].split(","))))
    return out


def _own_cgroups(view: SystemView) -> dict[str, str]:
    """Controller (or "" for the unified hierarchy) -> our cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in _read(view.proc / "self" / "cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            own[ctrl] = parts[2]
    return own


def _join(mount_root: str, mount_point: str, cg_path: str) -> Path | None:
    if mount_root != "/" and cg_path.startswith(mount_root):
        cg_path = cg_path[len(mount_root):]
    elif mount_root != "/":
        return None
    return Path(mount_point) / cg_path.lstrip("/")


def _v2_parent(view: SystemView) -> Path | None:
    own = _own_cgroups(view).get("")
    if own is None:
        return None
    for root, point, fstype, _opts in _mounts(view):
        if fstype != "cgroup2":
            continue
        d = _join(root, point, own)
        if d is None:
            continue
        if d.name == SUPERVISOR_CGROUP:
            d = d.parent
        if "memory" in _read(d / "cgroup.controllers").split() and os.access(d, os.W_OK) \
                and os.access(d / "cgroup.subtree_control", os.W_OK):
            return d
    return None


def _v1_parent(view: SystemView) -> Path | None:
    own = _own_cgroups(view).get("memory")
    if own is None:
        return None
    for root, point, fstype, opts in _mounts(view):
        if fstype == "cgroup" and "memory" in opts:
            d = _join(root, point, own)
            if d is not None and (d / "memory.limit_in_bytes").exists() and os.access(d, os.W_OK):
                return d
    return None


def _systemd_usable(view: SystemView) -> tuple[bool, bool]:
    """(usable, needs --user)."""
    if _read(view.proc / "1" / "comm").strip() != "systemd" or not view.systemd_run_path:
        return False, False
    if view.effective_euid == 0:
        return True, False
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and (Path(runtime) / "systemd" / "private").exists():
        return True, True
    return False, False


def detect(view: SystemView | None = None) -> Detected:
    """Pick the strongest memory-cap method this process can use (see the module doc)."""
    view = view or SystemView()
    usable, user = _systemd_usable(view)
    if usable:
        return Detected("systemd-run", user=user)
    if (p := _v2_parent(view)) is not None:
        return Detected("cgroup-v2", p)
    if (p := _v1_parent(view)) is not None:
        return Detected("cgroup-v1", p)
    return Detected("rlimit")


@functools.cache
def _detected() -> Detected:
    d = detect()
    if d.method == "rlimit":
        log.warning("memory caps: no usable cgroup or systemd; falling back to RLIMIT_AS "
                    "(address space, not memory: notebooks may fail below their MaxMem)")
    else:
        log.info("memory caps: using %s", d.describe())
    return d


def detect_method() -> str:
    """``"systemd-run"``, ``"cgroup-v2"``, ``"cgroup-v1"`` or ``"rlimit"`` (cached per process)."""
    return _detected().method


def describe_method() -> str:
    """The method and, for cgroups, the parent directory — for logs and `jupycron list`."""
    return _detected().describe()


class MemoryCap(ABC):
    """A memory limit for one run's process tree; see the module docstring for the life cycle."""

    method: str = ""

    def __init__(self, limit_mb: int, name: str) -> None:
        if limit_mb <= 0:
            raise ValueError(f"memory cap must be positive, got {limit_mb} MB")
        self.limit_mb = int(limit_mb)
        self.name = name
        self.pid: int | None = None
        self._peak_bytes = 0

    def wrap_command(self, cmd: list[str]) -> list[str]:
        """The command to start the kernel with; only ``systemd-run`` changes it."""
        return list(cmd)

    @abstractmethod
    def attach(self, pid: int) -> None:
        """Put process ``pid`` (and so all its future children) under the cap."""

    def sample(self) -> None:  # noqa: B027 - optional hook, most methods need no sampling
        """Record the current usage (for methods without a kernel-kept peak)."""

    @abstractmethod
    def peak_mb(self) -> float | None:
        """Peak memory of the capped processes in MB (None when unknown)."""

    @abstractmethod
    def oom_killed(self) -> bool:
        """Whether the OOM killer fired inside the cap."""

    def pids(self) -> list[int]:
        """Processes currently inside the cap (empty when the method cannot tell)."""
        return []

    def usage_mb(self) -> float | None:
        """Memory currently charged to the cap in MB (None when unknown)."""
        if self.pid is None:
            return None
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / MB

    def set_limit(self, limit_mb: int) -> None:
        """Change the limit of an attached cap (a pooled kernel handed a notebook).

        Raises :class:`CapError` when the capped processes already use more than
        ``limit_mb`` (lowering the limit would OOM-kill or starve them at once) and
        ``OSError`` when the OS refuses the change.
        """
        if limit_mb <= 0:
            raise ValueError(f"memory cap must be positive, got {limit_mb} MB")
        used = self.usage_mb()
        if used is not None and used >= limit_mb:
            raise CapError(f"{self.describe()}: {used:.0f} MB already in use, above {limit_mb} MB")
        self._apply_limit(int(limit_mb))
        self.limit_mb = int(limit_mb)

    @abstractmethod
    def _apply_limit(self, limit_mb: int) -> None:
        """Write the new limit (see :meth:`set_limit`)."""

    def begin_run(self) -> None:
        """Start the run's accounting: forget the peak and OOM count of the warm-up."""
        self._peak_bytes = 0

    def kill_all(self, wait: bool = True) -> None:
        """SIGKILL every process inside the cap, until none is left (bounded); one pass
        only with ``wait=False``."""
        deadline = time.monotonic() + 5
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not wait:
                return
            time.sleep(0.02)

    def close(self) -> None:
        """Kill leftovers and release the cap (remove the cgroup). Idempotent."""
        self.kill_all()

    @property
    def cgroup_path(self) -> Path | None:
        """The cap's own cgroup folder (cgroup methods only): a history row keeps it so an
        orphan's cgroup can be removed; None for caps without one."""
        return None

    def describe(self) -> str:
        return f"{self.method} {self.limit_mb} MB"

    def __enter__(self) -> MemoryCap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CgroupCap(MemoryCap):
    """Shared logic of the two cgroup versions: a child directory of ``parent``."""

    def __init__(self, limit_mb: int, name: str, parent: Path) -> None:
        super().__init__(limit_mb, name)
        self.path = parent / f"{CGROUP_PREFIX}{name}"
        self._closed = False
        self._oom_base = 0  # OOM kills before begin_run (a pooled kernel's warm-up)
        self.path.mkdir(exist_ok=False)
        try:
            self._configure()
        except OSError:
            self._rmdir()
            raise

    @property
    def cgroup_path(self) -> Path | None:
        return self.path

    @classmethod
    def adopt(cls, path: Path) -> _CgroupCap:
        """A handle on an existing run cgroup (e.g. an orphan's), to kill and remove it."""
        cap = cls.__new__(cls)
        MemoryCap.__init__(cap, 1, path.name[len(CGROUP_PREFIX):])
        cap.path, cap._closed = path, False
        cap._oom_base = 0
        return cap

    @abstractmethod
    def _configure(self) -> None: ...

    def _write(self, file: str, value: str) -> None:
        (self.path / file).write_text(value)

    def attach(self, pid: int) -> None:
        self._write("cgroup.procs", str(pid))
        self.pid = pid

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split() if p.isdigit()]

    def _rmdir(self) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning("could not remove cgroup %s: %s", self.path, exc)
                    return
                self.kill_all()
                time.sleep(0.05)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill_all()
        self._rmdir()


class CgroupV1Cap(_CgroupCap):
    """Legacy memory controller (``memory.limit_in_bytes``)."""

    method = "cgroup-v1"

    def _configure(self) -> None:
        limit = str(self.limit_mb * MB)
        # Charge what the process already holds to this cgroup when it moves in (pooled
        # kernels are attached after they started); unsupported on some kernels.
        with contextlib.suppress(OSError):
            self._write("memory.move_charge_at_immigrate", "3")
        self._write("memory.limit_in_bytes", limit)
        if (self.path / "memory.memsw.limit_in_bytes").exists():
            # memsw >= limit must hold, so it is set after limit_in_bytes: no swapping around the cap
            with contextlib.suppress(OSError):
                self._write("memory.memsw.limit_in_bytes", limit)

    def usage_mb(self) -> float | None:
        # usage_in_bytes counts page cache too; RSS + cache of the group is what the limit sees.
        raw = _read(self.path / "memory.usage_in_bytes").strip()
        return int(raw) / MB if raw.isdigit() else super().usage_mb()

    def _apply_limit(self, limit_mb: int) -> None:
        limit = str(limit_mb * MB)
        memsw = self.path / "memory.memsw.limit_in_bytes"
        # memsw >= limit must hold at every step: lower limit first, raise memsw first.
        order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        if limit_mb > self.limit_mb:
            order.reverse()
        for file in order:
            if file == "memory.memsw.limit_in_bytes" and not memsw.exists():
                continue
            try:
                self._write(file, limit)
            except OSError as exc:
                if exc.errno == errno.EBUSY:  # usage above the new limit and nothing to reclaim
                    raise CapError(f"{self.describe()}: cannot lower to {limit_mb} MB: {exc}") from exc
                if file == "memory.memsw.limit_in_bytes":
                    continue  # swap accounting refused: the RAM limit alone still holds
                raise

    def begin_run(self) -> None:
        super().begin_run()
        with contextlib.suppress(OSError):
            self._write("memory.max_usage_in_bytes", "0")  # resets the peak to current usage
        self._oom_base = self._oom_count()

    def _oom_count(self) -> int:
        m = re.search(r"^oom_kill (\d+)", _read(self.path / "memory.oom_control"), re.M)
        return int(m.group(1)) if m else 0

    def peak_mb(self) -> float | None:
        raw = _read(self.path / "memory.max_usage_in_bytes").strip()
        return int(raw) / MB if raw.isdigit() else None

    def oom_killed(self) -> bool:
        text = _read(self.path / "memory.oom_control")
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        if m:
            return int(m.group(1)) > self._oom_base
        # Kernels before 4.13 have no counter: the limit was hit and the kernel process died.
        failcnt = _read(self.path / "memory.failcnt").strip()
        return failcnt.isdigit() and int(failcnt) > 0 and self.pid is not None \
            and not psutil.pid_exists(self.pid)


def _v2_prepare(parent: Path) -> None:
    """Enable the memory controller for ``parent``'s children, moving our processes to a leaf
    first (cgroup v2 forbids controllers in a cgroup that itself holds processes)."""
    if "memory" in _read(parent / "cgroup.subtree_control").split():
        return
    procs = _read(parent / "cgroup.procs").split()
    if procs:
        leaf = parent / SUPERVISOR_CGROUP
        leaf.mkdir(exist_ok=True)
        for pid in procs:
            with contextlib.suppress(ProcessLookupError, OSError):
                (leaf / "cgroup.procs").write_text(pid)
    (parent / "cgroup.subtree_control").write_text("+memory")


class CgroupV2Cap(_CgroupCap):
    """Unified hierarchy (``memory.max``)."""

    method = "cgroup-v2"

    def __init__(self, limit_mb: int, name: str, parent: Path) -> None:
        _v2_prepare(parent)
        super().__init__(limit_mb, name, parent)

    def _configure(self) -> None:
        self._write("memory.max", str(self.limit_mb * MB))
        if (self.path / "memory.swap.max").exists():
            with contextlib.suppress(OSError):
                self._write("memory.swap.max", "0")
        # Kill the whole group together on OOM (Linux 4.19+), like a process-group kill.
        if (self.path / "memory.oom.group").exists():
            with contextlib.suppress(OSError):
                self._write("memory.oom.group", "1")

    def usage_mb(self) -> float | None:
        raw = _read(self.path / "memory.current").strip()
        return int(raw) / MB if raw.isdigit() else super().usage_mb()

    def _apply_limit(self, limit_mb: int) -> None:
        # Writing memory.max below usage reclaims and then OOM-kills: set_limit checked first.
        self._write("memory.max", str(limit_mb * MB))

    def begin_run(self) -> None:
        super().begin_run()
        self._pooled = True  # memory.peak still holds the warm-up's peak: sample instead
        self._oom_base = self._oom_count()

    def _oom_count(self) -> int:
        m = re.search(r"^oom_kill (\d+)", _read(self.path / "memory.events"), re.M)
        return int(m.group(1)) if m else 0

    def peak_mb(self) -> float | None:
        raw = _read(self.path / "memory.peak").strip()
        if raw.isdigit() and not getattr(self, "_pooled", False):
            return int(raw) / MB
        self.sample()
        return self._peak_bytes / MB if self._peak_bytes else None

    def sample(self) -> None:
        raw = _read(self.path / "memory.current").strip()
        if raw.isdigit():
            self._peak_bytes = max(self._peak_bytes, int(raw))

    def oom_killed(self) -> bool:
        return self._oom_count() > self._oom_base

    def kill_all(self, wait: bool = True) -> None:
        if (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                self._write("cgroup.kill", "1")
        super().kill_all(wait)


class SystemdRunCap(MemoryCap):
    """A transient systemd scope around the kernel (``systemd-run --scope``)."""

    method = "systemd-run"

    def __init__(self, limit_mb: int, name: str, user: bool = False,
                 systemd_run: str = "systemd-run", cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        super().__init__(limit_mb, name)
        self.user = user
        self.systemd_run = systemd_run
        self.unit = f"{CGROUP_PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.scope"
        self.cgroup_root = cgroup_root
        self._cg: Path | None = None
        self._oom = False

    def wrap_command(self, cmd: list[str]) -> list[str]:
        return [self.systemd_run, *(["--user"] if self.user else []), "--scope", "--quiet",
                "--collect", f"--unit={self.unit}", f"--property=MemoryMax={self.limit_mb}M",
                "--property=MemorySwapMax=0", "--", *cmd]

    def attach(self, pid: int) -> None:
        # systemd-run execs the kernel in place, so pid is the kernel; find its scope.
        self.pid = pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in _read(Path(f"/proc/{pid}/cgroup")).splitlines():
                if line.startswith("0::") and line.endswith(self.unit):
                    self._cg = self.cgroup_root / line[3:].lstrip("/")
                    return
            if not psutil.pid_exists(pid):
                break
            time.sleep(0.05)
        log.warning("systemd-run: kernel %s is not in scope %s; peak/OOM unknown", pid, self.unit)

    def sample(self) -> None:
        if self._cg is None:
            return
        raw = _read(self._cg / "memory.current").strip()
        if raw.isdigit():
            self._peak_bytes = max(self._peak_bytes, int(raw))
        raw = _read(self._cg / "memory.peak").strip()
        if raw.isdigit() and not getattr(self, "_pooled", False):
            self._peak_bytes = max(self._peak_bytes, int(raw))
        m = re.search(r"^oom_kill (\d+)", _read(self._cg / "memory.events"), re.M)
        self._oom = self._oom or bool(m and int(m.group(1)) > getattr(self, "_oom_base", 0))

    def peak_mb(self) -> float | None:
        self.sample()
        return self._peak_bytes / MB if self._peak_bytes else None

    def oom_killed(self) -> bool:
        self.sample()
        return self._oom

    def usage_mb(self) -> float | None:
        if self._cg is not None and (raw := _read(self._cg / "memory.current").strip()).isdigit():
            return int(raw) / MB
        return super().usage_mb()

    def _apply_limit(self, limit_mb: int) -> None:
        if self._cg is not None and os.access(self._cg / "memory.max", os.W_OK):
            (self._cg / "memory.max").write_text(str(limit_mb * MB))
            return
        import subprocess  # rare path: only when the scope's files are not ours to write

        cmd = ["systemctl", *(["--user"] if self.user else []), "set-property", "--runtime",
               self.unit, f"MemoryMax={limit_mb}M"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        if res.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")

    def begin_run(self) -> None:
        # The scope's memory.peak holds the warm-up's peak: sample current usage from now on.
        super().begin_run()
        self._pooled = True
        self._oom = False
        m = re.search(r"^oom_kill (\d+)", _read(self._cg / "memory.events"), re.M) \
            if self._cg is not None else None
        self._oom_base = int(m.group(1)) if m else 0

    def pids(self) -> list[int]:
        if self._cg is None:
            return []
        return [int(p) for p in _read(self._cg / "cgroup.procs").split() if p.isdigit()]


class RlimitCap(MemoryCap):
    """``RLIMIT_AS`` on the kernel (inherited by its children); the weakest method."""

    method = "rlimit"

    def attach(self, pid: int) -> None:
        limit = self.limit_mb * MB
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        self.pid = pid

    def set_limit(self, limit_mb: int) -> None:
        # The rlimit bounds address space, so compare with the kernel's VMS, not its RSS.
        if limit_mb <= 0:
            raise ValueError(f"memory cap must be positive, got {limit_mb} MB")
        if self.pid is not None:
            with contextlib.suppress(psutil.Error):
                vms = psutil.Process(self.pid).memory_info().vms / MB
                if vms >= limit_mb:
                    raise CapError(f"{self.describe()}: address space already {vms:.0f} MB, "
                                   f"above {limit_mb} MB")
        self._apply_limit(int(limit_mb))
        self.limit_mb = int(limit_mb)

    def _apply_limit(self, limit_mb: int) -> None:
        if self.pid is None:
            return
        # Lowering a hard limit is always allowed; raising it needs CAP_SYS_RESOURCE, so the
        # pool starts kernels at the maximum and only ever lowers.
        limit = limit_mb * MB
        resource.prlimit(self.pid, resource.RLIMIT_AS, (limit, limit))

    def sample(self) -> None:
        if self.pid is None:
            return
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self._peak_bytes = max(self._peak_bytes, total)

    def peak_mb(self) -> float | None:
        return self._peak_bytes / MB if self._peak_bytes else None

    def oom_killed(self) -> bool:
        # Under RLIMIT_AS allocations fail with MemoryError (classified by the runner).
        return False


def _instance_parent(d: Detected, instance: str | None) -> Path:
    """The directory run cgroups of ``instance`` live in (created, with the memory
    controller enabled for its children on cgroup v2); the shared parent when None."""
    assert d.parent is not None
    if instance is None:
        return d.parent
    if not instance.startswith(INSTANCE_PREFIX) or "/" in instance:
        raise ValueError(f"not an instance key: {instance!r}")
    parent = d.parent / instance
    if d.method == "cgroup-v2":
        _v2_prepare(d.parent)
    parent.mkdir(exist_ok=True)
    return parent


def create_cap(limit_mb: int, name: str, detected: Detected | None = None, *,
               instance: str | None = None) -> MemoryCap:
    """A fresh cap for one run, using the detected method (falls back to rlimit on error).

    ``instance`` (:func:`instance_key` of the outputs folder) puts a cgroup under that
    instance's own parent, the only place its :func:`sweep_stale_cgroups` looks."""
    d = detected or _detected()
    try:
        if d.method == "cgroup-v1" and d.parent is not None:
            return CgroupV1Cap(limit_mb, name, _instance_parent(d, instance))
        if d.method == "cgroup-v2" and d.parent is not None:
            return CgroupV2Cap(limit_mb, name, _instance_parent(d, instance))
        if d.method == "systemd-run":
            return SystemdRunCap(limit_mb, name, user=d.user,
                                 systemd_run=shutil.which("systemd-run") or "systemd-run")
    except OSError as exc:
        log.warning("memory caps: cannot set up %s for %s (%s); using RLIMIT_AS for this run",
                    d.describe(), name, exc)
    return RlimitCap(limit_mb, name)


def sweep_stale_cgroups(detected: Detected | None = None, keep: frozenset[str] = frozenset(),
                        min_age_s: float = 60.0, *, instance: str) -> list[Path]:
    """Remove this instance's leftover ``jupycron-*`` run cgroups (their runner died with
    kill -9).

    Only the cgroups under ``instance``'s own parent (:func:`instance_key`) are looked at:
    another instance's runs, and cgroups of older versions directly under the shared
    parent, cannot be proven dead from this instance's history and are never touched.
    Processes still inside are killed first. Names in ``keep`` (run ids of runs that are
    live), cgroups younger than ``min_age_s`` (a concurrent runner may be setting one up)
    and pooled kernels' caps (``jupycron-pool-<pid>-*``) while process ``pid`` lives (a
    daemon's idle pool outlives any age limit) are left alone. Returns the removed directories.
    """
    d = detected or _detected()
    if d.parent is None or not instance.startswith(INSTANCE_PREFIX) or "/" in instance:
        return []
    parent = d.parent / instance
    if not parent.is_dir():
        return []
    removed = []
    now = time.time()
    for child in parent.iterdir():
        name = child.name
        if not name.startswith(CGROUP_PREFIX) or name == SUPERVISOR_CGROUP or not child.is_dir():
            continue
        run_id = name[len(CGROUP_PREFIX):]
        if run_id in keep or (run_id.startswith(POOL_PREFIX) and _pool_owner_alive(run_id)):
            continue  # a live run's cap, or a pooled kernel whose pool (process) is alive
        try:
            if now - child.stat().st_mtime < min_age_s:
                continue
        except OSError:
            continue
        (CgroupV2Cap if d.method == "cgroup-v2" else CgroupV1Cap).adopt(child).close()
        if not child.exists():
            removed.append(child)
            log.info("removed stale cgroup %s", child)
    return removed


def cap_for_path(path: str | Path, method: str) -> MemoryCap | None:
    """Rebuild a handle on an existing run cgroup (recorded in a RUNNING history row) so an
    orphan's processes can be killed and the cgroup removed; None if it is gone."""
    p = Path(path)
    if method not in ("cgroup-v1", "cgroup-v2") or not p.is_dir() \
            or not p.name.startswith(CGROUP_PREFIX):
        return None
    return (CgroupV2Cap if method == "cgroup-v2" else CgroupV1Cap).adopt(p)
