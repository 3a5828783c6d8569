"""servecheck's HTTP helpers and its wait for /ping, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow_ci.serving.servecheck import get, post, wait_ready


class _Scoring(BaseHTTPRequestHandler):
    pings_before_ready = 0

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ping":
            ready = type(self).pings_before_ready <= 0
            type(self).pings_before_ready -= 1
            self._send(200 if ready else 503, b"\n" if ready else b"loading")
        else:
            self._send(200, b'"3.1.0"')

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            rows = json.loads(data)["dataframe_split"]["data"]
        except (ValueError, KeyError):
            self._send(400, b'{"error_code": "BAD_REQUEST"}')
            return
        self._send(200, json.dumps({"predictions": [sum(r) for r in rows]}).encode())


@pytest.fixture
def scoring() -> Iterator[str]:
    _Scoring.pings_before_ready = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scoring)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def nothing_listens() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_get_and_post(scoring: str) -> None:
    assert get(f"{scoring}/version").text == '"3.1.0"'
    ok = post(f"{scoring}/invocations", b'{"dataframe_split": {"data": [[1, 2], [3, 4]]}}', timeout=5)
    assert (ok.status, ok.json) == (200, {"predictions": [3, 7]})
    bad = post(f"{scoring}/invocations", b'{"dataframe_split": {"columns": [', timeout=5)
    assert (bad.status, bad.json) == (400, {"error_code": "BAD_REQUEST"})
    gone = post(f"{nothing_listens()}/invocations", b"{}", timeout=5)
    assert gone.status is None
    assert gone.text.startswith("ConnectionRefusedError: ")


def test_ready_once_ping_answers_200(scoring: str) -> None:
    _Scoring.pings_before_ready = 2
    ready, _, why = wait_ready(scoring + "/", timeout=60)
    assert (ready, why) == (True, "200")
    assert _Scoring.pings_before_ready == -1  # three pings


def test_a_server_that_exited_stops_the_wait() -> None:
    ready, _, why = wait_ready(nothing_listens(), timeout=60, alive=lambda: False)
    assert not ready
    assert why.startswith("the server exited (ConnectionRefusedError: ")


def test_no_200_in_time_names_the_last_answer(scoring: str) -> None:
    _Scoring.pings_before_ready = 10**6
    ready, _, why = wait_ready(scoring, timeout=0.3, alive=lambda: True)
    assert not ready
    assert why == "no 200 within 0.3 s (HTTP 503)"
