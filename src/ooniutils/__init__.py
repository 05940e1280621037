"""ooniutils — what the monitoring notebooks import.

    from ooniutils import *

gives the query function, the alert senders, the charts and analyses, and ``autorun``
(True when the notebook runs under jupycron, i.e. ``AUTORUN`` is set). The first access to
any public name also sets up notebook display (pandas options; Altair rendering static SVG
through vl-convert, no CDN, row limit lifted) — see :func:`ooniutils.display.setup_notebook`.

Names resolve lazily (PEP 562) so that ``import ooniutils.alerts`` from jupycron does not
pay for pandas/Altair start-up; ``__all__`` is the public API and is tested.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (relative to this package), or "module:attribute"
# when the public name differs from the one in the module
_EXPORTS: dict[str, str] = {
    # queries and the store
    "click_query": ".clickhouse",
    "click_query_fsn": ".clickhouse",
    "click_query_logs": ".clickhouse",
    "get_store": ".store",
    # alerts
    "alertmanager_fire_alert": ".alerts",
    "alertmanager_resolve_alert": ".alerts",
    "send_alert_through_ntfy": ".alerts",
    "send_slack_msg": ".alerts",
    # charts and display
    "easy_msm_count_chart": ".charts",
    "flow_chart": ".charts",
    "setup_notebook": ".display",
    # analyses (pure functions live in ooniutils.analyses.*; these are the notebook-facing ones)
    "FlowDetector": ".analyses.flow",
    "FlowParams": ".analyses.flow",
    "Detector": ".analyses.detector",
    "detect_flow_alarms": ".analyses.flow:detect",
    "detect_decline": ".analyses.trend",
    "release_report": ".datasets.releases",
    "find_duplicate_test_list_urls": ".testlists",
    "check_tls_certs": ".tls",
    # what the notebook found (read by jupycron when the run ends)
    "report_finding": ".findings",
    # errors
    "AlertError": ".exceptions",
    "AnalysisError": ".exceptions",
    "ConfigError": ".exceptions",
    "LoadError": ".exceptions",
    "OoniUtilsError": ".exceptions",
    "QueryError": ".exceptions",
    "StoreError": ".exceptions",
}

__all__ = sorted([*_EXPORTS, "autorun"])

_display_ready = False


def _setup_display() -> None:
    global _display_ready
    if not _display_ready:
        _display_ready = True
        from .display import setup_notebook

        setup_notebook()


def __getattr__(name: str) -> Any:
    if name == "autorun":
        _setup_display()
        from .jupycron_plugin import scheduled_run

        return scheduled_run()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ooniutils' has no attribute {name!r}")
    _setup_display()
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module, __name__), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
