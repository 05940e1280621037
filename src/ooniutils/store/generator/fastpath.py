"""One chunk of synthetic ``fastpath`` rows, fully vectorised.

Rows are drawn as Poisson counts per (hour, network, software) cell; each row gets a test
from its software's mix, and a stable sort groups rows by test, then hour and cell.
Consecutive rows of one (test, hour, cell) form reports (geometric sizes, larger for
web_connectivity), and per-report attributes (probe version, platform, test helper, start
time, report_id) are drawn once per report and broadcast to its rows. Outcomes
(msm_failure, anomaly, confirmed, control_failure) follow the plan's incidents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from . import world
from .dtypes import categorical, null_uint64, str_series
from .plan import HOUR, Plan, version_cum
from .strings import DIGITS3, FixedRows, byte_table, frozen, put_timestamp, random_alnum, random_hex
from .urls import TEST_LIST, domain_of, url_weights

TEST_NAMES = [t.name for t in world.TESTS]
SOFTWARE_NAMES = [s.name for s in world.SOFTWARE]
CCS = [c.cc for c in world.COUNTRIES]
URLS = [u for u, _ in TEST_LIST]
INPUTS = [""] + URLS + list(world.DNS_INPUTS) + list(world.STUN_INPUTS)
INPUT_OFFSET = {"url": 1, "dns": 1 + len(URLS), "stun": 1 + len(URLS) + len(world.DNS_INPUTS)}
INPUT_LISTS = {"url": url_weights(), "dns": np.full(len(world.DNS_INPUTS), 1 / len(world.DNS_INPUTS)),
               "stun": np.array([0.55, 0.15, 0.15, 0.15])}
DOMAINS = sorted({domain_of(i) for i in INPUTS})
INPUT_DOMAIN = np.array([DOMAINS.index(domain_of(i)) for i in INPUTS], np.int16)
VERSIONS = sorted({r.version for r in world.RELEASES})
ENGINES = sorted({r.engine_version for r in world.RELEASES})
RELEASE_VERSION = np.array([VERSIONS.index(r.version) for r in world.RELEASES], np.int8)
RELEASE_ENGINE = np.array([ENGINES.index(r.engine_version) for r in world.RELEASES], np.int8)
PLATFORM_COMBOS = [(p, a, w) for s in world.SOFTWARE for p, a, w in s.platforms]
PLATFORMS = sorted({p for p, _, _ in PLATFORM_COMBOS})
ARCHS = sorted({a for _, a, _ in PLATFORM_COMBOS})
COMBO_PLATFORM = np.array([PLATFORMS.index(p) for p, _, _ in PLATFORM_COMBOS], np.int8)
COMBO_ARCH = np.array([ARCHS.index(a) for _, a, _ in PLATFORM_COMBOS], np.int8)
HELPER_URLS = [""] + [world.helper_url(h.rdn) for h in world.HELPERS]
CONTROL_FAILURES = ["", *world.CONTROL_FAILURES]
BLOCKING_TYPES = ["", "dns", "tcp_ip", "http-failure", "http-diff"]
FP_BLOCKING_CUM = np.cumsum([0.25, 0.15, 0.60])  # dns, tcp_ip, http-failure for false positives

_SCORE_HEAD = '{{"blocking_general":{bg},"blocking_global":0.0,"blocking_country":0.0,"blocking_isp":0.0,"blocking_local":0.0'
SCORES = [
    _SCORE_HEAD.format(bg="0.0") + "}",
    _SCORE_HEAD.format(bg="0.0") + ',"accuracy":0.0,"msm_failure":true}',
    _SCORE_HEAD.format(bg="1.0") + "}",
    *[_SCORE_HEAD.format(bg="1.0") + f',"analysis":{{"blocking_type":"{bt}"}}}}' for bt in BLOCKING_TYPES[1:]],
    _SCORE_HEAD.format(bg="1.0") + ',"analysis":{"blocking_type":"http-diff"},"confirmed":true}',
]
SCORE_FAILURE, SCORE_ANOMALY, SCORE_WEB0, SCORE_CONFIRMED = 1, 2, 2, len(SCORES) - 1

WEB = TEST_NAMES.index("web_connectivity")
RUNTIME = np.array([t.runtime for t in world.TESTS])
RUNTIME32 = RUNTIME.astype(np.float32)
SPACING = np.maximum(1, np.round(RUNTIME) + 1).astype(np.int64)
P_NEW_REPORT = np.array([1 / t.report_size for t in world.TESTS])
BASE_FAILURE = np.array([t.failure for t in world.TESTS])
BASE_ANOMALY = np.array([t.anomaly for t in world.TESTS])
CENSORSHIP = np.array([c.censorship for c in world.COUNTRIES])
FP_RATE = 0.015 + 0.03 * CENSORSHIP
CC_METHOD = np.array([BLOCKING_TYPES.index(c.block_method or "http-failure") for c in world.COUNTRIES], np.int8)
CC_BYTES = frozen(byte_table(CCS))
BACKGROUND_CONTROL_FAILURE = 0.002


def _blocked_matrix() -> np.ndarray:
    """(n_countries, n_urls) fixed blocking of the world (not seeded: same for every seed)."""
    rng = np.random.default_rng(20240101)
    risky = {"NEWS": 1.0, "POLR": 1.5, "HUMR": 1.5, "ANON": 2.5, "LGBT": 2.0, "GRP": 1.0, "FEXP": 1.5,
             "PORN": 3.0, "GMB": 2.5, "COMT": 0.8, "REL": 1.0, "MMED": 0.5}
    cat = np.array([risky.get(c, 0.1) for _, c in TEST_LIST])
    p = np.clip(CENSORSHIP[:, None] * cat[None, :], 0, 0.95)
    return rng.random(p.shape) < p


BLOCKED = _blocked_matrix()


def _sample(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the first cumulative weight above u, per row (cum: (n, K) rows end at 1)."""
    return (u[:, None] >= cum).sum(axis=1)


