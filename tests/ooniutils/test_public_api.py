"""The names notebooks rely on (`from ooniutils import *`, `%run ooniutils.ipynb`)."""

from __future__ import annotations

import subprocess
import sys

import ooniutils


def test_all_is_sorted_and_every_name_resolves():
    assert ooniutils.__all__ == sorted(ooniutils.__all__)
    for name in ooniutils.__all__:
        assert getattr(ooniutils, name) is not None, name


def test_the_documented_notebook_api_is_exported():
    for name in ("click_query_fsn", "click_query", "click_query_logs", "alertmanager_fire_alert", "send_slack_msg",
                 "FlowDetector", "detect_flow_alarms", "release_report",
                 "send_alert_through_ntfy", "easy_msm_count_chart", "autorun",
                 "find_duplicate_test_list_urls", "check_tls_certs"):
        assert name in ooniutils.__all__, name


def test_unknown_name_is_an_attribute_error():
    try:
        ooniutils.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def _star_import(env_autorun: str | None) -> str:
    code = ("from ooniutils import *\n"
            "import altair as alt, pandas as pd\n"
            "print(autorun, alt.renderers.active, pd.get_option('display.max_columns'))\n")
    env = {"PATH": "/usr/bin:/bin"}
    if env_autorun is not None:
        env["AUTORUN"] = env_autorun
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True, timeout=120).stdout.split()


def test_star_import_sets_up_display_and_autorun():
    autorun, renderer, _ = _star_import("1")
    assert autorun == "True"
    assert renderer == "svg"  # static SVG through vl-convert, no CDN
    assert _star_import(None)[0] == "False"


def test_importing_a_submodule_stays_light():
    """jupycron imports ooniutils.alerts: that must not pull in pandas or Altair."""
    code = "import sys, ooniutils.alerts; print('pandas' in sys.modules, 'altair' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    assert out == ["False", "False"]
