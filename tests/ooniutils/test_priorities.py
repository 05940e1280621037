"""URL prioritisation: OONI's rule semantics, coverage against priorities, weighting replays,
and the url_priorities loader (on the real embedded store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ooniutils.analyses.priorities import (
    active_rules,
    compare_weightings,
    country_summary,
    coverage_vs_priority,
    effective_priorities,
    probe_list,
    scale_rules,
    unlisted_measurements,
)
from ooniutils.exceptions import AnalysisError, LoadError
from ooniutils.store.url_priorities import load_url_priorities, read_url_priorities

ENTRIES = pd.DataFrame([
    {"url": "https://news.example/", "domain": "news.example", "cc": "ZZ", "category_code": "NEWS"},
    {"url": "https://vpn.example/", "domain": "vpn.example", "cc": "ZZ", "category_code": "ANON"},
    {"url": "https://br-news.example/", "domain": "br-news.example", "cc": "br", "category_code": "NEWS"},
    {"url": "https://shop.example/", "domain": "shop.example", "cc": "it", "category_code": "COMM"},
])


def rules(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sign", "category_code", "cc", "domain", "url", "priority"])


def test_active_rules_collapse_signs_like_collapsingmergetree():
    r = active_rules(rules((1, "NEWS", "*", "*", "*", 100), (1, "GMB", "*", "*", "*", 500),
                           (-1, "GMB", "*", "*", "*", 500), (1, "ANON", "ir", "*", "*", 80),
                           (1, "ANON", "IR", "*", "*", 80), (-1, "XED", "*", "*", "*", 5)))
    got = {(row.category_code, row.cc): row.copies for row in r.itertuples()}
    assert got == {("NEWS", "*"): 1, ("ANON", "IR"): 2}  # cancelled and over-cancelled rules are gone


def test_effective_priority_sums_matching_rules_for_country_and_global_lists():
    r = rules((1, "NEWS", "*", "*", "*", 100), (1, "NEWS", "BR", "*", "*", 50),
              (1, "*", "", "vpn.example", "*", -30), (1, "ANON", "*", "*", "*", 60),
              (1, "*", "*", "*", "https://news.example/", 7), (1, "COMM", "IT", "*", "*", 20))
    p = effective_priorities(ENTRIES, r, ["br", "IT"]).set_index(["cc", "url"])
    assert p.loc[("BR", "https://br-news.example/"), "priority"] == 150  # country list, cc rule applies
    assert p.loc[("BR", "https://news.example/"), "priority"] == 157      # global list gets BR rules too
    assert p.loc[("BR", "https://vpn.example/"), "priority"] == 30        # '' is a wildcard
    assert p.loc[("IT", "https://news.example/"), "priority"] == 107      # no BR rule in Italy
    assert p.loc[("IT", "https://shop.example/"), "priority"] == 20
    assert ("IT", "https://br-news.example/") not in p.index              # another country's list
    assert ("BR", "https://shop.example/") not in p.index
    assert p.loc[("BR", "https://news.example/"), "rules"] == 3


def _naive(entries: pd.DataFrame, rule_rows: list[tuple], cc: str) -> dict[str, int]:
    """OONI's match_prio_rule, written plainly (country codes compared case-insensitively)."""
    out: dict[str, int] = {}
    for e in entries.itertuples():
        if e.cc.upper() not in (cc, "ZZ"):
            continue
        total = 0
        for sign, cat, rcc, dom, url, prio in rule_rows:
            if all(v in ("*", "", ev) for v, ev in ((cat, e.category_code), (dom, e.domain), (url, e.url))) \
                    and rcc.upper() in ("*", "", cc):
                total += sign * prio
        if e.url not in out or e.cc.upper() != "ZZ":
            out[e.url] = total
    return out


VALUES = {"category_code": ["NEWS", "ANON", "COMM", "*", ""], "cc": ["*", "", "BR", "IT", "br"],
          "domain": ["*", "news.example", "vpn.example", ""], "url": ["*", "https://news.example/", ""]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.just(1), *(st.sampled_from(VALUES[k]) for k in ("category_code", "cc", "domain", "url")),
                          st.integers(-1000, 1000)), max_size=12))