LUT_BITS = 16


def _lookup_table(weights: np.ndarray) -> np.ndarray:
    """Inverse-CDF table: a uniform 16-bit integer indexes it to draw from ``weights``.

    One gather per draw instead of a binary search; probabilities are rounded to
    multiples of 1/65536, far below the sampling noise of any series.
    """
    cum = np.cumsum(weights) / np.sum(weights)
    grid = (np.arange(2**LUT_BITS) + 0.5) / 2**LUT_BITS
    return np.minimum(np.searchsorted(cum, grid, side="right"), len(weights) - 1).astype(np.int16)


INPUT_LUT = {kind: _lookup_table(w) for kind, w in INPUT_LISTS.items()}
HELPER_LUT = _lookup_table(np.array([h.weight for h in world.HELPERS]))
COMBO_LUT = np.stack([
    _lookup_table(np.array([w for _, _, w in s.platforms])) + sum(len(x.platforms) for x in world.SOFTWARE[:j])
    for j, s in enumerate(world.SOFTWARE)])
"""(n_software, 65536) → index in PLATFORM_COMBOS."""


def _test_lut(plan: Plan) -> np.ndarray:
    """(n_software, 65536) lookup tables of each software's test mix (cached on the plan)."""
    if "test_lut" not in plan.cache:
        plan.cache["test_lut"] = np.stack([_lookup_table(row).astype(np.int8) for row in plan.test_mix])
    return plan.cache["test_lut"]


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**LUT_BITS, n, dtype=np.uint16)


