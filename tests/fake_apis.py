"""Fake API servers on 127.0.0.1 that record what they are sent: a generic JSON one, and
the Kubeflow Pipelines API for the `sempair pipeline` tests.

FakeKFP answers the v2beta1 REST calls kfp.Client makes to submit and schedule (healthz,
experiments, runs, recurring runs) as the real server does, so tests can read exactly what
a real server would have been sent.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
NOW = "2026-11-26T03:00:00Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None
    headers: dict[str, str] = field(default_factory=dict)


class FakeJSONAPI:
    """An HTTP server on a free loopback port that answers JSON and records every request;
    a subclass's `answer` says what a real server would answer. `with Fake() as api:`
    serves; api.url is its base URL."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, query: dict, body: dict | None
               ) -> tuple[int, dict]:
        raise NotImplementedError

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PATCH(self):
                self._serve("PATCH")

            def _serve(self, method: str):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = parse_qs(url.query)
                fake.requests.append(Recorded(method, url.path, query, body,
                                              dict(self.headers)))
                status, answer = fake.answer(method, url.path, query, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class FakeKFP(FakeJSONAPI):
    """The KFP v2beta1 API: `with FakeKFP() as kfp:`; kfp.url is the host URL."""

    def __init__(self, refuse: int = 0):
        super().__init__()
        self.experiments: dict[str, dict] = {}
        self.refuse = refuse         # answer every call but healthz with this status (403)

    def posted(self, path: str) -> list[dict]:
        """The bodies POSTed to API + path."""
        return [r.body for r in self.requests if r.method == "POST" and r.path == API + path]

    def answer(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if self.refuse:
            return self.refuse, _error("refused by the test")
        if method == "GET" and path == f"{API}/experiments":
            wanted = _filtered_name(query)
            found = [e for e in self.experiments.values() if e["display_name"] == wanted]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if method == "POST" and path == f"{API}/experiments":
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": NOW,
                          "storage_state": "AVAILABLE"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if method == "POST" and path == f"{API}/runs":
            if body.get("experiment_id") not in self.experiments:
                return 404, _error(f"experiment {body.get('experiment_id')} not found")
            return 200, {**body, "run_id": str(uuid.uuid4()), "state": "PENDING",
                         "created_at": NOW}
        if method == "POST" and path == f"{API}/recurringruns":
            if body.get("experiment_id") not in self.experiments:
                return 404, _error(f"experiment {body.get('experiment_id')} not found")
            return 200, {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED",
                         "created_at": NOW}
        return 404, _error(f"{method} {path} is not served here")


def _filtered_name(query: dict) -> str | None:
    """The display name in kfp's `filter` query ({"predicates": [{"key": "display_name",
    "operation": "EQUALS", "string_value": NAME}]})."""
    for predicate in json.loads(query.get("filter", ["{}"])[0]).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value", predicate.get("stringValue"))
    return None


def _error(message: str) -> dict:
    return {"error_message": message, "code": 5, "message": message}