def test_vectorised_priorities_equal_the_plain_rule_loop(rule_rows):
    p = effective_priorities(ENTRIES, rules(*rule_rows), ["BR", "IT"]) if rule_rows else None
    for cc in ("BR", "IT"):
        want = _naive(ENTRIES, rule_rows, cc)
        got = {} if p is None else dict(zip(p[p.cc == cc].url, p[p.cc == cc].priority, strict=True))
        assert got == ({} if p is None else want)


def test_coverage_flags_under_over_and_excluded():
    pr = pd.DataFrame({"cc": "BR", "url": [f"u{i}" for i in range(5)], "priority": [100, 100, 100, 100, 0]})
    counts = pd.DataFrame({"probe_cc": "BR", "input": ["u0", "u1", "u2", "u3", "u4", "elsewhere"],
                           "n": [100, 100, 10, 390, 7, 50]})
    cov = coverage_vs_priority(pr, counts).set_index("url")
    assert cov.loc["u0", "expected"] == pytest.approx(150)       # 600 measurements / 4 equal URLs
    assert cov.loc["u2", "status"] == "under"
    assert cov.loc["u3", "status"] == "over"
    assert cov.loc["u4", "status"] == "excluded"
    assert cov.loc["u0", "status"] == "ok"
    summary = country_summary(cov.reset_index()).iloc[0]
    assert (summary.under, summary.over, summary.excluded_measured) == (1, 1, 1)
    unl = unlisted_measurements(pr, counts)
    assert unl.url.tolist() == ["elsewhere"]


def test_counts_that_follow_priorities_are_all_ok_with_rank_correlation_one():
    pr = pd.DataFrame({"cc": "IT", "url": [f"u{i}" for i in range(20)], "priority": np.arange(1, 21) * 10})
    counts = pd.DataFrame({"cc": "IT", "url": pr.url, "n": pr.priority * 3})
    cov = coverage_vs_priority(pr, counts)
    assert set(cov.status) == {"ok"}
    assert country_summary(cov).spearman.iloc[0] == pytest.approx(1.0)


def test_probe_list_orders_by_priority_over_recent_count_as_ooni_does():
    pr = pd.DataFrame({"cc": "BR", "url": ["a", "b", "c", "d"], "category_code": "NEWS",
                       "priority": [100, 50, 10, -5]})
    counts = pd.DataFrame({"cc": "BR", "url": ["a", "b"], "n": [100, 1]})
    lst = probe_list(pr, counts, limit=3)
    assert lst.url.tolist() == ["c", "b", "a"]   # 10/0.1 > 50/1 > 100/100; d (priority <= 0) never
    with pytest.raises(AnalysisError, match="limit"):
        probe_list(pr, counts, limit=0)


def test_weighting_replay_shifts_the_category_mix_and_reports_overlap():
    entries = pd.DataFrame({"url": [f"https://n{i}/" for i in range(10)] + [f"https://a{i}/" for i in range(10)],
                            "domain": [f"n{i}" for i in range(10)] + [f"a{i}" for i in range(10)],
                            "cc": "ZZ", "category_code": ["NEWS"] * 10 + ["ANON"] * 10})
    days = pd.date_range("2026-01-01", periods=10, freq="D")
    daily = pd.DataFrame([{"day": d, "cc": "RU", "url": u, "n": 5} for d in days for u in entries.url])
    base = rules((1, "NEWS", "*", "*", "*", 100), (1, "ANON", "*", "*", "*", 90))
    summary, cats = compare_weightings(entries, daily, {"equal": base, "anon x3": scale_rules(base, {"ANON": 3})},
                                       ["ru"], limit=10)
    s = summary.set_index("weighting")
    assert s.loc["equal", "overlap"] == 1.0
    assert s.loc["anon x3", "overlap"] == 0.0     # the ten NEWS URLs against the ten ANON ones
    mix = cats.set_index(["weighting", "category_code"]).share
    assert mix[("equal", "NEWS")] == 1.0
    assert mix[("anon x3", "ANON")] == 1.0        # all 10 list places go to the tripled category
    assert s.loc["anon x3", "top_category"] == "ANON"
    with pytest.raises(AnalysisError, match="no day to replay"):
        compare_weightings(entries, daily, {"equal": base}, ["RU"], window_days=30)
    with pytest.raises(AnalysisError, match="baseline"):
        compare_weightings(entries, daily, {"equal": base}, ["RU"], baseline="nope")


