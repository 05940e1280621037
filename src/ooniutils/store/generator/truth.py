"""The ground truth of a generated data set: which incidents were injected, where and how big.

Written as JSON (``GroundTruth.write``) next to the data so detectors and notebooks can be
scored against it. Times are UTC ISO 8601 strings; windows are half-open ``[start, end)``
on hour boundaries.

JSON layout (``version`` 1)::

    {"version": 1, "seed": 0, "days": 90, "start": "...", "end": "...",
     "rows_requested": 3600000, "rows": {"fastpath": 3601234, ...},
     "incidents": [{"id": "country_outage", "type": "country_outage",
                    "start": "...", "end": "...", "keys": {"probe_cc": "IR"},
                    "metric": "measurement_count", "magnitude": -0.97,
                    "description": "...", "details": {...}}, ...],
     "skipped": [{"type": "slow_decline", "reason": "..."}],
     "releases": [...], "test_helpers": [...],
     "normal_traffic": [{"kind": "holiday", "start": "...", "end": "...",
                         "keys": {"probe_cc": "IT"}, "factor": 1.0, "description": "..."}, ...]}
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safefiles.atomic import atomic_write_text

from ...exceptions import StoreError

log = logging.getLogger(__name__)

TRUTH_VERSION = 1

INCIDENT_TYPES = (
    "country_outage",        # a country's measurements drop ~97 % for some hours
    "probe_type_drop",       # one software_name's uploads drop globally
    "slow_decline",          # one software_name declines linearly over weeks
    "test_helper_failure",   # one test helper fails for every probe
    "version_regression",    # a new software_version fails more often
    "blocking_change",       # a (cc, asn, domain) starts or stops being blocked
    "short_drop",            # a short 30-60 % drop on one series (detector recall)
)

METRICS = ("measurement_count", "msm_failure_rate", "control_failure_rate", "anomaly_rate")


def iso(ts: datetime) -> str:
    """UTC ISO 8601 with a trailing Z, e.g. ``2024-05-01T13:00:00Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Incident:
    """One injected incident.

    ``keys`` select the affected rows by fastpath column (``probe_cc``, ``probe_asn``,
    ``software_name``, ``software_version``, ``domain``) or ``test_helper`` (the
    ``test_helper_address`` value). ``magnitude`` is relative: -0.5 means the metric fell by
    half (counts), 2.0 means a rate tripled (+200 %). For counts, ``details`` holds
    ``expected_rows`` and ``expected_rows_without_incident`` over the window and keys.
    """

    id: str
    type: str
    start: datetime
    end: datetime
    keys: dict[str, Any]
    metric: str
    magnitude: float
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in INCIDENT_TYPES:
            raise ValueError(f"unknown incident type {self.type!r}; known: {', '.join(INCIDENT_TYPES)}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.end <= self.start:
            raise ValueError(f"incident {self.id}: end {self.end} is not after start {self.start}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = iso(self.start), iso(self.end)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        d = dict(d)
        d["start"], d["end"] = parse_iso(d["start"]), parse_iso(d["end"])
        return cls(**d)


@dataclass
class GroundTruth:
    """Everything a detector should find in a generated data set, plus the set's shape."""

    seed: int
    days: int
    start: datetime
    end: datetime
    rows_requested: int
    incidents: list[Incident] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Incidents that did not fit in ``days``: ``{"type", "reason"}``."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows actually written per table (filled in as the data is generated)."""
    releases: list[dict[str, Any]] = field(default_factory=list)
    test_helpers: list[dict[str, Any]] = field(default_factory=list)
    normal_traffic: list[dict[str, Any]] = field(default_factory=list)
    """Untidy *normal* traffic (not incidents; an alarm on them is a false one): local
    weekends, holidays, growth, probes away, daily upload batches, ingestion lag — each
    ``{"kind", "start", "end", "keys", "factor", "description"}``
    (:mod:`ooniutils.store.generator.normal`)."""

    def of_type(self, type_: str) -> list[Incident]:
        """Incidents of one type, in time order."""
        return sorted((i for i in self.incidents if i.type == type_), key=lambda i: i.start)

    def get(self, incident_id: str) -> Incident:
        for i in self.incidents:
            if i.id == incident_id:
                return i
        raise KeyError(f"no incident {incident_id!r}; ids: {', '.join(i.id for i in self.incidents)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TRUTH_VERSION,
            "generator": "ooniutils.store.generator",
            "seed": self.seed,
            "days": self.days,
            "start": iso(self.start),
            "end": iso(self.end),
            "rows_requested": self.rows_requested,
            "rows": dict(self.rows),
            "incidents": [i.to_dict() for i in sorted(self.incidents, key=lambda i: (i.start, i.id))],
            "skipped": list(self.skipped),
            "releases": list(self.releases),
            "test_helpers": list(self.test_helpers),
            "normal_traffic": list(self.normal_traffic),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, path: Path | str) -> Path:
        """Write the JSON atomically (temp file + rename) and return the path."""
        path = Path(path)
        try:
            atomic_write_text(path, self.to_json())
        except OSError as exc:
            raise StoreError(f"cannot write ground truth to {path}: {exc}") from exc
        log.info("ground truth (%d incidents) written to %s", len(self.incidents), path)
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroundTruth:
        if d.get("version") != TRUTH_VERSION:
            raise ValueError(f"unsupported ground-truth version {d.get('version')!r} (expected {TRUTH_VERSION})")
        return cls(
            seed=d["seed"], days=d["days"], start=parse_iso(d["start"]), end=parse_iso(d["end"]),
            rows_requested=d["rows_requested"],
            incidents=[Incident.from_dict(i) for i in d["incidents"]],
            skipped=list(d.get("skipped", [])), rows=dict(d.get("rows", {})),
            releases=list(d.get("releases", [])), test_helpers=list(d.get("test_helpers", [])),
            normal_traffic=list(d.get("normal_traffic", [])),
        )

    @classmethod
    def load(cls, path: Path | str) -> GroundTruth:
        """Read a ground-truth JSON file (raises StoreError when missing or malformed)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot read ground truth {path}: {exc}") from exc
