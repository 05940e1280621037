"""ooniutils.tls against local TLS servers (Python ssl in threads) with certificates made by
trustme for the test: valid, expiring in 2 days, expired, untrusted, wrong name."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import trustme
from nbclient import NotebookClient

from ooniutils.exceptions import AnalysisError
from ooniutils.tls import COLUMNS, check_tls_certs, parse_host
from tests.support.fake_webhooks import fake_webhook_server
from tests.support.services import free_port


class TLSServer:
    """Accepts connections on 127.0.0.1 and completes a TLS handshake with ``cert``."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.ctx)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError), conn, self.ctx.wrap_socket(conn, server_side=True):
            self.handshakes += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


NOW = datetime.now(UTC)


@pytest.fixture
def servers(tmp_path) -> Iterator[tuple[dict[str, TLSServer], str]]:
    ca, other_ca = trustme.CA(), trustme.CA()
    made = {
        "ok": ca.issue_cert("localhost", "127.0.0.1", not_after=NOW + timedelta(days=90)),
        "expiring": ca.issue_cert("localhost", "127.0.0.1", not_after=NOW + timedelta(days=2)),
        "expired": ca.issue_cert("localhost", "127.0.0.1", not_before=NOW - timedelta(days=30),
                                 not_after=NOW - timedelta(days=3)),
        "untrusted": other_ca.issue_cert("localhost", "127.0.0.1",
                                         not_after=NOW + timedelta(days=90)),
        "wrong_name": ca.issue_cert("other.example", not_after=NOW + timedelta(days=90)),
    }
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    running = {name: TLSServer(cert) for name, cert in made.items()}
    try:
        yield running, str(cafile)
    finally:
        for s in running.values():
            s.close()


def test_statuses(servers):
    srv, cafile = servers
    closed = free_port()
    hosts = [f"127.0.0.1:{srv['ok'].port}", f"localhost:{srv['expiring'].port}",
             f"127.0.0.1:{srv['expired'].port}", f"127.0.0.1:{srv['untrusted'].port}",
             f"127.0.0.1:{srv['wrong_name'].port}", f"127.0.0.1:{closed}"]
    df = check_tls_certs(hosts, warn_days=30, timeout=5, cafile=cafile, now=NOW)

    assert list(df.columns) == COLUMNS
    assert list(df["host"]) == ["127.0.0.1", "localhost", "127.0.0.1", "127.0.0.1", "127.0.0.1",
                                "127.0.0.1"]
    assert list(df["port"]) == [int(h.rsplit(":", 1)[1]) for h in hosts]
    assert isinstance(df["not_after"].dtype, pd.DatetimeTZDtype)
    assert str(df["not_after"].dt.tz) == "UTC"
    ok, expiring, expired, untrusted, wrong_name, refused = (df.iloc[i] for i in range(6))

    assert ok.status == "ok" and pd.isna(ok.error) and ok.days_left in (89, 90)
    assert ok.subject.startswith("OU=Testing cert #") and ok.issuer.startswith("OU=Testing CA #")
    assert expiring.status == "expiring" and expiring.days_left in (1, 2)
    assert abs(expiring.not_after - (NOW + timedelta(days=2))) < timedelta(seconds=2)

    assert expired.status == "expired" and expired.days_left <= -3
    assert "expired" in expired.error  # the verification message is kept

    # untrusted / wrong name: still read (dates, issuer), but reported as an error
    assert untrusted.status == "error" and untrusted.days_left in (89, 90)
    assert "verification failed" in untrusted.error and "issuer" in untrusted.error
    assert wrong_name.status == "error" and "mismatch" in wrong_name.error.lower()
    assert untrusted.issuer != ok.issuer

    assert refused.status == "error" and pd.isna(refused.not_after) and pd.isna(refused.days_left)
    assert f"127.0.0.1:{closed}" in refused.error and "refused" in refused.error.lower()


def test_warn_days_and_untrusted_without_cafile(servers):
    srv, _cafile = servers
    host = f"127.0.0.1:{srv['expiring'].port}"
    # without the test CA the certificate is untrusted, whatever its dates
    row = check_tls_certs([host], warn_days=1, now=NOW).iloc[0]
    assert row.status == "error" and "verification failed" in row.error
    row = check_tls_certs(host, warn_days=1, cafile=_cafile, now=NOW).iloc[0]
    assert row.status == "ok"  # 2 days left >= 1 day
    later = check_tls_certs(host, warn_days=1, cafile=_cafile, now=NOW + timedelta(days=1, hours=12))
    assert later.iloc[0].status == "expiring"


def test_empty_input_gives_empty_frame():
    df = check_tls_certs([])
    assert df.empty and list(df.columns) == COLUMNS


def test_unresolvable_host_is_a_row_not_an_exception():
    df = check_tls_certs(["no-such-host.invalid"], timeout=2)
    assert df.iloc[0].status == "error" and "no-such-host.invalid:443" in df.iloc[0].error


@pytest.mark.parametrize("item, expected", [
    ("api.ooni.io", ("api.ooni.io", 443)),
    ("api.ooni.io:8443", ("api.ooni.io", 8443)),
    (" th.ooni.org ", ("th.ooni.org", 443)),
    ("[::1]:8443", ("::1", 8443)),
    ("[::1]", ("::1", 443)),
    ("2001:db8::1", ("2001:db8::1", 443)),
])
def test_parse_host(item, expected):
    assert parse_host(item) == expected


