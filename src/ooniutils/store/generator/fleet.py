"""The test-helper fleet the generator measures: one rotated droplet (rdn 2 is drained at the
rotation time and destroyed ``DRAINING_MINUTES`` later; its successor, created ten minutes
before, takes over rdn 2, so ``https://2.th.ooni.org`` never goes away).

Used by the plan (the ground truth's ``test_helpers``) and by the small tables
(``test_helper_instances``); it depends on neither, only on the rotation time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import world
from .truth import iso


def helper_instances(rotation_time: int) -> list[dict[str, Any]]:
    """The fleet as dicts, for a rotation at ``rotation_time`` (Unix seconds)."""
    out: list[dict[str, Any]] = []
    for h in world.HELPERS:
        row: dict[str, Any] = {"rdn": h.rdn, "dns_zone": world.DNS_ZONE, "name": h.name, "provider": h.provider,
               "region": h.region, "ipaddr": h.ipaddr, "ipv6addr": h.ipv6addr,
               "draining_at": None, "sign": 1, "destroyed_at": None}
        if h.rotated:
            row["draining_at"] = datetime.fromtimestamp(rotation_time, UTC)
            row["destroyed_at"] = datetime.fromtimestamp(rotation_time + world.DRAINING_MINUTES * 60, UTC)
        out.append(row)
    s = world.ROTATION_SUCCESSOR
    created = datetime.fromtimestamp(rotation_time - 600, UTC)
    out.append({"rdn": s.rdn, "dns_zone": world.DNS_ZONE, "name": s.name.format(created=created.strftime("%Y%m%d%H%M%S")),
                "provider": s.provider, "region": s.region, "ipaddr": s.ipaddr, "ipv6addr": s.ipv6addr,
                "draining_at": None, "sign": 1, "destroyed_at": None})
    return out


def helpers_truth(rotation_time: int) -> list[dict[str, Any]]:
    """The fleet as the ground truth records it (times as ISO text, each helper's URL)."""
    return [{**r, "url": world.helper_url(r["rdn"]),
             "draining_at": r["draining_at"] and iso(r["draining_at"]),
             "destroyed_at": r["destroyed_at"] and iso(r["destroyed_at"])}
            for r in helper_instances(rotation_time)]
