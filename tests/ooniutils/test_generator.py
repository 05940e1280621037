"""The synthetic data generator: reproducibility, schema, realism and injected incidents.

One 14-day data set (~250k fastpath rows) is generated per module through ``generate()``
into an in-memory collecting store; each incident of its ground truth is then checked
against the rows. One test runs the generator into the real embedded store (chDB).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ooniutils.exceptions import StoreError
from ooniutils.store.base import Store, TableInfo
from ooniutils.store.generator import GroundTruth, generate, generate_frames, make_plan
from ooniutils.store.generator.dtypes import conforms, pandas_dtype
from ooniutils.store.schema import TABLES

END = datetime(2025, 3, 10, tzinfo=UTC)  # a Monday
DAYS = 14
ROWS = 250_000
SEED = 7
OFFSETS = {"US": -5, "BR": -3, "RU": 3, "IN": 5.5, "IR": 3.5, "DE": 1, "ID": 7}


class CollectingStore(Store):
    """A Store test double that keeps every inserted frame in memory."""

    kind = "memory"

    def __init__(self) -> None:
        self.frames: dict[str, list[pd.DataFrame]] = {}

    def insert(self, table: str, df: pd.DataFrame) -> int:
        self.frames.setdefault(table, []).append(df)
        return len(df)

    def table(self, name: str) -> pd.DataFrame:
        return pd.concat(self.frames[name], ignore_index=True)

    def query(self, sql, params=None):  # pragma: no cover - not used by the generator
        raise NotImplementedError

    def command(self, sql, params=None):  # pragma: no cover
        raise NotImplementedError

    def init(self) -> None:  # pragma: no cover
        pass

    def info(self) -> list[TableInfo]:  # pragma: no cover
        return []


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    store = CollectingStore()
    calls: list[tuple[int, int]] = []
    truth_path = tmp_path_factory.mktemp("truth") / "truth.json"
    truth = generate(store, days=DAYS, rows=ROWS, seed=SEED, end=END,
                     progress=lambda done, total: calls.append((done, total)),
                     truth_path=truth_path, chunk_rows=100_000)
    fp = store.table("fastpath")
    fp["t"] = fp["measurement_start_time"]
    return store, truth, truth_path, calls, fp


def _count(fp: pd.DataFrame, start: datetime, end: datetime, **keys) -> int:
    m = (fp["t"] >= start.replace(tzinfo=None)) & (fp["t"] < end.replace(tzinfo=None))
    for k, v in keys.items():
        m &= fp[k] == v
    return int(m.sum())


def test_same_seed_same_rows_and_different_seed_differs():
    def frames(seed):
        return [df for _, df in generate_frames(days=3, rows=20_000, seed=seed, end=END)]

    a, b, c = frames(3), frames(3), frames(4)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert list(x.columns) == list(y.columns) and list(x.dtypes) == list(y.dtypes)
        assert pd.util.hash_pandas_object(x).equals(pd.util.hash_pandas_object(y))
    fa, fc = a[-1], c[-1]
    assert len(fa) != len(fc) or not fa["measurement_uid"].equals(fc["measurement_uid"])
    assert int(pd.util.hash_pandas_object(fa).sum()) != int(pd.util.hash_pandas_object(fc).sum())


def test_frames_match_schema_columns_and_dtypes(generated):
    store, *_ = generated
    assert set(store.frames) == {"fastpath", "test_helper_instances", "event_detector_changepoints", "citizenlab",
                                 "url_priorities"}
    for name, frames in store.frames.items():
        table = TABLES[name]
        for df in frames:
            assert list(df.columns) == table.column_names, name
            bad = [(c, str(df[c].dtype), t) for c, t in table.columns if not conforms(df[c], t)]
            assert not bad, f"{name}: dtypes not matching schema: {bad}"


def test_pandas_dtype_mapping():
    assert pandas_dtype("String") == "str"
    assert pandas_dtype("LowCardinality(String)") == "str"
    assert pandas_dtype("FixedString(32)") == "str"
    assert pandas_dtype("UInt32") == "uint32"
    assert pandas_dtype("Nullable(UInt64)") == "UInt64"
    assert pandas_dtype("DateTime") == "datetime64[s]"
    assert pandas_dtype("DateTime64(3)") == "datetime64[ms]"
    assert pandas_dtype("DateTime64(3, 'UTC')") == "datetime64[ms, UTC]"
    assert pandas_dtype("Nullable(DateTime('UTC'))") == "datetime64[s, UTC]"
    with pytest.raises(ValueError, match="Array"):
        pandas_dtype("Array(String)")


def test_identifiers_and_times_look_like_ooni(generated):
    _, truth, _, _, fp = generated
    sample = fp.sample(5000, random_state=0)
    uid = re.compile(r"^\d{14}\.\d{6}_[A-Z]{2}_[a-z]+_[0-9a-f]{16}$")
    rid = re.compile(r"^\d{8}T\d{6}Z_[a-z]+_[A-Z]{2}_\d+_n1_[A-Za-z0-9]{16}$")
    assert sample["measurement_uid"].str.match(uid).all()
    assert sample["report_id"].str.match(rid).all()
    assert fp["measurement_uid"].is_unique
    row = sample.iloc[0]
    assert row["report_id"].split("_")[2] == row["probe_cc"]
    assert row["report_id"].split("_")[3] == str(row["probe_asn"])
    assert row["measurement_uid"].split("_")[2] == row["test_name"].replace("_", "")
    assert (fp["test_start_time"] <= fp["measurement_start_time"]).all()
    assert fp["t"].min() >= truth.start.replace(tzinfo=None)
    assert fp["t"].max() < truth.end.replace(tzinfo=None)
    assert (fp["update_time"] > fp["measurement_start_time"]).all()
    # reports: one probe, one test, several measurements for web_connectivity
    per_report = fp.groupby("report_id", observed=True).agg(
        n=("measurement_uid", "size"), tests=("test_name", "nunique"), sw=("software_version", "nunique"))
    assert (per_report["tests"] == 1).all() and (per_report["sw"] == 1).all()
    assert per_report["n"].max() > 10


def test_platform_consistent_with_software_and_mixes(generated):
    fp = generated[-1]
    pairs = set(zip(fp["software_name"], fp["platform"], strict=True))
    allowed = {"ooniprobe-android": {"android"}, "ooniprobe-ios": {"ios"}, "miniooni": {"linux", "macos"},
               "ooniprobe-cli": {"linux", "macos", "windows"}, "ooniprobe-desktop": {"windows", "macos"}}
    assert all(p in allowed[s] for s, p in pairs)
    tests = fp["test_name"].value_counts(normalize=True)
    assert tests.index[0] == "web_connectivity" and 0.6 < tests.iloc[0] < 0.8
    assert {"dnscheck", "signal", "whatsapp", "telegram", "tor", "ndt", "urlgetter"} <= set(tests.index)
    web = fp[fp["test_name"] == "web_connectivity"]
    assert (web["test_helper_address"].str.match(r"^https://\d\.th\.ooni\.org$")).all()
    assert (fp.loc[fp["test_name"] != "web_connectivity", "test_helper_address"] == "").all()
    assert (web["domain"] != "").all() and (web["input"].str.startswith("http")).all()
    rates = {c: (fp[c] == "t").mean() for c in ("anomaly", "confirmed", "msm_failure")}
    assert 0.02 < rates["anomaly"] < 0.15 and rates["confirmed"] < rates["anomaly"] and 0.03 < rates["msm_failure"] < 0.15
    assert ((fp["blocking_general"] > 0) == (fp["anomaly"] == "t")).all()
    assert fp.loc[fp["confirmed"] == "t", "anomaly"].eq("t").all()
    assert (fp["control_failure"] == "").mean() > 0.98
    scores = json.loads(fp["scores"].iloc[0])
    assert {"blocking_general", "blocking_global", "blocking_country", "blocking_isp", "blocking_local"} <= set(scores)


def test_daily_cycle_mobile_peaks_in_the_local_evening(generated):
    fp = generated[-1]
    a = fp[(fp["software_name"] == "ooniprobe-android") & fp["probe_cc"].isin(list(OFFSETS))]
    local_hour = (a["t"].dt.hour + a["probe_cc"].astype(str).map(OFFSETS)).mod(24).astype(int)
    evening = local_hour.isin([19, 20, 21, 22]).sum()
    morning = local_hour.isin([3, 4, 5, 6]).sum()
    assert evening > 1.8 * morning


def test_weekly_cycle_desktop_drops_at_weekends(generated):
    _, truth, _, _, fp = generated
    d = fp[(fp["software_name"] == "ooniprobe-desktop") & (fp["probe_cc"] == "US")]
    start = truth.start.replace(tzinfo=None)
    first_week = d[d["t"] < start + timedelta(days=7)]  # before the slow decline
    local = first_week["t"] - pd.Timedelta(hours=5)
    weekend = local.dt.day_of_week >= 5
    per_day_weekday, per_day_weekend = (~weekend).sum() / 5, weekend.sum() / 2
    assert per_day_weekend < 0.85 * per_day_weekday


def test_country_outage_visible(generated):
    _, truth, _, _, fp = generated
    inc = truth.get("country_outage")
    cc = inc.keys["probe_cc"]
    during = _count(fp, inc.start, inc.end, probe_cc=cc)
    before = _count(fp, inc.start - timedelta(days=1), inc.end - timedelta(days=1), probe_cc=cc)
    assert before > 50 and during < 0.1 * before
    assert inc.end > truth.end - timedelta(days=2)


def test_probe_type_drop_visible(generated):
    _, truth, _, _, fp = generated
    inc = truth.get("probe_type_drop")
    sw = inc.keys["software_name"]
    during = _count(fp, inc.start, inc.end, software_name=sw)
    before = _count(fp, inc.start - timedelta(days=1), inc.end - timedelta(days=1), software_name=sw)
    assert 0.35 < during / before < 0.7


def test_slow_decline_visible(generated):
    _, truth, _, _, fp = generated
    inc = truth.get("slow_decline")
    sw = inc.keys["software_name"]
    span = inc.end - inc.start
    during = _count(fp, inc.start, inc.end, software_name=sw)
    before = _count(fp, inc.start - span, inc.start, software_name=sw)
    assert 0.7 < during / before < 0.9  # mean of a 1 → 0.6 ramp is 0.8
    half = inc.start + span / 2
    assert _count(fp, half, inc.end, software_name=sw) < 0.9 * _count(fp, inc.start, half, software_name=sw)


def test_count_incidents_match_their_expected_rows(generated):
    _, truth, _, _, fp = generated
    volume = [i for i in truth.incidents if i.metric == "measurement_count"]
    assert len(truth.of_type("short_drop")) >= 8
    for inc in volume:
        got = _count(fp, inc.start, inc.end, **inc.keys)
        exp = inc.details["expected_rows"]
        assert abs(got - exp) < 5 * np.sqrt(exp) + 5, (inc.id, got, exp)
        assert exp < inc.details["expected_rows_without_incident"]
    drops = truth.of_type("short_drop")
    got = sum(_count(fp, i.start, i.end, **i.keys) for i in drops)
    assert got < 0.75 * sum(i.details["expected_rows_without_incident"] for i in drops)
    for d in drops:
        assert 2 <= (d.end - d.start).total_seconds() / 3600 <= 6 and -0.6 <= d.magnitude <= -0.3


def test_test_helper_failure_visible(generated):
    _, truth, _, _, fp = generated
    inc = truth.get("test_helper_failure")
    th = fp["test_helper_address"] == inc.keys["test_helper"]
    inside = th & (fp["t"] >= inc.start.replace(tzinfo=None)) & (fp["t"] < inc.end.replace(tzinfo=None))
    outside = th & ~inside
    assert inside.sum() > 50
    assert (fp.loc[inside, "control_failure"] != "").mean() > 0.9
    assert (fp.loc[inside, "msm_failure"] == "t").mean() > 0.9
    assert (fp.loc[outside, "control_failure"] != "").mean() < 0.01


def test_version_regression_and_rollout(generated):
    _, truth, _, _, fp = generated
    inc = truth.get("version_regression")
    a = fp[(fp["software_name"] == inc.keys["software_name"]) & (fp["t"] >= inc.start.replace(tzinfo=None))]
    new = a["software_version"] == inc.keys["software_version"]
    ratio = (a.loc[new, "msm_failure"] == "t").mean() / (a.loc[~new, "msm_failure"] == "t").mean()
    assert 2.2 < ratio < 4.0
    # rollout: the new version's daily share grows (S-curve), nearly monotonically
    daily = a.groupby(a["t"].dt.floor("D"))["software_version"].apply(
        lambda s: (s == inc.keys["software_version"]).mean())
    assert daily.iloc[-1] > daily.iloc[0] + 0.4
    assert (daily.diff().dropna() > -0.05).all()
    before = fp[(fp["software_name"] == "ooniprobe-android") & (fp["t"] < inc.start.replace(tzinfo=None))]
    assert (before["software_version"] != inc.keys["software_version"]).all()


def test_blocking_changes_in_fastpath_and_changepoints(generated):
    store, truth, _, _, fp = generated
    cps = store.table("event_detector_changepoints")
    events = truth.of_type("blocking_change")
    assert len(events) >= 3 and len(cps) == len(events)
    for inc in events:
        k = inc.keys
        rows = fp[(fp["probe_cc"] == k["probe_cc"]) & (fp["probe_asn"] == k["probe_asn"])
                  & (fp["domain"] == k["domain"]) & (fp["test_name"] == "web_connectivity")
                  & (fp["msm_failure"] == "f")]
        after = rows["t"] >= inc.start.replace(tzinfo=None)
        rate_before = (rows.loc[~after, "anomaly"] == "t").mean()
        rate_after = (rows.loc[after, "anomaly"] == "t").mean()
        assert (~after).sum() >= 5 and after.sum() >= 5, inc.id
        if inc.details["change_dir"] > 0:
            assert rate_before < 0.3 and rate_after > 0.7, (inc.id, rate_before, rate_after)
        else:
            assert rate_before > 0.7 and rate_after < 0.3, (inc.id, rate_before, rate_after)
        assert (rows.loc[after & (rows["anomaly"] == "t"), "blocking_type"]
                == inc.details["fastpath_blocking_type"]).mean() > 0.8 or inc.details["change_dir"] < 0
        cp = cps[(cps["probe_cc"] == k["probe_cc"]) & (cps["probe_asn"] == k["probe_asn"]) & (cps["domain"] == k["domain"])]
        assert len(cp) == 1
        cp = cp.iloc[0]
        assert cp["block_type"] == inc.details["block_type"] and cp["change_dir"] == inc.details["change_dir"]
        assert inc.start <= cp["ts"].to_pydatetime() < truth.end
        assert max(cp["s_pos"], cp["s_neg"]) > cp["h"]


def test_helper_fleet_has_a_rotated_instance(generated):
    store, truth, *_ = generated
    th = store.table("test_helper_instances")
    assert set(th["dns_zone"]) == {"th.ooni.org"} and (th["sign"] == 1).all()
    rotated = th[th["destroyed_at"].notna()]
    assert len(rotated) == 1 and rotated["draining_at"].iloc[0] < rotated["destroyed_at"].iloc[0]
    assert (th["rdn"] == rotated["rdn"].iloc[0]).sum() == 2  # the successor took the rdn over
    assert {"Hetzner", "Digital Ocean", "Greenhost"} <= set(th["provider"])
    assert len(truth.test_helpers) == len(th)


def test_truth_json_written_and_progress_reported(generated):
    store, truth, path, calls, fp = generated
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["seed"] == SEED and data["end"] == "2025-03-10T00:00:00Z"
    assert data["rows"]["fastpath"] == len(fp) == truth.rows["fastpath"]
    assert {i["type"] for i in data["incidents"]} == {
        "country_outage", "probe_type_drop", "slow_decline", "test_helper_failure",
        "version_regression", "blocking_change", "short_drop"}
    loaded = GroundTruth.load(path)
    assert loaded.to_dict() == truth.to_dict()
    assert calls[-1] == (DAYS * 24, DAYS * 24) and len(calls) > 1
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert abs(len(fp) - ROWS) < 5 * np.sqrt(ROWS)


def test_short_windows_skip_incidents_and_say_so():
    plan = make_plan(days=2, rows=10_000, seed=0, end=END)
    skipped = {s["type"] for s in plan.truth.skipped}
    assert {"slow_decline", "probe_type_drop", "version_regression", "short_drop",
            "test_helper_failure", "blocking_change", "country_outage"} == skipped
    assert plan.truth.incidents == []
    plan = make_plan(days=5, rows=10_000, seed=0, end=END)
    skipped = {s["type"] for s in plan.truth.skipped}
    assert "slow_decline" in skipped and skipped <= {"slow_decline", "short_drop"}  # drops that found no room
    assert plan.truth.of_type("short_drop") and plan.truth.of_type("country_outage")


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="days"):
        make_plan(days=0)
    with pytest.raises(ValueError, match="rows"):
        make_plan(days=3, rows=-5)
    with pytest.raises(ValueError, match="seed"):
        make_plan(days=3, seed=-1)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StoreError, match="bad.json"):
        GroundTruth.load(tmp_path / "bad.json")


def test_defaults_end_on_the_hour_and_large_runs_are_chunked():
    plan = make_plan(days=1, rows=1000)
    assert plan.end.minute == plan.end.second == 0 and plan.end <= datetime.now(UTC)
    assert plan.end > datetime.now(UTC) - timedelta(hours=1)
    naive = make_plan(days=3, rows=1000, end=datetime(2025, 1, 1, 12, 30))
    assert naive.end == datetime(2025, 1, 1, 12, tzinfo=UTC)
    big = make_plan(days=90, rows=100_000_000)
    assert len(big.chunks) >= 180
    assert all(hi - lo <= 168 for lo, hi in make_plan(days=30, rows=1000).chunks)
    per_chunk = [big.lam[lo:hi].sum() for lo, hi in big.chunks]
    assert max(per_chunk) < 0.6e6 and big.chunks[0][0] == 0 and big.chunks[-1][1] == 90 * 24
    assert make_plan(days=90).rows == 3_600_000


def test_generate_into_the_embedded_store(tmp_path, monkeypatch):
    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "data"))
    from ooniutils.store import get_store

    store = get_store(create=True)
    store.init()
    try:
        truth = generate(store, days=4, rows=30_000, seed=2, end=END, truth_path=tmp_path / "t.json")
        counts = store.query("SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath")
        assert counts["n"][0] == truth.rows["fastpath"] == counts["u"][0]
        inc = truth.get("country_outage")
        got = store.query(
            "SELECT count() AS n FROM fastpath WHERE probe_cc = %(cc)s "
            "AND measurement_start_time >= %(s)s AND measurement_start_time < %(e)s",
            {"cc": inc.keys["probe_cc"], "s": inc.start, "e": inc.end})
        assert abs(got["n"][0] - inc.details["expected_rows"]) < 5 * np.sqrt(inc.details["expected_rows"]) + 5
        helpers = store.query("SELECT count() AS n FROM test_helper_instances WHERE draining_at IS NOT NULL")
        assert helpers["n"][0] == 1
    finally:
        store.close()


def test_plan_alone_gives_the_complete_truth():
    plan = make_plan(days=DAYS, rows=ROWS, seed=SEED, end=END)
    truth = plan.truth
    assert len(truth.test_helpers) == 7 and truth.releases
    for inc in truth.of_type("blocking_change"):
        assert inc.start < datetime.fromisoformat(inc.details["changepoint_ts"].replace("Z", "+00:00")) < truth.end
    assert json.loads(truth.to_json())["incidents"]


def test_tiny_runs_still_produce_valid_frames():
    frames = dict(generate_frames(days=1, rows=1, seed=0, end=END))
    fp = frames["fastpath"]
    assert list(fp.columns) == TABLES["fastpath"].column_names and len(fp) < 10
    assert all(conforms(fp[c], t) for c, t in TABLES["fastpath"].columns)


class FailingStore(CollectingStore):
    """Collects frames like :class:`CollectingStore`, but its ``fail_at``-th insert (1-based,
    over all tables) raises. ``order`` lists the tables of the inserts attempted."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.order: list[str] = []

    def insert(self, table: str, df: pd.DataFrame) -> int:
        self.order.append(table)
        if len(self.order) == self.fail_at:
            raise StoreError(f"disk full while writing insert {self.fail_at} ({table})")
        return super().insert(table, df)


