"""mlflow-ci's one HTTP client, on the standard library's ``http.client`` (no HTTP library to install).

- :func:`request`: one request on a connection of its own, GET and HEAD redirects followed as
  ``urllib`` follows them (an ``Authorization`` header is not carried to another origin);
- :class:`Client`: requests to one server over one kept-alive connection per thread, opened
  again once when the server has closed it between two requests (the restore's read-back).

Every request has a timeout (per socket operation, as in ``urllib``). The answer is a
:class:`Response` whatever its status (status, headers and body; :meth:`Response.json`); a
request that gets no answer (a URL that is not http(s), a refused, reset or timed-out
connection, or one broken while the answer is read) raises :class:`HttpError`, which each
caller turns into its own message. Proxies set in the environment (``https_proxy``,
``no_proxy``, ...) are used as ``urllib`` uses them, unless a client is made with
``env_proxies=False``.

Requests that can be repeated are retried (:class:`Retry`, :data:`DEFAULT_RETRY`: 3 tries, 0.2 s
then 0.4 s apart, less than a second in all): GET, HEAD and OPTIONS always, PUT and DELETE when
the caller says they are idempotent (``idempotent=True``), POST and PATCH never. They are
retried on what a replica that dies or restarts behind a proxy causes: a connection reset or
closed before the whole answer arrived, and 502, 503 and 504 (the last answer is returned when
the tries are spent). Not on a refused connection (nothing listens: the callers that wait for
a server poll on their own) nor on a timeout (the caller's whole timeout is already spent), and
not once part of a body has been handed to a ``sink``.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit

from mlflow_ci import __version__

USER_AGENT = f"mlflow-ci/{__version__}"
BLOCK = 1 << 20  # bytes handed to a sink at a time
MAX_REDIRECTS = 10  # as urllib
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS = frozenset({"content-length", "content-type"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # retried whoever asks
IDEMPOTENT_METHODS = frozenset({"PUT", "DELETE"})  # retried when the caller says its request is idempotent


@dataclass(frozen=True)
class Retry:
    """How a request that can be repeated is retried: ``attempts`` tries in all (the first
    included), waiting ``backoff`` seconds before the second, twice as long before each next (at
    most ``max_backoff``; each wait drawn between half and all of that, so that clients that failed
    together do not come back together), on connection resets and the ``statuses``."""

    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 1.0
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def wait(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th try (1-based) failed."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)  # jitter, not a secret


DEFAULT_RETRY = Retry()


def _retryable_failure(exc: BaseException) -> bool:
    """A connection that broke (reset, closed before or while the answer came); not one that was
    refused (nothing listens) nor one that timed out."""
    if isinstance(exc, ConnectionRefusedError | TimeoutError):
        return False
    return isinstance(exc, ConnectionError | http.client.HTTPException)


class HttpError(Exception):
    """No usable answer: the URL is not http(s), or the connection failed, timed out or broke."""

    def __init__(self, method: str, url: str, reason: str, *, error: str = "HttpError") -> None:
        super().__init__(f"{method} {url}: {reason}" if method else f"{url}: {reason}")
        self.method = method
        self.url = url
        self.reason = reason  # e.g. "[Errno 111] Connection refused", "timed out"
        self.error = error  # the name of the underlying error, e.g. "ConnectionRefusedError"


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    reason: str
    headers: http.client.HTTPMessage  # case-insensitive: headers.get("link")
    body: bytes  # empty when a sink took it
    seconds: float  # from sending the request (its first try) to the end of the body
    attempts: int = 1  # tries it took (see Retry)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``ValueError`` when it is not JSON."""
        return jsonlib.loads(self.body)


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    headers: dict[str, str]


