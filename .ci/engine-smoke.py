"""End-to-end check of the container engine that .ci/setup-engine.sh sets up, through the Docker SDK.

Trains a tiny sklearn model, lets MLflow generate its serving Dockerfile (unmodified), builds it,
runs it with a published port, calls /ping and /invocations, pushes it to the loopback registry,
pulls it back and compares digests.  Prints timings; ``--json FILE`` also writes them.

    DOCKER_HOST=unix:///run/mlflow-ci/podman.sock python .ci/engine-smoke.py \
        [--rebuild] [--cold-pull] [--keep] [--json FILE]

Needs mlflow==3.17.2, scikit-learn, pandas, skops and docker in the running Python, and the
registries (the image build pip-installs mlflow): minutes cold, under a minute warm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import mlflow.sklearn
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

SOCKET_URL = "unix:///run/mlflow-ci/podman.sock"
REGISTRY = os.environ.get("MLFLOW_CI_REGISTRY", "localhost:5000")
TAG = "mlflow-ci-smoke:latest"


def step(msg: str) -> None:
    print(f"[engine-smoke] {msg}", flush=True)


def train_and_save(model_dir: Path) -> None:
    x, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    mlflow.sklearn.save_model(model, str(model_dir), input_example=pd.DataFrame(x.iloc[:2]))


def generate_dockerfile(model_dir: Path, out_dir: Path) -> str:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "generate-dockerfile",
            "-m",
            str(model_dir),
            "-d",
            str(out_dir),
            "--env-manager",
            "local",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    return (out_dir / "Dockerfile").read_text()


def build(client: docker.DockerClient, path: Path, tag: str, nocache: bool) -> float:
    t0 = time.monotonic()
    last = []
    for chunk in client.api.build(path=str(path), tag=tag, rm=True, nocache=nocache, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"build failed: {chunk['error']}\n" + "".join(last[-30:]))
        text = chunk.get("stream", "")
        if text:
            last.append(text)
            if text.startswith("STEP") or text.startswith("Step"):
                step("  " + text.strip()[:120])
    return time.monotonic() - t0


def http(url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return resp.status, resp.read().decode()


def serve_and_call(client: docker.DockerClient, tag: str) -> dict:
    t0 = time.monotonic()
    ct = client.containers.run(tag, detach=True, ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        ct.reload()
        port = ct.ports["8080/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if http(base + "/ping", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            ct.reload()
            if ct.status not in ("running", "created"):
                raise RuntimeError(f"container exited: {ct.logs().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"/ping never answered: {ct.logs().decode()[-2000:]}")
            time.sleep(0.25)
        to_ping = time.monotonic() - t0
        cols = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
        payload = {"dataframe_split": {"columns": cols, "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}
        status, text = http(base + "/invocations", payload)
        assert status == 200, (status, text)
        preds = json.loads(text)["predictions"]
        assert preds == [0, 2], preds
        try:
            http(base + "/invocations", {"dataframe_split": {"columns": cols[:2], "data": [[1.0, 2.0]]}})
            bad = None
        except urllib.error.HTTPError as err:
            bad = err.code
        return {"start_to_ping_s": round(to_ping, 1), "predictions": preds, "missing_column_status": bad}
    finally:
        ct.remove(force=True)


def push_pull(client: docker.DockerClient, tag: str, *, cold_pull: bool) -> dict:
    remote = f"{REGISTRY}/mlflow-ci-smoke"
    image = client.images.get(tag)
    image.tag(remote, "v1")
    t0 = time.monotonic()
    pushed_digest = None
    for ev in client.api.push(remote, tag="v1", stream=True, decode=True):
        if "error" in ev:
            raise RuntimeError(f"push failed: {ev['error']}")
        # Docker reports the digest in "aux"; podman only in a status line.
        aux = ev.get("aux") or {}
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", ev.get("status", ""))
        pushed_digest = aux.get("Digest") or (found.group(1) if found else pushed_digest)
    push_s = time.monotonic() - t0
    # The registry's own answer is the reference digest.
    req = urllib.request.Request(
        f"http://{REGISTRY.replace('localhost', '127.0.0.1')}/v2/mlflow-ci-smoke/manifests/v1",
        method="HEAD",
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        },
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        registry_digest = resp.headers["Docker-Content-Digest"]
    if cold_pull:
        # Drop every local name: the image is deleted and the pull transfers its layers.  On
        # podman this also deletes the untagged parents, i.e. the build cache (noprune is
        # ignored by its Docker API), so the next build starts cold.
        client.images.remove(f"{remote}:v1")
        client.images.remove(tag)
    else:
        # A spare name keeps the image, its parents and so the build cache: the pull fetches
        # manifest and config and finds the layers local.
        image.tag(tag.split(":", 1)[0], "smoke-keep")
        client.images.remove(f"{remote}:v1")
        client.images.remove(tag)
    t0 = time.monotonic()
    pulled = client.images.pull(remote, tag="v1")
    pull_s = time.monotonic() - t0
    pulled.tag(*tag.split(":", 1))
    if not cold_pull:
        client.images.remove(tag.split(":", 1)[0] + ":smoke-keep")
    # Podman lists one RepoDigest per name and known manifest digest (the local build's own
    # manifest has another digest than the one pushed), so look for the registry's among them.
    repo_digests = [
        d.split("@", 1)[1] for d in pulled.attrs.get("RepoDigests", []) if d.startswith(remote + "@")
    ]
    same_image = pulled.id == image.id
    result = {
        "push_s": round(push_s, 1),
        "pull_s": round(pull_s, 1),
        "push_reported_digest": pushed_digest,
        "registry_digest": registry_digest,
        "pulled_repo_digests": repo_digests,
        "pulled_image_id_equals_built": same_image,
    }
    assert registry_digest in repo_digests, result
    assert same_image, result
    if pushed_digest:
        assert pushed_digest == registry_digest, result
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild", action="store_true", help="build with nocache first (cold timing)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--cold-pull", action="store_true", help="delete the image before pulling (drops the build cache)"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    base_url = os.environ.get("DOCKER_HOST", SOCKET_URL)
    client = docker.DockerClient(base_url=base_url, timeout=600)
    client.ping()
    timings: dict = {"docker_host": base_url}
    work = Path(tempfile.mkdtemp(prefix="mlflow-ci-smoke-"))
    try:
        t0 = time.monotonic()
        train_and_save(work / "model")
        timings["train_save_s"] = round(time.monotonic() - t0, 1)
        dockerfile = generate_dockerfile(work / "model", work / "ctx")
        base = dockerfile.split("FROM ", 1)[1].split()[0]
        timings["dockerfile_base"] = base
        step(f"Dockerfile FROM {base}")

        if args.rebuild:
            step("build (no cache)")
            timings["build_nocache_s"] = round(build(client, work / "ctx", TAG, nocache=True), 1)
        step("build")
        # A new model over an earlier one: the apt and `pip install mlflow` layers come from
        # the cache, the model's own layers (COPY, dependency install) are rebuilt.
        timings["build_s"] = round(build(client, work / "ctx", TAG, nocache=False), 1)
        step("rebuild, same context")
        timings["rebuild_same_context_s"] = round(build(client, work / "ctx", TAG, nocache=False), 1)
        timings["image_size_mb"] = round(client.images.get(TAG).attrs["Size"] / 1e6)
        step("serve")
        timings.update(serve_and_call(client, TAG))
        step("push / pull")
        timings.update(push_pull(client, TAG, cold_pull=args.cold_pull))
    finally:
        if args.keep:
            step(f"work folder kept: {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        print(json.dumps(timings, indent=2))
        if args.json:
            args.json.write_text(json.dumps(timings, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
