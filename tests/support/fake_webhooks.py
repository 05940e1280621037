"""A local HTTP server that records every request, for testing webhook senders.

Usage::

    with fake_webhook_server() as hook:
        hook.script(503, 503, 200)            # replies in order, then the default (200 "ok")
        post_something(hook.url("/services/T000/B000/secret"))
        assert hook.requests[0].json() == {...}

The server runs in a daemon thread on 127.0.0.1 (an ephemeral port), answers every method,
and is shut down when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. ``headers`` keeps the raw (Latin-1) header values."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to provoke client timeouts)


class FakeWebhook:
    """Handle on the running server: its base URL, the recorded requests, scripted replies."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self.default = Reply()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, *replies: int | Reply) -> None:
        """Queue replies (a status code or a :class:`Reply`), used once each, in order."""
        with self._lock:
            for r in replies:
                self._replies.append(r if isinstance(r, Reply) else Reply(status=r, body=b""))

    def _handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            return self._replies.popleft() if self._replies else self.default


def _handler_for(hook_ref: list[FakeWebhook]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
            reply = hook_ref[0]._handle(recorded)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@contextlib.contextmanager
def fake_webhook_server() -> Iterator[FakeWebhook]:
    """Start the recording server on 127.0.0.1; stop it when the block ends."""
    ref: list[FakeWebhook] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(ref))
    server.daemon_threads = True
    hook = FakeWebhook(server)
    ref.append(hook)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fake-webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
