"""End to end: the research notebooks (URL prioritisation, weighting experiments, campaign
investigation) run in real kernels against a generated world (its url_priorities rules and
global test list), as the demo runs them, and say what they found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from nbclient.exceptions import CellExecutionError

from tests.support.notebooks import NOTEBOOKS, execute, output_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world_env(tmp_path_factory):
    from ooniutils.store import get_store, reset_stores
    from ooniutils.store.generator import generate

    base = tmp_path_factory.mktemp("research-world")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OONI_", "JUPYCRON_")) and k != "AUTORUN"}
    cfg = base / "config.toml"
    cfg.write_text("")
    env |= {"OONI_DATA_DIR": str(base / "data"), "OONI_MONITORING_CONFIG": str(cfg)}
    with pytest.MonkeyPatch.context() as mp:
        for k in ("OONI_DATA_DIR", "OONI_MONITORING_CONFIG"):
            mp.setenv(k, env[k])
        reset_stores()
        store = get_store(create=True)
        store.init()
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        generate(store, days=22, rows=150_000, seed=3, end=end)
        reset_stores()
    return env


def test_prioritisation_notebook_shows_priorities_and_coverage(world_env):
    out = output_text(execute("url_prioritisation", world_env))
    assert "active rules" in out and "web_connectivity measurements in the last 7 days" in out
    assert "https://meduza.io/" in out        # top URL: NEWS 100 + its URL rule 40 (+50 in RU)
    assert "spearman" in out and "<chart>" in out


def test_experiments_notebook_compares_every_weighting(world_env):
    out = output_text(execute("url_priority_experiments", world_env))
    for name in ("in force", "news and rights x2", "circumvention x3", "categories only", "all equal"):
        assert name in out
    assert "<chart>" in out


def test_campaign_notebook_reports_per_country_and_network(world_env):
    out = output_text(execute("campaign_investigation", world_env))
    assert "campaign " in out and "baseline from" in out
    assert "per_day_during" in out and "coverage_during" in out and "probe_asn" in out
    assert out.count("<chart>") == 2


def test_prioritisation_notebook_fails_loudly_on_an_empty_store(tmp_path, monkeypatch):
    from ooniutils.store import get_store, reset_stores

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OONI_", "JUPYCRON_"))}
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    env |= {"OONI_DATA_DIR": str(tmp_path / "data"), "OONI_MONITORING_CONFIG": str(cfg)}
    for k in ("OONI_DATA_DIR", "OONI_MONITORING_CONFIG"):
        monkeypatch.setenv(k, env[k])
    reset_stores()
    get_store(create=True).init()  # an initialised store with no test list and no rules
    reset_stores()
    with pytest.raises(CellExecutionError, match="holds no test-list entry"):
        execute("url_prioritisation", env)


def test_research_notebooks_are_built_from_their_script():
    script = NOTEBOOKS / "tools" / "build_research_notebooks.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("url_prioritisation", "url_priority_experiments", "campaign_investigation"):
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        source = nb["cells"][1]["source"]
        assert "autorun" not in name and "".join(source).startswith("# Parameters")
