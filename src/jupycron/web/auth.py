"""Who is asking: team passwords (HTTP Basic), a trusted proxy header, or anonymous reads.

Rules (checked in this order by :meth:`Authenticator.identify`):

1. ``web_proxy_auth_header`` set (e.g. ``X-Remote-User``): the request's value of that header
   is the user. Only configure this when the dashboard is reachable *only* through the proxy
   that sets (and strips from client requests) the header; otherwise anyone can claim a name.
2. ``Authorization: Basic`` credentials checked against ``web_users`` (argon2 hashes written
   by ``jupycron passwd``). Wrong credentials are refused even when anonymous reads are on.
3. No credentials: an anonymous *read-only* identity when ``web_anonymous_read`` is true,
   else refused (401 with a ``WWW-Authenticate`` challenge).

POST requests always need a named user (anonymous readers cannot run notebooks).

Serving: :class:`AuthMiddleware` identifies each request before the routes run. Users are
re-read when the config file changes (``jupycron passwd`` takes effect at once, see
:mod:`jupycron.web.users`); argon2 checks (tens of ms of CPU and 64 MiB each) run in at most
:data:`ARGON2_THREADS` worker threads, never on the event loop; successful checks are
cached (:class:`_SuccessCache`); failed checks are limited per client address
(:mod:`jupycron.web.throttle`: 10 at once, then one every 6 s; beyond that ``429`` with
``Retry-After``, without running argon2).

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

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from safefiles.atomic import atomic_write_bytes

from ..config import Settings
from ..exceptions import ConfigError
from .throttle import FailureThrottle, client_key
from .users import UserTable

log = logging.getLogger(__name__)

__all__ = ["AUTH_SCOPE_KEY", "AuthMiddleware", "AuthOutcome", "Authenticator", "Identity", "dump_toml",
           "hash_password", "set_password", "verify_password"]

ARGON2_THREADS = 2
"""Password checks run at once (each takes 64 MiB and a core for tens of ms); more wait."""

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


@dataclass(frozen=True)
class AuthOutcome:
    """What :meth:`Authenticator.identify` found: the identity (None: refuse with 401), or
    ``retry_after`` seconds when the client is throttled (429), or the ``error`` that stops
    the users from being read (503)."""

    identity: Identity | None
    retry_after: float | None = None
    error: ConfigError | None = None


class Authenticator:
    """:func:`identify`'s rules for a served app, with the users re-read when the config file
    changes (:class:`~jupycron.web.users.UserTable`), argon2 checks run in worker threads
    (at most :data:`ARGON2_THREADS` at once, so the event loop keeps answering while
    passwords are guessed) and failed checks limited per client
    (:class:`~jupycron.web.throttle.FailureThrottle`).
    """

    def __init__(self, settings: Settings, throttle: FailureThrottle | None = None,
                 threads: int = ARGON2_THREADS) -> None:
        self.settings = settings
        self.users = UserTable(settings)
        self.throttle = throttle or FailureThrottle()
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    def _capacity(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created in the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self._threads)
        return self._limiter

    async def identify(self, headers: Mapping[str, str], client: str) -> AuthOutcome:
        """Who sends a request with these ``headers`` from the address ``client``."""
        s = self.settings
        if s.web_proxy_auth_header:
            user = (headers.get(s.web_proxy_auth_header.lower()) or "").strip()
            if user:
                return AuthOutcome(Identity(user, "proxy"))
        creds = parse_basic(headers.get("authorization"))
        if creds is None:
            return AuthOutcome(Identity(None, "anonymous") if s.web_anonymous_read else None)
        user, password = creds
        try:
            users = self.users.current()
        except ConfigError as exc:
            return AuthOutcome(None, error=exc)
        stored = users.get(user)
        if stored is not None and _CACHE.hit(user, password, stored):
            return AuthOutcome(Identity(user, "basic"))  # proven recently: no token, no thread
        wait = self.throttle.take(client)
        if wait:
            return AuthOutcome(None, retry_after=wait)
        ok = await anyio.to_thread.run_sync(verify_password, users, user, password,
                                            limiter=self._capacity())
        if not ok:
            log.info("failed login for %r from %s", user, client)
            return AuthOutcome(None)
        self.throttle.give_back(client)
        return AuthOutcome(Identity(user, "basic"))


AUTH_SCOPE_KEY = "jupycron.auth"


class AuthMiddleware:
    """ASGI middleware: runs :meth:`Authenticator.identify` for every HTTP request and puts
    the :class:`AuthOutcome` in ``scope["jupycron.auth"]``; the routes decide what it means
    for them (pages need a user, ``/healthz`` and ``/static`` do not)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            scope[AUTH_SCOPE_KEY] = await self.authenticator.identify(
                Headers(scope=scope), client_key(client[0]) if client else "unknown")
        await self.app(scope, receive, send)


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
