"""Long-term decline test (seasonal Mann-Kendall + Theil-Sen) on synthetic daily totals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ooniutils.analyses.trend import decline_table, detect_decline, seasonal_mann_kendall
from ooniutils.exceptions import AnalysisError


def daily(days: int = 84, level: float = 20000, decline: float = 0.0, seed: int = 0, cv: float = 0.05,
          name: str = "s") -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    weekly = np.where(t % 7 >= 5, 0.75, 1.0)
    trend = 1 - decline * np.clip((t - (days - 42)) / 42, 0, 1)   # declines over the last 6 weeks
    lam = level * weekly * trend * rng.normal(1, cv, days)
    return pd.Series(rng.poisson(np.clip(lam, 0, None)).astype(float),
                     index=pd.date_range("2024-01-01", periods=days, freq="D"), name=name)


def test_slow_decline_is_found():
    res = detect_decline(daily(decline=0.35))
    assert res.alarm
    assert res.p_value < 0.01
    assert 0.2 < res.decline < 0.6
    assert res.change_vs_start < -0.2


@pytest.mark.parametrize("seed", range(6))
def test_flat_series_with_weekly_cycle_does_not_alarm(seed):
    assert not detect_decline(daily(seed=seed, cv=0.1)).alarm


def test_small_significant_drift_is_not_an_alarm():
    res = detect_decline(daily(decline=0.05, cv=0.005, level=1e6))
    assert res.p_value < 0.01
    assert not res.alarm


def test_too_little_history_gives_no_verdict():
    res = detect_decline(daily(days=20, decline=0.5))
    assert not res.alarm and "too little history" in res.note


def test_mann_kendall_sign_and_ties():
    up = np.arange(28, dtype=float)
    assert seasonal_mann_kendall(up)[2] > 3
    assert seasonal_mann_kendall(-up)[2] < -3
    assert seasonal_mann_kendall(np.ones(28))[2] == 0


def test_table_sorts_alarms_first_and_checks_arguments():
    frame = pd.concat([daily(seed=1, name="flat"), daily(decline=0.4, seed=2, name="falling")], axis=1)
    table = decline_table(frame)
    assert table["series"].tolist() == ["falling", "flat"]
    assert table["alarm"].tolist() == [True, False]
    with pytest.raises(AnalysisError):
        detect_decline(daily(), weeks=1)
    assert decline_table(frame.iloc[:, :0]).empty
