"""The single network seam of the alert senders: one request, a timeout, bounded retries.

Every channel builds an :class:`HttpRequest` (pure data) and hands it to :func:`send`, the only
function here that does I/O. Tests patch or point this one place.

Retry policy (:class:`RetryPolicy`, read from the settings ``OONI_HTTP_TIMEOUT``,
``OONI_HTTP_RETRIES`` and ``OONI_HTTP_BACKOFF``):

* only transient failures are retried: connection errors, timeouts, HTTP 5xx, 408 and 429;
* attempt ``n`` (1-based) that fails waits ``backoff * 2**(n-1)`` seconds, capped at
  :data:`BACKOFF_CAP`; a 429/503 ``Retry-After`` header (seconds or HTTP date) replaces that
  delay, capped at :data:`RETRY_AFTER_CAP`, so a rate-limited alert never blocks a run for long;
* any other 4xx (and 3xx, since redirects are not followed) fails at once with
  ``AlertError(permanent=True)``.

Deadline: httpx's timeout bounds each socket operation, so an endpoint that trickles one
byte every few seconds would hold a request for ever. :func:`send` also bounds the whole
delivery (every attempt, every wait) by ``RetryPolicy.deadline`` (default: what the attempts
and waits could take without a trickle): each connect, read and write gets at most the time
left, through a network back-end wrapped around httpcore's. ``RetryPolicy.cancel`` (an
event, e.g. set by SIGTERM) aborts a delivery within :data:`CANCEL_POLL_S`.

Secrets: webhook paths (Slack's URL *is* the credential, an ntfy topic is one too), query
strings, userinfo and tokens never appear in error messages or log records. Errors name the
endpoint host only, and while a request is in flight a logging filter scrubs those secrets from
httpx's own ``HTTP Request: POST <url>`` records (visible when an application logs at INFO).
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from .. import config
from ..exceptions import AlertError, ConfigError

log = logging.getLogger(__name__)

BACKOFF_CAP = 10.0
"""Longest wait (seconds) between two attempts computed by exponential backoff."""
RETRY_AFTER_CAP = 30.0
"""Longest wait (seconds) honoured from a server's ``Retry-After`` header."""
TRANSIENT_STATUS = frozenset({408, 429})
"""4xx statuses worth retrying; every 5xx is retried too."""
_BODY_EXCERPT = 200
CANCEL_POLL_S = 0.2
"""How often a blocked socket operation checks ``RetryPolicy.cancel``."""


