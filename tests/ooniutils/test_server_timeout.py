"""A ClickHouse server that does not answer is a clear error within OONI_CLICKHOUSE_TIMEOUT."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from ooniutils import click_query_fsn
from ooniutils.exceptions import ConfigError, QueryError, StoreError
from ooniutils.store import reset_stores


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """Accepts connections and never answers (a stuck server or a black-holing proxy)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def stalling_proxy(fake_clickhouse_port: int) -> Iterator[int]:
    """Forwards to the ClickHouse stand-in, but holds any request whose SQL says /*stall*/."""
    upstream = f"http://127.0.0.1:{fake_clickhouse_port}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if b"stall" in body or b"stall" in urllib.parse.unquote_to_bytes(self.path):
                time.sleep(6)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            resp = httpx.request(self.command, upstream + self.path, content=body,
                                 headers=headers, timeout=60)
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                     "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            try:
                self.wfile.write(resp.content)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: what the test wants

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_that_never_answers_fails_within_the_timeout(silent_peer, monkeypatch):
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", f"http://127.0.0.1:{silent_peer}/default")
    monkeypatch.setenv("OONI_CLICKHOUSE_TIMEOUT", "1")
    reset_stores()
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        click_query_fsn("SELECT 1")
    took = time.monotonic() - started
    reset_stores()
    msg = str(err.value)
    assert f"127.0.0.1:{silent_peer}" in msg and "did not answer within 1 s" in msg
    assert "OONI_CLICKHOUSE_TIMEOUT" in msg
    assert took < 30, took  # clickhouse-connect's own default would wait 300 s


def test_a_query_the_server_holds_fails_within_the_timeout(stalling_proxy, fake_clickhouse_port,
                                                            monkeypatch):
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", f"http://default:secret@127.0.0.1:{stalling_proxy}/default")
    monkeypatch.setenv("OONI_CLICKHOUSE_TIMEOUT", "2")
    reset_stores()
    try:
        assert click_query_fsn("SELECT 41 + 1 AS n")["n"].tolist() == [42]  # the proxy works
        with pytest.raises(QueryError) as err:
            click_query_fsn("SELECT 1 /*stall*/ AS n")
        assert "did not answer within 2 s while running a query" in str(err.value)
        assert "secret" not in str(err.value)
    finally:
        reset_stores()


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "inf"])
def test_a_bad_timeout_is_a_config_error_naming_it(bad, monkeypatch):
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", "http://127.0.0.1:9/default")
    monkeypatch.setenv("OONI_CLICKHOUSE_TIMEOUT", bad)
    reset_stores()
    with pytest.raises(ConfigError) as err:
        click_query_fsn("SELECT 1")
    reset_stores()
    assert "OONI_CLICKHOUSE_TIMEOUT" in str(err.value)
