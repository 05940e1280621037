"""Run the real Prometheus server (Debian package prometheus) for tests.

Usage::

    with prometheus_server(tmp_path, targets=["127.0.0.1:8080"]) as base_url:
        value = query_value(base_url, 'jupycron_notebook_late{notebook="a_autorun.ipynb"}')

Prometheus listens on 127.0.0.1 on a free port, scrapes the ``targets`` (job ``jupycron``,
``metrics_path``) every second, and keeps its configuration and TSDB under
``tmp_path/prometheus``; the block is entered once ``/-/ready`` answers 200 and the process
group is stopped on exit. A missing binary skips (outside CI) or fails (``CI=true``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from .services import http_service, require_program


def _config(targets: Sequence[str], metrics_path: str, rule_files: Sequence[str]) -> str:
    # JSON is valid YAML, and quoting every value keeps odd paths safe.
    doc = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": list(rule_files),
        "scrape_configs": [{"job_name": "jupycron", "metrics_path": metrics_path,
                            "static_configs": [{"targets": list(targets)}]}],
    }
    return json.dumps(doc, indent=2)


@contextlib.contextmanager
def prometheus_server(tmp_path: Path, targets: Sequence[str], metrics_path: str = "/metrics",
                      rule_files: Sequence[str] = ()) -> Iterator[str]:
    """Start Prometheus scraping ``targets``; yield its base URL; stop it afterwards."""
    binary = require_program("prometheus", "/usr/bin/prometheus", package="prometheus")
    workdir = tmp_path / "prometheus"
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(_config(targets, metrics_path, rule_files))
    data = workdir / "data"
    with http_service("Prometheus", lambda port: [
            binary, f"--config.file={config_file}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir) as base_url:
        yield base_url


def query(base_url: str, promql: str) -> list[dict]:
    """The ``result`` list of an instant query through ``/api/v1/query``."""
    r = httpx.get(base_url + "/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    return body["data"]["result"]


def wait_for_value(base_url: str, promql: str, timeout: float = 30.0) -> float:
    """Poll until the instant query returns one sample; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(base_url, promql)
        if result:
            return float(result[0]["value"][1])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{promql!r} returned no sample within {timeout}s")
        time.sleep(0.25)
