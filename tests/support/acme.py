"""Pebble (the ACME test server) and pebble-challtestsrv (its mock DNS) on 127.0.0.1.

Usage::

    with pebble_server(tmp_path, http_port=nginx_http_port) as pebble:
        pebble.set_a("acme.test", "127.0.0.1")
        ...  # dehydrated with CA=pebble.directory and curl trusting pebble.api_ca

Pebble's own TLS certificate (for its ACME API) is made here with trustme: the Debian
package ships none (``/usr/share/doc/pebble`` has only example configs). ``pebble.api_ca`` is
the PEM file dehydrated's curl must trust. Pebble resolves names through challtestsrv
(``-dnsserver``), which answers only the A records the test sets (no default address, no
AAAA), and validates HTTP-01 challenges on ``http_port`` (the port nginx serves them on).
``PEBBLE_VA_NOSLEEP=1`` (no random waits), ``PEBBLE_WFE_NONCEREJECT=0`` (no spurious
bad-nonce errors) and ``PEBBLE_AUTHZREUSE=0`` (every order validates again, so a broken
challenge fails a renewal) keep the tests fast and deterministic.
``pebble.root_pem()`` is the root that signs issued certificates (new at every start).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .services import free_port, require_program, running, stop_group, wait_for_port


@dataclass
class Pebble:
    directory: str          # the ACME directory URL (CA= for dehydrated)
    api_ca: Path            # PEM that verifies pebble's API certificate
    management: str         # pebble's management API (roots of issued certificates)
    dns_management: str     # challtestsrv's management API (A records)
    proc: subprocess.Popen

    def set_a(self, host: str, address: str) -> None:
        """Make ``host`` resolve to ``address`` only (add-a alone would add to the list)."""
        for path, body in (("/clear-a", {"host": host}),
                           ("/add-a", {"host": host, "addresses": [address]})):
            httpx.post(self.dns_management + path, json=body, timeout=5).raise_for_status()

    def root_pem(self) -> str:
        r = httpx.get(self.management + "/roots/0", verify=ssl.create_default_context(cafile=str(self.api_ca)), timeout=5)
        r.raise_for_status()
        return r.text

    def stop(self) -> None:
        stop_group(self.proc)


def _wait_https(url: str, ca: Path, proc: subprocess.Popen, log: Path,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, verify=ssl.create_default_context(cafile=str(ca)),
                         timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"pebble did not answer at {url} ({last}); log:\n"
                       + log.read_text(errors="replace")[-2000:])


@contextlib.contextmanager
def pebble_server(tmp_path: Path, http_port: int) -> Iterator[Pebble]:
    """Start challtestsrv and pebble (validating HTTP-01 on ``http_port``); stop both after."""
    pebble_bin = require_program("pebble", "/usr/bin/pebble", package="pebble")
    dns_bin = require_program("pebble-challtestsrv", "/usr/bin/pebble-challtestsrv",
                              package="pebble")
    import trustme

    work = tmp_path / "pebble"
    work.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(work / "api-ca.pem"))
    leaf.private_key_pem.write_to_path(str(work / "api-key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(work / "api-cert.pem"))

    acme_port, mgmt_port, dns_port, dns_mgmt_port, tls_port = (free_port() for _ in range(5))
    (work / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(work / "api-cert.pem"), "privateKey": str(work / "api-key.pem"),
        "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    dns_cmd = [dns_bin, "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
               "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_mgmt_port}",
               "-defaultIPv4", "", "-defaultIPv6", ""]
    env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
           "PEBBLE_AUTHZREUSE": "0"}
    with running(dns_cmd, work / "challtestsrv.log") as dns_proc:
        wait_for_port(dns_mgmt_port, proc=dns_proc)
        pebble_cmd = [pebble_bin, "-config", str(work / "pebble.json"),
                      "-dnsserver", f"127.0.0.1:{dns_port}"]
        with running(pebble_cmd, work / "pebble.log", env=env) as proc:
            directory = f"https://127.0.0.1:{acme_port}/dir"
            _wait_https(directory, work / "api-ca.pem", proc, work / "pebble.log")
            yield Pebble(directory, work / "api-ca.pem", f"https://127.0.0.1:{mgmt_port}",
                         f"http://127.0.0.1:{dns_mgmt_port}", proc)
