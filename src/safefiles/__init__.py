"""safefiles: the file primitives both jupycron and ooniutils build on, with no dependency
beyond the standard library (a leaf: it imports nothing from either package).

- :mod:`safefiles.atomic` — replace a file atomically (readers see the old or the new file,
  never a partial one).
- :mod:`safefiles.locks` — the one advisory file lock (``fcntl.flock``) helper.
- :mod:`safefiles.stamps` — the one "has this file changed?" stamp, safe against writes that
  land within the file system's timestamp granularity.
"""

from __future__ import annotations

from .atomic import DEFAULT_MODE, atomic_copy, atomic_write_bytes, atomic_write_text
from .locks import LockTimeout, lock_fd, locked, try_locked
from .stamps import RACY_WINDOW_NS, Stamp, stamp, trusted

__all__ = [
    "DEFAULT_MODE",
    "LockTimeout",
    "RACY_WINDOW_NS",
    "Stamp",
    "atomic_copy",
    "atomic_write_bytes",
    "atomic_write_text",
    "lock_fd",
    "locked",
    "stamp",
    "trusted",
    "try_locked",
]
