"""The backup repository's lock on object stores (SeaweedFS for S3, Azurite for Azure Blob):
conditional writes keep a backup and a prune apart, a lock whose holder died expires and is
taken over by exactly one process, and a holder that works past the term keeps it by renewing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_cli
from fixtures import *  # noqa: F403
from mlflow_ci.core.errors import InfraError
from mlflow_ci.serverops.backup import LOCK_KEY, BackupRepo, prune
from services import AzureService, S3Service

pytestmark = pytest.mark.service


def _on_store(kind: str, request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """An empty repository prefix on a real object store, and the environment that reaches it."""
    case = f"lock-{uuid.uuid4().hex[:10]}"
    if kind == "s3":
        s3: S3Service = request.getfixturevalue("s3_service")
        return f"s3://{s3.bucket('mlflowci')}/{case}", s3.env
    azure: AzureService = request.getfixturevalue("azure_service")
    return azure.container(case) + "/repo", azure.env


@pytest.fixture(params=["s3", "azure"])
def repo_uri(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    return _on_store(request.param, request)


@pytest.fixture(params=["local", "s3", "azure"])
def any_repo_uri(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A repository in a local folder (``flock``) or on either object store."""
    if request.param == "local":
        return str(tmp_path / "repo"), {}
    return _on_store(request.param, request)


def _lock_body(repo: BackupRepo) -> dict:
    raw = repo.store.get_bytes(LOCK_KEY)
    assert raw is not None
    return json.loads(raw)


def test_a_held_lock_refuses_a_second_taker_by_name(repo_uri: tuple[str, dict[str, str]]) -> None:
    uri, env = repo_uri
    first, second = BackupRepo.open(uri, env), BackupRepo.open(uri, env)
    with first.lock("mlflow-ci backup FIRST", env):
        body = _lock_body(first)
        assert (body["holder"], body["pid"]) == ("mlflow-ci backup FIRST", os.getpid())
        assert body["expires"] > body["created"]
        with (
            pytest.raises(
                InfraError, match=r"mlflow-ci backup FIRST \(pid \d+ on .+, since .+\) holds its lock"
            ),
            second.lock("mlflow-ci backup SECOND", env),
        ):
            pytest.fail("two holders at once")
        # A prune (which takes the lock itself) is refused the same way and deletes nothing.
        with pytest.raises(InfraError, match="mlflow-ci backup FIRST"):
            prune(second, keep=1)
    assert first.store.get_bytes(LOCK_KEY) is None, "released: the lock object is gone"
    with second.lock("mlflow-ci backup SECOND", env):
        assert _lock_body(second)["holder"] == "mlflow-ci backup SECOND"


def test_an_expired_lock_is_taken_over_by_exactly_one(repo_uri: tuple[str, dict[str, str]]) -> None:
    uri, env = repo_uri
    dead = {"holder": "mlflow-ci backup DEAD", "host": "gone", "pid": 1, "created": "2026-01-01T00:00:00+00:00",
            "expires": "2026-01-01T00:05:00+00:00"}  # fmt: skip
    BackupRepo.open(uri, env).store.put_bytes(json.dumps(dead).encode(), LOCK_KEY)
    takers = 6
    start, done = threading.Barrier(takers), threading.Event()
    won: list[int] = []
    refused: list[str] = []

    def take(i: int) -> None:
        repo = BackupRepo.open(uri, env)
        start.wait()
        try:
            with repo.lock(f"taker {i}", env):
                won.append(i)
                done.wait(60)
        except InfraError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(takers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(won) + len(refused) < takers and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    for t in threads:
        t.join(60)
    assert len(won) == 1, (won, refused)
    assert len(refused) == takers - 1
    assert all(f"taker {won[0]} (pid {os.getpid()}" in message for message in refused), refused


def test_a_holder_working_past_the_term_keeps_the_lock_by_renewing(
    repo_uri: tuple[str, dict[str, str]],
) -> None:
    uri, env = repo_uri
    env = {**env, "MLFLOW_CI_LOCK_TTL": "1.5"}
    repo = BackupRepo.open(uri, env)
    with repo.lock("mlflow-ci backup SLOW", env) as held:
        first = _lock_body(repo)
        time.sleep(4)  # over two terms: only renewals keep it
        renewed = _lock_body(repo)
        assert renewed["expires"] > first["expires"]
        assert renewed["token"] == first["token"]
        rival = BackupRepo.open(uri, env)
        with (
            pytest.raises(InfraError, match="mlflow-ci backup SLOW"),
            rival.lock("mlflow-ci backup RIVAL", env),
        ):
            pytest.fail("the lock was taken from a live holder")
        held.check()


def test_a_lock_taken_from_its_holder_stops_it_before_publishing(
    repo_uri: tuple[str, dict[str, str]],
) -> None:
    uri, env = repo_uri
    env = {**env, "MLFLOW_CI_LOCK_TTL": "1.5"}
    repo = BackupRepo.open(uri, env)
    with repo.lock("mlflow-ci backup STALLED", env) as held:
        # What a successor that found it expired does (here without waiting for the expiry).
        repo.store.put_bytes(json.dumps({"holder": "mlflow-ci backup NEXT", "expires": "2999-01-01T00:00:00+00:00"})
                             .encode(), LOCK_KEY)  # fmt: skip
        time.sleep(1.5)  # past the next renewal (every 0.5 s)
        with pytest.raises(InfraError, match="lost the lock"):
            held.check()
    assert _lock_body(repo)["holder"] == "mlflow-ci backup NEXT", "the successor's lock is left alone"


# ----------------------------------------------------------------------------------------------
# Two real `mlflow-ci backup` processes on one repository


def _source(tmp_path: Path) -> tuple[str, Path]:
    db, art = tmp_path / "src.db", tmp_path / "art"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(20)])
    conn.close()
    (art / "0" / "run").mkdir(parents=True)
    for i in range(3):
        (art / "0" / "run" / f"f{i}.txt").write_text(f"artifact {i}\n")
    return f"sqlite:///{db}", art


