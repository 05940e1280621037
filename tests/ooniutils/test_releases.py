"""Unit tests of ooniutils.analyses.releases on handcrafted per-version counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses import releases
from ooniutils.analyses.releases import (
    compare_release,
    regression_message,
    sort_versions,
    version_summary,
)
from ooniutils.exceptions import AnalysisError

TESTS = ["web_connectivity", "dnscheck"]


def make_stats(new_version: str = "3.10.0", new_failure: float = 0.02, n: int = 2000,
               new_n: int | None = None) -> pd.DataFrame:
    rows = []
    for version in ["3.8.0", "3.9.0", "3.9.1"]:
        for test in TESTS:
            rows.append((version, test, n, int(n * 0.02), int(n * 0.10)))
    nn = n if new_n is None else new_n
    for test in TESTS:
        fail = new_failure if test == "web_connectivity" else 0.02
        rows.append((new_version, test, nn, int(nn * fail), int(nn * 0.10)))
    return pd.DataFrame(rows, columns=["software_version", "test_name", "total", "failures", "anomalies"])


def make_runtimes(slow: float = 1.0, size: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for version in ["3.8.0", "3.9.0", "3.9.1", "3.10.0"]:
        factor = slow if version == "3.10.0" else 1.0
        for test in TESTS:
            for x in rng.gamma(4.0, 1.0, size) * factor:
                rows.append((version, test, float(x)))
    return pd.DataFrame(rows, columns=["software_version", "test_name", "test_runtime"])


def row(result: pd.DataFrame, test: str, metric: str) -> pd.Series:
    return result.set_index(["test_name", "metric"]).loc[(test, metric)]


def test_semantic_version_order():
    assert sort_versions(["3.9.1", "3.10.0", "3.9.10", "3.10.0-beta.3", "", None]) == [
        "3.9.1", "3.9.10", "3.10.0-beta.3", "3.10.0"]
    assert sort_versions(["3.8.5.1", "3.8.5", "3.8.10"]) == ["3.8.5", "3.8.5.1", "3.8.10"]


def test_version_order_without_packaging(monkeypatch):
    monkeypatch.setattr(releases, "Version", None)
    assert sort_versions(["3.9.1", "3.10.0", "3.10.0-beta.3", "3.2"]) == [
        "3.2", "3.9.1", "3.10.0-beta.3", "3.10.0"]


def test_regressing_version_is_flagged():
    result = compare_release(make_stats(new_failure=0.15), make_runtimes())
    r = row(result, "web_connectivity", "failure_rate")
    assert r["status"] == "regression" and r["regression"]
    assert r["new_value"] == pytest.approx(0.15) and r["baseline_value"] == pytest.approx(0.02)
    assert r["p_adjusted"] < 1e-10
    # the other test and the other metrics stay ok
    assert not row(result, "dnscheck", "failure_rate")["regression"]
    assert not row(result, "web_connectivity", "anomaly_rate")["regression"]
    assert not result[result["metric"] == "runtime_median"]["regression"].any()
    assert set(result["new_version"]) == {"3.10.0"}
    msg = regression_message("ooniprobe-android", result)
    assert "3.10.0" in msg and "web_connectivity failure_rate" in msg and "dnscheck" not in msg


def test_healthy_version_is_not_flagged():
    result = compare_release(make_stats(new_failure=0.02), make_runtimes())
    assert not result["regression"].any()
    assert set(result["status"]) == {"ok"}
    assert regression_message("ooniprobe-cli", result) == ""


def test_newest_is_semantic_not_lexical():
    # "3.10.0" sorts before "3.9.1" as text; the regression lives in 3.10.0
    result = compare_release(make_stats(new_version="3.10.0", new_failure=0.2))
    assert set(result["new_version"]) == {"3.10.0"}
    assert row(result, "web_connectivity", "failure_rate")["regression"]


def test_slower_version_is_flagged_by_mann_whitney():
    result = compare_release(make_stats(), make_runtimes(slow=1.6))
    r = row(result, "dnscheck", "runtime_median")
    assert r["regression"] and r["test"].startswith("mann-whitney")
    # a 5% slowdown may be "significant" on big samples but is not material
    assert not compare_release(make_stats(), make_runtimes(slow=1.05, size=2000))["regression"].any()


def test_small_or_new_versions_never_alarm():
    small = compare_release(make_stats(new_failure=0.5, new_n=10), make_runtimes())
    assert not small["regression"].any()
    assert (small[small["metric"] != "runtime_median"]["status"] == "too few measurements").all()

    one_version = make_stats()[lambda d: d["software_version"] == "3.10.0"]
    only = compare_release(one_version)
    assert set(only["status"]) == {"no baseline", "no runtime sample"}
    assert not only["regression"].any()

    stats_df = make_stats()
    new_test = pd.DataFrame([("3.10.0", "torsf", 500, 400, 0)], columns=stats_df.columns)
    result = compare_release(pd.concat([stats_df, new_test]))
    assert row(result, "torsf", "failure_rate")["status"] == "no baseline"
    gone = compare_release(stats_df[~((stats_df["software_version"] == "3.10.0")
                                      & (stats_df["test_name"] == "dnscheck"))])
    assert row(gone, "dnscheck", "failure_rate")["status"] == "not run"
    assert not result["regression"].any()


def test_version_summary_and_bad_input():
    summary = version_summary(make_stats(new_failure=0.1))
    assert list(summary["software_version"]) == ["3.8.0", "3.9.0", "3.9.1", "3.10.0"]
    assert summary.iloc[-1]["failure_rate"] == pytest.approx(0.06)
    assert compare_release(make_stats().iloc[:0]).empty
    with pytest.raises(AnalysisError, match="anomalies"):
        compare_release(pd.DataFrame({"software_version": ["1"], "test_name": ["x"], "total": [1]}))
    with pytest.raises(AnalysisError, match="9.9.9"):
        compare_release(make_stats(), newest="9.9.9")
