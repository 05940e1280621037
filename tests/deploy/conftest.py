"""Fixtures for the deploy/ proxies: tiny HTTP back-ends run in threads, and helpers to start
the real nginx / HAProxy on 127.0.0.1 with a config rendered from the shipped templates."""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.services import free_port


class Backend:
    """A threaded HTTP server on 127.0.0.1 that counts hits per path and can be stopped and
    started again on the same port.

    ``GET /`` and any path answer 200 with the body ``name`` (so HAProxy tests see which
    helper answered). A path starting with ``/long`` answers with ``Cache-Control:
    max-age=600`` so nginx keeps it fresh far longer than the tests' ``proxy_cache_valid``.
    Responses are HTTP/1.0 (the connection closes), so stopping the server leaves no
    keep-alive connection behind: a stopped backend refuses connections like a dead process.
    """

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                with backend._lock:
                    backend.hits[self.path] += 1
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                if self.path.startswith("/long"):
                    self.send_header("Cache-Control", "max-age=600")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(True)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]


@pytest.fixture
def make_backend() -> Iterator:
    """Factory of started :class:`Backend` objects, all stopped at the end of the test."""
    made: list[Backend] = []

    def make(name: str) -> Backend:
        b = Backend(name)
        b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def nginx_main_conf(prefix: str, site_conf: str) -> str:
    """A minimal main nginx.conf around the shipped http-context snippet ``site_conf``.

    Workers run as the current user (``user`` only matters when started as root) and every
    temp path sits under ``prefix``, so nothing outside the test's folders is touched.
    """
    user = "root" if os.geteuid() == 0 else None
    lines = [f"user {user};" if user else "", "worker_processes 1;",
             "events { worker_connections 256; }", "http {"]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append(f"    {kind}_temp_path {prefix}/tmp/{kind};")
    lines += [f"    include {site_conf};", "}", ""]
    return "\n".join(lines)
