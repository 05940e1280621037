"""Realistic `journalctl -o json` lines (a monitoring host's units), for the demo, tests and
benchmarks: `ooniutils logs sample FILE`.

The content is exact for a given ``(n, start_us, seed, span_s)``:

* **Units and messages.** Seven units (:data:`UNITS`), each with its own messages and
  priorities (:data:`MESSAGES`): nginx access lines and the odd upstream timeout, ClickHouse
  queries and "too many parts" warnings, jupycron runs (a few failed), sshd logins and
  scans, the test helper's requests and TLS handshake errors, haproxy health checks, cron
  jobs. Each unit has a weight (nginx the busiest, cron the quietest); about 3 % of lines are
  errors (priority ``err``) outside the incident.
* **Time.** With ``span_s`` (what ``ooniutils logs sample`` uses: ``--hours``, default 24),
  the lines spread over ``[start_us, start_us + span_s)`` in time order, denser by day than
  by night (hourly volume ``1 + 0.6·sin(2π(h − 8)/24)``: peak at 14:00 UTC, low at 02:00).
  Without it, lines are 1 ms apart (benchmarks and tests that need a short, dense journal).
* **One incident.** When the span covers at least 4 hours, the hour starting at 75 % of the
  span is an nginx outage: 40 % of its lines become nginx ``err`` lines "upstream timed out",
  and one clickhouse-server ``crit`` line "Memory limit (total) exceeded" sits in its middle.
  The log dashboards show that hour as a spike; :data:`INCIDENT_AT` gives its position.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

UNITS = ["nginx.service", "clickhouse-server.service", "jupycron.service", "sshd.service",
         "oonith.service", "haproxy.service", "cron.service"]
#: Relative volume of each unit (same order as :data:`UNITS`).
WEIGHTS = [30, 20, 8, 6, 20, 10, 2]
#: Where the incident hour starts, as a fraction of the span.
INCIDENT_AT = 0.75
INCIDENT_MIN_SPAN_S = 4 * 3600

Message = Callable[[random.Random, int], tuple[int, str]]  # (rnd, i) -> (priority, text)

_PATHS = ["/api/v1/measurements", "/api/v1/aggregation", "/api/_/test_list", "/api/v1/torsf",
          "/static/app.js", "/"]
_NOTEBOOKS = ["autorun_fsn_logs.ipynb", "autorun_tls_cert_expiry.ipynb",
              "autorun_incoming_measurements_prediction_alarming.ipynb",
              "autorun_test_helper_failure_rate_alarm.ipynb"]


def _nginx(rnd: random.Random, i: int) -> tuple[int, str]:
    if rnd.random() < 0.02:
        return 3, (f"upstream prematurely closed connection while reading response header "
                   f"from upstream, request: \"GET {rnd.choice(_PATHS)} HTTP/1.1\"")
    status = rnd.choices([200, 304, 404, 499], [90, 5, 4, 1])[0]
    return 6, (f"{rnd.randrange(1, 255)}.{rnd.randrange(256)}.{rnd.randrange(256)}.x "
               f"\"GET {rnd.choice(_PATHS)} HTTP/1.1\" {status} {rnd.randrange(200, 90000)} "
               f"{rnd.random():.3f}s")


def _clickhouse(rnd: random.Random, i: int) -> tuple[int, str]:
    r = rnd.random()
    if r < 0.01:
        return 3, f"Code: 241. DB::Exception: query {i:x} was cancelled: timeout exceeded (300 s)"
    if r < 0.04:
        return 4, f"Too many parts ({rnd.randrange(250, 320)}) in table fastpath; merges are slow"
    return rnd.choice([6, 7]), (f"executeQuery: read {rnd.randrange(1, 5_000_000):,} rows, "
                                f"{rnd.randrange(1, 900)} MiB in {rnd.random() * 4:.3f} sec.")


def _jupycron(rnd: random.Random, i: int) -> tuple[int, str]:
    nb = rnd.choice(_NOTEBOOKS)
    if rnd.random() < 0.04:
        return 3, f"run {i:06x} of {nb}: failed in {rnd.uniform(2, 90):.1f} s (QueryError)"
    return 6, f"run {i:06x} of {nb}: success in {rnd.uniform(2, 90):.1f} s"


def _sshd(rnd: random.Random, i: int) -> tuple[int, str]:
    r = rnd.random()
    if r < 0.05:
        return 3, (f"error: maximum authentication attempts exceeded for root from "
                   f"198.51.100.{rnd.randrange(256)} port {rnd.randrange(1024, 65535)} ssh2")
    if r < 0.5:
        return 6, (f"Invalid user {rnd.choice(['admin', 'test', 'oracle', 'ubuntu'])} from "
                   f"203.0.113.{rnd.randrange(256)} port {rnd.randrange(1024, 65535)}")
    return 6, (f"Accepted publickey for {rnd.choice(['art', 'fed', 'luis'])} from "
               f"10.0.0.{rnd.randrange(2, 40)} port {rnd.randrange(1024, 65535)} ssh2")


def _oonith(rnd: random.Random, i: int) -> tuple[int, str]:
    if rnd.random() < 0.03:
        return 3, f"TLS handshake error from 192.0.2.{rnd.randrange(256)}: EOF"
    return 6, (f"measurement {i:x} of {rnd.choice(['https', 'http'])}://"
               f"{rnd.choice(['twitter.com', 'www.bbc.com', 'example.org', 'signal.org'])}/ "
               f"done in {rnd.random() * 3:.3f}s ünïcode ok")


def _haproxy(rnd: random.Random, i: int) -> tuple[int, str]:
    if rnd.random() < 0.02:
        return 4, f"Server th_backend/th{rnd.randrange(6)} is DOWN, reason: Layer4 timeout"
    return 6, f"Health check for server th_backend/th{rnd.randrange(6)} succeeded"


def _cron(rnd: random.Random, i: int) -> tuple[int, str]:
    return 6, f"(root) CMD (/usr/local/bin/{rnd.choice(['ooni-backup', 'logrotate', 'certbot renew'])})"


MESSAGES: dict[str, Message] = {
    "nginx.service": _nginx, "clickhouse-server.service": _clickhouse,
    "jupycron.service": _jupycron, "sshd.service": _sshd, "oonith.service": _oonith,
    "haproxy.service": _haproxy, "cron.service": _cron,
}


def _times(n: int, start_us: int, span_s: float | None, rnd: random.Random) -> list[int]:
    if span_s is None:
        return [start_us + i * 1000 for i in range(n)]
    span_us = int(span_s * 1_000_000)
    out: list[int] = []
    while len(out) < n:  # rejection sampling on the daily curve (peak 14:00, low 02:00 UTC)
        t = start_us + rnd.randrange(span_us)
        hour = (t / 3_600_000_000) % 24
        if rnd.random() * 1.6 < 1 + 0.6 * math.sin(2 * math.pi * (hour - 8) / 24):
            out.append(t)
    return sorted(out)


def journal_lines(n: int, start_us: int = 1_732_000_000_000_000, seed: int = 1,
                  host: str = "monitoring.ooni.org", span_s: float | None = None) -> list[bytes]:
    """``n`` journald JSON lines from ``start_us`` (µs since the epoch), in time order; see
    the module doc for the exact content. ``span_s``: spread over that many seconds (by a
    daily curve, with one incident hour) instead of 1 ms apart."""
    rnd = random.Random(seed)
    times = _times(n, start_us, span_s, rnd)
    incident: tuple[int, int] | None = None
    if span_s is not None and span_s >= INCIDENT_MIN_SPAN_S:
        begin = start_us + int(INCIDENT_AT * span_s * 1_000_000)
        incident = (begin, begin + 3_600_000_000)
    crit_at = None if incident is None else \
        next((i for i, t in enumerate(times) if t >= (incident[0] + incident[1]) // 2), None)
    out = []
    boot = "b" * 32
    for i, ts in enumerate(times):
        unit = rnd.choices(UNITS, WEIGHTS)[0]
        priority, message = MESSAGES[unit](rnd, i)
        if incident is not None and incident[0] <= ts < incident[1] and rnd.random() < 0.4:
            unit, priority = "nginx.service", 3
            message = ("upstream timed out (110: Connection timed out) while reading response "
                       "header from upstream, upstream: \"http://127.0.0.1:8000/api/v1/measurements\"")
        if i == crit_at:
            unit, priority = "clickhouse-server.service", 2
            message = "Memory limit (total) exceeded: would use 30.01 GiB, maximum: 30.00 GiB"
        name = unit.split(".")[0]
        entry = {
            "__CURSOR": f"s=0a1b2c3d;i={i:x};b={boot};m={i:x};t={ts:x};x={seed:x}{i:06x}",
            "__REALTIME_TIMESTAMP": str(ts),
            "__MONOTONIC_TIMESTAMP": str(10_000_000 + ts - start_us),
            "_BOOT_ID": boot,
            "PRIORITY": str(priority),
            "SYSLOG_FACILITY": "3",
            "SYSLOG_IDENTIFIER": name,
            "_PID": str(1000 + UNITS.index(unit) * 37),
            "_UID": "0",
            "_GID": "0",
            "_COMM": name,
            "_EXE": f"/usr/sbin/{name}",
            "_CMDLINE": f"/usr/sbin/{name} --flag",
            "_SYSTEMD_CGROUP": f"/system.slice/{unit}",
            "_SYSTEMD_UNIT": unit,
            "_SYSTEMD_SLICE": "system.slice",
            "_SYSTEMD_INVOCATION_ID": "c" * 32,
            "_TRANSPORT": "stdout",
            "_STREAM_ID": "d" * 32,
            "_MACHINE_ID": "e" * 32,
            "_HOSTNAME": host,
            "MESSAGE": message,
        }
        out.append(json.dumps(entry).encode())
    return out
