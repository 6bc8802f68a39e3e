"""A real S3-protocol server for tests: moto_server on 127.0.0.1, and a fault-injecting proxy.

Fixtures (registered through `pytest_plugins` in conftest.py):
  s3_server  (session)  a running moto server: `.endpoint`, `.env` (the AWS_* variables),
                        `.client()` (a boto3 client, to look behind our back)
  s3_env     (function) sets those variables (and XDG_CACHE_HOME to a temp folder) and
                        returns the name of a fresh bucket created for the test
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.local_s3 import MotoServer, free_port, run_moto  # noqa: F401 - tests use them


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[MotoServer]:
    with run_moto(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_env(s3_server: MotoServer, monkeypatch, tmp_path_factory) -> str:
    """The environment pointed at the test server; returns a fresh bucket's name."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return bucket


# -- a proxy that fails on purpose -------------------------------------------------------

SLOWDOWN = (503, "SlowDown", "Please reduce your request rate.")
DENIED = (403, "AccessDenied", "Access Denied")
DROP = "drop"   # close the connection without an answer


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream`: answers the next `count` requests
    with `fault` (an S3 error or DROP), then forwards. Counts what it saw."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.requests = 0          # every request received
        self.faults = 0            # requests answered with a fault
        self._plan: list = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, count: int, fault=SLOWDOWN) -> None:
        with self._lock:
            self._plan = [fault] * count

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next_fault(self):
        with self._lock:
            self.requests += 1
            if not self._plan:
                return None
            self.faults += 1
            return self._plan.pop(0)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._next_fault()
                if fault == DROP:
                    self.close_connection = True
                    return
                if fault:
                    return self._error(*fault)
                self._forward(body)

            def _error(self, status: int, code: str, message: str):
                xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                       f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>")
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self, body: bytes):
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None,
                                     headers=dict(self.headers.items()))
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length",
                                            "server", "date"):
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" \
                    else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        return Handler
