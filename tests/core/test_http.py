"""The one HTTP client (mlflow_ci.core.http) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow_ci.core import http

BLOB = bytes(range(256)) * 5000  # more than one block


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0
    seen: list[dict[str, str]] = []  # noqa: RUF012 - the test's record of request headers
    lines: list[str] = []  # noqa: RUF012 - the request lines as received
    release = threading.Event()
    failures = 0  # how many requests to /flaky and /reset fail before one is answered
    hits: dict[str, int] = {}  # noqa: RUF012 - requests per "METHOD path"

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        type(self).lines.append(self.requestline)

    def _failing(self) -> bool:
        """/flaky: 503 while failures remain; /reset: the connection closed without an answer;
        /halfblob: an answer whose body breaks off after 1.5 MiB of the 3 MiB announced."""
        key = f"{self.command} {urlsplit(self.path).path}"
        type(self).hits[key] = type(self).hits.get(key, 0) + 1
        path = urlsplit(self.path).path
        if path == "/halfblob":
            self.send_response(200)
            self.send_header("Content-Length", str(3 << 20))
            self.end_headers()
            self.wfile.write(b"x" * (3 << 19))
            self.close_connection = True
            return True
        if path not in ("/flaky", "/reset"):
            return False
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if type(self).failures <= 0:
            self._send(200, b"fine")
            return True
        type(self).failures -= 1
        if path == "/flaky":
            self._send(503, b"busy")
        else:
            self.close_connection = True  # as a replica killed while it served the request
        return True

    def do_PUT(self) -> None:
        if not self._failing():
            self._send(404, b"")

    def do_DELETE(self) -> None:
        self.do_PUT()

    def do_GET(self) -> None:
        self._record()
        if self._failing():
            return
        url = urlsplit(self.path)
        if url.path.endswith("/echo"):
            self._send(200, json.dumps({"path": url.path, "query": parse_qs(url.query)}).encode(),
                       {"Content-Type": "application/json", "X-Answer": "yes"})  # fmt: skip
        elif url.path == "/teapot":
            self._send(418, b'{"message": "short and stout"}')
        elif url.path == "/slow":
            type(self).release.wait(5)
            self._send(200, b"late")
        elif url.path == "/blob":
            self._send(200, BLOB)
        elif url.path == "/moved":
            self._send(302, b"", {"Location": "/api/echo?moved=1"})
        elif url.path == "/loop":
            self._send(301, b"", {"Location": "/loop"})
        elif url.path.startswith("/elsewhere"):
            port = url.query
            self._send(307, b"", {"Location": f"http://localhost:{port}/api/echo"})
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        self._record()
        if self._failing():
            return
        if self.path == "/moved":
            self._send(302, b"", {"Location": "/api/echo"})
            return
        length = int(self.headers["Content-Length"])
        self._send(201, json.dumps({"got": json.loads(self.rfile.read(length))}).encode())


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections = 0
    _Handler.seen = []
    _Handler.lines = []
    _Handler.release = threading.Event()
    _Handler.failures = 0
    _Handler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_status_headers_and_json(server: str) -> None:
    answer = http.request(
        "GET", f"{server}/api/echo", params={"run_id": ["a", "b"], "key": "loss"}, timeout=5
    )
    assert answer.status == 200
    assert answer.ok
    assert answer.headers.get("x-answer") == "yes"  # headers are case-insensitive
    assert answer.json() == {"path": "/api/echo", "query": {"run_id": ["a", "b"], "key": ["loss"]}}
    assert answer.url == f"{server}/api/echo?run_id=a&run_id=b&key=loss"
    assert _Handler.seen[-1]["user-agent"].startswith("mlflow-ci/")


def test_an_error_status_is_an_answer_not_an_exception(server: str) -> None:
    answer = http.request("GET", f"{server}/teapot", timeout=5)
    assert (answer.status, answer.ok, answer.reason) == (418, False, "I'm a Teapot")
    assert answer.json() == {"message": "short and stout"}
    with pytest.raises(json.JSONDecodeError):
        http.request("GET", f"{server}/blob", timeout=5).json()


def test_a_json_body_is_sent_with_its_content_type(server: str) -> None:
    answer = http.request(
        "POST", f"{server}/api/echo", json={"body": "hé"}, headers={"X-Mine": "1"}, timeout=5
    )
    assert answer.status == 201
    assert answer.json() == {"got": {"body": "hé"}}
    assert _Handler.seen[-1]["content-type"] == "application/json"
    assert _Handler.seen[-1]["x-mine"] == "1"


def test_a_server_that_does_not_answer_in_time_is_an_error(server: str) -> None:
    with pytest.raises(http.HttpError) as caught:
        http.request("GET", f"{server}/slow", timeout=0.2)
    assert caught.value.error == "TimeoutError"
    assert caught.value.url == f"{server}/slow"
    assert str(caught.value).startswith(f"GET {server}/slow: ")


def test_a_refused_connection_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(http.HttpError) as caught:
        http.request("GET", url, timeout=2)
    assert caught.value.error == "ConnectionRefusedError"
    assert "Connection refused" in caught.value.reason
    with pytest.raises(http.HttpError, match="Connection refused"):
        http.Client(url, timeout=2).request("POST", json={})


@pytest.mark.parametrize("url", ["ftp://example.org/x", "not a url", "http://host:port/x", "http:///x"])
def test_a_url_that_is_not_http_is_an_error(url: str) -> None:
    with pytest.raises(http.HttpError):
        http.request("GET", url, timeout=1)


def test_get_follows_redirects_post_does_not(server: str) -> None:
    moved = http.request("GET", f"{server}/moved", timeout=5)
    assert moved.status == 200
    assert moved.json()["query"] == {"moved": ["1"]}
    assert http.request("POST", f"{server}/moved", json={}, timeout=5).status == 302
    assert http.request("GET", f"{server}/moved", timeout=5, redirects=0).status == 302
    _Handler.lines.clear()
    looping = http.request("GET", f"{server}/loop", timeout=5)
    assert looping.status == 301
    assert len(_Handler.lines) == 1 + http.MAX_REDIRECTS


def test_a_redirect_to_another_origin_does_not_carry_the_token(server: str) -> None:
    port = urlsplit(server).port
    same = http.request("GET", f"{server}/moved", headers={"Authorization": "Bearer t"}, timeout=5)
    assert same.status == 200
    assert _Handler.seen[-1]["authorization"] == "Bearer t"
    other = http.request(
        "GET", f"{server}/elsewhere?{port}", headers={"Authorization": "Bearer t"}, timeout=5
    )
    assert other.status == 200
    assert other.url.startswith("http://localhost:")
    assert "authorization" not in _Handler.seen[-1]


def test_a_client_keeps_one_connection_per_thread_and_a_base_path(server: str) -> None:
    client = http.Client(f"{server}/api/", timeout=5)
    assert client.request("GET", "/echo", params={"n": 1}).json()["path"] == "/api/echo"
    assert client.request("GET", "/echo?x=1", params={"n": 2}).json()["query"] == {"x": ["1"], "n": ["2"]}
    assert client.request("POST", "/echo", json=[1]).json() == {"got": [1]}
    assert client.request("GET", f"{server}/api/echo").status == 200  # absolute, same origin
    assert _Handler.connections == 1
    with pytest.raises(ValueError, match="is not on"):
        client.request("GET", "http://example.org/api/echo")


def test_a_kept_connection_the_server_closed_is_opened_again(server: str) -> None:
    client = http.Client(server, timeout=5)
    assert client.request("GET", "/api/echo").ok
    conn = client._local.conn
    conn.sock.shutdown(socket.SHUT_RDWR)  # as a server closing an idle connection looks from here
    assert client.request("GET", "/api/echo").ok
    assert _Handler.connections == 2


def test_a_sink_takes_a_200_body_in_blocks(server: str) -> None:
    client = http.Client(server, timeout=5)
    hasher = hashlib.sha256()
    blocks: list[int] = []

    def sink(block: bytes) -> None:
        blocks.append(len(block))
        hasher.update(block)

    answer = client.request("GET", "/blob", sink=sink)
    assert answer.body == b""
    assert hasher.hexdigest() == hashlib.sha256(BLOB).hexdigest()
    assert len(blocks) > 1
    assert client.request("GET", "/teapot", sink=sink).body == b'{"message": "short and stout"}'


def test_a_plain_http_proxy_from_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'proxy' is the test server itself: it sees the whole URL on the request line."""
    monkeypatch.setenv("http_proxy", f"http://user:p%40ss@{urlsplit(server).netloc}")
    target = f"http://127.0.0.1:{free_port()}/api/echo"  # nothing listens there
    answer = http.request("GET", target, timeout=5)
    assert answer.status == 200
    assert _Handler.lines[-1] == f"GET {target} HTTP/1.1"
    assert _Handler.seen[-1]["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert _Handler.seen[-1]["host"] == urlsplit(target).netloc
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(http.HttpError, match="Connection refused"):
        http.request("GET", target, timeout=2)  # straight there
    monkeypatch.delenv("no_proxy")
    assert http.Client(target, timeout=5, env_proxies=False)._proxy is None


FAST = http.Retry(attempts=3, backoff=0.01, max_backoff=0.02)


@pytest.mark.parametrize("path", ["/flaky", "/reset"])
def test_a_get_is_retried_on_a_502_503_504_or_a_broken_connection(server: str, path: str) -> None:
    _Handler.failures = 2
    answer = http.request("GET", f"{server}{path}", timeout=5, retry=FAST)
    assert (answer.status, answer.body, answer.attempts) == (200, b"fine", 3)
    assert _Handler.hits == {f"GET {path}": 3}


def test_the_last_answer_comes_back_when_the_tries_are_spent(server: str) -> None:
    _Handler.failures = 5
    client = http.Client(server, timeout=5, retry=FAST)
    answer = client.request("GET", "/flaky")
    assert (answer.status, answer.attempts) == (503, 3)
    _Handler.failures = 5
    with pytest.raises(http.HttpError) as caught:
        http.Client(server, timeout=5, retry=FAST, keep_alive=False).request("GET", "/reset")
    assert caught.value.error == "RemoteDisconnected"
    assert _Handler.hits == {"GET /flaky": 3, "GET /reset": 3}


def test_post_and_patch_are_never_retried(server: str) -> None:
    _Handler.failures = 1
    answer = http.request("POST", f"{server}/flaky", json={"a": 1}, timeout=5, retry=FAST)
    assert (answer.status, answer.attempts) == (503, 1)
    _Handler.failures = 1
    with pytest.raises(http.HttpError):
        http.request("POST", f"{server}/reset", json={"a": 1}, timeout=5, retry=FAST)
    assert _Handler.hits == {"POST /flaky": 1, "POST /reset": 1}
    for method in ("POST", "PATCH"):
        with pytest.raises(ValueError, match="never retried"):
            http.request(method, f"{server}/flaky", timeout=5, idempotent=True)


def test_put_and_delete_are_retried_when_the_caller_says_they_are_idempotent(server: str) -> None:
    client = http.Client(server, timeout=5, retry=FAST)
    for method in ("PUT", "DELETE"):
        _Handler.failures = 1
        assert client.request(method, "/flaky", data=b"same").status == 503
        _Handler.failures = 1
        answer = client.request(method, "/flaky", data=b"same", idempotent=True)
        assert (answer.status, answer.attempts) == (200, 2)
    assert _Handler.hits == {"PUT /flaky": 3, "DELETE /flaky": 3}


def test_no_retry_when_asked_for_none_or_after_a_sink_took_part_of_the_body(server: str) -> None:
    _Handler.failures = 1
    assert http.request("GET", f"{server}/flaky", timeout=5, retry=None).status == 503
    got: list[bytes] = []
    with pytest.raises(http.HttpError) as caught:
        http.Client(server, timeout=5, retry=FAST).request("GET", "/halfblob", sink=got.append)
    assert caught.value.error == "IncompleteRead"  # not taken for the whole body
    assert got  # a block went to the sink before the connection broke: repeating would append twice
    assert _Handler.hits == {"GET /flaky": 1, "GET /halfblob": 1}


def test_a_refused_connection_or_a_timeout_is_not_retried(server: str) -> None:
    with pytest.raises(http.HttpError) as caught:
        http.request("GET", f"{server}/slow", timeout=0.2, retry=FAST)
    assert caught.value.error == "TimeoutError"
    assert _Handler.lines.count("GET /slow HTTP/1.1") == 1
    assert http.Retry().attempts == 3
    assert 0.1 <= http.Retry().wait(1) <= 0.2
    assert 0.5 <= http.Retry().wait(5) <= 1.0
