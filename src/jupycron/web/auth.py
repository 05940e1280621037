"""Who is asking: team passwords (HTTP Basic), a trusted proxy header, or anonymous reads.

Rules (checked in this order by :func:`identify`):

1. ``web_proxy_auth_header`` set (e.g. ``X-Remote-User``): the request's value of that header
   is the user. Only configure this when the dashboard is reachable *only* through the proxy
   that sets (and strips from client requests) the header; otherwise anyone can claim a name.
2. ``Authorization: Basic`` credentials checked against ``web_users`` (argon2 hashes written
   by ``jupycron passwd``). Wrong credentials are refused even when anonymous reads are on.
3. No credentials: an anonymous *read-only* identity when ``web_anonymous_read`` is true,
   else refused (401 with a ``WWW-Authenticate`` challenge).

POST requests always need a named user (anonymous readers cannot run notebooks).

Browsers: HTTP Basic is what Chromium/Firefox prompt for natively, and the headless test
drives it by adding the ``Authorization`` header through the DevTools protocol
(``Network.setExtraHTTPHeaders``), so no login form or session cookie is needed.

:func:`set_password` edits the TOML config file for ``jupycron passwd``: it rewrites the file
atomically with every other key kept (comments are not kept: tomllib cannot round-trip them).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import os
import re
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ooniutils.atomicfile import atomic_write_bytes

from ..config import Settings
from ..exceptions import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Identity", "dump_toml", "hash_password", "identify", "set_password", "verify_password"]

_HASHER = PasswordHasher()
# A hash of a random password, verified when the user is unknown so that the response time
# does not tell which user names exist.
_DUMMY_HASH = _HASHER.hash(base64.b64encode(os.urandom(16)).decode())
_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class Identity:
    """The requester. ``user`` is None for an anonymous reader."""

    user: str | None
    via: str  # "basic", "proxy" or "anonymous"

    @property
    def can_write(self) -> bool:
        return self.user is not None


def validate_user(user: str) -> str:
    """User names: 1-64 of letters, digits and ``_ . @ -`` (no ``:``, which Basic auth splits on)."""
    if not _USER_RE.match(user or ""):
        raise ConfigError(f"invalid user name {user!r}: use 1-64 letters, digits, '_', '.', '@' "
                          "or '-'", "web_users")
    return user


def hash_password(password: str) -> str:
    """An argon2id hash (salted, with argon2-cffi's default cost) of ``password``."""
    if not password:
        raise ConfigError("the password must not be empty", "web_users")
    return _HASHER.hash(password)


class _SuccessCache:
    """Remembers recently verified (user, password, hash) triples for :data:`CACHE_TTL_S`.

    HTTP Basic sends the password with every request and an argon2 check costs about 64 MB
    and tens of milliseconds (a second on a busy small VM), so successful checks are cached
    under an HMAC with a per-process random key (the password itself is not kept). Failed
    checks are never cached: guessing stays as slow as argon2 makes it.
    """

    def __init__(self, size: int = 256) -> None:
        self._key = os.urandom(32)
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[bytes, float] = {}

    def _digest(self, user: str, password: str, stored: str) -> bytes:
        msg = "\0".join((user, password, stored)).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, "sha256").digest()

    def hit(self, user: str, password: str, stored: str) -> bool:
        d = self._digest(user, password, stored)
        with self._lock:
            at = self._entries.get(d)
            return at is not None and time.monotonic() - at < CACHE_TTL_S

    def add(self, user: str, password: str, stored: str) -> None:
        d = self._digest(user, password, stored)
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[d] = time.monotonic()


CACHE_TTL_S = 600.0
_CACHE = _SuccessCache()


def verify_password(users: Mapping[str, str], user: str, password: str) -> bool:
    """True when ``user`` exists in ``users`` and ``password`` matches its argon2 hash.

    A malformed stored hash counts as a mismatch (and is logged), never as an error page.
    Successes are cached for :data:`CACHE_TTL_S` (see :class:`_SuccessCache`); changing the
    hash (``jupycron passwd``) invalidates them, since the hash is part of the key.
    """
    stored = users.get(user)
    if stored is not None and _CACHE.hit(user, password, stored):
        return True
    try:
        _HASHER.verify(stored if stored is not None else _DUMMY_HASH, password)
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError):
        log.warning("web_users entry for %r is not a valid argon2 hash: run `jupycron passwd %s`",
                    user, user)
        return False
    if stored is None:
        return False
    _CACHE.add(user, password, stored)
    return True


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` -> (user, password); None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def identify(settings: Settings, headers: Mapping[str, str]) -> Identity | None:
    """The identity of a request with these headers, or None when it must be refused (401).

    ``headers`` is case-insensitive (Starlette's ``Headers``) or has lower-case names.
    """
    if settings.web_proxy_auth_header:
        user = (headers.get(settings.web_proxy_auth_header.lower()) or "").strip()
        if user:
            return Identity(user, "proxy")
    creds = parse_basic(headers.get("authorization"))
    if creds is not None:
        user, password = creds
        if verify_password(settings.web_users, user, password):
            return Identity(user, "basic")
        return None
    if settings.web_anonymous_read:
        return Identity(None, "anonymous")
    return None


def csrf_token(secret: bytes, user: str) -> str:
    """The CSRF token of ``user``: an HMAC of the name under the app's per-process secret."""
    return hmac.new(secret, b"csrf:" + user.encode("utf-8"), "sha256").hexdigest()


def check_csrf_token(secret: bytes, user: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(secret, user), token or "")


# --- editing the TOML config file (jupycron passwd) ---------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_scalar(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    raise ConfigError(f"config key {key!r}: cannot rewrite a value of type {type(v).__name__} "
                      "(only strings, numbers, booleans and one level of tables)", key)


def dump_toml(doc: Mapping[str, Any]) -> str:
    """Serialise a jupycron config: top-level scalars, then one-level tables of scalars.

    That is every shape :class:`jupycron.config.Settings` accepts; anything else (arrays,
    nested tables, dates) raises ConfigError rather than being written wrongly.
    """
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_scalar(key, value)}")
    for name, table in tables:
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            if isinstance(value, Mapping):
                raise ConfigError(f"config table [{name}] holds a nested table {key!r}", name)
            lines.append(f"{_toml_key(key)} = {_toml_scalar(f'{name}.{key}', value)}")
    return "\n".join(lines) + "\n"


def set_password(config_file: Path, user: str, password: str) -> bool:
    """Add ``user`` or change its password in ``config_file``'s ``[web_users]`` table.

    Returns True when the user is new. The file is created (mode 0600) when missing; an
    existing file keeps its mode and every other key, and is replaced atomically (temporary
    file in the same folder, fsync, rename).
    """
    validate_user(user)
    config_file = Path(config_file)
    doc: dict[str, Any] = {}
    mode = 0o600
    if config_file.exists():
        try:
            with config_file.open("rb") as fh:
                doc = tomllib.load(fh)
            mode = config_file.stat().st_mode & 0o777
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}", "config") from exc
    users = doc.get("web_users", {})
    if not isinstance(users, dict):
        raise ConfigError(f"{config_file}: web_users must be a table", "web_users")
    is_new = user not in users
    users = {**users, user: hash_password(password)}
    doc["web_users"] = users
    payload = dump_toml(doc).encode("utf-8")
    atomic_write_bytes(config_file, payload, mode=mode)
    log.info("%s web user %s in %s", "added" if is_new else "changed password of", user, config_file)
    return is_new
