"""Type and range checks of ``.history.json`` entries before they become :class:`Run` objects
(the run ledger's importer, :mod:`jupycron.ledger.importer`, refuses what fails them).

The history is JSON written by jupycron itself, but a damaged or hand-edited file can hold
valid JSON of the wrong shape: ``"pid": "abc"`` on a RUNNING row (the orphan check then
crashes every tick), ``"duration_s": "12"``, numbers beyond a float (``10**400``), a notebook
key with ``..`` (purging it would delete files outside the outputs folder), a run id or an
output path that leaves its folder, a cgroup or socket folder that is not jupycron's (the
orphan clean-up would kill or delete it). Each check raises :class:`ValueError` naming the
field; the importer then imports what is sound and logs what it refused. The kernel's ids
are checked in the typed ``kernel`` object and, for rows written before it existed, in the
``extra`` keys :meth:`jupycron.models.KernelInfo.from_legacy_extra` reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from .models import FindingLevel, KernelInfo, RunStatus, Trigger
from .paths import _RUN_ID_RE, validate_rel

__all__ = ["MAX_EXTRA_DEPTH", "check_entry_fields", "check_notebook_key", "check_run"]

#: Deepest nesting accepted inside a run's ``extra`` (jupycron writes 2 levels).
MAX_EXTRA_DEPTH = 16
_MAX_PID = 2**31
_STATUSES = frozenset(s.value for s in RunStatus)
_TRIGGERS = frozenset(t.value for t in Trigger)
_STRINGS = ("error_name", "error_value", "host", "memory_limit", "notebook")
_NUMBERS = ("duration_s", "peak_mem_mb")


def check_notebook_key(rel: Any) -> str:
    """A notebook entry's key: a relative ``.ipynb`` path that stays inside its folder."""
    if not isinstance(rel, str) or "\x00" in rel:
        raise ValueError(f"notebook key {rel!r} is not a path")
    validate_rel(rel)
    return rel


def _iso(raw: Mapping[str, Any], key: str, required: bool = False) -> None:
    v = raw.get(key)
    if v is None and not required:
        return
    if not isinstance(v, str):
        raise ValueError(f'"{key}" must be an ISO time string, got {_short(v)}')
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f'"{key}" is not an ISO time: {_short(v)}') from None


def _number(raw: Mapping[str, Any], key: str, where: str = "") -> None:
    v = raw.get(key)
    if v is None:
        return
    name = f"{where}.{key}" if where else key
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f'"{name}" must be a number, got {_short(v)}')
    try:
        ok = math.isfinite(float(v)) and v >= 0
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f'"{name}" must be a finite number >= 0, got {_short(v)}')


def _int(raw: Mapping[str, Any], key: str, low: int, high: int, where: str = "") -> None:
    v = raw.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v < high:
        name = f"{where}.{key}" if where else key
        raise ValueError(f'"{name}" must be an integer in [{low}, {high}), got {_short(v)}')


def _rel_path(raw: Mapping[str, Any], key: str) -> None:
    v = raw.get(key)
    if v is None:
        return
    p = PurePosixPath(v) if isinstance(v, str) else None
    if p is None or not v or "\x00" in v or p.is_absolute() or ".." in p.parts:
        raise ValueError(f'"{key}" must be a path inside the outputs folder, got {_short(v)}')


def _depth(v: Any, limit: int) -> int:
    """Nesting depth of ``v`` (lists and objects), stopping past ``limit``."""
    if limit < 0 or not isinstance(v, dict | list):
        return 0
    items = v.values() if isinstance(v, dict) else v
    return 1 + max((_depth(x, limit - 1) for x in items), default=0)


def _check_extra(extra: Any) -> None:
    if not isinstance(extra, dict):
        raise ValueError(f'"extra" must be an object, got {_short(extra)}')
    if _depth(extra, MAX_EXTRA_DEPTH) > MAX_EXTRA_DEPTH:
        raise ValueError(f'"extra" is nested deeper than {MAX_EXTRA_DEPTH} levels')
    # rows written before Run.kernel existed: read with KernelInfo.from_legacy_extra
    _check_kernel(extra, "extra", {v: k for k, v in KernelInfo.LEGACY_EXTRA_KEYS.items()})


