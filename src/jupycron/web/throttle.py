"""Failed-login limiting: a token bucket per client address.

Each client (the TCP peer address, an IPv6 one by its /64 network since a host usually
holds a whole /64; behind a reverse proxy that is the proxy, see the README) has a bucket of :data:`FAILED_LOGIN_BURST` tokens that refills by one token every
:data:`FAILED_LOGIN_REFILL_S` seconds. Checking a password (one not in the success cache)
takes a token first; a correct password gives it back, so only failures use the bucket up.
With the bucket empty, the request is refused with ``429 Too Many Requests`` and a
``Retry-After`` header, without running argon2 at all. So one client can try at most
10 passwords at once and then 10 a minute, and cannot queue up argon2 work for others.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["FAILED_LOGIN_BURST", "FAILED_LOGIN_REFILL_S", "FailureThrottle", "client_key"]

FAILED_LOGIN_BURST = 10
"""Failed password checks a client may make in a row."""
FAILED_LOGIN_REFILL_S = 6.0
"""Seconds for one more attempt to come back (10 a minute once the burst is spent)."""
_MAX_CLIENTS = 4096  # full buckets are forgotten beyond this many clients


def client_key(host: str) -> str:
    """The bucket of a peer address: IPv4 as is, IPv6 by its /64 (IPv4-mapped ones as IPv4)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    """Token buckets of failed password checks, per client (thread-safe)."""

    def __init__(self, burst: int = FAILED_LOGIN_BURST, refill_s: float = FAILED_LOGIN_REFILL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or not refill_s > 0:
            raise ValueError("burst must be >= 1 and refill_s > 0")
        self.burst = burst
        self.refill_s = refill_s
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, client: str, now: float) -> _Bucket:
        b = self._buckets.get(client)
        if b is None:
            if len(self._buckets) >= _MAX_CLIENTS:
                self._forget_full(now)
            b = self._buckets[client] = _Bucket(float(self.burst), now)
        else:
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) / self.refill_s)
            b.at = now
        return b

    def _forget_full(self, now: float) -> None:
        for key, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) / self.refill_s >= self.burst:
                del self._buckets[key]

    def take(self, client: str) -> float:
        """Take a token for a password check: 0.0 when granted, else the seconds until the
        next token (the ``Retry-After``)."""
        with self._lock:
            now = self._clock()
            b = self._bucket(client, now)
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                if b.tokens < 1.0:
                    log.warning("client %s used up its %d failed logins; further attempts are "
                                "refused (one more every %.0f s)", client, self.burst, self.refill_s)
                return 0.0
            return (1.0 - b.tokens) * self.refill_s

    def give_back(self, client: str) -> None:
        """Return the token of a check that succeeded."""
        with self._lock:
            b = self._bucket(client, self._clock())
            b.tokens = min(float(self.burst), b.tokens + 1.0)

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