@pytest.mark.parametrize("item", ["", "host:", "host:0", "host:70000", "host:https",
                                  "https://api.ooni.io", "[::1", "a b"])
def test_parse_host_rejects(item):
    with pytest.raises(AnalysisError, match="host"):
        parse_host(item)


def test_bad_arguments():
    with pytest.raises(AnalysisError, match="timezone"):
        check_tls_certs(["x"], now=datetime(2026, 1, 1))
    with pytest.raises(AnalysisError, match="warn_days"):
        check_tls_certs(["x"], warn_days=-1)


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "autorun_tls_cert_expiry.ipynb"


def _run_notebook(tmp_path: Path) -> str:
    """Execute the shipped notebook in a fresh kernel; return its text outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].cell_type == "code"
    assert nb.cells[0].source.splitlines()[0] == '# jupycron: {"every": "1 day"}'
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # shipped clean
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.integration
def test_notebook_alerts_on_expiring_cert_only_under_autorun(servers, tmp_path, monkeypatch):
    """Not under jupycron: nothing sent. Under jupycron, twice: Alertmanager is fired on both
    runs, Slack hears about the expiring certificate once; the closed port is configured as
    expected offline, so it is listed but does not alert."""
    srv, cafile = servers
    closed = free_port()
    monkeypatch.setenv("SSL_CERT_FILE", cafile)  # the kernel trusts the test CA
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OONI_TLS_HOSTS",
                       f"127.0.0.1:{srv['expiring'].port}, 127.0.0.1:{srv['ok'].port} "
                       f"127.0.0.1:{closed}")
    monkeypatch.setenv("OONI_TLS_EXPECTED_OFFLINE", f"127.0.0.1:{closed}")
    with fake_webhook_server() as hook:
        monkeypatch.setenv("OONI_ALERTMANAGER_URL", hook.base_url)
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", hook.url("/services/T0/B0/secret"))

        text = _run_notebook(tmp_path)  # not under jupycron: no alert
        assert "3 hosts: 1 ok, 1 with a certificate problem, 1 whose certificate cannot be fetched" in text
        assert f"[expected offline, not alerted] cannot fetch certificate from 127.0.0.1:{closed}" in text
        assert "(AUTORUN unset): alerts not sent" in text
        assert hook.requests == [] and not (tmp_path / "state").exists()

        monkeypatch.setenv("AUTORUN", "1")
        first = _run_notebook(tmp_path)
        after_first = hook.requests
        second = _run_notebook(tmp_path)  # the next day: same certificate, same state
        reqs = hook.requests
    fired = [r for r in reqs if r.path == "/api/v2/alerts"]
    slack = [r for r in reqs if r.path.startswith("/services/")]
    assert len(after_first) == 2 and len(fired) == 2 and len(slack) == 1
    alert = fired[0].json()[0]
    assert alert["labels"]["alertname"] == "TLSCertExpiry"
    assert alert["labels"]["instance"] == f"127.0.0.1:{srv['expiring'].port}"
    assert "expires in" in alert["annotations"]["summary"]
    assert f"127.0.0.1:{srv['expiring'].port}" in slack[0].text()
    assert f":{closed}" not in slack[0].text()  # expected offline: not alerted
    assert "slack: 1 announced" in first
    assert "slack: 0 announced, 1 already announced (not repeated)" in second


@pytest.mark.integration
def test_notebook_alerts_on_unreachable_hosts(tmp_path, monkeypatch):
    """7 of 7 hosts unreachable is not "no current alarm": each is alerted with its reason
    (Alertmanager TLSHostUnreachable, one Slack message), not a crash."""
    monkeypatch.setenv("OONI_TLS_HOSTS", "no-such-host.invalid,also-not.invalid:8443")
    monkeypatch.delenv("OONI_TLS_EXPECTED_OFFLINE", raising=False)
    monkeypatch.setenv("AUTORUN", "1")
    monkeypatch.setenv("JUPYCRON_STATE_DIR", str(tmp_path / "state"))
    with fake_webhook_server() as hook:
        monkeypatch.setenv("OONI_ALERTMANAGER_URL", hook.base_url)
        monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", hook.url("/services/T0/B0/secret"))
        text = _run_notebook(tmp_path)
        reqs = hook.requests
    assert "2 hosts: 0 ok, 0 with a certificate problem, 2 whose certificate cannot be fetched" in text
    assert "no current alarm" not in text
    assert "alert: also-not.invalid:8443: UNREACHABLE, certificate not checked" in text
    fired = [a for r in reqs if r.path == "/api/v2/alerts" for a in r.json()]
    assert sorted(a["labels"]["instance"] for a in fired) == ["also-not.invalid:8443",
                                                              "no-such-host.invalid:443"]
    assert {a["labels"]["alertname"] for a in fired} == {"TLSHostUnreachable"}
    slack = [r for r in reqs if r.path.startswith("/services/")]
    assert len(slack) == 1 and "no-such-host.invalid:443" in slack[0].text()
