"""Artifacts on S3 (SeaweedFS) and Azure Blob (Azurite): served, backed up, restored, verified."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from conftest import run_cli
from fixtures import *  # noqa: F403
from helpers import populate
from mlflow_ci.mlflowio.tracking import TrackingServer
from mlflow_ci.serverops.artifact_stores import store_for
from mlflow_ci.serverops.backup import BackupRepo
from services import AzureService, S3Service

pytestmark = pytest.mark.service


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_store_contract_on_s3(s3_service: S3Service, tmp_path: Path) -> None:
    bucket = s3_service.bucket("mlflowci")
    store = store_for(f"s3://{bucket}/{_name('contract')}", s3_service.env)
    store.probe()
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc" * 1000)
    store.put(src, "a/b/f.bin")
    store.put_bytes(b"pointer", "latest")
    listed = {o.key: o.size for o in store.list()}
    assert listed == {"a/b/f.bin": 3000, "latest": 7}
    assert [o.key for o in store.list("a/")] == ["a/b/f.bin"]
    assert store.get_bytes("latest") == b"pointer"
    assert store.get_bytes("missing") is None
    store.get("a/b/f.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    store.delete("a/b/f.bin")
    assert [o.key for o in store.list()] == ["latest"]


def test_unreachable_s3_is_an_infrastructure_error(tmp_path: Path) -> None:
    done = run_cli("backup", "--backend-store-uri", f"sqlite:///{tmp_path / 'x.db'}", "--artifacts-destination",
                   "s3://nowhere/art", "--to", str(tmp_path / "bk"),
                   env={"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
                        "AWS_SECRET_ACCESS_KEY": "y"})  # fmt: skip
    # The configuration is valid; the store does not answer: an infrastructure error, found by
    # the probe before anything is written.
    assert done.returncode == 3, done.stderr
    assert "S3 bucket 'nowhere' at endpoint http://127.0.0.1:9 could not be used" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bk").exists()


def test_s3_artifacts_backup_to_s3_and_restore(s3_service: S3Service, tmp_path: Path) -> None:
    # One bucket, three prefixes: SeaweedFS gives every bucket volumes of its own.
    bucket = s3_service.bucket("mlflowci")
    db, env, case = f"sqlite:///{tmp_path / 'src.db'}", s3_service.env, _name("case")
    src_art, repo, dst_art = (f"s3://{bucket}/{case}/{p}" for p in ("mlartifacts", "backups", "restored"))
    with TrackingServer(
        tmp_path / "src", backend_store_uri=db, artifacts_destination=src_art, env=env
    ) as server:
        info = populate(server.url, runs=3)
    # The artifacts really are in the bucket, under the run's experiment/run prefix.
    keys = [o.key for o in store_for(src_art, env).list()]
    assert any(info["run_ids"][0] in k for k in keys)

    args = ["backup", "--backend-store-uri", db, "--artifacts-destination", src_art, "--to", repo, "--json"]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["objects_copied"] == 3
    # Unchanged objects (same key, size, ETag) are neither re-read nor copied again.
    assert json.loads(second.stdout)["objects_copied"] == 0
    assert BackupRepo.open(repo, env).manifest()["stats"]["reused_checksums"] == 3

    done = run_cli("restore", "--from", repo, "--backend-store-uri", f"sqlite:///{tmp_path / 'dst.db'}",
                   "--artifacts-destination", dst_art, "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["verdict"] == "pass"
    proxy = next(c for c in report["checks"] if c["name"].startswith("run artifacts through"))
    assert "3 runs listed" in proxy["found"]
    assert sorted(o.key for o in store_for(dst_art, env).list()) == sorted(keys)


def test_azure_blob_artifacts_backup_and_restore(azure_service: AzureService, tmp_path: Path) -> None:
    env = azure_service.env
    src_art = azure_service.container(_name("src")) + "/mlartifacts"
    dst_art = azure_service.container(_name("dst")) + "/restored"
    db = f"sqlite:///{tmp_path / 'src.db'}"
    with TrackingServer(
        tmp_path / "src", backend_store_uri=db, artifacts_destination=src_art, env=env
    ) as server:
        populate(server.url, runs=2)
    keys = sorted(o.key for o in store_for(src_art, env).list())
    assert len(keys) == 2
    done = run_cli("backup", "--backend-store-uri", db, "--artifacts-destination", src_art,
                   "--to", str(tmp_path / "bk"), "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", f"sqlite:///{tmp_path / 'd.db'}",
                   "--artifacts-destination", dst_art, "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout)["verdict"] == "pass"
    assert sorted(o.key for o in store_for(dst_art, env).list()) == keys
