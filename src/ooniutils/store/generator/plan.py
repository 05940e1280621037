"""The generation plan: the hourly expected volume of every (network, software) cell, the
incidents placed relative to ``end``, release and test-helper schedules, and the chunking.

A plan is cheap (a few MB) and fully determined by (days, rows, seed, end), so the ground
truth can be produced without generating any rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from . import world
from .fleet import helpers_truth
from .normal import normal_traffic, weekend_mask
from .truth import GroundTruth, Incident, iso
from .urls import TEST_LIST, domain_of

log = logging.getLogger(__name__)

HOUR = 3600
DAY = 86400
ROWS_PER_DAY = 40_000
"""Default volume: 40k rows a day, i.e. 3.6M rows for 90 days (OONI itself gets ~50x more)."""
DEFAULT_CHUNK_ROWS = 500_000
MAX_CHUNK_HOURS = 168
"""A chunk never spans more than a week, which bounds the per-cell arrays of sparse runs."""


def default_rows(days: int) -> int:
    return ROWS_PER_DAY * days


@dataclass
class VolumeChange:
    """A multiplicative change of expected volume on some cells over [start, end) (epoch s)."""

    incident_id: str
    start: int
    end: int
    keys: dict[str, object]
    factor: float
    linear: bool = False
    """Ramp linearly from 1 at ``start`` to ``factor`` at ``end`` (else a step)."""


DETECTION_DELAY_HOURS = 8
"""Hours of blocked (or unblocked) measurements OONI's CUSUM needs before it fires."""


@dataclass
class BlockingEvent:
    incident_id: str
    net: int
    url: int
    start: int
    direction: int
    block_type: str
    """Changepoint block type: dns_isp_block, tcp_block or tls_block."""
    detected_at: int
    """Epoch seconds of the changepoint row (start + DETECTION_DELAY_HOURS, before the end)."""

    @property
    def fastpath_blocking_type(self) -> str:
        return {"dns_isp_block": "dns", "tcp_block": "tcp_ip", "tls_block": "http-failure"}[self.block_type]


