"""deploy/nginx: the shipped template rendered and run by the real nginx in front of a
counting HTTP back-end on 127.0.0.1."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from jupycron.web.app import _OUTPUT_CSP
from ooniutils.cli import cli
from ooniutils.edge import NGINX_TEMPLATE, render_nginx_config
from ooniutils.exceptions import ConfigError
from tests.deploy.conftest import Backend, nginx_main_conf
from tests.support.services import free_port, poll_until, require_program, running, wait_for_http


def test_template_placeholders_are_documented():
    readme = (Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "README.md").read_text()
    template = NGINX_TEMPLATE.read_text()
    names = set(re.findall(r"\{\{\s*(\w+)", template))
    names |= set(re.findall(r"\{%-?\s*(?:if|for \w+ in)\s+(\w+)", template))
    names -= set(re.findall(r"\{%-?\s*for (\w+) in", template))  # loop variables
    assert names >= {"upstream", "server_name", "cache_dir", "outputs_dir", "listen"}
    for name in names:
        assert f"`{name}`" in readme, f"placeholder {name} is not documented in README.md"


def test_render_rejects_injection():
    with pytest.raises(ConfigError, match="server_name"):
        render_nginx_config(upstream="127.0.0.1:1", server_name="x; include /etc/passwd",
                            cache_dir="/c", outputs_dir="/o")


def test_rendered_defaults():
    text = render_nginx_config(upstream="10.0.0.5:8000", server_name="api.example.org",
                               cache_dir="/var/cache/nginx/ooni-api", outputs_dir="/srv/out/")
    assert "server 10.0.0.5:8000;" in text
    assert "proxy_cache_valid 200 10s;" in text
    assert "alias /srv/out/;" in text
    assert "{{" not in text and "set_real_ip_from" not in text


@dataclass
class Nginx:
    url: str
    backend: Backend
    cache_dir: Path
    outputs_dir: Path
    access_log: Path
    error_log: Path


@pytest.fixture
def nginx(tmp_path, make_backend) -> Iterator[Nginx]:
    binary = require_program("nginx", "/usr/sbin/nginx", package="nginx")
    backend = make_backend("api")
    port = free_port()
    prefix = tmp_path / "nginx"
    for sub in ("cache", "outputs", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    site = prefix / "ooni-api-cache.conf"
    site.write_text(render_nginx_config(
        upstream=backend.address, server_name="localhost", cache_dir=prefix / "cache",
        outputs_dir=prefix / "outputs", listen=[f"127.0.0.1:{port}"],
        access_log=prefix / "logs" / "access.log", cache_valid="1s",
        # lets the test pose as other clients (IPv6 ones too) through X-Forwarded-For
        real_ip_from=["127.0.0.1"]))
    main = prefix / "nginx.conf"
    main.write_text(nginx_main_conf(str(prefix), str(site)))
    error_log = prefix / "logs" / "error.log"
    cmd = [binary, "-p", str(prefix), "-c", str(main),
           "-g", f"daemon off; pid {prefix}/nginx.pid; error_log {error_log} info;"]
    with running(cmd, prefix / "logs" / "stdout.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/outputs/", proc=proc, ok=lambda r: r.status_code == 403)
        yield Nginx(url, backend, prefix / "cache", prefix / "outputs",
                    prefix / "logs" / "access.log", error_log)


def _status(r: httpx.Response) -> str:
    return r.headers.get("x-cache-status", "")


@pytest.mark.integration
def test_cache_hit_stale_and_purge(nginx: Nginx):
    with httpx.Client(base_url=nginx.url, timeout=10) as c:
        # MISS then HIT: the second request never reaches the back-end.
        r1, r2 = c.get("/api/v1/x"), c.get("/api/v1/x")
        assert (r1.status_code, r1.text, _status(r1)) == (200, "api", "MISS")
        assert (r2.status_code, _status(r2)) == (200, "HIT")
        assert nginx.backend.count("/api/v1/x") == 1

        # An entry the API marked fresh for 600 s (Cache-Control beats proxy_cache_valid).
        assert _status(c.get("/long")) == "MISS"
        assert _status(c.get("/long")) == "HIT"

        # Back-end down, entry older than proxy_cache_valid (1 s here): served STALE.
        nginx.backend.stop()
        stale = poll_until(lambda: (r := c.get("/api/v1/x")).status_code == 200
                      and _status(r) == "STALE" and r)
        assert stale.text == "api"
        assert _status(c.get("/long")) == "HIT"  # still fresh, the back-end is not asked
        never = c.get("/never-cached")
        assert never.status_code == 502 and _status(never) == "MISS"
        nginx.backend.start()

        # Purge with the CLI. nginx still holds /long's key in its shared memory zone (fresh
        # for 10 minutes) but finds the file gone: it answers MISS and fetches it again.
        before = nginx.backend.count("/long")
        res = CliRunner().invoke(cli, ["cache", "purge", "--cache-dir", str(nginx.cache_dir),
                                       "--yes"])
        assert res.exit_code == 0, res.output
        assert "test hosts" in res.output and re.search(r"removed [1-9]\d* cached", res.output)
        assert not [p for p in nginx.cache_dir.rglob("*") if p.is_file()]
        r = c.get("/long")
        assert (r.status_code, r.text, _status(r)) == (200, "api", "MISS")
        assert nginx.backend.count("/long") == before + 1
        assert _status(c.get("/long")) == "HIT"  # and it is cached again
    assert "[crit]" not in nginx.error_log.read_text()


@pytest.mark.integration
def test_access_log_anonymises_clients(nginx: Nginx):
    posing_as = {
        "203.0.113.77": "203.0.113.0",
        "2001:db8:85a3:1:2:8a2e:370:7334": "2001:db8:85a3::",
        "2001:db8::1": "2001:db8::",
        "2001::7": "2001::",
    }
    with httpx.Client(base_url=nginx.url, timeout=10) as c:
        assert c.get("/me").status_code == 200
        for addr in posing_as:
            assert c.get("/me", headers={"X-Forwarded-For": addr}).status_code == 200

    def lines() -> list[str]:
        text = nginx.access_log.read_text() if nginx.access_log.exists() else ""
        return text.splitlines()

    # the fixture's readiness probe is logged first
    logged = poll_until(lambda: len(lines()) >= 2 + len(posing_as) and lines())[-1 - len(posing_as):]
    first_fields = [line.split(" ", 1)[0] for line in logged]
    assert first_fields == ["127.0.0.0", *posing_as.values()]
    text = "\n".join(logged)
    for addr in [*posing_as, "127.0.0.1"]:
        assert addr not in text
    assert "cache=MISS" in logged[0] and '"GET /me HTTP/1.1" 200' in logged[0]


@pytest.mark.integration
def test_outputs_are_read_only_without_listing_or_symlinks(nginx: Nginx, tmp_path):
    (nginx.outputs_dir / "sub").mkdir()
    (nginx.outputs_dir / "sub" / "report.html").write_text("<p>report</p>")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (nginx.outputs_dir / "escape.txt").symlink_to(secret)
    (nginx.outputs_dir / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    with httpx.Client(base_url=nginx.url, timeout=10) as c:
        ok = c.get("/outputs/sub/report.html")
        assert ok.status_code == 200 and ok.text == "<p>report</p>"
        assert "x-cache-status" not in ok.headers  # static, not through the API cache
        assert c.get("/outputs/").status_code == 403  # no listing
        assert c.get("/outputs/sub/").status_code == 403
        for path in ("/outputs/escape.txt", "/outputs/linkdir/secret.txt"):
            r = c.get(path)
            assert r.status_code in (403, 404) and "secret" not in r.text
        assert c.post("/outputs/sub/report.html", content=b"x").status_code == 403
        assert c.put("/outputs/new.html", content=b"x").status_code == 403
    assert not (nginx.outputs_dir / "new.html").exists()
    assert nginx.backend.hits == {}  # none of this reached the API


STATE_FILES = {  # jupycron's own files in the outputs folder, and a notebook's hidden ones
    ".jupycron.sqlite": "secret-ledger",
    ".history.json": '{"notebooks": {"secret-history": 1}}',
    ".history.json.lock": "secret-lock",
    ".scheduler.json": '{"pid": "secret-scheduler"}',
    ".web-run-now.log": "--- alice: ['secret-argv']",
    ".scan-cache.json": '{"secret-scan": 1}',
    ".secret": "secret-key",
    ".state/token": "secret-state",
    ".locks/a_autorun.ipynb.lock": "secret-lock",
    "sub/.hidden.html": "<p>secret-hidden</p>",
    "sub/.cache/x.html": "<p>secret-cache</p>",
}


def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` byte for byte (httpx would normalise dots and escapes away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.integration
def test_outputs_hide_state_files_and_sandbox_html(nginx: Nginx):
    for rel, text in STATE_FILES.items():
        (nginx.outputs_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (nginx.outputs_dir / rel).write_text(text)
    (nginx.outputs_dir / "nb_autorun.html").write_text("<script>fetch('/api/')</script>")
    targets = [f"/outputs/{rel}" for rel in STATE_FILES] + [
        "/outputs/%2ehistory.json", "/outputs/%2Esecret", "/outputs/sub/../.secret",
        "/outputs/./.secret", "/outputs//.secret", "/outputs/sub/%2e%2e/.secret",
        "/outputs/.state/", "/outputs/.locks/", "/outputs/sub/.cache/", "/outputs/x/../.state/token",
    ]
    for target in targets:
        status, body = _raw_get(nginx.url, target)
        assert status == 404 and b"secret" not in body, (target, status, body[:200])
    with httpx.Client(base_url=nginx.url, timeout=10) as c:
        assert c.head("/outputs/.history.json").status_code == 404
        page = c.get("/outputs/nb_autorun.html")
        assert page.status_code == 200 and "<script>" in page.text
        # the same sandbox as the dashboard's /output/ (an opaque origin for the notebook's
        # scripts), checked against the dashboard's own value so the two cannot drift apart
        assert page.headers["content-security-policy"] == _OUTPUT_CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        missing = c.get("/outputs/.secret")
        assert missing.headers["content-security-policy"] == _OUTPUT_CSP  # errors too
    assert nginx.backend.hits == {}
