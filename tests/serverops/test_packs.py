"""Packs of small objects in a backup repository: which locations later backups reuse, and what
prune keeps (hand-built repositories: the logic, not the copy; the round trips are in serverops)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow_ci.core.errors import InfraError
from mlflow_ci.serverops import restore
from mlflow_ci.serverops.artifact_stores import LocalStore
from mlflow_ci.serverops.backup import FORMAT, BackupRepo, object_key, pack_key, prune


def _write_pack(root: Path, name: str, contents: list[bytes]) -> list[dict[str, Any]]:
    """A pack file of ``contents`` and their manifest entries (key ``f<i>``)."""
    (root / "packs").mkdir(parents=True, exist_ok=True)
    entries, offset = [], 0
    for i, data in enumerate(contents):
        entries.append({"key": f"1/r/artifacts/{name}-f{i}", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), "pack": name, "offset": offset})  # fmt: skip
        offset += len(data)
    (root / pack_key(name)).write_bytes(b"".join(contents))
    return entries


def _write_loose(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    (root / object_key(sha)).parent.mkdir(parents=True, exist_ok=True)
    (root / object_key(sha)).write_bytes(data)
    return {"key": f"1/r/artifacts/big-{sha[:6]}", "size": len(data), "sha256": sha}


def _publish(root: Path, backup_id: str, objects: list[dict[str, Any]]) -> None:
    folder = root / "backups" / backup_id
    folder.mkdir(parents=True)
    manifest = {"format": FORMAT, "id": backup_id, "artifacts": {"objects": objects}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_pack_the_newest_backup_mostly_dropped_is_not_reused_and_goes_when_unnamed(tmp_path: Path) -> None:
    root = tmp_path / "bk"
    keep_me, drop_me = b"k" * 100, b"d" * 300
    a = _write_pack(root, "A-000", [keep_me, drop_me])
    big = _write_loose(root, b"L" * 1000)
    _publish(root, "A", [*a, big])
    repo = BackupRepo.open(str(root))
    trusted = repo.trusted_locations()
    assert trusted[a[0]["sha256"]] == {"pack": "A-000", "offset": 0}
    assert trusted[a[1]["sha256"]] == {"pack": "A-000", "offset": 100}
    assert trusted[big["sha256"]] == {}

    # B names 100 of A-000's 400 bytes: below half, so its objects are not reused (they are
    # packed again by the next backup); the loose object still is.
    _publish(root, "B", [a[0], big])
    trusted = repo.trusted_locations()
    assert a[0]["sha256"] not in trusted
    assert a[1]["sha256"] not in trusted
    assert trusted[big["sha256"]] == {}

    # Pruning A: B still names A-000, which is kept whole; drop_me is released.
    assert prune(repo, keep=1) == {"backups_removed": ["A"], "objects_removed": 0, "packs_removed": 0,
                                   "objects_released": 1}  # fmt: skip
    assert (root / pack_key("A-000")).is_file()
    # C packed keep_me again and dropped the loose object: pruning B removes A-000 and the object.
    c = _write_pack(root, "C-000", [keep_me])
    _publish(root, "C", c)
    assert prune(repo, keep=1) == {"backups_removed": ["B"], "objects_removed": 1, "packs_removed": 1,
                                   "objects_released": 1}  # fmt: skip
    assert set(repo.pack_sizes()) == {"C-000"}
    assert repo.object_shas() == set()


def test_prune_with_nothing_to_delete_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "bk"
    _publish(root, "A", _write_pack(root, "A-000", [b"x" * 10]))
    stray = _write_loose(root, b"left by a killed backup")
    repo = BackupRepo.open(str(root))
    assert prune(repo, keep=3)["backups_removed"] == []
    assert (root / object_key(stray["sha256"])).is_file()  # goes with the next sweep
    _publish(root, "B", [])
    prune(repo, keep=1)
    assert not (root / object_key(stray["sha256"])).exists()


def test_packed_objects_are_restored_checked_and_a_damaged_or_missing_pack_is_named(tmp_path: Path) -> None:
    root = tmp_path / "bk"
    contents = [f"object {i}\n".encode() * (i + 1) for i in range(6)]
    entries = [*_write_pack(root, "P-000", contents), _write_loose(root, b"L" * 5000)]
    manifest = {"artifacts": {"objects": entries}}
    repo = BackupRepo.open(str(root))
    stop = threading.Event()
    packs = restore._pack_files(repo, manifest, contextlib.ExitStack())
    target = LocalStore(str(tmp_path / "dst"))
    assert restore._restore_artifacts(repo, entries, target, local=True, stop=stop, packs=packs) == 7
    for entry, data in zip(entries, contents, strict=False):
        assert (tmp_path / "dst" / entry["key"]).read_bytes() == data

    # One flipped byte in the pack: the object it belongs to is named as damaged.
    blob = bytearray((root / pack_key("P-000")).read_bytes())
    blob[entries[3]["offset"]] ^= 0xFF
    (root / pack_key("P-000")).write_bytes(bytes(blob))
    with pytest.raises(InfraError, match=r"P-000-f3 is damaged"):
        restore._restore_artifacts(repo, entries, LocalStore(str(tmp_path / "dst2")), local=True, stop=stop,
                                   packs=packs)  # fmt: skip
    (root / pack_key("P-000")).unlink()
    with pytest.raises(InfraError, match=r"pack P-000 is missing"):
        restore._pack_files(repo, manifest, contextlib.ExitStack())
