"""A local HTTP endpoint that answers one byte at a time, slowly and for ever.

Each byte comes well within any per-read timeout, so only a bound on the whole request
stops a client. Usage::

    with trickling_server(every=0.5) as server:
        post(server.url("/hook"))          # must give up by its own deadline
        assert server.connections >= 1

The server runs in daemon threads on 127.0.0.1 (an ephemeral port); every connection is
closed when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: " + b"a" * 100_000


@dataclass
class TricklingServer:
    port: int
    every: float
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.requests.append(conn.recv(65536))
                for i in range(len(_HEAD)):  # headers that never end
                    if self._stop.wait(self.every):
                        return
                    conn.sendall(_HEAD[i:i + 1])


@contextlib.contextmanager
def trickling_server(every: float = 0.5) -> Iterator[TricklingServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = TricklingServer(listener.getsockname()[1], every)

    def accept() -> None:
        while not server._stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            server.connections += 1
            threading.Thread(target=server.serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True, name="trickle-accept").start()
    try:
        yield server
    finally:
        server._stop.set()
        listener.close()