SMALL = {"days": 2, "rows": 6000, "seed": 1, "end": END, "chunk_rows": 1500}
DIMENSIONS = ["citizenlab", "test_helper_instances", "event_detector_changepoints", "url_priorities"]  # before fastpath


def test_generate_reports_progress_in_order_after_each_chunk_is_written(tmp_path):
    plan = make_plan(**SMALL)
    assert len(plan.chunks) >= 4  # enough chunks for the insert of one to overlap the next
    store = FailingStore(fail_at=None)
    calls: list[tuple[int, int, int]] = []
    truth = generate(store, progress=lambda done, total: calls.append((done, total, len(store.frames["fastpath"]))),
                     truth_path=tmp_path / "t.json", **SMALL)
    # one call per chunk, in order, each after its own chunk (and no later one) was written
    assert calls == [(hi, len(plan.hours), i + 1) for i, (_, hi) in enumerate(plan.chunks)]
    assert store.order == DIMENSIONS + ["fastpath"] * len(plan.chunks)
    starts = [df["measurement_start_time"].min() for df in store.frames["fastpath"]]
    assert starts == sorted(starts)  # chunks written oldest first
    assert truth.rows["fastpath"] == sum(len(df) for df in store.frames["fastpath"])
    assert (tmp_path / "t.json").exists()


@pytest.mark.parametrize("fail_at", [2, 6, -1], ids=["helpers-table", "second-fastpath-chunk", "last-chunk"])
def test_generate_surfaces_an_insert_error_and_writes_nothing_after_it(tmp_path, fail_at):
    n_inserts = len(DIMENSIONS) + len(make_plan(**SMALL).chunks)
    fail_at = n_inserts if fail_at == -1 else fail_at
    store = FailingStore(fail_at=fail_at)
    calls: list[int] = []
    with pytest.raises(StoreError, match=rf"disk full while writing insert {fail_at} \("):
        generate(store, progress=lambda done, total: calls.append(done),
                 truth_path=tmp_path / "t.json", **SMALL)
    expected = (DIMENSIONS + ["fastpath"] * n_inserts)[:fail_at]
    assert store.order == expected  # no insert was attempted after the failing one
    assert sum(len(frames) for frames in store.frames.values()) == fail_at - 1
    written_chunks = max(0, fail_at - 1 - len(DIMENSIONS))
    assert len(calls) == written_chunks and calls == sorted(calls)  # progress only for written chunks
    assert not (tmp_path / "t.json").exists()  # no truth for a partial run