def _backup(db: str, art: Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_ci", "backup", "--backend-store-uri", db, "--artifacts-destination",
            str(art), "--to", uri, "--json"]  # fmt: skip


def _paused(args: list[str], env: dict[str, str], faults: Path) -> tuple[subprocess.Popen[str], int]:
    """A backup that stops right after taking the lock, and its pid once it is there."""
    faults.mkdir(exist_ok=True)
    child = subprocess.Popen(args, env={**os.environ, **env, "MLFLOW_CI_FAULT_POINT": "backup_locked",
                                        "MLFLOW_CI_FAULT_DIR": str(faults)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reached = list(faults.glob("backup_locked.*.reached"))
        if reached:
            return child, int(reached[0].name.split(".")[1])
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    pytest.fail("the backup never reached its lock")


def _verifies(uri: str, env: dict[str, str], tmp_path: Path, backups: int) -> None:
    repo = BackupRepo.open(uri, env)
    assert len(repo.backup_ids()) == backups
    if repo.local_root is None:
        assert repo.store.get_bytes(LOCK_KEY) is None, "released: the lock object is gone"
    name = uuid.uuid4().hex[:8]
    done = run_cli("restore", "--from", uri, "--backend-store-uri", f"sqlite:///{tmp_path / f'{name}.db'}",
                   "--artifacts-destination", str(tmp_path / name), "--no-server-check", "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout)["verdict"] == "pass"


def test_concurrent_backups_one_refused_naming_the_holder_one_waiting(
    any_repo_uri: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, env = any_repo_uri
    db, art = _source(tmp_path)
    holder, pid = _paused(_backup(db, art, uri), env, tmp_path / "faults")
    try:
        refused = run_cli(*_backup(db, art, uri)[3:], env=env)
        assert refused.returncode == 3, refused.stderr
        assert f"(pid {pid} on " in refused.stderr
        assert "holds its lock" in refused.stderr
        # Told to wait, a second backup waits for the first and then runs.
        waiter = subprocess.Popen(_backup(db, art, uri), env={**os.environ, **env, "MLFLOW_CI_LOCK_WAIT": "120"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(2)
        assert waiter.poll() is None, "it must wait while the lock is held"
        (tmp_path / "faults" / "backup_locked.release").touch()
        out, err = holder.communicate(timeout=120)
        assert holder.returncode == 0, err
        assert f"mlflow-ci backup {json.loads(out)['id']} (pid {pid} on " in refused.stderr
        out2, err2 = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err2
        assert json.loads(out2)["id"] > json.loads(out)["id"]
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    _verifies(uri, env, tmp_path, backups=2)


def test_a_killed_holders_lock_expires_and_is_taken_over(
    repo_uri: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, env = repo_uri
    db, art = _source(tmp_path)
    holder, pid = _paused(_backup(db, art, uri), {**env, "MLFLOW_CI_LOCK_TTL": "3"}, tmp_path / "faults")
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(30)
    left = _lock_body(BackupRepo.open(uri, env))
    assert left["pid"] == pid
    done = run_cli(*_backup(db, art, uri)[3:], env={**env, "MLFLOW_CI_LOCK_WAIT": "60"})
    assert done.returncode == 0, done.stderr
    assert "took over the lock" in done.stderr
    assert f"(pid {pid} on " in done.stderr
    _verifies(uri, env, tmp_path, backups=1)