def _check_kernel(raw: Mapping[str, Any], where: str, names: Mapping[str, str]) -> None:
    """The kernel's ids (``raw[names[field]]`` for each :class:`KernelInfo` field): what the
    orphan clean-up signals and deletes must be a process and jupycron's own folders."""
    for field in ("pid", "pgid"):
        _int(raw, names[field], 1, _MAX_PID, where)
    _number(raw, names["create_time"], where)
    cgroup = raw.get(names["cgroup"])
    if cgroup is not None and not (isinstance(cgroup, str) and cgroup.startswith("/")
                                   and PurePosixPath(cgroup).name.startswith("jupycron-")
                                   and ".." not in PurePosixPath(cgroup).parts):
        raise ValueError(f'"{where}.{names["cgroup"]}" is not a jupycron cgroup: {_short(cgroup)}')
    sockets = raw.get(names["sockets"])
    if sockets is not None and not (isinstance(sockets, str) and sockets.startswith("/")
                                    and PurePosixPath(sockets).name.startswith("jupycron-kernel-")
                                    and ".." not in PurePosixPath(sockets).parts):
        raise ValueError(f'"{where}.{names["sockets"]}" is not a kernel socket folder: '
                         f'{_short(sockets)}')
    marker = raw.get(names["marker"])
    if marker is not None and not isinstance(marker, str):
        raise ValueError(f'"{where}.{names["marker"]}" must be a string, got {_short(marker)}')
    forked = raw.get(names["forked"])
    if forked is not None and not isinstance(forked, bool):
        raise ValueError(f'"{where}.{names["forked"]}" must be true or false, got {_short(forked)}')


def _check_typed_kernel(kernel: Any) -> None:
    if kernel is None:
        return
    if not isinstance(kernel, dict):
        raise ValueError(f'"kernel" must be an object, got {_short(kernel)}')
    for field in ("pid", "pgid", "create_time"):
        if kernel.get(field) is None:
            raise ValueError(f'"kernel.{field}" is missing')
    _check_kernel(kernel, "kernel", {f: f for f in KernelInfo.__dataclass_fields__})


def _check_finding(finding: Any) -> None:
    if finding is None:
        return
    if not isinstance(finding, dict):
        raise ValueError(f'"finding" must be an object, got {_short(finding)}')
    if finding.get("level") not in {lv.value for lv in FindingLevel}:
        raise ValueError(f'"finding.level" must be one of {sorted(lv.value for lv in FindingLevel)}'
                         f', got {_short(finding.get("level"))}')
    if not isinstance(finding.get("summary", ""), str):
        raise ValueError('"finding.summary" must be a string')
    detail = finding.get("detail")
    if detail is not None and not (isinstance(detail, list)
                                   and all(isinstance(row, dict) for row in detail)):
        raise ValueError('"finding.detail" must be a list of objects')
    if _depth(detail, MAX_EXTRA_DEPTH) > MAX_EXTRA_DEPTH:
        raise ValueError(f'"finding.detail" is nested deeper than {MAX_EXTRA_DEPTH} levels')


def check_run(raw: Any) -> None:
    """Raise ValueError unless ``raw`` is a run row jupycron can use safely."""
    if not isinstance(raw, dict):
        raise ValueError(f"a run must be an object, got {_short(raw)}")
    run_id = raw.get("run_id")
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or len(run_id) > 200:
        raise ValueError(f'"run_id" must be letters, digits, "-" and "_", got {_short(run_id)}')
    for key in _STRINGS:
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f'"{key}" must be a string, got {_short(v)}')
    if not isinstance(raw.get("notebook"), str):
        raise ValueError('"notebook" is missing')
    _iso(raw, "started_at", required=True)
    _iso(raw, "slot")
    _iso(raw, "finished_at")
    if raw.get("status", "running") not in _STATUSES:
        raise ValueError(f'"status" must be one of {sorted(_STATUSES)}, got {_short(raw.get("status"))}')
    if raw.get("trigger", "schedule") not in _TRIGGERS:
        raise ValueError(f'"trigger" must be one of {sorted(_TRIGGERS)}, got {_short(raw.get("trigger"))}')
    for key in _NUMBERS:
        _number(raw, key)
    _int(raw, "pid", 1, _MAX_PID)
    _int(raw, "error_cell", 0, 10**9)
    _rel_path(raw, "output")
    _check_extra(raw.get("extra", {}))
    _check_typed_kernel(raw.get("kernel"))
    _check_finding(raw.get("finding"))


def check_entry_fields(raw: Any) -> None:
    """Raise ValueError unless the entry's own fields (not its runs) are sound."""
    if not isinstance(raw, dict):
        raise ValueError(f"a notebook entry must be an object, got {_short(raw)}")
    if not isinstance(raw.get("runs", []), list):
        raise ValueError('"runs" must be a list')
    _iso(raw, "deleted_at")
    _iso(raw, "first_seen")
    lso = raw.get("last_success_output")
    if lso is not None and not isinstance(lso, str):
        raise ValueError('"last_success_output" must be a string or null')
    _rel_path(raw, "last_success_output")


def _short(v: Any) -> str:
    try:
        text = repr(v)
    except ValueError:  # an int too long to print (sys.set_int_max_str_digits)
        text = f"<{type(v).__name__} too large>"
    return text if len(text) <= 60 else text[:57] + "..."
