"""The one "has this file changed?" stamp.

A :class:`Stamp` is ``(mtime_ns, size, inode, ctime_ns)`` from one ``stat``. Writers that
replace a file by rename give it a new inode; writers that rewrite it in place change its
mtime, ctime or size. Equal stamps therefore mean "unchanged" with one caveat, the *racy
stamp* (the name comes from git's "racy git" problem): file timestamps have a granularity
(a coarse kernel clock tick, or 1-2 s on some file systems), so a second write of the same
size within that tick, to the same inode, leaves an identical stamp.

The rule: a stamp is only **trusted** to describe the content read with it when the file's
newest timestamp (mtime or ctime) is older than :data:`RACY_WINDOW_NS` before the moment the
read started. Take ``started_ns = time.time_ns()`` *before* the ``stat`` and the read (one
reading can serve a whole scan), then ask :func:`trusted`. A cache keeps an untrusted answer
for at most this one use and reads the file again next time.

>>> import time
>>> started = time.time_ns()
>>> st = Stamp.of(os.stat("/etc/hostname"))  # doctest: +SKIP
>>> trusted(st, started)                     # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["RACY_WINDOW_NS", "Stamp", "stamp", "trusted"]

RACY_WINDOW_NS = 2_000_000_000
"""How old (ns) a file's timestamps must be, when a read starts, for its stamp to be
trusted: the coarsest timestamp granularity of the file systems we meet (FAT-like: 2 s)."""


class Stamp(NamedTuple):
    """A file's identity for change detection (compares equal to the plain 4-tuple)."""

    mtime_ns: int
    size: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)

    @property
    def newest_ns(self) -> int:
        """The later of the file's mtime and ctime (ns since the epoch)."""
        return max(self.mtime_ns, self.ctime_ns)


def stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """The stamp of ``path``, None when it does not exist (other ``OSError`` are raised)."""
    try:
        return Stamp.of(os.stat(path))
    except FileNotFoundError:
        return None


def trusted(st: Stamp | os.stat_result, started_ns: int,
            window_ns: int = RACY_WINDOW_NS) -> bool:
    """Whether ``st`` may be remembered as the stamp of what was read: the file's newest
    timestamp is strictly older than ``window_ns`` before ``started_ns`` (``time.time_ns()``
    taken before the stat and the read)."""
    newest = st.newest_ns if isinstance(st, Stamp) else max(st.st_mtime_ns, st.st_ctime_ns)
    return newest < started_ns - window_ns
