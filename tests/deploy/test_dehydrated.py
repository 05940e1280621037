"""deploy/dehydrated + the ACME location of deploy/nginx, end to end against Pebble.

The real dehydrated (Debian package) runs the shipped ``config`` (sourced, with the paths and
the CA pointed at the test's) and the shipped ``hook.sh``; the real nginx serves the shipped
notebooks site rendered with TLS; Pebble (the ACME test server) validates HTTP-01 by
resolving the test name through pebble-challtestsrv and fetching the token from nginx.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import trustme
from cryptography import x509

from jupycron.nginx_site import render_notebooks_site
from ooniutils.tls import check_tls_certs
from tests.deploy.conftest import nginx_main_conf
from tests.support.acme import Pebble, pebble_server
from tests.support.services import (
    REPO,
    free_port,
    poll_until,
    require_program,
    running,
    wait_for_port,
)

DEPLOY = REPO / "deploy" / "dehydrated"
# Pebble resolves it through challtestsrv, where the test sets its A record; this process
# (check_tls_certs) through the `resolve_name` fixture. Not "localhost" nor any name in
# /etc/hosts: Pebble would resolve those itself and never ask challtestsrv.
NAME = "notebooks.ooni-monitoring.test"


@pytest.fixture
def resolve_name(monkeypatch):
    """NAME -> 127.0.0.1 for this process (a stub resolver, as challtestsrv is for Pebble)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if host == NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@dataclass
class Site:
    nginx: list[str]        # nginx -p PREFIX -c CONF
    https_port: int
    http_port: int
    cert_dir: Path          # NGINX_CERT_DIR
    wellknown: Path

    @property
    def fullchain(self) -> Path:
        return self.cert_dir / NAME / "fullchain.pem"


