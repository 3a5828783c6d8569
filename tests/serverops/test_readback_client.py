"""The read-back's HTTP client (standard library only) against a small local HTTP server.

What the restore's checks rely on: JSON answers, the server's own message on an error status, a
body that is not JSON or a server that is gone reported as unreadable (so the check fails or the
restore says the server stopped answering), keep-alive connections opened again when the server
closed them, and downloads checksummed as they stream.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow_ci.core.errors import ServerUnreachable
from mlflow_ci.core.report import check
from mlflow_ci.serverops.readback import Rest, ServerAnswered, Unreadable, guarded

BLOB = bytes(range(256)) * 5000  # 1.28 MB: more than one read block


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0  # connections accepted (a handler is made per connection)

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/health":
            self._send(200, b"OK")
        elif url.path == "/echo":
            self._send(200, json.dumps(query).encode())
        elif url.path == "/echo-and-close":
            self._send(200, json.dumps(query).encode(), close=True)
        elif url.path == "/missing":
            self._send(404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST",
                                        "message": "Run 'abc' not found\nmore detail"}).encode())  # fmt: skip
        elif url.path == "/html":
            self._send(200, b"<html>not json</html>")
        elif url.path == "/blob":
            self._send(200, BLOB)
        else:
            self._send(500, b"plain text failure")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self._send(200, json.dumps({"got": json.loads(self.rfile.read(length))}).encode())


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_json_answers_with_repeated_query_parameters_and_a_json_body(server: str) -> None:
    rest = Rest(server)
    assert rest.call("GET", "/echo", params={"run_id": ["a", "b"], "metric_key": "loss"}) == {
        "run_id": ["a", "b"],
        "metric_key": ["loss"],
    }
    assert rest.call("POST", "/search", body={"filter": "name = 'x'"}) == {"got": {"filter": "name = 'x'"}}
    assert _Handler.connections == 1  # one kept-alive connection for all of it


def test_an_error_status_carries_the_servers_first_line(server: str) -> None:
    rest = Rest(server)
    with pytest.raises(ServerAnswered, match=r"HTTP 404 from /missing: Run .abc. not found$") as caught:
        rest.call("GET", "/missing")
    assert caught.value.status == 404
    with pytest.raises(ServerAnswered, match="HTTP 500 from /other: plain text failure"):
        rest.call("GET", "/other")
    assert rest.call("GET", "/echo", params={"after": "errors"}) == {"after": ["errors"]}


def test_a_body_that_is_not_json_is_unreadable(server: str) -> None:
    with pytest.raises(Unreadable, match="not JSON"):
        Rest(server).call("GET", "/html")


def test_a_connection_the_server_closed_is_opened_again(server: str) -> None:
    rest = Rest(server)
    assert rest.call("GET", "/echo-and-close", params={"n": "1"}) == {"n": ["1"]}
    assert rest.call("GET", "/echo", params={"n": "2"}) == {"n": ["2"]}
    assert _Handler.connections == 2


def test_a_download_is_checksummed_as_it_streams(server: str) -> None:
    assert Rest(server).sha256("/blob") == hashlib.sha256(BLOB).hexdigest()


def test_a_server_that_is_gone_is_unreadable_then_unreachable_for_the_check() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    rest = Rest(url)
    with pytest.raises(Unreadable):
        rest.call("GET", "/echo")
    with pytest.raises(ServerUnreachable, match="stopped answering during the check 'runs'"):
        guarded(rest, "runs", "25 runs", lambda: rest.call("GET", "/echo"))


def test_guarded_turns_an_answered_error_into_a_failed_check(server: str) -> None:
    rest = Rest(server)
    failed = guarded(rest, "runs", "25 runs", lambda: rest.call("GET", "/missing"))
    assert failed.verdict == "fail"
    assert failed.found == "the server answered an error: HTTP 404 from /missing: Run 'abc' not found"
    passed = guarded(
        rest, "runs", "25 runs", lambda: check("runs", True, expected="25 runs", found="25 runs")
    )
    assert passed.verdict == "pass"
