"""Untidy normal traffic: what real measurement volumes do that is *not* an incident.

A detector scored on perfectly periodic Poisson traffic looks better than it is. The plan
multiplies the tidy daily/weekly volume by :func:`normal_traffic` (before incidents and
scaling), which adds, deterministically per seed:

* **local weekends**: countries in :data:`LOCAL_WEEKENDS` rest on other days than
  Saturday-Sunday (IR Thursday-Friday; EG, SA, BD Friday-Saturday);
* **holidays**: :data:`HOLIDAYS_PER_30_DAYS` seeded whole local days per country where
  every probe type behaves as on a weekend day;
* **slow growth**: each country's volume drifts linearly by a seeded -5 … +15 % over
  the window;
* **probes that come and go**: :data:`AWAY_CELLS` small (network, probe type) cells —
  each at most :data:`AWAY_MAX_SHARE` of its (country, probe type) series — go silent
  for 1-5 days, once or twice;
* **daily upload batches**: the ooniprobe-cli cells of the :data:`BATCH_NETWORKS` biggest
  networks send :data:`BATCH_SHARE` of their day in one local hour (02:00);
* **ingestion lag**: about one hour in ten days, a seeded 10-20 % of every row of that
  hour is missing from it and arrives in the next hour instead.

Every one of them is recorded in the ground truth (``GroundTruth.normal_traffic``: kind,
start, end, keys, factor, description) so a scorer knows them; none overlaps an
incident's window (± :data:`MARGIN_HOURS`). They are *normal*: an alarm on them is a
false alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from . import world
from .truth import iso

log = logging.getLogger(__name__)

HOUR = 3600
DAY = 86400
LOCAL_WEEKENDS: dict[str, tuple[int, int]] = {"IR": (3, 4), "EG": (4, 5), "SA": (4, 5), "BD": (4, 5)}
"""Country → its weekend days (Monday = 0); the others rest on Saturday and Sunday (5, 6)."""
HOLIDAYS_PER_30_DAYS = 1
GROWTH_RANGE = (-0.05, 0.15)
AWAY_CELLS = 8
AWAY_MAX_SHARE = 0.2
BATCH_NETWORKS = 3
BATCH_SHARE = 0.5
BATCH_LOCAL_HOUR = 2
LAG_EVERY_DAYS = 10
MARGIN_HOURS = 12


def weekend_mask(local_seconds: np.ndarray, ccs: Sequence[str]) -> np.ndarray:
    """(H, n_cc) True on each country's local weekend days (``local_seconds`` is (H, n_cc))."""
    dow = (local_seconds // DAY + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    days = np.array([LOCAL_WEEKENDS.get(cc, (5, 6)) for cc in ccs])  # (n_cc, 2)
    return (dow == days[None, :, 0]) | (dow == days[None, :, 1])


def _ts(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))


def _free(start: int, end: int, busy: list[tuple[int, int]]) -> bool:
    m = MARGIN_HOURS * HOUR
    return all(end + m <= b0 or start - m >= b1 for b0, b1 in busy)


def _cells(nets: list[world.Network], cc: str | None = None, asn: int | None = None,
           sw: str | None = None) -> np.ndarray:
    names = [s.name for s in world.SOFTWARE]
    net_ok = np.array([(cc in (None, n.cc)) and (asn in (None, n.asn)) for n in nets])
    sw_ok = np.array([sw in (None, s) for s in names])
    return (net_ok[:, None] & sw_ok[None, :]).ravel()


