"""The serving image, for real (podman's Docker API, see docs/container-engine.md): ONE image build
of a small registered sklearn model, shared by every test here (cold ~100-270 s, cached 15-40 s).

It is labelled with its lineage, answers /invocations exactly as the model loaded in-process and
400 to malformed input, survives a push to the loopback registry and a pull back with the same
digest, and deploys with the ``docker`` target. Tags made here are removed afterwards; the
``mlflow-ci-build-cache`` tag stays so the next session's build finds its layers.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import port_open, require, run_cli
from deployflow import register_and_promote, write_policy
from mlflow_ci.config import load_policy
from mlflow_ci.mlflowio.modelref import resolve
from mlflow_ci.mlflowio.registry import Connection
from mlflow_ci.mlflowio.tracking import TrackingServer
from mlflow_ci.serving.images import BuiltImage, build_image, normalize, remove_tags
from mlflow_ci.serving.servecheck import VERDICT_TAG
from modelfactory import log_run

pytestmark = pytest.mark.engine

REGISTRY = "localhost:5000"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Served:
    url: str
    model: str
    policy: Path
    built: BuiltImage
    client: Any


def _engine() -> Any:
    from mlflow_ci.serving.engine import EngineUnavailable, engine_client

    try:
        return engine_client()
    except EngineUnavailable as err:
        require(False, f"no container engine: {err}")


@pytest.fixture(scope="session")
def served(tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    client = _engine()
    require(port_open("127.0.0.1", 5000), f"no image registry on {REGISTRY} (.ci/setup-engine.sh starts one)")
    require(
        _has_image(client, "python:3.11.7-slim"), "no python:3.11.7-slim base image (.ci/setup-engine.sh)"
    )
    folder = tmp_path_factory.mktemp("image")
    url, model = tracking_server.url, f"img-{uuid.uuid4().hex[:8]}"
    policy = write_policy(folder, model)
    run_id = log_run(url, quality="good", tags={"mlflow.source.git.commit": COMMIT})
    assert register_and_promote(url, policy, run_id, to=("challenger", "champion")) == [0, 0, 0]
    settings = load_policy(policy).policy.deploy.image
    with tempfile.TemporaryDirectory() as tmp:
        built = build_image(resolve(f"models:/{model}/1", tracking_uri=url), settings=settings, client=client,
                            workdir=Path(tmp))  # fmt: skip
    try:
        yield Served(url, model, policy, built, client)
    finally:
        names = [t for i in client.images.list() for t in i.tags if f"mlflow-ci-test/{model}" in t]
        remove_tags(client, [*built.tags, *names])


def _has_image(client: Any, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _containers_of(client: Any, image: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"io.mlflow-ci.image={image}"})


def test_image_is_tagged_and_labelled_with_its_lineage(served: Served) -> None:
    built, model = served.built, served.model
    assert built.tags == (f"mlflow-ci-test/{model}:v1", f"mlflow-ci-test/{model}:git-{COMMIT[:12]}")
    image = served.client.images.get(built.image_id)
    assert {normalize(t) for t in built.tags} <= set(image.tags)
    assert normalize(built.cache_tag) in image.tags  # the spare tag that keeps the layer cache
    labels = image.labels
    mv = Connection(served.url).client.get_model_version(model, "1")
    assert labels["io.mlflow-ci.model.uri"] == f"models:/{model}/1"
    assert labels["io.mlflow-ci.model.name"] == model
    assert labels["io.mlflow-ci.model.version"] == "1"
    assert labels["io.mlflow-ci.run-id"] == mv.run_id
    assert labels["io.mlflow-ci.model.id"] == mv.source.removeprefix("models:/")
    assert labels["io.mlflow-ci.mlflow-version"] == "3.17.2"
    assert labels["io.mlflow-ci.git-commit"] == COMMIT
    assert labels["org.opencontainers.image.revision"] == COMMIT
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["org.opencontainers.image.base.name"] == built.base_image == "python:3.11.7-slim"


def test_image_answers_like_the_model_in_process(served: Served, tmp_path: Path) -> None:
    image = served.built.ref
    r = run_cli("serve-check", image, "--policy", str(served.policy), "--tracking-uri", served.url,
                "--report-dir", str(tmp_path), "--json")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["image lineage"] == "pass"
    assert verdicts["input example"] == "pass"
    assert next(v for n, v in verdicts.items() if n.startswith("batch (40 rows")) == "pass"
    assert verdicts["malformed JSON"] == verdicts["missing column 'petal width (cm)'"] == "pass"
    assert report["data"]["kind"] == "image"
    assert report["data"]["image_labels"]["io.mlflow-ci.mlflow-version"] == "3.17.2"
    assert report["data"]["load"]["ok"] == 30
    assert Connection(served.url).client.get_model_version(served.model, "1").tags[VERDICT_TAG] == "pass"
    # It removed the container it started, and only that: the image is still there.
    assert _containers_of(served.client, image) == []
    assert served.client.images.get(image).id == served.built.image_id


def test_image_of_another_model_fails_its_lineage(served: Served, tmp_path: Path) -> None:
    other = log_run(served.url, quality="fair")
    r = run_cli("serve-check", served.built.ref, "--model", f"runs:/{other}/model", "--requests", "5",
                "--policy", str(served.policy), "--tracking-uri", served.url, "--report-dir", str(tmp_path),
                "--json", "--no-record")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["image lineage"]["verdict"] == "fail"
    assert checks["image lineage"]["found"].startswith(f"models:/{served.model}/1")
    assert _containers_of(served.client, served.built.ref) == []


def test_push_to_the_registry_and_pull_back_the_same_digest(served: Served) -> None:
    r = run_cli("build-image", f"models:/{served.model}@champion", "--push", "--registry", REGISTRY,
                "--policy", str(served.policy), "--tracking-uri", served.url, "--json")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    repo = f"{REGISTRY}/mlflow-ci-test/{served.model}"
    assert out["tags"] == [f"{repo}:v1", f"{repo}:git-{COMMIT[:12]}"]
    assert out["labels"]["io.mlflow-ci.model.uri"] == f"models:/{served.model}/1"
    assert out["labels"]["io.mlflow-ci.model.requested-uri"] == f"models:/{served.model}@champion"
    digest = out["digest"]
    assert digest.startswith("sha256:")
    head = urllib.request.Request(
        f"http://{REGISTRY}/v2/mlflow-ci-test/{served.model}/manifests/v1",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"},
    )  # fmt: skip
    with urllib.request.urlopen(head, timeout=5) as resp:
        assert resp.headers["Docker-Content-Digest"] == digest
    client = served.client
    built_id = client.images.get(f"{repo}:v1").id
    remove_tags(client, out["tags"])  # the image stays: its local tags still name it
    pulled = client.images.pull(repo, tag="v1")
    assert pulled.id == built_id
    assert f"{repo}@{digest}" in pulled.attrs["RepoDigests"]


def test_deploy_to_the_docker_target(served: Served, tmp_path: Path) -> None:
    r = run_cli("deploy", served.model, "--target", "docker", "--stop", "--policy", str(served.policy),
                "--tracking-uri", served.url, "--report-dir", str(tmp_path), "--json")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["v1: start on docker"] == "pass"
    assert verdicts["v1: input example"] == "pass"
    assert report["data"]["version"] == "1"
    assert (
        served.client.containers.list(all=True, filters={"name": f"mlflow-ci-{served.model}-champion"}) == []
    )
