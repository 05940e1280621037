"""The small tables: citizenlab (the test list), test_helper_instances (the helper fleet
with one rotated droplet) and event_detector_changepoints (one row per blocking change)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..schema import CHANGEPOINT_SIGNALS
from .fleet import helper_instances
from .plan import Plan
from .urls import TEST_LIST, domain_of


def citizenlab_frame() -> pd.DataFrame:
    """The global test list (cc ZZ) of every URL the generator measures."""
    return pd.DataFrame({
        "domain": pd.array([domain_of(u) for u, _ in TEST_LIST], dtype="str"),
        "url": pd.array([u for u, _ in TEST_LIST], dtype="str"),
        "cc": pd.array(["ZZ"] * len(TEST_LIST), dtype="str"),
        "category_code": pd.array([c for _, c in TEST_LIST], dtype="str"),
    })


def helpers_frame(plan: Plan) -> pd.DataFrame:
    rows = helper_instances(plan.rotation_time)
    df = pd.DataFrame({k: pd.array([r[k] for r in rows], dtype="str")
                       for k in ("rdn", "dns_zone", "name", "provider", "region", "ipaddr", "ipv6addr")})
    for col in ("draining_at", "destroyed_at"):
        df[col] = pd.Series([r[col] for r in rows], dtype="datetime64[s, UTC]")
    df["sign"] = np.ones(len(rows), np.int8)
    return df[["rdn", "dns_zone", "name", "provider", "region", "ipaddr", "ipv6addr",
               "draining_at", "sign", "destroyed_at"]]


EDD = 10
MU_1 = 0.7
H = EDD * MU_1 / 2  # threshold of OONI's CUSUM detector (edd * (mu_1 - mu_0) / 2)


def changepoints_frame(plan: Plan) -> pd.DataFrame:
    """One changepoint per blocking event, shaped like OONI's CUSUM event detector output:
    ``ts`` is the hour the detector fired, ``current_state`` the state before the change
    (as the detector records it), the accumulator of the change direction just above ``h``.
    ``ts`` is the incident's ``details.changepoint_ts``."""
    rng = np.random.default_rng([plan.seed, 3])
    per_signal = [f"{sig}_{part}" for sig in CHANGEPOINT_SIGNALS for part in ("current_state", "s_pos", "s_neg")]
    cols: dict[str, list[Any]] = {c: [] for c in (
        "probe_asn", "probe_cc", "domain", "ts", "count_isp_resolver", "count_other_resolver", "count",
        "dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked", *per_signal, "change_dir",
        "current_state", "s_pos", "s_neg", "h", "block_type")}
    signal = {"dns_isp_block": "dns_isp_blocked", "tcp_block": "tcp_blocked", "tls_block": "tls_blocked"}
    for ev in plan.blocking:
        net = plan.nets[ev.net]
        ts = ev.detected_at
        count = int(rng.integers(2, 9))
        isp = int(rng.binomial(count, 0.8))
        level = float(rng.uniform(0.8, 1.0)) if ev.direction > 0 else float(rng.uniform(0.0, 0.1))
        values = {k: float(rng.uniform(0.0, 0.05)) for k in ("dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked")}
        values[signal[ev.block_type]] = level
        over = H + float(rng.uniform(0.05, 0.6))
        row = {
            "probe_asn": net.asn, "probe_cc": net.cc, "domain": domain_of(TEST_LIST[ev.url][0]),
            "ts": pd.Timestamp(ts, unit="s", tz="UTC"), "count_isp_resolver": isp,
            "count_other_resolver": count - isp, "count": count, **values,
            "change_dir": ev.direction, "s_pos": over if ev.direction > 0 else 0.0,
            "s_neg": over if ev.direction < 0 else 0.0,
            "current_state": "ok" if ev.direction > 0 else "blk", "h": H, "block_type": ev.block_type,
        }
        for sig in CHANGEPOINT_SIGNALS:  # the detector's own accumulators: only the changed one moved
            moved = sig == signal[ev.block_type]
            row[f"{sig}_current_state"] = row["current_state"] if moved else "ok"
            row[f"{sig}_s_pos"] = row["s_pos"] if moved else 0.0
            row[f"{sig}_s_neg"] = row["s_neg"] if moved else 0.0
        for k, v in row.items():
            cols[k].append(v)
    return pd.DataFrame({
        "probe_asn": np.array(cols["probe_asn"], np.uint32),
        "probe_cc": pd.array(cols["probe_cc"], dtype="str"),
        "domain": pd.array(cols["domain"], dtype="str"),
        "ts": pd.Series(cols["ts"], dtype="datetime64[ms, UTC]"),
        **{k: pd.array(cols[k], dtype="UInt32") for k in ("count_isp_resolver", "count_other_resolver", "count")},
        **{k: pd.array(cols[k], dtype="Float32") for k in ("dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked")},
        **{k: pd.array(cols[k], dtype="str" if k.endswith("current_state") else "Float32") for k in per_signal},
        "change_dir": pd.array(cols["change_dir"], dtype="Int8"),
        "current_state": pd.array(cols["current_state"], dtype="str"),
        "s_pos": pd.array(cols["s_pos"], dtype="Float32"),
        "s_neg": pd.array(cols["s_neg"], dtype="Float32"),
        "h": pd.array(cols["h"], dtype="Float32"),
        "block_type": pd.array(cols["block_type"], dtype="str"),
    })