def normal_traffic(hours: np.ndarray, nets: list[world.Network], base: np.ndarray, seed: int,
                   busy: list[tuple[int, int]]) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Multiplier (H, n_cells) applied to the tidy ``base`` volume, and the truth records.

    ``busy``: (start, end) epoch seconds of the incidents; normal events keep clear of them.
    Local weekends are already in ``base`` (see :func:`weekend_mask`); they are recorded here.
    """
    rng = np.random.default_rng([seed, 0x70])
    n_sw = len(world.SOFTWARE)
    mult = np.ones_like(base)
    events: list[dict[str, object]] = []
    t0, t1 = int(hours[0]), int(hours[-1]) + HOUR
    days = (t1 - t0) / DAY

    def record(kind: str, start: int, end: int, keys: dict[str, object], factor: float, text: str) -> None:
        events.append({"kind": kind, "start": _ts(start), "end": _ts(end), "keys": keys,
                       "factor": round(factor, 3), "description": text})

    for cc, wk in LOCAL_WEEKENDS.items():
        names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        record("local_weekend", t0, t1, {"probe_cc": cc}, 1.0,
               f"{cc} rests on {names[wk[0]]}-{names[wk[1]]} (weekly, every probe type at its weekend level).")

    # slow growth: a linear drift per country over the whole window
    frac = (hours - t0) / max(t1 - t0, 1)
    for c in world.COUNTRIES:
        g = float(rng.uniform(*GROWTH_RANGE))
        cols = _cells(nets, cc=c.cc)
        mult[:, cols] *= (1 + g * frac)[:, None]
        record("growth", t0, t1, {"probe_cc": c.cc}, 1 + g,
               f"{c.cc} volume drifts linearly by {g:+.1%} over the window.")

    # holidays: a whole local day at weekend level (per probe type)
    n_hol = int(round(HOLIDAYS_PER_30_DAYS * days / 30))
    for c in world.COUNTRIES:
        for _ in range(n_hol):
            for _try in range(20):
                d = int(rng.integers(1, max(2, int(days) - 1)))
                start = (t0 // DAY + d) * DAY - int(c.utc_offset * HOUR)  # local midnight
                start -= start % HOUR
                end = start + DAY
                if t0 <= start and end <= t1 and _free(start, end, busy):
                    break
            else:
                continue
            rows = (hours >= start) & (hours < end)
            for s in world.SOFTWARE:
                cols = _cells(nets, cc=c.cc, sw=s.name)
                # a weekday becomes a weekend day; an actual weekend day stays as it is
                is_wk = weekend_mask((hours[rows] + c.utc_offset * HOUR)[:, None], [c.cc])[:, 0]
                mult[np.ix_(rows, cols)] *= np.where(is_wk, 1.0, s.weekend)[:, None]
            record("holiday", start, end, {"probe_cc": c.cc}, 1.0,
                   f"Public holiday in {c.cc}: every probe type at its weekend level for the local day.")

    # probes that come and go: small cells silent for 1-5 days
    share = base.sum(axis=0).reshape(len(nets), n_sw)
    ccs = np.array([n.cc for n in nets])
    candidates = []
    for i, n in enumerate(nets):
        series_total = share[ccs == n.cc].sum(axis=0)  # (n_sw,) the (country, probe type) series
        for j, s in enumerate(world.SOFTWARE):
            part = share[i, j] / series_total[j] if series_total[j] > 0 else 0.0
            if 0.05 < part <= AWAY_MAX_SHARE:
                candidates.append((i * n_sw + j, n, s.name, part))
    if candidates:
        picks = rng.choice(len(candidates), size=min(AWAY_CELLS, len(candidates)), replace=False)
        for p in picks:
            col, n, sw, part = candidates[int(p)]
            for _ in range(int(rng.integers(1, 3))):
                dur = int(rng.integers(1, 6)) * DAY
                for _try in range(20):
                    start = t0 + int(rng.integers(0, max(1, (t1 - t0 - dur) // HOUR))) * HOUR
                    if _free(start, start + dur, busy):
                        break
                else:
                    continue
                rows = (hours >= start) & (hours < start + dur)
                mult[rows, col] = 0.0
                record("probe_away", start, start + dur, {"probe_cc": n.cc, "probe_asn": n.asn, "software_name": sw},
                       0.0, f"{sw} probes on AS{n.asn} ({n.cc}, {part:.0%} of {n.cc}/{sw}) are off for "
                            f"{dur // DAY} day(s).")

    # daily upload batches: the biggest networks' cli probes send half their day at 02:00 local
    big = sorted(range(len(nets)), key=lambda i: -nets[i].weight)[:BATCH_NETWORKS]
    cli = [s.name for s in world.SOFTWARE].index("ooniprobe-cli")
    for i in big:
        n = nets[i]
        col = i * n_sw + cli
        off = int(world.COUNTRIES[n.cc_index].utc_offset * HOUR)
        local_hour = ((hours + off) % DAY) // HOUR
        v = base[:, col] * mult[:, col]
        day = (hours + off) // DAY
        per_day = np.bincount(day - day.min(), weights=v)
        batch = np.where(local_hour == BATCH_LOCAL_HOUR, per_day[day - day.min()] * BATCH_SHARE, 0.0)
        new = v * (1 - BATCH_SHARE) + batch
        with np.errstate(invalid="ignore", divide="ignore"):
            mult[:, col] *= np.where(v > 0, new / np.where(v > 0, v, 1.0), 1.0)
        record("upload_batch", t0, t1, {"probe_cc": n.cc, "probe_asn": n.asn, "software_name": "ooniprobe-cli"},
               BATCH_SHARE, f"ooniprobe-cli probes on AS{n.asn} ({n.cc}) upload {BATCH_SHARE:.0%} of each "
                            f"day's measurements at {BATCH_LOCAL_HOUR:02d}:00 local time (daily batch).")

    # ingestion lag: part of an hour's rows slip into the next hour
    for _ in range(int(days // LAG_EVERY_DAYS)):
        for _try in range(20):
            h = int(rng.integers(1, len(hours) - 1))
            if _free(int(hours[h]), int(hours[h]) + 2 * HOUR, busy):
                break
        else:
            continue
        lost = float(rng.uniform(0.10, 0.20))
        moved = base[h] * mult[h] * lost
        mult[h] *= 1 - lost
        with np.errstate(invalid="ignore", divide="ignore"):
            cur = base[h + 1] * mult[h + 1]
            mult[h + 1] *= np.where(cur > 0, (cur + moved) / np.where(cur > 0, cur, 1.0), 1.0)
        record("ingestion_lag", int(hours[h]), int(hours[h]) + HOUR, {}, 1 - lost,
               f"Ingestion lag: {lost:.0%} of this hour's rows (every series) arrive in the next hour.")
    return mult, events
