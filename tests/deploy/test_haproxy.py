"""deploy/haproxy: the shipped template rendered and run by the real HAProxy in front of three
test-helper back-ends; clients on distinct 127.0.0.x source addresses."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ooniutils.edge import HAPROXY_TEMPLATE, Backend, render_haproxy_config
from ooniutils.exceptions import ConfigError
from tests.deploy.conftest import Backend as Helper
from tests.support.services import free_port, poll_until, require_program, running, wait_for_http

AUTH = ("admin", "s3cret-stats")
CLIENTS = [f"127.0.0.{i}" for i in range(2, 31)]


def test_template_placeholders_are_documented():
    readme = (Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "README.md").read_text()
    template = HAPROXY_TEMPLATE.read_text()
    names = set(re.findall(r"\{\{\s*(\w+)", template))
    names |= set(re.findall(r"\{%-?\s*(?:if|for \w+ in)\s+(\w+)", template))
    names -= set(re.findall(r"\{%-?\s*for (\w+) in", template))
    assert names >= {"bind", "servers", "stats_user", "stats_password", "stats_allow"}
    for name in names:
        assert f"`{name}`" in readme, f"placeholder {name} is not documented in README.md"


@pytest.mark.parametrize("kw, word", [
    ({"servers": []}, "servers"),
    ({"servers": [Backend("a b", "127.0.0.1:1")]}, "server name"),
    ({"servers": [Backend("a", "127.0.0.1:1"), Backend("a", "127.0.0.1:2")]}, "unique"),
    ({"stats_password": "with space"}, "stats_password"),
])
def test_render_rejects_bad_values(kw, word):
    args = {"bind": "127.0.0.1:80", "servers": [Backend("th1", "127.0.0.1:1")],
            "stats_bind": "127.0.0.1:8404", "stats_user": "u", "stats_password": "p", **kw}
    with pytest.raises(ConfigError, match=word):
        render_haproxy_config(**args)


@dataclass
class Proxy:
    url: str
    stats_url: str
    helpers: dict[str, Helper]

    def server_rows(self) -> dict[str, dict[str, str]]:
        """The stats page's CSV rows of the helpers, by server name."""
        r = httpx.get(self.stats_url + ";csv", auth=AUTH, timeout=5)
        r.raise_for_status()
        rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
        return {row["svname"]: row for row in rows
                if row["pxname"] == "test_helpers" and row["svname"] in self.helpers}

    def server_status(self) -> dict[str, str]:
        return {name: row["status"] for name, row in self.server_rows().items()}


@pytest.fixture
def proxy(tmp_path, make_backend) -> Iterator[Proxy]:
    binary = require_program("haproxy", "/usr/sbin/haproxy", package="haproxy")
    helpers = {name: make_backend(name) for name in ("th1", "th2", "th3")}
    port, stats_port = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_config(
        bind=f"127.0.0.1:{port}",
        servers=[Backend(n, h.address) for n, h in helpers.items()],
        stats_bind=f"127.0.0.1:{stats_port}", stats_user=AUTH[0], stats_password=AUTH[1],
        stats_allow=["127.0.0.1/32"], run_as=None, chroot=None, log_target="stderr", maxconn=500))
    with running([binary, "-db", "-f", str(cfg)], tmp_path / "haproxy.log") as proc:
        p = Proxy(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", helpers)
        wait_for_http(p.stats_url, proc=proc, ok=lambda r: r.status_code == 401)
        poll_until(lambda: set(p.server_status().values()) == {"UP"}, timeout=20.0)
        yield p


def test_production_config_is_valid(tmp_path):
    """The default rendering (user haproxy, chroot, syslog) passes ``haproxy -c``; the Debian
    package creates that user and folder."""
    binary = require_program("haproxy", "/usr/sbin/haproxy", package="haproxy")
    text = render_haproxy_config(bind="0.0.0.0:80",
                                 servers=[Backend("th1", "10.0.0.1:8080"),
                                          Backend("th2", "10.0.0.2:8080")],
                                 stats_bind="127.0.0.1:8404", stats_user="u", stats_password="p")
    assert "balance source" in text and "hash-type consistent" in text
    assert "user haproxy" in text and "chroot /var/lib/haproxy" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    out = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_source_affinity_failover_and_return(proxy: Proxy):
    clients = {ip: httpx.Client(base_url=proxy.url, timeout=15,
                                transport=httpx.HTTPTransport(local_address=ip))
               for ip in CLIENTS}
    try:
        def round_() -> dict[str, str]:
            got = {}
            for ip, c in clients.items():
                r = c.post("/", content=b'{"http_request": "https://example.org"}')
                assert r.status_code == 200, (ip, r.status_code, r.text)
                got[ip] = r.text
            return got

        # Each client sticks to one helper, and the clients are spread over the helpers.
        before = round_()
        assert round_() == before and round_() == before
        used = set(before.values())
        assert len(used) >= 2, before
        victim = max(used, key=lambda n: list(before.values()).count(n))
        moved = {ip for ip, n in before.items() if n == victim}

        # Kill one helper: every request keeps succeeding (retries + redispatch cover the
        # time before the health check marks it down), then only its clients have moved.
        proxy.helpers[victim].stop()
        during = round_()
        assert victim not in during.values()
        # ...and the proxy really did meet the dead helper and redispatch (not just skip it)
        row = proxy.server_rows()[victim]
        assert int(row["wredis"] or 0) >= 1, row
        poll_until(lambda: proxy.server_status()[victim].startswith("DOWN"), timeout=20.0)
        after_down = round_()
        assert victim not in after_down.values()
        for ip in CLIENTS:
            if ip in moved:
                assert after_down[ip] != victim
            else:
                assert after_down[ip] == before[ip], ip

        # Bring it back: once up (rise 2), consistent hashing gives it its clients back.
        proxy.helpers[victim].start()
        poll_until(lambda: proxy.server_status()[victim] == "UP", timeout=20.0)
        assert round_() == before
    finally:
        for c in clients.values():
            c.close()


@pytest.mark.integration
def test_stats_page_is_restricted(proxy: Proxy):
    assert httpx.get(proxy.stats_url, timeout=5).status_code == 401
    assert httpx.get(proxy.stats_url, auth=("admin", "wrong"), timeout=5).status_code == 401
    ok = httpx.get(proxy.stats_url, auth=AUTH, timeout=5)
    assert ok.status_code == 200 and "th1" in ok.text
    # from a source address outside stats_allow: denied even with the right password
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.9")) as c:
        assert c.get(proxy.stats_url, auth=AUTH, timeout=5).status_code == 403
