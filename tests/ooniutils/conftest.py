"""Store fixtures: an embedded store in a tmp folder, and a ClickHouse HTTP endpoint.

No real ClickHouse server can be installed here (Debian 12 has no clickhouse-server and no
PyPI package ships its binary), so server-mode tests talk to a *stand-in*: a small HTTP
server, run in its own process by this file (``python conftest.py PORT``), that speaks
the part of ClickHouse's HTTP interface clickhouse-connect uses and executes every
statement in chDB — real ClickHouse SQL, real ``param_<name>`` binding and real error
messages, but not the real server (no auth, merges or system tables beyond chDB's).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if __name__ != "__main__":
    from ooniutils.store import get_store, reset_stores
    from ooniutils.store.base import Store
    from tests.support.services import free_port, running, wait_for_http


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """OONI_DATA_DIR holding an empty store (as `ooniutils data init` makes it); stores cached
    for it are dropped afterwards."""
    d = tmp_path / "ooni-data"
    monkeypatch.setenv("OONI_DATA_DIR", str(d))
    reset_stores()
    get_store(create=True)
    yield d
    reset_stores()


@pytest.fixture
def embedded_store(data_dir: Path) -> Store:
    return get_store()


@pytest.fixture
def store(embedded_store: Store) -> Store:
    """The embedded store with every table created (closed by ``data_dir``'s teardown)."""
    embedded_store.init()
    return embedded_store


@pytest.fixture(scope="session")
def fake_clickhouse_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Port of the chDB-backed ClickHouse HTTP stand-in (one process for the session)."""
    port = free_port()
    log = tmp_path_factory.mktemp("fake-clickhouse") / "server.log"
    with running([sys.executable, str(Path(__file__)), str(port)], log) as proc:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=60, proc=proc)
        yield port


@pytest.fixture
def server_store(fake_clickhouse_port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A ServerStore over a fresh database of the stand-in, with the tables created."""
    import httpx

    db = f"t_{uuid.uuid4().hex[:12]}"
    base = f"http://127.0.0.1:{fake_clickhouse_port}"
    httpx.post(base + "/", content=f"CREATE DATABASE {db}").raise_for_status()
    monkeypatch.setenv("OONI_CLICKHOUSE_URL", f"http://default:secret@127.0.0.1:{fake_clickhouse_port}/{db}")
    reset_stores()
    store = get_store()
    store.init()
    yield store
    reset_stores()


@pytest.fixture(params=["embedded", "server"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each back-end in turn (the contract suite runs against both)."""
    return request.getfixturevalue(f"{request.param}_store")


# --------------------------------------------------------------------------- stand-in server


def _serve(port: int) -> None:
    """ClickHouse HTTP interface subset over chDB: GET/POST query, param_*, INSERT bodies."""
    import re
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from chdb.session import Session

    sess = Session()
    sess.query("SET allow_suspicious_low_cardinality_types = 1")
    sess.query("SET session_timezone = 'UTC'")
    lock = threading.Lock()
    fmt_re = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
    insert_re = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$",
                           re.IGNORECASE | re.DOTALL)
    settings_passed = {"allow_suspicious_low_cardinality_types", "session_timezone",
                       "insert_allow_materialized_columns"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write("fake-clickhouse: " + fmt % args + "\n")

        def _reply(self, code: int, body: bytes, fmt: str | None = None, exc_code: str | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            if fmt:
                self.send_header("X-ClickHouse-Format", fmt)
            if exc_code:
                self.send_header("X-ClickHouse-Exception-Code", exc_code)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._handle(b"")

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            enc = (self.headers.get("Content-Encoding") or "").lower()
            if enc == "lz4":
                import lz4.frame

                body = lz4.frame.decompress(body)
            elif enc == "zstd":
                import zstandard

                body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            elif enc == "gzip":
                import gzip

                body = gzip.decompress(body)
            self._handle(body)

        def _handle(self, body: bytes) -> None:
            url = urlsplit(self.path)
            if url.path == "/ping":
                return self._reply(200, b"Ok.\n")
            qs = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            params = {k[len("param_"):]: v for k, v in qs.items() if k.startswith("param_")}
            sql = qs.get("query")
            data = b""
            if sql is None:
                sql = body.decode()
            else:
                data = body
            settings = [f"{k} = '{v}'" for k, v in qs.items() if k in settings_passed]
            db = qs.get("database") or "default"
            try:
                with lock:
                    sess.query(f"USE `{db}`")
                    for s in settings:
                        sess.query(f"SET {s}")
                    m = insert_re.match(sql)
                    if m and data:
                        with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
                            fh.write(data)
                            fh.flush()
                            sess.query(f"INSERT INTO {m.group('target')} SELECT * FROM file('{fh.name}', {m.group('fmt')})")
                        return self._reply(200, b"")
                    fm = fmt_re.search(sql)
                    fmt = fm.group(1) if fm else (qs.get("default_format") or "TabSeparated")
                    res = sess.query(sql, fmt, params=params)
                    out = res.bytes() if hasattr(res, "bytes") else bytes(res)
                return self._reply(200, out, fmt)
            except Exception as exc:  # ClickHouse's text, as a real server sends it
                text = str(exc)
                code = re.search(r"Code: (\d+)", text)
                return self._reply(500, text.encode(), exc_code=code.group(1) if code else "1")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 8 rows, parts of at most 40: the layout rules at a testable size;
    every part dense enough to be grouped within the hour (``sparse_parts`` for the day)."""
    from ooniutils.store import compaction, parts

    monkeypatch.setattr(parts, "DENSE_STEP_ROWS", 0)
    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 8)
    monkeypatch.setattr(parts, "PART_ROWS", 40)  # streamed inserts (store/part_writer.py)
    monkeypatch.setattr(compaction, "ROW_GROUP_ROWS", 8)
    monkeypatch.setattr(compaction, "PART_ROWS", 40)
    monkeypatch.setattr(compaction, "FULL_BIG", 20)
    monkeypatch.setattr(compaction, "AUTO_SMALL", 10)