@dataclass(frozen=True)
class HttpRequest:
    """One outgoing request, built by a transport's pure ``payload()``.

    Exactly one of ``json`` (serialised by httpx as UTF-8 JSON) and ``content`` (raw bytes) is
    normally set. ``secrets`` lists extra strings (tokens) that must never be shown; the URL's
    own secret parts are found by :func:`url_secrets`.
    """

    method: str
    url: str = field(repr=False)  # may itself be the credential (Slack webhook)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = None
    content: bytes | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def host(self) -> str:
        return endpoint_host(self.url)

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.host}, json={self.json!r}, content={self.content!r})"

    def all_secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (*url_secrets(self.url), *self.secrets) if s)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one attempt may take and how often a transient failure is retried.

    ``attempts`` counts every try (1 = no retry); ``timeout`` and ``backoff`` are seconds.
    """

    attempts: int = 3
    timeout: float = 10.0
    backoff: float = 0.5
    #: Bound on the whole delivery (seconds); None: :meth:`total_deadline`'s default.
    deadline: float | None = None
    #: Set (e.g. by a SIGTERM handler) to abort the delivery at once.
    cancel: threading.Event | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.backoff < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {self.backoff}")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {self.deadline}")

    def total_deadline(self) -> float:
        """``deadline``, or every attempt at its timeout plus the longest wait allowed
        between attempts (a capped ``Retry-After``)."""
        if self.deadline is not None:
            return self.deadline
        wait = max(RETRY_AFTER_CAP, BACKOFF_CAP)
        return self.attempts * self.timeout + (self.attempts - 1) * wait

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        """Read ``OONI_HTTP_RETRIES``, ``OONI_HTTP_TIMEOUT`` and ``OONI_HTTP_BACKOFF``."""
        raw = config.get("OONI_HTTP_RETRIES")
        try:
            attempts = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting OONI_HTTP_RETRIES must be an integer >= 1, got {raw!r}",
                              "OONI_HTTP_RETRIES") from exc
        if attempts < 1:
            raise ConfigError(f"setting OONI_HTTP_RETRIES must be >= 1, got {attempts}",
                              "OONI_HTTP_RETRIES")
        timeout = config.get_float("OONI_HTTP_TIMEOUT")
        if timeout <= 0:
            raise ConfigError(f"setting OONI_HTTP_TIMEOUT must be > 0, got {timeout}",
                              "OONI_HTTP_TIMEOUT")
        backoff = config.get_float("OONI_HTTP_BACKOFF")
        if backoff < 0:
            raise ConfigError(f"setting OONI_HTTP_BACKOFF must be >= 0, got {backoff}",
                              "OONI_HTTP_BACKOFF")
        return cls(attempts=attempts, timeout=timeout, backoff=backoff)


def endpoint_host(url: str) -> str:
    """``host`` or ``host:port`` of ``url``, without scheme, userinfo, path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}" if port else (host or "<no host>")


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` treated as secret: path, query, fragment, user name and password.

    Both the raw and the percent-decoded forms are returned so either spelling is scrubbed.
    A bare ``/`` path is not a secret (and would match everything).
    """
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return [url]
    found: list[str] = []
    path = parts.path.strip("/")
    for value in (path, parts.query, parts.fragment, user, password):
        if value:
            found.extend({value, unquote(value)})
    return found


SHORT_SECRET = 6
"""Secrets shorter than this are replaced only where they stand alone (not inside a longer
run of letters and digits): an ntfy topic ``t`` must not turn "timed out" into "***imed
ou***", which hides why a delivery failed."""


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of each secret (longest first) replaced by ``***``
    (a secret shorter than :data:`SHORT_SECRET` characters only where it stands alone)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])", "***", text)
    return text


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, float((when - now).total_seconds()))


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    ``retry_after`` (from the server) wins over the exponential backoff but is capped at
    :data:`RETRY_AFTER_CAP`; the backoff ``backoff * 2**(attempt-1)`` is capped at
    :data:`BACKOFF_CAP`.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    return min(backoff * 2.0 ** (attempt - 1), BACKOFF_CAP)


def is_transient_status(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUS


# --- keeping secrets out of httpx's own log records -------------------------------------------

_ACTIVE_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "ooniutils_alert_secrets", default=())
_SCRUBBED_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2",
                     "httpcore.proxy")


class _ScrubSecrets(logging.Filter):
    """Rewrites records emitted while one of our requests is in flight (same context only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _ACTIVE_SECRETS.get()
        if secrets:
            message = record.getMessage()
            cleaned = redact(message, secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_FILTER = _ScrubSecrets()
for _name in _SCRUBBED_LOGGERS:
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _ScrubSecrets) for f in _logger.filters):
        _logger.addFilter(_FILTER)


@contextlib.contextmanager
def _scrubbing(secrets: tuple[str, ...]) -> Iterator[None]:
    token = _ACTIVE_SECRETS.set(secrets)
    try:
        yield
    finally:
        _ACTIVE_SECRETS.reset(token)


# --- a deadline for the whole delivery ---------------------------------------------------------

class DeliveryCancelled(Exception):
    """The policy's ``cancel`` event was set while a delivery was in flight."""


class _Deadline:
    """The end of a delivery (monotonic clock) and its cancel event."""

    def __init__(self, seconds: float, cancel: threading.Event | None) -> None:
        self.end = time.monotonic() + seconds
        self.cancel = cancel

    def left(self) -> float:
        return self.end - time.monotonic()

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def bound(self, timeout: float | None, expired: type[Exception]) -> float:
        """``timeout`` cut to the time left; raises ``expired`` (or cancelled) when none is."""
        if self.cancelled():
            raise DeliveryCancelled("cancelled")
        left = self.left() if timeout is None else min(self.left(), timeout)
        if left <= 0:
            raise expired("the delivery's deadline passed")
        return left

    def step(self, timeout: float | None, expired: type[Exception]) -> tuple[float, bool]:
        """(seconds this socket operation may block next, whether that is its last chance).

        Raises ``expired`` once the operation's own timeout or the deadline has passed and
        :class:`DeliveryCancelled` once cancelled."""
        left = self.bound(timeout, expired)
        if self.cancel is not None and left > CANCEL_POLL_S:
            return CANCEL_POLL_S, False
        return left, True


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the delivery's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            wait, last = self._deadline.step(
                None if end is None else end - time.monotonic(), httpcore.ReadTimeout)
            try:
                return self._inner.read(max_bytes, wait)
            except httpcore.ReadTimeout:
                if last:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Alerts are small: one write bounded by the time left (no cancel slices).
        self._inner.write(buffer, self._deadline.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      self._deadline.bound(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's back-end with every connection bounded by one :class:`_Deadline`."""

    def __init__(self, inner: httpcore.NetworkBackend, deadline: _Deadline) -> None:
        self._inner, self._deadline = inner, deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port,
                                         self._deadline.bound(timeout, httpcore.ConnectTimeout),
                                         local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        wait = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, wait, socket_options),
                               self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(min(seconds, max(0.0, self._deadline.left())))


def _bounded_transport(deadline: _Deadline) -> httpx.HTTPTransport:
    """httpx's own transport (same TLS, pool and settings), its sockets under ``deadline``."""
    transport = httpx.HTTPTransport()
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):  # pragma: no cover - httpcore changed
        raise RuntimeError("httpcore's connection pool has no network back-end to bound")
    pool._network_backend = _DeadlineBackend(backend, deadline)
    return transport


# --- sending ----------------------------------------------------------------------------------

_sleep = time.sleep  # the one name tests patch to observe waits without waiting


def _body_excerpt(response: httpx.Response, secrets: Sequence[str]) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError, httpx.HTTPError):
        return ""
    text = " ".join(text.split())[:_BODY_EXCERPT]
    return redact(text, secrets)


def send(channel: str, request: HttpRequest, policy: RetryPolicy | None = None) -> httpx.Response:
    """Send ``request`` with retries; return the first 2xx response.

    Raises :class:`AlertError` (``channel``, ``host``, ``permanent``) when the request cannot
    be delivered: ``permanent=True`` for 3xx/4xx other than 408/429 and for malformed URLs,
    ``permanent=False`` when transient failures used up every attempt.
    """
    policy = policy or RetryPolicy.from_settings()
    host = request.host
    secrets = request.all_secrets()
    try:
        parsed = httpx.URL(request.url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise AlertError(f"{channel}: invalid endpoint URL for host {host}", channel, host,
                         permanent=True) from None if _leaks(exc, secrets) else exc
    if host == "<invalid url>" or parsed.scheme not in ("http", "https") or not parsed.host:
        raise AlertError(f"{channel}: endpoint URL must be http(s)://host/..., host is {host}",
                         channel, host, permanent=True)

    last_problem = ""
    last_exc: Exception | None = None
    total = policy.total_deadline()
    deadline = _Deadline(total, policy.cancel)
    attempts_made = 0
    with _scrubbing(secrets), httpx.Client(timeout=policy.timeout, follow_redirects=False,
                                           transport=_bounded_transport(deadline)) as client:
        for attempt in range(1, policy.attempts + 1):
            retry_after: float | None = None
            attempts_made = attempt
            try:
                response = client.request(request.method, request.url, headers=dict(request.headers),
                                          json=request.json, content=request.content)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                last_exc = exc
                last_problem = redact(f"{type(exc).__name__}: {exc}".rstrip(": "), secrets)
                if deadline.left() <= 0:
                    last_problem = f"no answer within the {total:g} s deadline; {last_problem}"
            except DeliveryCancelled:
                raise AlertError(f"{channel}: delivery to {host} cancelled (shutting down)",
                                 channel, host, permanent=False) from None
            except httpx.HTTPError as exc:  # unsupported protocol, invalid header, ...
                raise AlertError(
                    redact(f"{channel}: request to {host} failed: {type(exc).__name__}: {exc}",
                           secrets),
                    channel, host, permanent=True) from None if _leaks(exc, secrets) else exc
            else:
                if response.is_success:
                    if attempt > 1:
                        log.info("%s: delivered to %s on attempt %d", channel, host, attempt)
                    else:
                        log.debug("%s: delivered to %s", channel, host)
                    return response
                status = response.status_code
                problem = f"HTTP {status} {response.reason_phrase}".rstrip()
                excerpt = _body_excerpt(response, secrets)
                if excerpt:
                    problem += f": {excerpt}"
                if not is_transient_status(status):
                    raise AlertError(f"{channel}: {host} rejected the request ({problem})",
                                     channel, host, permanent=True)
                last_exc, last_problem = None, problem
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < policy.attempts:
                delay = retry_delay(attempt, policy.backoff, retry_after)
                if delay >= deadline.left():
                    last_problem += f"; no time left for a retry within the {total:g} s deadline"
                    break
                log.warning("%s: attempt %d/%d to %s failed (%s); retrying in %.2fs",
                            channel, attempt, policy.attempts, host, last_problem, delay)
                if policy.cancel is not None:
                    if policy.cancel.wait(delay):
                        raise AlertError(f"{channel}: delivery to {host} cancelled (shutting down)",
                                         channel, host, permanent=False)
                else:
                    _sleep(delay)
    message = (f"{channel}: could not deliver to {host} after {attempts_made} "
               f"attempt{'s' if attempts_made > 1 else ''} ({last_problem})")
    error = AlertError(message, channel, host, permanent=False)
    if last_exc is not None and not _leaks(last_exc, secrets):
        raise error from last_exc
    raise error from None


def _leaks(exc: BaseException, secrets: Sequence[str]) -> bool:
    """True when chaining ``exc`` would show a secret in a traceback."""
    text = f"{exc} {exc.args!r}"
    return any(s and s in text for s in secrets)
