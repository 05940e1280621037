"""TLS certificate expiry checks for the hosts of the backend.

One call checks many hosts concurrently and returns one row per host::

    from ooniutils.tls import check_tls_certs
    df = check_tls_certs(["api.ooni.io", "th.ooni.org:443"], warn_days=30)
    df[df.status != "ok"]

How a host is checked (two handshakes at most):

1. A handshake **with** verification (system trust store, plus ``cafile`` when given; the
   host name is checked against the certificate). When it succeeds, the certificate read
   there is the one reported.
2. When verification fails (expired, self-signed, unknown issuer, wrong name) the reason is
   kept in ``error`` and a second handshake **without** verification reads the certificate
   anyway, so an expired or untrusted certificate still shows its dates and issuer.

``status`` is, in this order: ``error`` when no certificate could be read (the connection
failed) or when it failed verification for a reason other than its dates; ``expired`` when
``not_after`` is past; ``expiring`` when fewer than ``warn_days`` days are left; else ``ok``.
Only the leaf certificate is judged: an intermediate that expires first shows up as a
verification error once it has expired.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from cryptography import x509

from .exceptions import AnalysisError

log = logging.getLogger(__name__)

COLUMNS = ["host", "port", "issuer", "subject", "not_after", "days_left", "status", "error"]
DEFAULT_PORT = 443


@dataclass
class _Row:
    host: str
    port: int
    issuer: str | None = None
    subject: str | None = None
    not_after: datetime | None = None
    days_left: int | None = None
    status: str = "error"
    error: str | None = None


def parse_host(item: str) -> tuple[str, int]:
    """Split ``"host"``, ``"host:port"``, ``"[v6addr]:port"`` or a bare IPv6 address into
    (host, port); the port defaults to 443. Raises :class:`AnalysisError` naming the item."""
    text = item.strip() if isinstance(item, str) else ""
    if not text:
        raise AnalysisError(f"host {item!r} is empty or not a string")
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not text[end + 1:].startswith(":")):
            raise AnalysisError(f"host {item!r}: use [IPv6]:port")
        host, port_text = text[1:end], text[end + 2:] or None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise AnalysisError(f"host {item!r}: not a host name or address")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AnalysisError(f"host {item!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def _peer_cert(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> bytes:
    """DER bytes of the certificate ``host:port`` presents (a full handshake with ``ctx``)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        server_name = host if ctx.check_hostname or not _is_ip(host) else None
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} sent no certificate")
    return der


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _contexts(cafile: str | None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    verify = ssl.create_default_context()
    if cafile:
        verify.load_verify_locations(cafile=cafile)
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    return verify, lax


def _check_one(host: str, port: int, warn_days: float, timeout: float, now: datetime,
               verify: ssl.SSLContext, lax: ssl.SSLContext) -> _Row:
    row = _Row(host, port)
    verify_error: str | None = None
    try:
        try:
            der = _peer_cert(host, port, verify, timeout)
        except ssl.SSLCertVerificationError as exc:
            verify_error = f"verification failed: {exc.verify_message or exc.reason or exc}"
            der = _peer_cert(host, port, lax, timeout)
    except (OSError, ssl.SSLError) as exc:  # refused, timeout, DNS, handshake failure
        row.error = f"cannot fetch certificate from {host}:{port}: {exc}"
        log.info("%s", row.error)
        return row
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        row.error = f"cannot parse the certificate of {host}:{port}: {exc}"
        return row
    row.issuer = cert.issuer.rfc4514_string()
    row.subject = cert.subject.rfc4514_string()
    row.not_after = cert.not_valid_after_utc
    left = row.not_after - now
    row.days_left = left.days  # whole days, floor: negative once expired
    row.error = verify_error
    if left.total_seconds() <= 0:
        row.status = "expired"
    elif verify_error:
        row.status = "error"
    elif left.total_seconds() < warn_days * 86400:
        row.status = "expiring"
    else:
        row.status = "ok"
    return row


def check_tls_certs(hosts: Iterable[str], warn_days: float = 30, timeout: float = 5, *,
                    cafile: str | None = None, now: datetime | None = None,
                    max_workers: int = 8) -> pd.DataFrame:
    """Check the TLS certificate of each of ``hosts`` (``"host"`` or ``"host:port"``, default
    port 443) and return a DataFrame with one row per host, in the given order.

    Columns: ``host``, ``port``, ``issuer`` and ``subject`` (RFC 4514 strings), ``not_after``
    (pandas datetime in UTC), ``days_left`` (whole days, negative once expired,
    missing when no certificate was read), ``status`` (``ok``/``expiring``/``expired``/
    ``error``, see the module doc) and ``error`` (why: connection or verification failure).

    ``timeout`` (seconds) applies to each connection; a host whose name lookup hangs is given
    up once the whole check has taken ``2 * timeout`` per wave of ``max_workers`` hosts plus
    5 s (its thread is abandoned, not joined). ``cafile`` adds trust anchors (PEM) to the system
    store; ``now`` (aware) pins the clock. A host that cannot be reached is a row with status
    ``error``, never an exception; a malformed item raises :class:`AnalysisError`.
    """
    if warn_days < 0 or timeout <= 0:
        raise AnalysisError(f"warn_days must be >= 0 and timeout > 0, got {warn_days}, {timeout}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise AnalysisError("now must be timezone-aware")
    targets = [parse_host(h) for h in ([hosts] if isinstance(hosts, str) else hosts)]
    verify, lax = _contexts(cafile)
    rows: list[_Row] = []
    if targets:
        workers = max(1, min(max_workers, len(targets)))
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tls-check")
        try:
            futures = [pool.submit(_check_one, h, p, warn_days, timeout, now, verify, lax)
                       for h, p in targets]
            # two handshakes per host, hosts in waves of `workers`, plus slack for name lookups
            waves = -(-len(targets) // workers)
            deadline = time.monotonic() + waves * 2 * timeout + 5
            for (h, p), fut in zip(targets, futures, strict=True):
                try:
                    rows.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
                except concurrent.futures.TimeoutError:
                    rows.append(_Row(h, p, error=f"cannot fetch certificate from {h}:{p}: "
                                                  f"no answer in time (name lookup?)"))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    df = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    df["port"] = df["port"].astype("int64")
    df["not_after"] = pd.to_datetime(df["not_after"], utc=True)
    df["days_left"] = df["days_left"].astype("Int64")
    return df


# --- alerting on the result (used by ooniutils.alarm_notify.send_tls_alerts) ------------------


def host_list(text: str | Iterable[str] | None) -> list[str]:
    """Hosts from a setting: comma- and/or space-separated ``host[:port]`` (or a list of
    them); empty items are dropped. Items are checked by :func:`parse_host` when used."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [h for item in items for h in str(item).replace(",", " ").split()]


def expected_offline_targets(hosts: str | Iterable[str] | None) -> set[tuple[str, int]]:
    """``(host, port)`` pairs that may be unreachable (``OONI_TLS_EXPECTED_OFFLINE``);
    a malformed item raises :class:`AnalysisError` naming it."""
    return {parse_host(h) for h in host_list(hosts)}


def cert_problems(certs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split :func:`check_tls_certs` rows into (problems, unreachable).

    ``problems``: a certificate was read and it is expired, expiring, or invalid for another
    reason (status ``error`` with ``not_after`` known). ``unreachable``: no certificate could
    be read (``error`` says why). A host that cannot be reached is not "fine": the alerts
    announce it (state ``unreachable``) unless the configuration marks it as expected
    offline (:func:`expected_offline_targets`).
    """
    missing = {"host", "port", "status", "not_after"} - set(certs.columns)
    if missing:
        raise AnalysisError(f"certificate table lacks column(s) {sorted(missing)}; "
                            "pass the result of check_tls_certs")
    fetched = certs["not_after"].notna()
    problems = certs[certs["status"].isin(["expired", "expiring"])
                     | (certs["status"].eq("error") & fetched)]
    return problems, certs[~fetched]


def describe_cert_problem(row: Any) -> str:
    """One line for a problem row (a namedtuple from ``itertuples()`` or a Series)."""
    target = f"{row.host}:{row.port}"
    status = row.status
    not_after = row.not_after
    if status == "expired":
        return f"{target}: certificate EXPIRED on {not_after:%Y-%m-%d %H:%M} UTC"
    if status == "expiring":
        return (f"{target}: certificate expires in {row.days_left} days "
                f"({not_after:%Y-%m-%d} UTC)")
    return f"{target}: invalid certificate ({row.error})"


def describe_unreachable(row: Any) -> str:
    """One line for an unreachable row: the target and why its certificate was not read."""
    return f"{row.host}:{row.port}: UNREACHABLE, certificate not checked ({row.error})"


def cert_alert_state(row: Any, reminder_days: Iterable[int] = (7, 1)) -> str:
    """The state announced for a problem row: ``expired``, ``invalid``, or ``expiring``
    refined by the smallest of ``reminder_days`` not below ``days_left``
    (``expiring<=7d``, ``expiring<=1d``). A change of state is announced again, so an
    expiring certificate is announced when it enters the warning window, at each reminder
    threshold, and when it expires — not on every daily run."""
    status = row.status
    if status == "expired":
        return "expired"
    if status != "expiring":
        return "invalid"
    left = row.days_left
    bands = sorted(int(d) for d in reminder_days if left is not None and not pd.isna(left)
                   and int(left) <= int(d))
    return f"expiring<={bands[0]}d" if bands else "expiring"
