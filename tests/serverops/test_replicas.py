"""Replicas: three stateless `mlflow server` processes on one PostgreSQL database and one S3
bucket, behind a real nginx running the generated configuration. Eight clients (threads, each
with its own MlflowClient, through nginx, with mlflow-ci's client settings) log runs, params,
metrics, tags and artifacts while one replica is killed with SIGKILL and started again. Every
write a client saw succeed must then read back through nginx; the calls that failed are counted
and printed, not asserted away (the goal is none, and the docs quote the measurement).

Bounded: each client logs at most MAX_RUNS runs of CALLS_PER_RUN calls; every wait has a
deadline; every process started here is stopped, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from fixtures import *  # noqa: F403 - the s3_service fixture
from mlflow_ci.config import Server
from mlflow_ci.mlflowio.tracking import TrackingServer, client_settings, free_port
from mlflow_ci.serverops.config_files import render_nginx
from mlflow_ci.serverops.profile import server_env, up_kwargs
from services import S3Service, nginx

pytestmark = pytest.mark.service

REPLICAS = 3
CLIENTS = 8
MAX_RUNS = 40  # per client: at most 40 x CALLS_PER_RUN calls each, whatever the timing
CALLS_PER_RUN = 8
PAUSE_S = 0.25  # between a client's runs: leaves the two cores room for the restart
KILL_AFTER_CALLS = 80  # traffic before the kill
DOWN_CALLS = 40  # traffic while the killed replica is down, before it is started again
BACK_REQUESTS = 10  # requests the restarted replica must serve before the clients stop
DEADLINE_S = 240.0  # for each phase to be reached


@dataclass
class Ledger:
    """What the clients did: calls made, writes acknowledged, calls failed (thread-safe)."""

    calls: int = 0
    acked: list[tuple[Any, ...]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.progress = threading.Condition(self.lock)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """``fn(*args, **kwargs)``: whether it returned without an error, and what it returned."""
        name = fn.__name__
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # any failure a client would see
            with self.lock:
                self.calls += 1
                self.failed.append(
                    (name, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
                )
                self.progress.notify_all()
            return False, None
        with self.lock:
            self.calls += 1
            self.progress.notify_all()
        return True, result

    def ack(self, *write: Any) -> None:
        with self.lock:
            self.acked.append(write)

    def wait_calls(self, count: int, what: str) -> None:
        with self.lock:
            if not self.progress.wait_for(lambda: self.calls >= count, timeout=DEADLINE_S):
                pytest.fail(f"{what}: only {self.calls} of {count} client calls within {DEADLINE_S:.0f}s")


def client_loop(
    index: int, url: str, experiment_id: str, ledger: Ledger, stop: threading.Event, folder: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(MAX_RUNS):
        if stop.is_set():
            return
        ok, run = ledger.call(client.create_run, experiment_id, run_name=f"c{index}-r{i}")
        if not ok:
            continue
        run_id = run.info.run_id
        ledger.ack("run", run_id)
        value = f"{index}-{i}"
        if ledger.call(client.log_param, run_id, "client", value)[0]:
            ledger.ack("param", run_id, "client", value)
        for step in range(2):
            metric = index * 1000 + i + step / 10
            if ledger.call(client.log_metric, run_id, "loss", metric, step=step)[0]:
                ledger.ack("metric", run_id, "loss", step, metric)
        if ledger.call(client.set_tag, run_id, "phase", value)[0]:
            ledger.ack("tag", run_id, "phase", value)
        artifact = folder / f"note-{i}.txt"
        content = f"client {index} run {i} {uuid.uuid4().hex}\n" * 50
        artifact.write_text(content)
        if ledger.call(client.log_artifact, run_id, str(artifact))[0]:
            ledger.ack("artifact", run_id, artifact.name, content)
        ledger.call(client.get_run, run_id)  # a read, through whichever replica
        if ledger.call(client.set_terminated, run_id, "FINISHED")[0]:
            ledger.ack("status", run_id, "FINISHED")
        time.sleep(PAUSE_S)


def served_since(replica: TrackingServer, offset: int) -> int:
    """Requests the replica logged (uvicorn's access lines) after ``offset`` bytes of its log."""
    with replica.log_path.open("rb") as fh:
        fh.seek(offset)
        return sum(1 for line in fh if b'HTTP/1.1" ' in line)


def missing_writes(url: str, acked: list[tuple[Any, ...]], downloads: Path) -> list[tuple[Any, ...]]:
    """The acknowledged writes that do not read back through ``url``."""
    from mlflow import MlflowClient

    by_run: dict[str, list[tuple[Any, ...]]] = {}
    for write in acked:
        by_run.setdefault(write[1], []).append(write)

    def check(run_id: str) -> list[tuple[Any, ...]]:
        client = MlflowClient(tracking_uri=url)
        run = client.get_run(run_id)
        history = {(m.step, m.value) for m in client.get_metric_history(run_id, "loss")}
        lost = []
        for write in by_run[run_id]:
            kind = write[0]
            if kind == "param":
                present = run.data.params.get(write[2]) == write[3]
            elif kind == "metric":
                present = (write[3], write[4]) in history
            elif kind == "tag":
                present = run.data.tags.get(write[2]) == write[3]
            elif kind == "artifact":
                target = downloads / run_id
                target.mkdir(parents=True, exist_ok=True)
                present = (
                    Path(client.download_artifacts(run_id, write[2], str(target))).read_text() == write[3]
                )
            elif kind == "status":
                present = run.info.status == write[2]
            else:
                present = run.info.run_id == run_id
            if not present:
                lost.append(write)
        return lost

    with ThreadPoolExecutor(4) as pool:
        return [write for lost in pool.map(check, sorted(by_run)) for write in lost]


@contextlib.contextmanager
def replicas(
    profile: Server, ports: list[int], workdir: Path, env: dict[str, str]
) -> Iterator[list[TrackingServer]]:
    """The profile's servers, one per port: the first alone (it creates the tables of the empty
    database), then the others together. All stopped at the end, killed or not."""
    servers = [
        TrackingServer(workdir / f"replica-{i}", **{**up_kwargs(profile, port=port), "env": env})
        for i, port in enumerate(ports)
    ]
    try:
        servers[0].start()
        with ThreadPoolExecutor(len(servers) - 1) as pool:
            list(pool.map(TrackingServer.start, servers[1:]))
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_a_replica_killed_and_restarted_under_load_loses_no_acknowledged_write(
    tmp_path: Path, postgres_uri: str, s3_service: S3Service, capsys: pytest.CaptureFixture[str]
) -> None:
    require(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(), "nginx is not installed")
    bucket = s3_service.bucket("replicas")
    ports = [free_port() for _ in range(REPLICAS)]
    proxy_port = free_port()
    profile = Server(
        backend_store_uri=postgres_uri,
        artifacts_destination=f"s3://{bucket}/{uuid.uuid4().hex[:8]}",
        s3_endpoint_url=s3_service.endpoint,
        replicas=REPLICAS,
        workers=1,
        proxy_auth="none",
        allowed_hosts=[f"127.0.0.1:{port}" for port in ports],
        health_timeout_s=120,
    )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = render_nginx(profile, tls=False, listen=f"127.0.0.1:{proxy_port}", standalone_prefix=prefix,
                        upstreams=[f"127.0.0.1:{port}" for port in ports],
                        user="root" if os.geteuid() == 0 else None)  # fmt: skip
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in conf
    env = {**s3_service.env, **server_env(profile, base=s3_service.env)}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"

    with (
        replicas(profile, ports, tmp_path, env) as servers,
        nginx(prefix, conf, proxy_port, tls=False) as proxy,
    ):
        assert proxy is not None
        from mlflow import MlflowClient

        with client_settings(proxy.url):
            experiment_id = MlflowClient(tracking_uri=proxy.url).create_experiment("replicas")
            ledger, stop = Ledger(), threading.Event()
            clients = [
                threading.Thread(target=client_loop, args=(i, proxy.url, experiment_id, ledger, stop, tmp_path / f"c{i}"),
                                 name=f"client-{i}", daemon=True)
                for i in range(CLIENTS)
            ]  # fmt: skip
            began = time.monotonic()
            for thread in clients:
                thread.start()
            try:
                # Kill one replica, whole process group (the server and its uvicorn worker), mid-traffic.
                ledger.wait_calls(KILL_AFTER_CALLS, "before the kill")
                victim = servers[1]
                assert victim._proc is not None
                killed = victim._proc
                os.killpg(killed.pid, signal.SIGKILL)
                killed.wait(timeout=30)
                victim._proc = None
                calls_at_kill, killed_at = ledger.calls, time.monotonic()
                ledger.wait_calls(calls_at_kill + DOWN_CALLS, "while the replica was down")
                offset = victim.log_path.stat().st_size
                restarting = time.monotonic()
                victim.start()  # the same port, as systemd's Restart= or compose's restart: would
                calls_at_restart, restarted = ledger.calls, time.monotonic()
                deadline = time.monotonic() + DEADLINE_S
                while served_since(victim, offset) < BACK_REQUESTS and any(t.is_alive() for t in clients):
                    assert time.monotonic() < deadline, "the restarted replica got no traffic back"
                    time.sleep(0.2)
                back = served_since(victim, offset)
            finally:
                stop.set()
                for thread in clients:
                    thread.join(timeout=120)
                ended = time.monotonic()
            assert not any(thread.is_alive() for thread in clients)

            lost = missing_writes(proxy.url, ledger.acked, tmp_path / "downloads")
            runs_acked = {write[1] for write in ledger.acked if write[0] == "run"}
            runs_found = {
                run.info.run_id
                for run in MlflowClient(tracking_uri=proxy.url).search_runs([experiment_id], max_results=5000)
            }

        errors = (prefix / "error.log").read_text(errors="replace")
        passed_on = errors.count("while connecting to upstream") + errors.count(
            "while reading response header"
        )
        answered_502 = sum(1 for line in (prefix / "access.log").read_text().splitlines() if '" 502 ' in line)
        failed_by_call = Counter(name for name, _ in ledger.failed)
        report = (
            f"\nreplicas: {ledger.calls} client calls by {CLIENTS} clients through nginx to {REPLICAS} replicas, one "
            f"SIGKILLed after {calls_at_kill} calls ({killed_at - began:.1f}s), started again after "
            f"{restarting - began:.1f}s and healthy after {calls_at_restart} calls ({restarted - began:.1f}s); it "
            f"served {back} requests before the clients stopped ({ended - began:.1f}s of traffic); FAILED CALLS: {len(ledger.failed)} {dict(failed_by_call)}; "
            f"acknowledged writes: {len(ledger.acked)}, lost: {len(lost)}; runs created twice by a retried POST: "
            f"{len(runs_found - runs_acked)}; nginx: {passed_on} upstream errors logged, {answered_502} answers of 502 "
            f"to clients (retried by MLflow's client)\n"
        )
        for name, error in ledger.failed[:10]:
            report += f"  failed {name}: {error}\n"
        with capsys.disabled():
            print(report)

    assert not lost, f"acknowledged writes missing after the restart: {lost[:10]}{report}"
    assert runs_acked <= runs_found
    assert len(ledger.acked) > KILL_AFTER_CALLS
