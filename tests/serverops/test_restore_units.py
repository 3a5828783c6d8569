"""Unit tests of the restore's own logic (no service): what is copied first, and when it stops."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from mlflow_ci.serverops import restore
from mlflow_ci.serverops.artifact_stores import LocalStore, _make_folders
from mlflow_ci.serverops.backup import BackupRepo, object_key


def _manifest(keys: list[str], sample_prefixes: list[str]) -> dict:
    runs = [{"run_id": p.split("/")[1], "artifact_uri": f"mlflow-artifacts:/{p}"} for p in sample_prefixes]
    runs.append({"run_id": "elsewhere", "artifact_uri": "s3://other-bucket/1/elsewhere/artifacts"})
    return {"backend": {"sample": {"runs": runs}},
            "artifacts": {"objects": [{"key": k, "sha256": f"{i:064x}", "size": 1} for i, k in enumerate(keys)]}}  # fmt: skip


def test_the_sampled_runs_objects_come_first_in_the_stores_order() -> None:
    keys = [
        "1/aa/artifacts/x",
        "1/ab/artifacts/y",
        "1/aab/artifacts/z",
        "1/aa/artifacts/sub/w",
        "2/cc/artifacts/v",
    ]
    first, rest = restore._sample_objects_first(_manifest(keys, ["1/aa/artifacts", "2/cc/artifacts"]))
    assert [o["key"] for o in first] == ["1/aa/artifacts/x", "1/aa/artifacts/sub/w", "2/cc/artifacts/v"]
    # A run whose id merely starts like a sampled one ("aab" after "aa") is not in the sample.
    assert [o["key"] for o in rest] == ["1/ab/artifacts/y", "1/aab/artifacts/z"]
    # No sampled run on the proxied store: everything is "rest", nothing lost.
    first, rest = restore._sample_objects_first(_manifest(keys, []))
    assert first == []
    assert [o["key"] for o in rest] == keys


def _repo_with(tmp_path: Path, contents: list[bytes]) -> tuple[BackupRepo, list[dict]]:
    repo = BackupRepo.open(str(tmp_path / "bk"))
    objects = []
    for i, data in enumerate(contents):
        sha = hashlib.sha256(data).hexdigest()
        path = tmp_path / "bk" / object_key(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        objects.append({"key": f"1/run{i}/artifacts/f.txt", "sha256": sha, "size": len(data)})
    return repo, objects


def test_the_copy_writes_and_checks_each_object_and_stops_once_told(tmp_path: Path) -> None:
    repo, objects = _repo_with(tmp_path, [f"object {i}\n".encode() for i in range(5)])
    target = LocalStore(str(tmp_path / "dst"))
    stop = threading.Event()
    assert restore._restore_artifacts(repo, objects, target, local=True, stop=stop) == 5
    assert sorted(o.key for o in target.list()) == sorted(o["key"] for o in objects)
    assert (tmp_path / "dst" / "1/run3/artifacts/f.txt").read_bytes() == b"object 3\n"

    stop.set()  # the database side failed: nothing more is written
    with pytest.raises(restore._Stopped):
        restore._restore_artifacts(repo, objects, LocalStore(str(tmp_path / "dst2")), local=True, stop=stop)
    assert not (tmp_path / "dst2").exists()


def test_make_folders_creates_every_missing_level_and_tolerates_existing_ones(tmp_path: Path) -> None:
    made: set[str] = set()
    deep = str(tmp_path / "a" / "b" / "c")
    _make_folders(deep, made)
    assert os.path.isdir(deep)
    assert deep in made
    assert str(tmp_path / "a") in made
    # Two new levels under a known folder; one level that exists already but is not known.
    (tmp_path / "a" / "x").mkdir()
    _make_folders(str(tmp_path / "a" / "x" / "y"), made)
    _make_folders(str(tmp_path / "a" / "r" / "s"), made)
    assert (tmp_path / "a" / "x" / "y").is_dir()
    assert (tmp_path / "a" / "r" / "s").is_dir()


def test_the_backup_reads_mlflows_version_without_importing_it() -> None:
    """The manifest's MLflow version comes from the package metadata (a backup must not pay for
    importing MLflow) and is the version a server started from this environment runs."""
    import subprocess
    import sys

    code = ("import sys; from mlflow_ci.serverops.backup import _mlflow_version; v = _mlflow_version(); "
            "print(v, 'mlflow' in sys.modules)")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    import mlflow

    assert out == [mlflow.__version__, "False"]


def _objects(sizes: dict[str, int]) -> dict:
    return {"artifacts": {"objects": [{"key": k, "size": n, "sha256": "0" * 64} for k, n in sizes.items()]}}


def test_a_local_target_is_checked_by_name_and_size(tmp_path: Path) -> None:
    want = {"1/a/artifacts/x.txt": 3, "1/a/artifacts/sub/y.bin": 5, "2/b/artifacts/z": 0}
    root = tmp_path / "dst"
    for key, size in want.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x" * size)
    target = LocalStore(str(root))
    ok = restore.verify_artifacts(_objects(want), target)
    assert ok.verdict == "pass", ok
    assert ok.found == "3 objects, 8 bytes"
    # A file shorter than the manifest says, one missing, and a folder where a file should be.
    (root / "1/a/artifacts/x.txt").write_bytes(b"xy")
    (root / "2/b/artifacts/z").unlink()
    (root / "2/b/artifacts/z").mkdir()
    (root / "1/a/artifacts/sub/y.bin").unlink()
    bad = restore.verify_artifacts(_objects(want), target)
    assert bad.verdict == "fail"
    assert "missing ['1/a/artifacts/sub/y.bin', '2/b/artifacts/z']" in bad.found
    assert "size differs ['1/a/artifacts/x.txt']" in bad.found


def test_a_listed_target_also_reports_objects_the_manifest_does_not_name(tmp_path: Path) -> None:
    class Listed:  # an object store's listing, as S3 or Azure give it
        def __init__(self, found: dict[str, int]) -> None:
            self.found = found

        def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
            from mlflow_ci.serverops.artifact_stores import ObjectInfo

            return iter([ObjectInfo(k, n, "") for k, n in self.found.items()])

    want = {"1/a/artifacts/x.txt": 3}
    assert restore.verify_artifacts(_objects(want), Listed(want)).verdict == "pass"  # type: ignore[arg-type]
    extra = restore.verify_artifacts(_objects(want), Listed({**want, "1/a/artifacts/stray": 1}))  # type: ignore[arg-type]
    assert extra.verdict == "fail"
    assert "unexpected ['1/a/artifacts/stray']" in extra.found
