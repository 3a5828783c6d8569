"""A short, bounded load test: at most N requests, at most C in flight, at most T seconds, loopback only.

Each of the C workers keeps one HTTP/1.1 connection alive (``http.client``, the layer ``urllib``
uses, without its per-request overhead) and takes the next request number until N are sent or
the deadline passes.  A request still running at the deadline is bounded by its own timeout,
which never extends past the deadline by more than ``timeout``.  Latency is measured on the
client, from sending the request to having read the whole answer.
"""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlflow_ci.core.errors import ConfigError


@dataclass(frozen=True)
class LoadResult:
    requested: int
    concurrency: int
    max_seconds: float
    sent: int
    ok: int
    wall_seconds: float
    stopped_by_time: bool
    statuses: dict[str, int]
    latencies_ms: list[float] = field(repr=False)
    first_error: str = ""

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 1.0

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of successful requests' latency (numpy's default,
        linear interpolation between the closest ranks)."""
        if not self.latencies_ms:
            return None
        import numpy as np

        return float(np.percentile(self.latencies_ms, q))

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("latencies_ms")
        out.update(
            {
                "errors": self.errors,
                "error_rate": round(self.error_rate, 4),
                "throughput_rps": round(self.throughput_rps, 2),
                **{f"p{q}_ms": _round(self.percentile(q)) for q in (50, 95, 99)},
                "max_ms": _round(max(self.latencies_ms) if self.latencies_ms else None),
            }
        )
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def is_loopback(url: str) -> bool:
    """True when every address the URL's host resolves to is a loopback address."""
    host = urlsplit(url).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _connect(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle off, so small requests are not held for delayed ACKs."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        conn.close()  # the request below reconnects and reports the error as a failed request
    return conn


def run_load(
    url: str,
    body: bytes,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    timeout: float = 30.0,
    method: str = "POST",
    content_type: str = "application/json",
) -> LoadResult:
    """Send ``body`` to ``url`` up to ``requests`` times with ``concurrency`` workers, for at most
    ``max_seconds``. Refuses anything but a loopback address: this is a check, not a load tool."""
    if not is_loopback(url):
        raise ConfigError(f"The load test only targets loopback addresses; {url} is not one.")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ConfigError(f"The load test speaks plain HTTP to loopback; got {url}.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    first_error: list[str] = []
    sent = [0]
    start = time.perf_counter()
    deadline = start + max_seconds
    stopped_by_time = threading.Event()
    headers = {"Content-Type": content_type, "Connection": "keep-alive"}

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while True:
                with lock:
                    if next(counter) >= requests:
                        return
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    stopped_by_time.set()
                    return
                if conn is None:
                    conn = _connect(host, port, timeout)
                t0 = time.perf_counter()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    status, ok = str(resp.status), resp.status == 200
                    if resp.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as exc:
                    status, ok = type(exc).__name__, False
                    if conn is not None:
                        conn.close()
                    conn = None
                elapsed_ms = (time.perf_counter() - t0) * 1000
                with lock:
                    sent[0] += 1
                    statuses[status] += 1
                    if ok:
                        latencies.append(elapsed_ms)
                    elif not first_error:
                        first_error.append(status)
        finally:
            if conn is not None:
                conn.close()

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mlflow-ci-load") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    return LoadResult(
        requested=requests,
        concurrency=concurrency,
        max_seconds=max_seconds,
        sent=sent[0],
        ok=len(latencies),
        wall_seconds=round(wall, 3),
        stopped_by_time=stopped_by_time.is_set() and sent[0] < requests,
        statuses=dict(statuses),
        latencies_ms=latencies,
        first_error=first_error[0] if first_error else "",
    )