def fastpath_chunk(plan: Plan, chunk: int) -> pd.DataFrame:
    """Generate the fastpath rows of chunk ``chunk`` of ``plan`` (deterministic per seed)."""
    h_lo, h_hi = plan.chunks[chunk]
    rng = np.random.default_rng([plan.seed, 1, chunk])
    hours = plan.hours[h_lo:h_hi]
    k = len(hours)
    n_sw = plan.n_software
    n_cells = plan.lam.shape[1]
    # Poisson counts per (hour, cell), a test per row from its software's mix, then a
    # stable radix sort by test: rows end up ordered by (test, hour, cell).
    totals = rng.poisson(plan.lam[h_lo:h_hi]).ravel()
    n = int(totals.sum())
    hc = np.repeat(np.arange(k * n_cells, dtype=np.int32), totals)
    test_lut = _test_lut(plan)
    drawn = test_lut[(hc % n_cells) % n_sw, _draw(rng, n)]
    order = np.argsort(drawn, kind="stable")
    test = drawn[order]
    hc = hc[order]
    cell = hc % n_cells
    net = cell // n_sw
    sw = (cell % n_sw).astype(np.int8)
    cc = np.array([x.cc_index for x in plan.nets], np.int8)[net]

    # Reports: a new one where (test, hour, cell) changes, and with probability 1/size inside.
    new = rng.random(n) < P_NEW_REPORT[test]
    if n:
        new[0] = True
        new[1:] |= (test[1:] != test[:-1]) | (hc[1:] != hc[:-1])
    rep_first = np.flatnonzero(new)
    rep = np.cumsum(new, dtype=np.int32) - 1
    n_rep = len(rep_first)
    rep_size = np.diff(np.append(rep_first, n))
    rep_test, rep_hour, rep_cell = test[rep_first], hc[rep_first] // n_cells, cell[rep_first]
    rep_sw, rep_net = rep_cell % n_sw, rep_cell // n_sw

    cum, slots = version_cum(plan, hours)
    local = _sample(cum[rep_hour, rep_sw], rng.random(n_rep))
    rep_release = slots[rep_sw, np.minimum(local, slots.shape[1] - 1)]
    rep_combo = COMBO_LUT[rep_sw, _draw(rng, n_rep)]
    rep_helper = np.where(rep_test == WEB, HELPER_LUT[_draw(rng, n_rep)], -1).astype(np.int8)

    spacing = np.minimum(SPACING[rep_test], 3000 // rep_size)
    span = rep_size * spacing
    rep_start = hours[rep_hour] + (rng.random(n_rep) * (HOUR - span - 2)).astype(np.int64)
    rep_tst = rep_start - 1 - (rng.random(n_rep) * 5).astype(np.int64)
    pos = np.arange(n, dtype=np.int64) - rep_first[rep]
    mst = rep_start[rep] + pos * spacing[rep] + (rng.random(n) < 0.5)
    runtime = RUNTIME32[test] * np.exp(np.float32(0.5) * rng.standard_normal(n, dtype=np.float32))
    received = mst + np.ceil(runtime).astype(np.int64) + 1 + (rng.random(n) * 90).astype(np.int64)
    usec = rng.integers(0, 1_000_000, n)
    update_ms = received * 1000 + usec // 1000 + 200 + (rng.random(n) * 2800).astype(np.int64)

    # Inputs: tests are contiguous, so each input list is sampled on its test's slice.
    bounds = np.searchsorted(test, np.arange(len(world.TESTS) + 1))
    inp = np.zeros(n, np.int16)
    for t, kind in enumerate(world.TESTS):
        lo, hi = bounds[t], bounds[t + 1]
        if kind.inputs and hi > lo:
            inp[lo:hi] = INPUT_OFFSET[kind.inputs] + INPUT_LUT[kind.inputs][_draw(rng, int(hi - lo))]
    url = inp.astype(np.int32) - 1                     # index in TEST_LIST for url inputs

    # Outcomes.
    release = rep_release[rep]
    p_fail = BASE_FAILURE[test]
    if plan.regression is not None:
        p_fail = np.where(release == plan.regression[0], p_fail * plan.regression[1], p_fail)
    is_web = test == WEB
    helper = rep_helper[rep]
    cf = is_web & (rng.random(n) < BACKGROUND_CONTROL_FAILURE)
    if plan.helper_failure is not None:
        rdn, fail_start, fail_end = plan.helper_failure
        cf |= (helper == rdn) & (mst >= fail_start) & (mst < fail_end) & (rng.random(n) < 0.97)
    failure = cf | (rng.random(n) < p_fail)
    web_url = np.where(is_web, url, 0)
    blocked = is_web & BLOCKED[cc, web_url]
    bt = np.where(blocked, CC_METHOD[cc], 0).astype(np.int8)
    p_anom = np.where(is_web, np.where(blocked, 0.85, FP_RATE[cc]), BASE_ANOMALY[test] * (1 + 4 * CENSORSHIP[cc]))
    for ev in plan.blocking:
        m = is_web & (net == ev.net) & (url == ev.url)
        now_blocked = (mst[m] >= ev.start) == (ev.direction > 0)
        p_anom[m] = np.where(now_blocked, 0.9, FP_RATE[cc[m]])
        bt[m] = np.where(now_blocked, BLOCKING_TYPES.index(ev.fastpath_blocking_type), 0)
    anomaly = ~failure & (rng.random(n) < p_anom)
    fp = is_web & anomaly & (bt == 0)
    bt[fp] = 1 + np.searchsorted(FP_BLOCKING_CUM, rng.random(int(fp.sum())) * 0.999999, side="right")
    bt[~(is_web & anomaly)] = 0
    confirmed = anomaly & (bt == BLOCKING_TYPES.index("http-diff")) & (rng.random(n) < 0.75)
    score = np.zeros(n, np.int8)
    score[failure] = SCORE_FAILURE
    score[anomaly & ~is_web] = SCORE_ANOMALY
    score[anomaly & is_web] = SCORE_WEB0 + bt[anomaly & is_web]
    score[confirmed] = SCORE_CONFIRMED
    control = np.zeros(n, np.int8)
    control[cf] = 1 + rng.integers(0, len(world.CONTROL_FAILURES), int(cf.sum()))

    combo = rep_combo[rep]
    zeros8 = np.zeros(n, np.int8)
    uids = str_series(_measurement_uids(rng, test, bounds, received, usec, cc))
    report_ids = str_series(_report_ids(rng, rep_test, rep_net, rep_tst, plan, rep))
    return pd.DataFrame({
        "measurement_uid": uids,
        "report_id": report_ids,
        "input": categorical(inp, INPUTS),
        "probe_cc": categorical(cc, CCS),
        "probe_asn": np.array([x.asn for x in plan.nets], np.int32)[net],
        "test_name": categorical(test, TEST_NAMES),
        "test_start_time": rep_tst[rep].astype("datetime64[s]"),
        "measurement_start_time": mst.astype("datetime64[s]"),
        "filename": categorical(zeros8, [""]),
        "scores": categorical(score, SCORES),
        "platform": categorical(COMBO_PLATFORM[combo], PLATFORMS),
        "anomaly": categorical(anomaly.view(np.int8), ["f", "t"]),
        "confirmed": categorical(confirmed.view(np.int8), ["f", "t"]),
        "msm_failure": categorical(failure.view(np.int8), ["f", "t"]),
        "domain": categorical(INPUT_DOMAIN[inp], DOMAINS),
        "software_name": categorical(sw, SOFTWARE_NAMES),
        "software_version": categorical(RELEASE_VERSION[release], VERSIONS),
        "control_failure": categorical(control, CONTROL_FAILURES),
        "blocking_general": anomaly.astype(np.float32),
        "is_ssl_expected": zeros8,
        "page_len": np.zeros(n, np.int32),
        "page_len_ratio": np.zeros(n, np.float32),
        "server_cc": categorical(zeros8, [""]),
        "server_asn": zeros8,
        "server_as_name": categorical(zeros8, [""]),
        "update_time": update_ms.astype("datetime64[ms]"),
        "test_version": categorical(test, [t.version for t in world.TESTS], unique=False),
        "architecture": categorical(COMBO_ARCH[combo], ARCHS),
        "engine_name": categorical(zeros8, ["ooniprobe-engine"]),
        "engine_version": categorical(RELEASE_ENGINE[release], ENGINES),
        "test_runtime": runtime,
        "blocking_type": categorical(bt, BLOCKING_TYPES),
        "test_helper_address": categorical((helper + 1).astype(np.int8), HELPER_URLS),
        "test_helper_type": categorical((helper >= 0).view(np.int8), ["", "https"]),
        "ooni_run_link_id": null_uint64(n),
        "is_verified": categorical(zeros8, [""]),  # no anonymous-credentials status
    }, copy=False)


def _compact(name: str) -> str:
    return name.replace("_", "")


def _measurement_uids(rng: np.random.Generator, test: np.ndarray, bounds: np.ndarray,
                      received: np.ndarray, usec: np.ndarray, cc: np.ndarray) -> pa.ChunkedArray:
    """``YYYYMMDDHHMMSS.ffffff_CC_testname_<16 hex>`` (the fastpath's receive time)."""
    parts = []
    for t, kind in enumerate(world.TESTS):
        lo, hi = bounds[t], bounds[t + 1]
        if hi == lo:
            continue
        name = f"_{_compact(kind.name)}_"
        rows = FixedRows(int(hi - lo), 14 + 7 + 1 + 2 + len(name) + 16)
        put_timestamp(rows, received[lo:hi])
        rows.put_const(".").put_table(DIGITS3, usec[lo:hi] // 1000).put_table(DIGITS3, usec[lo:hi] % 1000)
        rows.put_const("_").put_table(CC_BYTES, cc[lo:hi]).put_const(name)
        rows.put_words(random_hex(rng, int(hi - lo)))
        parts.append(rows.to_arrow())
    return pa.chunked_array(parts, type=parts[0].type if parts else pa.string())


def _report_tables(plan: Plan) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """ASN digit count per network, and per count the ``_CC_ASN_n1_`` byte table of the
    networks with that count plus the network → table row map (cached on the plan)."""
    if "report_tables" not in plan.cache:
        asn_text = [str(x.asn) for x in plan.nets]
        tables = {}
        for length in sorted({len(a) for a in asn_text}):
            nets = [i for i, a in enumerate(asn_text) if len(a) == length]
            remap = np.zeros(len(plan.nets), np.int64)
            remap[nets] = np.arange(len(nets))
            table = frozen(byte_table([f"_{plan.nets[i].cc}_{asn_text[i]}_n1_" for i in nets]))
            tables[length] = (table, remap)
        plan.cache["report_tables"] = (np.array([len(a) for a in asn_text], np.int16), tables)
    return plan.cache["report_tables"]


def _report_ids(rng: np.random.Generator, rep_test: np.ndarray, rep_net: np.ndarray,
                rep_tst: np.ndarray, plan: Plan, rep: np.ndarray) -> pa.Array:
    """``YYYYMMDDTHHMMSSZ_testname_CC_ASN_n1_<16 alnum>`` per report (test_start_time),
    returned per row (``rep`` is each row's report). ASNs differ in length, so reports are
    built in (test, ASN length) groups and put back in order with one take."""
    asn_len, tables = _report_tables(plan)
    key = rep_test.astype(np.int16) * 16 + asn_len[rep_net]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cuts = np.flatnonzero(np.diff(sorted_key)) + 1
    parts = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(order)], strict=True):
        if hi == lo:
            continue
        idx = order[lo:hi]
        t, length = divmod(int(sorted_key[lo]), 16)
        table, remap = tables[length]
        rows = FixedRows(len(idx), 16 + 1 + len(_compact(world.TESTS[t].name)) + table.shape[1] + 16)
        put_timestamp(rows, rep_tst[idx], sep="T", suffix="Z")
        rows.put_const("_" + _compact(world.TESTS[t].name)).put_table(table, remap[rep_net[idx]])
        rows.put_words(random_alnum(rng, len(idx)))
        parts.append(rows.to_arrow())
    if not parts:
        return pa.array([], pa.string())
    joined = pa.concat_arrays(parts)
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    return joined.take(pa.array(inverse[rep]))