def test_missing_columns_name_the_problem():
    with pytest.raises(AnalysisError, match="lacks column"):
        effective_priorities(ENTRIES.drop(columns="domain"), rules((1, "*", "*", "*", "*", 1)), ["BR"])
    with pytest.raises(AnalysisError, match="priority must be an integer"):
        active_rules(rules((1, "*", "*", "*", "*", "high")))


# -- the loader, on the real embedded store ---------------------------------------------

HEADER = "category_code,cc,domain,url,priority\n"


def _write(tmp_path: Path, body: str, name: str = "rules.csv") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + body)
    return p


def _stored(store) -> dict[tuple, int]:
    df = store.query("SELECT category_code, cc, domain, url, priority, sum(sign) AS s FROM url_priorities "
                     "GROUP BY category_code, cc, domain, url, priority HAVING s != 0")
    return {tuple(r[:5]): int(r[5]) for r in df.itertuples(index=False)}


def test_loading_rules_replaces_the_set_and_is_idempotent(store, tmp_path):
    f = _write(tmp_path, "NEWS,*,*,*,100\nanon,ir,*,*,80\n*,*,www.google.com,*,-60\n")
    r = load_url_priorities(store, f)
    assert (r.read, r.added, r.cancelled) == (3, 3, 0)
    assert _stored(store) == {("NEWS", "*", "*", "*", 100): 1, ("ANON", "IR", "*", "*", 80): 1,
                              ("*", "*", "www.google.com", "*", -60): 1}
    again = load_url_priorities(store, f)
    assert (again.added, again.cancelled) == (0, 0)
    f2 = _write(tmp_path, "NEWS,*,*,*,120\nANON,IR,*,*,80\n", "v2.csv")
    r2 = load_url_priorities(store, f2)
    assert (r2.added, r2.cancelled) == (1, 2)
    assert _stored(store) == {("NEWS", "*", "*", "*", 120): 1, ("ANON", "IR", "*", "*", 80): 1}
    rows = store.query("SELECT count() AS n FROM url_priorities").n[0]
    assert rows == 6  # history kept: 3 + 1 added + 2 cancellations


@pytest.mark.parametrize(("body", "message", "line"), [
    ("NEWS,*,*,*,lots\n", "priority must be an integer", 2),
    ("NEWS,*,*,*,100\nNEWS,Brazil,*,*,1\n", "two-letter country code", 3),
    ("NEWS,*,*,*,99999999999\n", "Int32", 2),
])
def test_a_malformed_rules_file_names_the_line_and_changes_nothing(store, tmp_path, body, message, line):
    load_url_priorities(store, _write(tmp_path, "GRP,*,*,*,10\n", "ok.csv"))
    before = _stored(store)
    with pytest.raises(LoadError, match=message) as exc:
        load_url_priorities(store, _write(tmp_path, body))
    assert exc.value.line == line
    assert _stored(store) == before


def test_a_rules_file_without_the_columns_is_refused(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("category,priority\nNEWS,1\n")
    with pytest.raises(LoadError, match="lacks column"):
        read_url_priorities(p)


def test_cli_loads_rules_and_the_generator_ships_some(store, tmp_path):
    from click.testing import CliRunner

    from ooniutils.cli import cli
    from ooniutils.store.generator.priorities import url_priorities_frame

    res = CliRunner().invoke(cli, ["data", "load-url-priorities", str(_write(tmp_path, "NEWS,*,*,*,100\n"))])
    assert res.exit_code == 0, res.output
    assert "1 added, 0 cancelled" in res.output
    gen = active_rules(url_priorities_frame())
    assert "GMB" not in set(gen.category_code[gen.priority == 500])  # the cancelled rule collapses away
    assert len(gen) == len(url_priorities_frame()) - 2
