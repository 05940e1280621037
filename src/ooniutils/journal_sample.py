"""Realistic `journalctl -o json` lines (a monitoring host's units), for the demo, tests and
benchmarks: `ooniutils logs sample FILE`."""

from __future__ import annotations

import json
import random

UNITS = ["nginx.service", "clickhouse-server.service", "jupycron.service", "sshd.service",
         "oonith.service", "haproxy.service", "cron.service"]


def journal_lines(n: int, start_us: int = 1_732_000_000_000_000, seed: int = 1,
                  host: str = "monitoring.ooni.org") -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    boot = "b" * 32
    for i in range(n):
        unit = rnd.choice(UNITS)
        ts = start_us + i * 1000
        entry = {
            "__CURSOR": f"s=0a1b2c3d;i={i:x};b={boot};m={i:x};t={ts:x};x={seed:x}{i:06x}",
            "__REALTIME_TIMESTAMP": str(ts),
            "__MONOTONIC_TIMESTAMP": str(10_000_000 + i),
            "_BOOT_ID": boot,
            "PRIORITY": str(rnd.choice([3, 4, 6, 6, 6, 7])),
            "SYSLOG_FACILITY": "3",
            "SYSLOG_IDENTIFIER": unit.split(".")[0],
            "_PID": str(1000 + rnd.randrange(500)),
            "_UID": "0",
            "_GID": "0",
            "_COMM": unit.split(".")[0],
            "_EXE": f"/usr/sbin/{unit.split('.')[0]}",
            "_CMDLINE": f"/usr/sbin/{unit.split('.')[0]} --flag",
            "_SYSTEMD_CGROUP": f"/system.slice/{unit}",
            "_SYSTEMD_UNIT": unit,
            "_SYSTEMD_SLICE": "system.slice",
            "_SYSTEMD_INVOCATION_ID": "c" * 32,
            "_TRANSPORT": "stdout",
            "_STREAM_ID": "d" * 32,
            "_MACHINE_ID": "e" * 32,
            "_HOSTNAME": host,
            "MESSAGE": f"request {i} handled in {rnd.random():.3f}s \"quoted\" ünïcode",
        }
        out.append(json.dumps(entry).encode())
    return out
