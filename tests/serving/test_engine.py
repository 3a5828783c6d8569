"""The engine helper (unit) and the engine that .ci/setup-engine.sh sets up (integration)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from conftest import require
from mlflow_ci.core.errors import EXIT_INFRA
from mlflow_ci.serving.engine import DEFAULT_DOCKER_HOST, EngineUnavailable, engine_client, engine_url

REGISTRY = "127.0.0.1:5000"


def test_engine_url_prefers_docker_host() -> None:
    assert engine_url({"DOCKER_HOST": "tcp://10.0.0.1:2375"}) == "tcp://10.0.0.1:2375"
    assert engine_url({}) == DEFAULT_DOCKER_HOST
    assert engine_url({"DOCKER_HOST": ""}) == DEFAULT_DOCKER_HOST


def test_missing_socket_is_a_clear_infra_error(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(EngineUnavailable) as info:
        engine_client({"DOCKER_HOST": url})
    err = info.value
    assert err.exit_code == EXIT_INFRA
    assert url in str(err)
    assert "setup-engine.sh" in str(err)


@pytest.mark.timeout(60)  # a hang fails here instead of holding the suite for pytest's default
def test_silent_engine_gives_up_after_its_ping_timeout(tmp_path: Path) -> None:
    """A socket that accepts and never answers must not hang the caller: it gives up with the
    ping timeout in its message (how fast is a benchmark's business, not a test's)."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with pytest.raises(EngineUnavailable, match=r"within 0\.5 s"):
            engine_client({"DOCKER_HOST": f"unix://{path}"}, ping_timeout=0.5)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


# --- the real engine ------------------------------------------------------------------------


def _engine_or_skip():
    try:
        return engine_client()
    except EngineUnavailable as err:
        require(False, f"no container engine: {err}")


@pytest.mark.engine
def test_base_image_runs_with_the_ca_bundle_and_a_published_port() -> None:
    client = _engine_or_skip()
    image = client.images.get("python:3.11.7-slim")
    assert image.id == client.images.get("python:3.11-slim").id
    script = (
        "import json, os, ssl, sys, sysconfig;"
        "print(json.dumps({'py': sys.version.split()[0], 'cert': os.environ.get('PIP_CERT'),"
        " 'exists': os.path.exists(os.environ.get('PIP_CERT', '')),"
        " 'managed': os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))}))"
    )
    out = json.loads(client.containers.run(image.id, ["python", "-c", script], remove=True))
    assert out["py"].startswith("3.11.")
    assert out["exists"] is True
    assert out["managed"] is False

    ct = client.containers.run(
        image.id,
        ["python", "-m", "http.server", "8000"],
        detach=True,
        ports={"8000/tcp": ("127.0.0.1", None)},
    )
    try:
        ct.reload()
        port = ct.ports["8000/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        ct.remove(force=True)


@pytest.mark.engine
def test_push_to_the_loopback_registry_and_pull_back() -> None:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=3) as resp:
            assert resp.status == 200
    except OSError as err:
        require(False, f"no registry on {REGISTRY}: {err}")
    client = _engine_or_skip()
    image = client.images.get("python:3.11.7-slim")
    repo, tag = "localhost:5000/mlflow-ci-test/python", uuid.uuid4().hex[:12]
    image.tag(repo, tag)
    try:
        events = list(client.api.push(repo, tag=tag, stream=True, decode=True))
        assert not [e for e in events if "error" in e], events
        head = urllib.request.Request(
            f"http://{REGISTRY}/v2/mlflow-ci-test/python/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                               "application/vnd.oci.image.manifest.v1+json"},
        )  # fmt: skip
        with urllib.request.urlopen(head, timeout=5) as resp:
            digest = resp.headers["Docker-Content-Digest"]
        assert any(digest in e.get("status", "") for e in events), events  # podman reports it so
        client.images.remove(f"{repo}:{tag}")
        pulled = client.images.pull(repo, tag=tag)
        assert pulled.id == image.id
        assert f"{repo}@{digest}" in pulled.attrs["RepoDigests"]
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(f"{repo}:{tag}")