def _env_proxy(scheme: str, netloc: str) -> _Proxy | None:
    """The proxy the environment names for ``scheme`` unless ``no_proxy`` exempts ``netloc``."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import base64
    import urllib.request  # only with a proxy variable set: the import is not small

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass_environment(netloc, proxies):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    headers = {}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return _Proxy(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), headers)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class Client:
    """Requests to the server at ``base_url`` (scheme, host, port and a path prefix for relative
    targets), ``headers`` sent with each. ``keep_alive``: one connection per thread, kept between
    requests; otherwise a connection per request, closed after it. ``retry``: how requests that
    can be repeated are retried (``None``: never)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        keep_alive: bool = True,
        env_proxies: bool = True,
        retry: Retry | None = DEFAULT_RETRY,
    ) -> None:
        parts = urlsplit(base_url)
        try:
            port = parts.port
        except ValueError:
            raise HttpError("", base_url, "the port is not a number") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError("", base_url, "not an http(s) URL")
        self.url = base_url
        self.timeout = timeout
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._host, self._port = parts.hostname, port or (443 if parts.scheme == "https" else 80)
        self._base = parts.path.rstrip("/")
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if not keep_alive:
            self._headers.setdefault("Connection", "close")
        self._keep_alive = keep_alive
        self.retry = retry
        self._proxy = _env_proxy(parts.scheme, parts.netloc) if env_proxies else None
        self._local = threading.local()

    def _path(self, target: str, params: Any) -> str:
        """The request's path and query: ``target`` relative to the base path, or an absolute URL
        on this client's origin."""
        if "://" in target:
            if _origin(target) != (self._scheme, self._netloc):
                raise ValueError(f"{target} is not on {self._scheme}://{self._netloc}")
            parts = urlsplit(target)
            path, query = parts.path, parts.query
        else:
            path, _, query = target.partition("?")
            path = self._base + path
        if params:
            query = f"{query}&{urlencode(params, doseq=True)}" if query else urlencode(params, doseq=True)
        return (path or "/") + (f"?{query}" if query else "")

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        proxy = self._proxy
        host, port = (proxy.host, proxy.port) if proxy else (self._host, self._port)
        if self._scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout)
            if proxy:
                conn.set_tunnel(self._host, self._port, headers=proxy.headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        return conn

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it has served a request before."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(timeout)
            if self._keep_alive:
                self._local.conn = conn
            return conn, False
        if conn.timeout != timeout:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        return conn, True

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's kept-alive connection (opened again by the next request)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    def request(
        self,
        method: str,
        target: str = "",
        *,
        params: Any = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        sink: Callable[[bytes], Any] | None = None,
        idempotent: bool = False,
    ) -> Response:
        """``method`` on ``target`` with the query ``params`` (a mapping or pairs; lists repeat the
        key) and ``json`` (sent as JSON) or ``data`` as the body.

        ``sink``: the body of a 200 answer is handed to it a block at a time instead of kept (a
        download); any other answer's body is kept. A kept-alive connection that fails before an
        answer arrives (the server closed it meanwhile) is opened again once. GET, HEAD and
        OPTIONS, and PUT and DELETE with ``idempotent=True``, are retried as :attr:`retry` says
        (see the module's documentation); ``idempotent=True`` on POST or PATCH is a ``ValueError``.
        """
        method = method.upper()
        if idempotent and method not in IDEMPOTENT_METHODS | SAFE_METHODS:
            raise ValueError(f"{method} is never retried: only GET, HEAD, OPTIONS, PUT and DELETE can be")
        retry = self.retry if (method in SAFE_METHODS or idempotent) else None
        sunk = False  # part of a body went to the sink: the request cannot be repeated

        def counted(block: bytes) -> None:
            nonlocal sunk
            sunk = True
            assert sink is not None
            sink(block)

        start = time.perf_counter()
        attempt = 1
        while True:
            try:
                response = self._send(method, target, params=params, json=json, data=data, headers=headers,
                                      timeout=timeout, sink=counted if sink is not None else None)  # fmt: skip
            except HttpError as exc:
                if (
                    retry is None
                    or attempt >= retry.attempts
                    or sunk
                    or not _retryable_failure(exc.__cause__ or exc)
                ):
                    raise
            else:
                if retry is None or attempt >= retry.attempts or response.status not in retry.statuses:
                    return Response(response.url, response.status, response.reason, response.headers,
                                    response.body, time.perf_counter() - start, attempt)  # fmt: skip
            time.sleep(retry.wait(attempt))
            attempt += 1

    def _send(
        self,
        method: str,
        target: str,
        *,
        params: Any,
        json: Any,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        sink: Callable[[bytes], Any] | None,
    ) -> Response:
        """One try of :meth:`request`."""
        path = self._path(target, params)
        url = f"{self._scheme}://{self._netloc}{path}"
        sent = {**self._headers, **(headers or {})}
        if json is not None:
            data = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        wire = path
        if self._proxy is not None and self._scheme == "http":
            wire = url  # a plain-HTTP proxy is sent the whole URL
            sent.update(self._proxy.headers)
        timeout = self.timeout if timeout is None else timeout
        start = time.perf_counter()
        while True:
            conn, reused = self._connection(timeout)
            try:
                conn.request(method, wire, body=data, headers=sent)
                answer = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                if not reused:
                    raise HttpError(
                        method, url, str(exc) or type(exc).__name__, error=type(exc).__name__
                    ) from exc
        try:
            if sink is not None and answer.status == 200:
                while block := answer.read(BLOCK):
                    sink(block)
                if answer.length:  # the connection ended before the Content-Length did
                    raise http.client.IncompleteRead(b"", answer.length)
                body = b""
            else:
                body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)
            raise HttpError(method, url, str(exc) or type(exc).__name__, error=type(exc).__name__) from exc
        except BaseException:
            self._drop(conn)  # the answer is half read: the connection cannot serve another
            raise
        if not self._keep_alive:
            conn.close()
        return Response(url, answer.status, answer.reason, answer.headers, body, time.perf_counter() - start)


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    params: Any = None,
    json: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    redirects: int = MAX_REDIRECTS,
    retry: Retry | None = DEFAULT_RETRY,
    idempotent: bool = False,
) -> Response:
    """One request to ``url`` on a connection of its own (see :meth:`Client.request`, also for
    ``retry`` and ``idempotent``).

    A GET or HEAD answered with a redirect is sent again where it points, at most ``redirects``
    times (then the redirect is the answer), without the ``Authorization`` and ``Cookie`` headers
    once it leaves the origin it was sent to. Other methods get the redirect as their answer.
    """
    sent = dict(headers or {})
    hops = 0
    while True:
        response = Client(url, timeout=timeout, keep_alive=False, retry=retry).request(
            method, url, params=params, json=json, data=data, headers=sent, idempotent=idempotent
        )
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or method not in ("GET", "HEAD") or not location:
            return response
        if hops >= redirects:
            return response
        hops += 1
        target = urljoin(response.url, location)
        if _origin(target) != _origin(url):
            sent = {k: v for k, v in sent.items() if k.lower() not in _SECRET_HEADERS}
        sent = {k: v for k, v in sent.items() if k.lower() not in _BODY_HEADERS}
        url, params, json, data = target, None, None, None
