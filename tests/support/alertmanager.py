"""Run the real Prometheus Alertmanager (Debian package prometheus-alertmanager) for tests.

Usage::

    with alertmanager_server(tmp_path) as base_url:     # e.g. "http://127.0.0.1:40123"
        httpx.get(base_url + "/api/v2/alerts")

The process listens on 127.0.0.1 on a free port, with clustering disabled
(``--cluster.listen-address=``), its configuration and storage in ``tmp_path/alertmanager``,
and a single receiver that notifies nobody. The block is entered once ``/-/ready`` answers
200 and the process group is stopped on exit. When the binary is missing the test is skipped
(outside CI) or fails (``CI=true``), through :func:`tests.support.services.require_program`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .services import http_service, require_program

CONFIG = """\
# Minimal test configuration: every alert goes to a receiver without integrations.
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
"""



@contextlib.contextmanager
def alertmanager_server(tmp_path: Path, config: str = CONFIG) -> Iterator[str]:
    """Start Alertmanager; yield its base URL (no trailing slash); stop it afterwards."""
    binary = require_program("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager",
                             "alertmanager", package="prometheus-alertmanager")
    workdir = tmp_path / "alertmanager"
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(config)
    data = workdir / "data"
    with http_service("Alertmanager", lambda port: [
            binary, f"--config.file={config_file}", f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            "--log.level=warn"], workdir) as base_url:
        yield base_url