@dataclass
class Plan:
    seed: int
    days: int
    rows: int
    end: datetime
    start: datetime
    hours: np.ndarray
    """Epoch seconds of each hour start, length H."""
    nets: list[world.Network]
    lam: np.ndarray
    """(H, n_cells) expected fastpath rows; cell = net * n_software + software."""
    test_mix: np.ndarray
    release_times: np.ndarray
    """Epoch seconds of each world.RELEASES entry (-inf for the installed base)."""
    regression: tuple[int, float, int] | None
    """(release index, failure-rate factor, release time) of the regressed version."""
    helper_failure: tuple[int, int, int] | None
    """(rdn index, start, end) of the failing test helper."""
    rotation_time: int
    blocking: list[BlockingEvent]
    truth: GroundTruth
    chunks: list[tuple[int, int]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    """Derived lookup tables shared by the chunks (filled lazily)."""

    @property
    def n_software(self) -> int:
        return len(world.SOFTWARE)


def _floor_hour(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def _cell_mask(keys: dict[str, object], nets: list[world.Network]) -> np.ndarray:
    """Boolean (n_cells,) mask of the cells matching probe_cc/probe_asn/software_name keys."""
    sw_names = [s.name for s in world.SOFTWARE]
    net_ok = np.array([
        (keys.get("probe_cc") in (None, n.cc)) and (keys.get("probe_asn") in (None, n.asn)) for n in nets
    ])
    sw_ok = np.array([keys.get("software_name") in (None, s) for s in sw_names])
    return (net_ok[:, None] & sw_ok[None, :]).ravel()


def _base_volume(hours: np.ndarray, nets: list[world.Network]) -> np.ndarray:
    """(H, n_cells) relative volume with daily/weekly cycles in each country's local time."""
    offsets = np.array([c.utc_offset for c in world.COUNTRIES]) * HOUR
    local = hours[:, None] + offsets[None, :]                       # (H, n_cc)
    local_hour = (local % DAY) / HOUR
    weekend = weekend_mask(local, [c.cc for c in world.COUNTRIES])    # local weekend days
    shares = world.software_shares()                                  # (n_cc, n_sw)
    f = np.empty((len(hours), len(world.COUNTRIES), len(world.SOFTWARE)))
    for j, s in enumerate(world.SOFTWARE):
        phase = 2 * np.pi * (local_hour - s.peak_hour) / 24
        daily = 1 + s.amplitude * np.cos(phase) + 0.15 * s.amplitude * np.cos(2 * phase)
        f[:, :, j] = daily * np.where(weekend, s.weekend, 1.0) * shares[None, :, j]
    cc_of_net = np.array([n.cc_index for n in nets])
    w_net = np.array([n.weight for n in nets])
    return (f[:, cc_of_net, :] * w_net[None, :, None]).reshape(len(hours), -1)


def _apply(mult: np.ndarray, hours: np.ndarray, change: VolumeChange, nets: list[world.Network]) -> None:
    rows = (hours >= change.start) & (hours < change.end)
    cols = _cell_mask(change.keys, nets)
    if change.linear:
        frac = (hours[rows] + HOUR / 2 - change.start) / (change.end - change.start)
        values = 1 - (1 - change.factor) * frac
        mult[np.ix_(rows, cols)] *= values[:, None]
        later = hours >= change.end
        mult[np.ix_(later, cols)] *= change.factor
    else:
        mult[np.ix_(rows, cols)] *= change.factor


@dataclass
class _Window:
    """The time window being planned, and the truth being filled."""

    days: int
    t_start: int
    t_end: int
    truth: GroundTruth

    def skip(self, type_: str, need_days: float) -> bool:
        """Record (and return True) when the window is too short for an incident type."""
        if self.days < need_days:
            self.truth.skipped.append(
                {"type": type_, "reason": f"needs at least {need_days:g} days of data, got {self.days}"})
            return True
        return False


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


SHORT_DROP_SERIES: tuple[dict[str, object], ...] = (
    {"probe_cc": "US"}, {"probe_cc": "BR"}, {"probe_cc": "RU"}, {"probe_cc": "IN"},
    {"probe_cc": "DE"}, {"probe_cc": "ID"}, {"software_name": "ooniprobe-cli"},
    {"software_name": "ooniprobe-ios"}, {"software_name": "miniooni"},
    {"probe_cc": "US", "probe_asn": 7922}, {"probe_cc": "RU", "probe_asn": 12389},
    {"probe_cc": "IN", "probe_asn": 55836}, {"probe_cc": "BR", "software_name": "ooniprobe-android"},
    {"probe_cc": "US", "software_name": "ooniprobe-cli"},
)
"""Series the short drops are picked from (big enough for a 30 % drop to be detectable)."""
SHORT_DROPS = 9


def _volume_changes(w: _Window, seed: int) -> list[tuple[VolumeChange, str, str]]:
    """(change, incident type, description) of every volume incident that fits the window."""
    out: list[tuple[VolumeChange, str, str]] = []
    if not w.skip("country_outage", 3):
        s = w.t_end - 30 * HOUR
        out.append((VolumeChange("country_outage", s, s + 8 * HOUR, {"probe_cc": "IR"}, 0.03), "country_outage",
                    "Nation-wide Internet shutdown in IR: measurements from every ASN and probe type "
                    "drop ~97 % for 8 hours."))
    if not w.skip("probe_type_drop", 5):
        s = w.t_end - 80 * HOUR
        out.append((VolumeChange("probe_type_drop", s, s + 6 * HOUR, {"software_name": "ooniprobe-android"}, 0.5),
                    "probe_type_drop", "ooniprobe-android uploads drop by half worldwide for 6 hours "
                    "(e.g. a broken collector endpoint for that app)."))
    if not w.skip("slow_decline", 12):
        span = min(35, w.days - 7) * DAY
        out.append((VolumeChange("slow_decline", w.t_end - span, w.t_end, {"software_name": "ooniprobe-desktop"},
                                 0.6, linear=True), "slow_decline",
                    f"ooniprobe-desktop volume declines linearly by 40 % over {span // DAY} days (to 60 % at the end)."))
    if not w.skip("short_drop", 5):
        out += _short_drops(w, seed, [c for c, _, _ in out if not c.linear])
    return out


def _short_drops(w: _Window, seed: int, taken: list[VolumeChange]) -> list[tuple[VolumeChange, str, str]]:
    """SHORT_DROPS drops of 30-60 % lasting 2-6 h on distinct series, at seeded times that
    keep 6 h away from each other and from the other step incidents."""
    rng = np.random.default_rng([seed, 0x5D])
    picks = rng.choice(len(SHORT_DROP_SERIES), size=SHORT_DROPS, replace=False)
    busy = [(c.start - 6 * HOUR, c.end + 6 * HOUR) for c in taken]
    lo, hi = w.t_start + 2 * DAY, w.t_end - 2 * HOUR
    out = []
    for n, pick in enumerate(picks, 1):
        dur = int(rng.integers(2, 7)) * HOUR
        factor = round(1 - float(rng.uniform(0.3, 0.6)), 2)
        for _ in range(200):
            s = lo + int(rng.integers(0, max(1, (hi - dur - lo) // HOUR))) * HOUR
            if all(s + dur <= b0 or s >= b1 for b0, b1 in busy):
                break
        else:
            w.truth.skipped.append({"type": "short_drop", "reason": f"no free window for drop {n}"})
            continue
        busy.append((s - 6 * HOUR, s + dur + 6 * HOUR))
        keys = dict(SHORT_DROP_SERIES[pick])
        out.append((VolumeChange(f"short_drop_{n}", s, s + dur, keys, factor), "short_drop",
                    f"Short drop of {round((1 - factor) * 100)} % on {keys} for {dur // HOUR} h."))
    return out


def _releases(w: _Window) -> tuple[np.ndarray, tuple[int, float, int] | None]:
    """Release times of world.RELEASES and the regression (android 3.9.1, 3x failures),
    moved closer to the end for short windows."""
    release_times = np.full(len(world.RELEASES), -np.inf)
    reg_index = next(i for i, r in enumerate(world.RELEASES)
                     if (r.software, r.version) == ("ooniprobe-android", "3.9.1"))
    for i, r in enumerate(world.RELEASES):
        if r.days_before_end is not None:
            d = min(r.days_before_end, 0.6 * w.days) if i == reg_index else r.days_before_end
            release_times[i] = w.t_end - round(d * 24) * HOUR
    w.truth.releases = [
        {"software_name": r.software, "software_version": r.version, "engine_version": r.engine_version,
         "released": None if not np.isfinite(release_times[i]) else iso(_ts(release_times[i]))}
        for i, r in enumerate(world.RELEASES)
    ]
    if w.skip("version_regression", 5):
        return release_times, None
    rt = int(release_times[reg_index])
    w.truth.incidents.append(Incident(
        id="version_regression", type="version_regression", start=_ts(rt), end=_ts(w.t_end),
        keys={"software_name": "ooniprobe-android", "software_version": "3.9.1"},
        metric="msm_failure_rate", magnitude=2.0,
        description="ooniprobe-android 3.9.1 (released at start) fails 3x as often as other versions "
                    "(msm_failure = 't').",
        details={"failure_rate_factor": 3.0}))
    return release_times, (reg_index, 3.0, rt)


def _helper_failure(w: _Window) -> tuple[int, int, int] | None:
    if w.skip("test_helper_failure", 4):
        return None
    s = w.t_end - 50 * HOUR
    w.truth.incidents.append(Incident(
        id="test_helper_failure", type="test_helper_failure", start=_ts(s), end=_ts(s + 5 * HOUR),
        keys={"test_helper": world.helper_url("3")}, metric="control_failure_rate", magnitude=0.97,
        description="Test helper 3.th.ooni.org stops answering for 5 hours: ~97 % of web_connectivity "
                    "measurements using it get a control_failure and msm_failure = 't'.",
        details={"instance": world.HELPERS[3].name, "failure_probability": 0.97}))
    return 3, s, s + 5 * HOUR


BLOCKING_SPECS = (
    ("RU", 12389, "https://discord.com/", "tls_block", +1, 6),
    ("PK", 17557, "https://twitter.com/", "dns_isp_block", +1, 11),
    ("MM", 9988, "https://www.facebook.com/", "tcp_block", +1, 4),
    ("TR", 9121, "https://www.instagram.com/", "dns_isp_block", -1, 8),
)
"""(cc, asn, url, block type, change direction, days before the end for a 14-day window)."""


def _blocking(w: _Window, nets: list[world.Network]) -> list[BlockingEvent]:
    if w.skip("blocking_change", 4):
        return []
    f = min(1.0, w.days / 14)
    urls = [u for u, _ in TEST_LIST]
    out = []
    for n, (cc, asn, url, bt, direction, off) in enumerate(BLOCKING_SPECS, 1):
        net = next(i for i, x in enumerate(nets) if (x.cc, x.asn) == (cc, asn))
        s = w.t_end - round(off * f * 24) * HOUR
        detected = min(s + DETECTION_DELAY_HOURS * HOUR, w.t_end - HOUR)
        ev = BlockingEvent(f"blocking_change_{n}", net, urls.index(url), s, direction, bt, detected)
        out.append(ev)
        w.truth.incidents.append(Incident(
            id=ev.incident_id, type="blocking_change", start=_ts(s), end=_ts(w.t_end),
            keys={"probe_cc": cc, "probe_asn": asn, "domain": domain_of(url)},
            metric="anomaly_rate", magnitude=0.88 if direction > 0 else -0.88,
            description=f"{domain_of(url)} {'becomes' if direction > 0 else 'stops being'} blocked "
                        f"({bt}) on AS{asn} in {cc}; web_connectivity anomalies "
                        f"{'jump to' if direction > 0 else 'fall from'} ~90 %.",
            details={"block_type": bt, "change_dir": direction,
                     "fastpath_blocking_type": ev.fastpath_blocking_type,
                     "changepoint_ts": iso(_ts(detected))}))
    return out


def make_plan(days: int = 90, rows: int | None = None, seed: int = 0, end: datetime | None = None,
              chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Plan:
    """Lay out volumes, incidents and chunks for ``days`` days ending at ``end``.

    ``end`` defaults to now, and is rounded down to the hour (UTC; a naive datetime is
    taken as UTC); data covers ``[end - days, end)``. ``rows`` is the expected number of
    fastpath rows (the Poisson draws make the real count differ by about its square
    root); default :func:`default_rows`. Raises ValueError naming a bad argument.
    """
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    rows = default_rows(days) if rows is None else rows
    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows!r}")
    end_dt = _floor_hour(end or datetime.now(UTC))
    start_dt = end_dt - timedelta(days=days)
    t_end, t_start = int(end_dt.timestamp()), int(start_dt.timestamp())
    hours = np.arange(t_start, t_end, HOUR, dtype=np.int64)
    nets = world.networks()
    truth = GroundTruth(seed=seed, days=days, start=start_dt, end=end_dt, rows_requested=rows)
    w = _Window(days, t_start, t_end, truth)

    changes = _volume_changes(w, seed)
    base = _base_volume(hours, nets)
    normal, truth.normal_traffic = normal_traffic(
        hours, nets, base, seed, [(c.start, c.end) for c, _, _ in changes if not c.linear])
    base *= normal
    mult = np.ones_like(base)
    for c, _, _ in changes:
        _apply(mult, hours, c, nets)
    lam = base * mult
    scale = rows / lam.sum()
    lam *= scale
    for c, type_, text in changes:
        window = np.ix_((hours >= c.start) & (hours < c.end), _cell_mask(c.keys, nets))
        truth.incidents.append(Incident(
            id=c.incident_id, type=type_, start=_ts(c.start), end=_ts(c.end), keys=dict(c.keys),
            metric="measurement_count", magnitude=round(c.factor - 1, 3), description=text,
            details={"expected_rows": round(float(lam[window].sum()), 1),
                     "expected_rows_without_incident": round(float(base[window].sum() * scale), 1),
                     "shape": "linear" if c.linear else "step"}))

    release_times, regression = _releases(w)
    plan = Plan(seed=seed, days=days, rows=rows, end=end_dt, start=start_dt, hours=hours, nets=nets,
                lam=lam, test_mix=world.test_mix(), release_times=release_times, regression=regression,
                helper_failure=_helper_failure(w),
                rotation_time=t_end - round(min(world.ROTATION_DAYS_BEFORE_END, 0.5 * days) * 24) * HOUR,
                blocking=_blocking(w, nets), truth=truth)
    plan.chunks = _chunks(lam.sum(axis=1), chunk_rows)
    truth.test_helpers = helpers_truth(plan.rotation_time)
    return plan


def _chunks(per_hour: np.ndarray, chunk_rows: int) -> list[tuple[int, int]]:
    """Split hours into consecutive [lo, hi) ranges of about ``chunk_rows`` expected rows
    (at most MAX_CHUNK_HOURS hours each)."""
    out, lo, acc = [], 0, 0.0
    for h, v in enumerate(per_hour):
        if h > lo and (acc + v > chunk_rows or h - lo >= MAX_CHUNK_HOURS):
            out.append((lo, h))
            lo, acc = h, 0.0
        acc += v
    out.append((lo, len(per_hour)))
    return out


def version_cum(plan: Plan, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative version shares per (hour, software): (k, n_sw, V) and the (n_sw, V)
    release index of each slot (-1 = unused).

    Each newer release is adopted along a logistic curve capped at ADOPTION_CAP; the
    share of release i is a_i(t) - a_{i+1}(t) with a_0 = 1.
    """
    per_sw = [[i for i, r in enumerate(world.RELEASES) if r.software == s.name] for s in world.SOFTWARE]
    vmax = max(len(p) for p in per_sw)
    index = np.full((len(per_sw), vmax), -1)
    cum = np.ones((len(hours), len(per_sw), vmax))
    t = hours[:, None].astype(float)
    for j, rel in enumerate(per_sw):
        index[j, : len(rel)] = rel
        adopt = [np.ones(len(hours))]
        for i in rel[1:]:
            x = (t[:, 0] - plan.release_times[i]) / DAY - world.ADOPTION_MIDPOINT_DAYS
            a = world.ADOPTION_CAP / (1 + np.exp(-np.clip(x / world.ADOPTION_SCALE_DAYS, -50, 50)))
            a[t[:, 0] < plan.release_times[i]] = 0.0
            adopt.append(a)
        adopt.append(np.zeros(len(hours)))
        shares = np.stack([adopt[v] - adopt[v + 1] for v in range(len(rel))], axis=1)
        cum[:, j, : len(rel)] = np.cumsum(shares, axis=1)
        cum[:, j, len(rel) - 1 :] = 1.0  # no rounding gap above the last version
    return cum, index
