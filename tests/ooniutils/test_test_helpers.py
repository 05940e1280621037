"""Unit tests of ooniutils.analyses.test_helpers on small handcrafted hourly counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses.test_helpers import (
    AlarmParams,
    alarm_episodes,
    alarm_message,
    helper_alarms,
    helper_host,
    helper_inventory,
    helper_summary,
    hourly_rates,
    network_problems,
)
from ooniutils.exceptions import AnalysisError

HELPERS = ["0.th.ooni.org", "1.th.ooni.org", "2.th.ooni.org"]
COUNTRIES = [("IT", 30722), ("BR", 28573), ("IR", 197207), ("US", 7922), ("DE", 3320)]
END = pd.Timestamp("2024-03-10 23:00")


def make_counts(hours: int = 24 * 9, per_cell: int = 20, base_failures: int = 1,
                broken_helper: str | None = None, broken_cc: str | None = None,
                broken_hours: int = 3, seed: int = 0) -> pd.DataFrame:
    """Every (hour, helper, country) gets ``per_cell`` measurements and ``base_failures``
    failures; in the last ``broken_hours`` the broken helper (all countries) or the broken
    country (all helpers) fails 60% of the time."""
    rng = np.random.default_rng(seed)
    rows = []
    for hour in pd.date_range(END - pd.Timedelta(hours=hours - 1), END, freq="h"):
        late = hour > END - pd.Timedelta(hours=broken_hours)
        for helper in HELPERS:
            for cc, asn in COUNTRIES:
                fail = int(rng.binomial(per_cell, base_failures / per_cell))
                if late and (helper == broken_helper or cc == broken_cc):
                    fail = int(per_cell * 0.6)
                rows.append((hour, helper, cc, asn, per_cell, fail))
    return pd.DataFrame(rows, columns=["hour", "helper", "probe_cc", "probe_asn", "total", "failures"])


def last_hour(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["hour"] == df["hour"].max()].set_index(df.columns[0])


def test_helper_host_join_key():
    assert helper_host("https://2.th.ooni.org") == "2.th.ooni.org"
    assert helper_host("https://2.TH.ooni.org:443/") == "2.th.ooni.org"
    assert helper_host("0.th.ooni.org") == "0.th.ooni.org"
    assert helper_host("") == "" and helper_host(None) == ""


def test_healthy_world_raises_no_alarm():
    alarms = helper_alarms(make_counts(), now=END)
    assert not alarms["alarm"].any()
    assert (last_hour(alarms)["status"] == "ok").all()


def test_helper_failing_for_everyone_is_alarmed_with_scope_all_probes():
    alarms = helper_alarms(make_counts(broken_helper="1.th.ooni.org"), now=END)
    now = last_hour(alarms)
    assert now.loc["1.th.ooni.org", "alarm"]
    assert now.loc["1.th.ooni.org", "scope"] == "all probes"
    assert now.loc["1.th.ooni.org", "p_value"] < 1e-6
    assert not now.drop(index="1.th.ooni.org")["alarm"].any()
    # ... and no country is reported as a network problem
    nets = network_problems(make_counts(broken_helper="1.th.ooni.org"), now=END)
    assert not nets["problem"].any()
    episodes = alarm_episodes(alarms)
    assert list(episodes["helper"]) == ["1.th.ooni.org"]
    assert episodes.loc[0, "hours"] == 3
    msg = alarm_message(now.reset_index())
    assert "1.th.ooni.org" in msg and "0.th.ooni.org" not in msg


def test_one_country_network_problem_is_not_a_helper_alarm():
    counts = make_counts(broken_cc="IR")
    alarms = helper_alarms(counts, now=END)
    now = last_hour(alarms)
    # every helper's rate rises (IR is a fifth of its traffic) ...
    assert (now["status"] == "elevated").all()
    # ... but the rest of the world is fine, so no helper alarm
    assert (now["scope"] == "concentrated").all()
    assert (now["top_cc"] == "IR").all()
    assert (now["top_asn"] == 197207).all()
    assert not alarms["alarm"].any()
    nets = last_hour(network_problems(counts, now=END))
    assert nets.loc["IR", "problem"]
    assert nets.loc["IR", "helpers_elevated"] == 3
    assert not nets.drop(index="IR")["problem"].any()
    by_asn = last_hour(network_problems(counts, now=END, by="probe_asn"))
    assert by_asn.loc[197207, "problem"]


def test_no_history_never_alarms():
    # only four hours of data, all of them bad: nothing to compare with
    counts = make_counts(hours=4, broken_helper="0.th.ooni.org", broken_hours=4)
    alarms = helper_alarms(counts, now=END)
    assert not alarms["alarm"].any()
    assert (last_hour(alarms)["status"] == "no baseline yet").all()


def test_missing_recent_hours_say_so():
    counts = make_counts()
    counts = counts[counts["hour"] < END - pd.Timedelta(hours=5)]
    now = last_hour(helper_alarms(counts, now=END))
    assert (now["status"] == "too few recent measurements").all()
    assert not now["alarm"].any()


def test_small_samples_are_not_tested():
    counts = make_counts(per_cell=1, base_failures=0, broken_helper="2.th.ooni.org")
    now = last_hour(helper_alarms(counts, now=END, params=AlarmParams(min_recent=30)))
    assert now.loc["2.th.ooni.org", "status"] == "too few recent measurements"


def test_empty_and_bad_input():
    empty = pd.DataFrame(columns=["hour", "helper", "probe_cc", "probe_asn", "total", "failures"])
    assert helper_alarms(empty).empty
    assert network_problems(empty).empty
    assert alarm_episodes(helper_alarms(empty)).empty
    with pytest.raises(AnalysisError, match="failures"):
        helper_alarms(pd.DataFrame({"hour": [], "helper": []}))
    with pytest.raises(AnalysisError, match="by must be"):
        network_problems(empty, by="helper")


def test_hourly_rates():
    rates = hourly_rates(make_counts(hours=2, broken_helper="0.th.ooni.org", broken_hours=1))
    last = rates[rates["hour"] == END].set_index("helper")
    assert last.loc["0.th.ooni.org", "rate"] == pytest.approx(0.6)
    assert last.loc["0.th.ooni.org", "total"] == 100


def test_inventory_collapses_signs_and_classifies_state():
    now = pd.Timestamp("2024-03-10 12:00", tz="UTC")
    base = dict(dns_zone="th.ooni.org", ipaddr="10.0.0.1", draining_at=None, destroyed_at=None)
    inst = pd.DataFrame([
        # 0: live, updated once (the -1 cancels the first +1); draining only tomorrow
        {**base, "rdn": "0", "name": "0.th.ooni.org", "provider": "DO", "region": "ams3", "sign": 1},
        {**base, "rdn": "0", "name": "0.th.ooni.org", "provider": "DO", "region": "ams3", "sign": -1},
        {**base, "rdn": "0", "name": "0.th.ooni.org", "provider": "DO", "region": "ams3", "sign": 1,
         "draining_at": pd.Timestamp("2024-03-11", tz="UTC")},
        # 1: draining; droplet named like OONI's roaming helpers
        {**base, "rdn": "1", "name": "roaming-th-20240611093012", "provider": "Hetzner",
         "region": "fsn1", "sign": 1, "draining_at": pd.Timestamp("2024-03-09", tz="UTC")},
        # 2: rotated at 2024-03-10 06:00 (destroyed since), successor live
        {**base, "rdn": "2", "name": "roaming-th-old", "provider": "DO", "region": "fra1", "sign": 1,
         "draining_at": pd.Timestamp("2024-03-10 06:00", tz="UTC"),
         "destroyed_at": pd.Timestamp("2024-03-10 10:00", tz="UTC")},
        {**base, "rdn": "2", "name": "roaming-th-new", "provider": "DO", "region": "nyc3", "sign": 1},
    ])
    inv = helper_inventory(inst, now)
    assert len(inv) == 4
    by_name = inv.set_index("name")
    assert by_name.loc["0.th.ooni.org", "state"] == "live"
    assert by_name.loc["roaming-th-20240611093012", "host"] == "1.th.ooni.org"
    assert by_name.loc["roaming-th-20240611093012", "state"] == "draining"
    assert by_name.loc["roaming-th-old", "state"] == "destroyed"
    assert by_name.loc["roaming-th-new", "state"] == "live"
    assert list(inv[inv["host"] == "2.th.ooni.org"]["name"]) == ["roaming-th-old", "roaming-th-new"]

    counts = make_counts(hours=12)  # 2024-03-10 12:00 .. 23:00
    counts = pd.concat([counts, make_counts(hours=24)[lambda d: d["hour"] < END - pd.Timedelta(hours=11)]])
    counts.loc[counts["helper"] == "0.th.ooni.org", "helper"] = "9.th.ooni.org"
    summary = helper_summary(counts, inv)
    rows = summary.set_index(["helper", "instance"])
    assert rows.loc[("9.th.ooni.org", ""), "state"] == "unknown"
    assert rows.loc[("0.th.ooni.org", "0.th.ooni.org"), "total"] == 0
    # hours before 06:00 belong to the old droplet, the rest to its successor
    old = rows.loc[("2.th.ooni.org", "roaming-th-old")]
    new = rows.loc[("2.th.ooni.org", "roaming-th-new")]
    assert old["last_seen"] == pd.Timestamp("2024-03-10 05:00")
    assert new["first_seen"] == pd.Timestamp("2024-03-10 06:00")
    assert old["total"] + new["total"] == counts[counts["helper"] == "2.th.ooni.org"]["total"].sum()
    assert rows.loc[("1.th.ooni.org", "roaming-th-20240611093012"), "provider"] == "Hetzner"
    assert helper_inventory(inst.iloc[:0], now).empty


def test_rise_shared_by_every_helper_is_not_a_helper_alarm():
    counts = make_counts()
    late = counts["hour"] > END - pd.Timedelta(hours=3)
    counts.loc[late, "failures"] = (counts.loc[late, "total"] * 0.6).astype(int)
    now = last_hour(helper_alarms(counts, now=END))
    assert (now["status"] == "elevated").all()
    assert (now["scope"] == "shared by all helpers").all()
    assert not now["alarm"].any()
    assert now["others_rate"].round(2).eq(0.6).all()