def _cert_file(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def site(tmp_path) -> Iterator[Site]:
    """nginx serving the notebooks site over HTTPS with a self-signed placeholder certificate
    (what an operator installs before the first issuance, see deploy/dehydrated/README.md)."""
    binary = require_program("nginx", "/usr/sbin/nginx", package="nginx")
    prefix = tmp_path / "nginx"
    for sub in ("logs", "tmp", "wellknown", "tls"):
        (prefix / sub).mkdir(parents=True)
    placeholder = trustme.CA().issue_cert(NAME)
    (prefix / "tls" / NAME).mkdir(mode=0o700)
    placeholder.private_key_pem.write_to_path(str(prefix / "tls" / NAME / "privkey.pem"))
    placeholder.cert_chain_pems[0].write_to_path(str(prefix / "tls" / NAME / "fullchain.pem"))
    http_port, https_port = free_port(), free_port()
    site_conf = prefix / "jupycron-notebooks.conf"
    site_conf.write_text(render_notebooks_site(
        server_name=NAME, dashboard="127.0.0.1:9", editor="127.0.0.1:9",
        challenge_dir=prefix / "wellknown", listen=[f"127.0.0.1:{http_port}"],
        listen_tls=[f"127.0.0.1:{https_port}"],
        tls_cert=prefix / "tls" / NAME / "fullchain.pem",
        tls_key=prefix / "tls" / NAME / "privkey.pem"))
    main = prefix / "nginx.conf"
    main.write_text(f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log info;\n"
                    + nginx_main_conf(str(prefix), str(site_conf)))
    base = [binary, "-p", str(prefix), "-c", str(main)]
    with running(base + ["-g", "daemon off;"], prefix / "logs" / "stdout.log") as proc:
        wait_for_port(https_port, proc=proc)
        yield Site(base, https_port, http_port, prefix / "tls", prefix / "wellknown")


def _dehydrated_config(tmp_path: Path, pebble: Pebble, site: Site, ca: str | None = None) -> Path:
    """The shipped config, sourced, with the paths and the CA pointed at this test's."""
    work = tmp_path / "dehydrated"
    (work / "base").mkdir(parents=True, exist_ok=True)
    (work / "domains.txt").write_text(NAME + "\n")
    nginx = " ".join(site.nginx)
    cfg = work / "config"
    cfg.write_text(f"""
. {DEPLOY / 'config'}
CA="{ca or pebble.directory}"
BASEDIR="{work / 'base'}"
WELLKNOWN="{site.wellknown}"
DOMAINS_TXT="{work / 'domains.txt'}"
HOOK="{DEPLOY / 'hook.sh'}"
CONTACT_EMAIL="ops@example.org"
CURL_OPTS="--cacert {pebble.api_ca}"
export NGINX_CERT_DIR="{site.cert_dir}"
export NGINX_TEST="{nginx} -t -q"
export NGINX_RELOAD="{nginx} -s reload"
""")
    return cfg


def _dehydrated(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_program("dehydrated", "/usr/bin/dehydrated", package="dehydrated")
    return subprocess.run([binary, "--config", str(cfg), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def _served(site: Site, cafile: Path) -> dict:
    """check_tls_certs' row for the site (``not_after`` as a datetime)."""
    row = check_tls_certs([f"{NAME}:{site.https_port}"], warn_days=1,
                          cafile=str(cafile)).iloc[0].to_dict()
    row["not_after"] = row["not_after"].to_pydatetime()
    return row


@pytest.mark.integration
def test_issue_serve_renew_and_failures_keep_the_old_certificate(tmp_path, site, resolve_name,
                                                                 monkeypatch):
    placeholder = _cert_file(site.fullchain)
    with pebble_server(tmp_path, http_port=site.http_port) as pebble:
        pebble.set_a(NAME, "127.0.0.1")
        root = tmp_path / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        cfg = _dehydrated_config(tmp_path, pebble, site)

        reg = _dehydrated(cfg, "--register", "--accept-terms")
        assert reg.returncode == 0, reg.stdout + reg.stderr

        # Issue: Pebble fetches the token from nginx's ACME location, the hook deploys the
        # certificate and reloads nginx, which then serves it.
        first = _dehydrated(cfg, "--cron")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "deployed" in first.stdout + first.stderr
        issued = _cert_file(site.fullchain)
        assert issued.serial_number != placeholder.serial_number
        assert "Pebble Intermediate" in issued.issuer.rfc4514_string()
        row = poll_until(lambda: (r := _served(site, root))["status"] == "ok" and r)
        assert row["not_after"] == issued.not_valid_after_utc
        assert not list(site.wellknown.iterdir()), "challenge tokens are cleaned up"

        # Renewal replaces it (a later expiry: issued at least a second later).
        time.sleep(1.1)
        renew = _dehydrated(cfg, "--cron", "--force")
        assert renew.returncode == 0, renew.stdout + renew.stderr
        renewed = _cert_file(site.fullchain)
        assert renewed.serial_number != issued.serial_number
        assert renewed.not_valid_after_utc > issued.not_valid_after_utc
        row = poll_until(lambda: (r := _served(site, root))["not_after"]
                         == renewed.not_valid_after_utc and r)
        assert row["status"] == "ok"
        # ... and so does the TLS notebook (run by hand: AUTORUN unset, nothing is sent).
        shown = _run_tls_notebook(tmp_path, f"localhost:{site.https_port}", monkeypatch)
        assert str(pd.Timestamp(renewed.not_valid_after_utc)) in shown

        # The challenge cannot be reached (the name points elsewhere): reported, and the
        # renewed certificate stays deployed and served.
        pebble.set_a(NAME, "127.0.0.2")
        time.sleep(1.1)
        broken = _dehydrated(cfg, "--cron", "--force", "--force-validation")
        assert broken.returncode != 0
        out = broken.stdout + broken.stderr
        assert "could not validate the challenge" in out and "acme-challenge" in out, out
        assert _cert_file(site.fullchain).serial_number == renewed.serial_number
        assert _served(site, root)["not_after"] == renewed.not_valid_after_utc
        pebble.set_a(NAME, "127.0.0.1")

        # The ACME server is down: reported, nothing changes.
        pebble.stop()
        down = _dehydrated(cfg, "--cron", "--force")
        assert down.returncode != 0
        assert "Problem connecting to server" in down.stderr, down.stdout + down.stderr
        assert _cert_file(site.fullchain).serial_number == renewed.serial_number
        assert _served(site, root)["not_after"] == renewed.not_valid_after_utc


def _run_tls_notebook(tmp_path: Path, host: str, monkeypatch) -> str:
    """Execute notebooks/autorun_tls_cert_expiry.ipynb for ``host``; the text of its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "autorun_tls_cert_expiry.ipynb", as_version=4)
    with monkeypatch.context() as mp:
        mp.setenv("OONI_TLS_HOSTS", host)  # the kernel inherits it
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert = trustme.CA().issue_cert(NAME)
    key, chain = tmp_path / f"{name}-key.pem", tmp_path / f"{name}-chain.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    return key, chain


def _hook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run([bash, str(DEPLOY / "hook.sh"), *args], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})


def test_hook_puts_the_old_certificate_back_when_nginx_refuses_the_new_one(tmp_path):
    require_program("openssl", package="openssl")
    certs = tmp_path / "tls"
    old_key, old_chain = _pem_pair(tmp_path, "old")
    ok = _hook({"NGINX_CERT_DIR": str(certs), "NGINX_TEST": "true", "NGINX_RELOAD": "true"},
               "deploy_cert", NAME, str(old_key), str(old_chain), str(old_chain), str(old_chain))
    assert ok.returncode == 0, ok.stderr
    assert (certs / NAME / "fullchain.pem").read_bytes() == old_chain.read_bytes()

    new_key, new_chain = _pem_pair(tmp_path, "new")
    refused = _hook({"NGINX_CERT_DIR": str(certs), "NGINX_TEST": "false",
                     "NGINX_RELOAD": "true"},
                    "deploy_cert", NAME, str(new_key), str(new_chain), str(new_chain),
                    str(new_chain))
    assert refused.returncode != 0
    assert "nginx refused" in refused.stderr and "put back" in refused.stderr
    assert (certs / NAME / "fullchain.pem").read_bytes() == old_chain.read_bytes()
    assert (certs / NAME / "privkey.pem").read_bytes() == old_key.read_bytes()
    assert sorted(p.name for p in (certs / NAME).iterdir()) == ["fullchain.pem", "privkey.pem"]


def test_hook_refuses_a_key_that_does_not_match(tmp_path):
    require_program("openssl", package="openssl")
    key, _ = _pem_pair(tmp_path, "a")
    _, chain = _pem_pair(tmp_path, "b")
    res = _hook({"NGINX_CERT_DIR": str(tmp_path / "tls"), "NGINX_TEST": "true",
                 "NGINX_RELOAD": "true"},
                "deploy_cert", NAME, str(key), str(chain), str(chain), str(chain))
    assert res.returncode != 0 and "does not match its key" in res.stderr
    assert not (tmp_path / "tls" / NAME / "fullchain.pem").exists()


def test_hook_ignores_other_handlers(tmp_path):
    res = _hook({}, "unchanged_cert", NAME, "k", "c", "f", "ch")
    assert res.returncode == 0 and not res.stderr
