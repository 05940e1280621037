"""The dashboard's users (``web_users``), re-read from the config file when it changes.

``jupycron passwd`` rewrites the config file while ``serve`` (or ``daemon --serve``) runs; a
changed or revoked password must count at once, not at the next restart. :class:`UserTable`
therefore ``stat()``s the file on each lookup (a few microseconds) and re-reads its
``[web_users]`` table when the file's identity, size or times changed (``passwd`` replaces
the file by a rename, so the inode changes too).

When the file changed and can no longer be read or parsed, lookups raise
:class:`~jupycron.exceptions.ConfigError` until it is fixed: the old users are *not* kept,
since the edit may have been the revocation of a leaked password.

Only ``web_users`` is reloaded; every other setting still needs a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from ..config import Settings, read_toml
from ..exceptions import ConfigError

log = logging.getLogger(__name__)

__all__ = ["UserTable"]

_Signature = tuple[int, int, int, int, int]


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_users(path: Path) -> dict[str, str]:
    """The ``[web_users]`` table of the TOML file ``path`` (empty when absent)."""
    doc = read_toml(path)
    users = doc.get("web_users", {})
    if not isinstance(users, Mapping):
        raise ConfigError(f"{path}: web_users must be a table of user = argon2 hash", "web_users")
    bad = sorted(str(k) for k, v in users.items() if not isinstance(v, str))
    if bad:
        raise ConfigError(f"{path}: web_users entries {', '.join(bad)} are not strings "
                          "(set them with `jupycron passwd USER`)", "web_users")
    return dict(users)


class UserTable:
    """``web_users`` of ``settings``, kept in step with ``settings.config_file``.

    Without a config file the table is the fixed ``settings.web_users``.
    """

    def __init__(self, settings: Settings) -> None:
        self._path = settings.config_file
        self._users: dict[str, str] = dict(settings.web_users)
        self._error: ConfigError | None = None
        self._lock = threading.Lock()
        self._sig = _signature(self._path) if self._path is not None else None

    def current(self) -> Mapping[str, str]:
        """The users now; raises ConfigError when the changed file cannot be read."""
        if self._path is None:
            return self._users
        sig = _signature(self._path)
        with self._lock:
            if sig != self._sig:
                self._reload(self._path, sig)
            if self._error is not None:
                raise self._error
            return self._users

    def _reload(self, path: Path, sig: _Signature | None) -> None:
        self._sig = sig
        try:
            users = read_users(path)
        except ConfigError as exc:
            self._users, self._error = {}, exc
            log.error("web users not reloaded, every login is refused until it is fixed: %s", exc)
            return
        if self._error is not None or users != self._users:
            log.info("web users reloaded from %s (%d user(s))", path, len(users))
        self._users, self._error = users, None
