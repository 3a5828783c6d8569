"""Serving: the load test's latency percentiles, the check's own client-side overhead, and the image
build cold against cached — each against a baseline measured in the same run.

1. Load test (``mlflow_ci.serving.loadtest.run_load``, N requests at concurrency C) against a small sklearn
   model served by ``mlflow models serve`` (the ``local`` target), and the same generator against a
   trivial loopback HTTP server that answers at once: the baseline is the client's own cost, so
   ``model p50 / baseline p50`` says how much of a measured latency is the model server's.
   Also the generator against a plain ``urllib`` loop without keep-alive (what a naive check does).
2. Image build (engine needed, else skipped): MLflow's Dockerfile built with the layer cache, then
   with ``nocache=True`` under a throwaway tag (removed afterwards; the cached image's tags are
   kept, so podman's cache survives). Cold needs the package index and takes minutes;
   ``BENCH_DEPLOY_COLD=0`` skips it.
3. Start to ``/ping``: the local target against a container of the image.

Environment: ``BENCH_DEPLOY_REQUESTS`` (300), ``BENCH_DEPLOY_CONCURRENCY`` (4), ``BENCH_DEPLOY_COLD`` (1).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlflow_ci.config import Deploy, DockerTarget
from mlflow_ci.mlflowio.modelref import describe, resolve
from mlflow_ci.serving.loadtest import LoadResult, run_load
from mlflow_ci.serving.servecheck import example_payload, wait_ready
from mlflow_ci.serving.targets import DockerContainer, LocalServe

REQUESTS = int(os.environ.get("BENCH_DEPLOY_REQUESTS", "300"))
CONCURRENCY = int(os.environ.get("BENCH_DEPLOY_CONCURRENCY", "4"))
COLD = os.environ.get("BENCH_DEPLOY_COLD", "1") != "0"


def _save_model(folder: Path) -> Path:
    import mlflow.sklearn
    import sklearn
    import skops
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = folder / "model"
    mlflow.sklearn.save_model(
        model, str(path), input_example=x.head(3),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
    )  # fmt: skip
    return path


class _Trivial(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b'{"predictions": [0, 0, 0]}'

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # One write: headers and body in separate small packets would meet the client's delayed
        # ACK (Nagle) and measure 40 ms of TCP instead of the client.
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + self.body)

    def log_message(self, *args: object) -> None:
        return


def _naive(url: str, body: bytes, n: int) -> float:
    """Median ms of a urllib loop (one connection per request), one at a time."""
    times = []
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


def _row(name: str, r: LoadResult) -> str:
    s = r.summary()
    return (f"  {name:<28} p50 {s['p50_ms']:>7.2f} ms  p95 {s['p95_ms']:>7.2f} ms  p99 {s['p99_ms']:>7.2f} ms  "
            f"{s['throughput_rps']:>8.1f} req/s  errors {s['errors']}")  # fmt: skip


def bench_load(model_path: Path, work: Path) -> dict[str, Any]:
    local = describe(model_path)
    body = json.dumps(example_payload(local)).encode()
    settings = Deploy()
    target = LocalServe()
    ref = resolve(str(model_path), tracking_uri=None)
    t0 = time.monotonic()
    deployment = target.start(ref, local, settings=settings, workdir=work / "serve", name="bench")
    try:
        ready, _, why = wait_ready(deployment.url, timeout=120, alive=lambda: target.alive(deployment))
        if not ready:
            raise SystemExit(f"the model server did not start: {why}\n{target.logs(deployment)}")
        start_local = time.monotonic() - t0
        url = f"{deployment.url}/invocations"
        run_load(url, body, requests=20, concurrency=CONCURRENCY, max_seconds=30)  # warm up
        model = run_load(url, body, requests=REQUESTS, concurrency=CONCURRENCY, max_seconds=120)
        naive_model = _naive(url, body, 50)
    finally:
        target.stop(deployment)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trivial)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        trivial_url = f"http://127.0.0.1:{server.server_address[1]}/invocations"
        run_load(trivial_url, body, requests=20, concurrency=CONCURRENCY, max_seconds=30)
        trivial = run_load(trivial_url, body, requests=REQUESTS, concurrency=CONCURRENCY, max_seconds=120)
        trivial_single = run_load(trivial_url, body, requests=REQUESTS, concurrency=1, max_seconds=120)
        naive_trivial = _naive(trivial_url, body, 200)
    finally:
        server.shutdown()
        server.server_close()
    print(f"\nload test: {REQUESTS} requests, concurrency {CONCURRENCY}")
    print(_row("model (mlflow models serve)", model))
    print(_row("baseline: trivial server", trivial))
    print(_row("trivial server, C=1", trivial_single))
    m50, b50, s50 = model.percentile(50), trivial.percentile(50), trivial_single.percentile(50)
    assert None not in (m50, b50, s50)
    print(
        f"  client overhead (trivial server p50): {b50:.2f} ms = {b50 / m50:.1%} of the model's p50 {m50:.2f} ms"
    )
    print(f"  keep-alive generator vs naive urllib, one request at a time on the trivial server: "
          f"{s50:.2f} ms vs {naive_trivial:.2f} ms (ratio {naive_trivial / s50:.1f}x)")  # fmt: skip
    print(f"  model server, naive urllib one at a time: p50 {naive_model:.2f} ms")
    return {
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "model": model.summary(),
        "baseline_trivial": trivial.summary(),
        "baseline_trivial_c1": trivial_single.summary(),
        "naive_urllib_trivial_p50_ms": round(naive_trivial, 3),
        "naive_urllib_model_p50_ms": round(naive_model, 3),
        "client_overhead_share_of_model_p50": round(b50 / m50, 4),
        "local_start_to_ping_s": round(start_local, 2),
    }


def bench_build(model_path: Path, work: Path) -> dict[str, Any]:
    from mlflow_ci.serving.engine import EngineUnavailable, engine_client
    from mlflow_ci.serving.images import build, cache_tag, generate_context, remove_tags

    try:
        client = engine_client(timeout=1800)
    except EngineUnavailable as err:
        print(f"\nimage build: skipped ({err})")
        return {"skipped": str(err)}
    local = describe(model_path)
    ctx = work / "context"
    base = generate_context(local, ctx)
    run = uuid.uuid4().hex[:8]
    cached_tag, cold_tag = f"mlflow-ci-bench/deploy:cached-{run}", f"mlflow-ci-bench/deploy:cold-{run}"
    out: dict[str, Any] = {"base_image": base}
    try:
        # First build of this context: the apt and `pip install mlflow` layers from the cache, the
        # model's own layers new; the second is the same context again (every layer cached).
        image_id, first, steps, cached = build(client, ctx, tag=cached_tag, labels={})
        name, tag = cache_tag(base, local.mlflow_version).split(":", 1)
        client.api.tag(image_id, name, tag, force=True)
        _, again, _, cached_again = build(client, ctx, tag=cached_tag, labels={})
        out.update({"new_model_s": round(first, 1), "new_model_cached_steps": f"{cached}/{steps}",
                    "unchanged_s": round(again, 1), "unchanged_cached_steps": f"{cached_again}/{steps}"})  # fmt: skip
        deployment = DockerContainer().run_image(cached_tag, settings=Deploy(docker=DockerTarget(workers=1)),
                                                 name=f"mlflow-ci-bench-{run}", client=client)  # fmt: skip
        t0 = time.monotonic()
        try:
            ready, _, why = wait_ready(deployment.url, timeout=180)
            out["container_start_to_ping_s"] = round(time.monotonic() - t0, 2) if ready else why
        finally:
            DockerContainer().stop(deployment)
        if COLD:
            print(
                "\nimage build without cache (minutes: apt, pip install mlflow from the index) ...",
                flush=True,
            )
            _, cold, _, _ = build(client, ctx, tag=cold_tag, labels={}, nocache=True)
            out["cold_s"] = round(cold, 1)
    finally:
        # The cold chain goes with its throwaway tag; the cached image keeps the cache tag.
        remove_tags(client, [cold_tag, cached_tag])
    print("\nimage build (MLflow's Dockerfile through the Docker API):")
    print(
        f"  new model on cached base layers: {out['new_model_s']:>7.1f} s ({out['new_model_cached_steps']} cached)"
    )
    print(
        f"  unchanged context:               {out['unchanged_s']:>7.1f} s ({out['unchanged_cached_steps']} cached)"
    )
    if "cold_s" in out:
        print(f"  cold (nocache=True):             {out['cold_s']:>7.1f} s")
        print(f"  cold / cached (new model): {out['cold_s'] / out['new_model_s']:.1f}x")
    print(f"  container start to /ping: {out.get('container_start_to_ping_s')} s")
    return out


def main() -> dict[str, Any]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = Path(tmp)
        model_path = _save_model(work)
        results = {"load": bench_load(model_path, work), "build": bench_build(model_path, work)}
    load = results["load"]
    print(f"\nlocal target start to /ping: {load['local_start_to_ping_s']} s")
    return results
