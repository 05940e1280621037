"""Temp folders left behind by chDB sessions of processes that are gone.

Every chDB session, in-memory ones included, works in a folder
``<tmp>/clickhouse-embedded-<uuid>`` (tables created in the session, spill files, its
``status`` file). chDB removes it when the session is closed or the interpreter exits
normally, but not when the process ends with ``os._exit`` (a forked notebook kernel),
a signal or ``kill -9`` (a run over its memory or time limit). On a monitoring host that
is one folder per notebook run — hundreds a day, and a benchmark's MergeTree copy can
leave gigabytes — until the disk or its inodes run out.

chDB holds an exclusive ``flock`` on the folder's ``status`` file for as long as its
session lives (as ``clickhouse-server`` does on its own status file). So a folder whose
``status`` can be locked belongs to no live session, whichever process, user namespace or
container made it, and is removed. A folder without ``status`` is one being created or
removed right now; it is left alone unless older than :data:`INCOMPLETE_AGE_SECONDS`.
Only direct sub-folders named exactly like chDB's and owned by this user are considered;
symbolic links are never followed.

:func:`sweep` runs when a process opens its first chDB session
(:mod:`.embedded`), so each notebook run clears what earlier killed runs left.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

__all__ = ["INCOMPLETE_AGE_SECONDS", "sweep"]

log = logging.getLogger(__name__)

NAME = re.compile(r"clickhouse-embedded-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""chDB's folder name: ``clickhouse-embedded-`` and a UUID."""
INCOMPLETE_AGE_SECONDS = 3600.0
"""A folder without a ``status`` file this old is a removal that was cut short."""


def _owner_is_gone(folder: Path, now: float) -> bool:
    """True when no live chDB session holds ``folder`` (see module doc)."""
    try:
        fd = os.open(folder / "status", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            return now - os.lstat(folder).st_mtime > INCOMPLETE_AGE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # not ours to judge (permissions, a symlink planted as status, ...)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False  # a live session holds it
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def sweep(tmp_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the chDB session folders of sessions that are gone; returns those removed.

    ``tmp_dir`` defaults to where chDB puts them (``$TMPDIR``, else ``/tmp``). Never
    raises for a folder it cannot read or remove: that one is logged and left.
    """
    base = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.gettempdir())
    uid = os.geteuid()
    now = time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError as exc:
        log.debug("cannot list %s for stale chDB session folders: %s", base, exc)
        return removed
    for entry in entries:
        if not NAME.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        folder = Path(entry.path)
        try:
            if not _owner_is_gone(folder, now):
                continue
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue  # another process swept it first
        except OSError as exc:
            log.warning("could not remove the stale chDB session folder %s: %s", folder, exc)
            continue
        removed.append(folder)
    if removed:
        log.info("removed %d chDB session folder(s) left by processes that are gone in %s",
                 len(removed), base)
    return removed
