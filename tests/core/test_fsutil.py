"""Atomic writes: a failed write leaves the old file and no temporary beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow_ci.core.fsutil import atomic_write_text, atomic_writer
from mlflow_ci.serverops.artifact_stores import LocalStore


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_replaces_the_file_only_when_it_completes(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_text(target, "old\n")

    def interrupted_write() -> None:
        with atomic_writer(target, durable=durable) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        interrupted_write()
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
    with atomic_writer(target, durable=durable) as fh:
        fh.write(b"new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_the_local_store_keeps_an_object_when_its_source_is_missing(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"))
    store.put_bytes(b"v1", "a/latest")
    with pytest.raises(FileNotFoundError):
        store.put(tmp_path / "does-not-exist", "a/latest")
    assert store.get_bytes("a/latest") == b"v1"
    assert [o.key for o in store.list()] == ["a/latest"]  # no temporary left behind, none listed
    src = tmp_path / "payload"
    src.write_bytes(b"v2")
    store.put(src, "a/latest")
    assert store.get_bytes("a/latest") == b"v2"
