"""Backup then restore on every backend, through the real CLI, against real servers."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require, run_cli
from fixtures import *  # noqa: F403
from helpers import corrupt_stored, populate
from mlflow_ci.mlflowio.tracking import TrackingServer, client_settings
from mlflow_ci.serverops.backends import backend_for
from mlflow_ci.serverops.backup import BackupRepo, object_key, take_backup

pytestmark = pytest.mark.service


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def _snapshot_via_server(url: str) -> dict:
    """Everything a user sees through the API: every run (all fields that must survive) and the registry."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    with client_settings(url):
        client = MlflowClient(url)
        exps = client.search_experiments(view_type=ViewType.ALL)
        runs = {}
        for run in client.search_runs(
            [e.experiment_id for e in exps], run_view_type=ViewType.ALL, max_results=1000
        ):
            history = {k: [(m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                           for m in client.get_metric_history(run.info.run_id, k)]
                       for k in run.data.metrics}  # fmt: skip
            runs[run.info.run_id] = (run.info.start_time, run.info.end_time, run.info.status,
                                     run.info.lifecycle_stage, run.info.run_name, dict(run.data.params),
                                     dict(run.data.tags), history,
                                     sorted(a.path for a in client.list_artifacts(run.info.run_id, "files")))  # fmt: skip
        models = {}
        for rm in client.search_registered_models():
            full = client.get_registered_model(rm.name)
            versions = sorted((int(v.version), v.run_id, v.source, v.creation_timestamp, v.model_id)
                              for v in client.search_model_versions(f"name = '{rm.name}'"))  # fmt: skip
            models[rm.name] = (full.creation_timestamp, dict(full.aliases), versions)
    return {"experiments": sorted((e.experiment_id, e.name, e.creation_time) for e in exps), "runs": runs,
            "models": models}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def backend_pair(request: pytest.FixtureRequest, tmp_path: Path):
    """(source URI, empty target URI) on one engine."""
    if request.param == "sqlite":
        return _sqlite(tmp_path / "src.db"), _sqlite(tmp_path / "restored" / "mlflow.db")
    factory = request.getfixturevalue("pg_factory" if request.param == "postgresql" else "mysql_factory")
    return factory(), factory()


def test_backup_then_restore_keeps_everything(backend_pair: tuple[str, str], tmp_path: Path) -> None:
    source_uri, target_uri = backend_pair
    src_art, dst_art, repo = tmp_path / "src-art", tmp_path / "dst-art", tmp_path / "backups"
    with TrackingServer(
        tmp_path / "src", backend_store_uri=source_uri, artifacts_destination=str(src_art)
    ) as server:
        info = populate(server.url, runs=5)
        before = _snapshot_via_server(server.url)
        done = run_cli("backup", "--backend-store-uri", source_uri, "--artifacts-destination", str(src_art),
                       "--to", str(repo), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["artifacts"] == 5
    assert summary["objects_copied"] == 5
    manifest = BackupRepo.open(str(repo)).manifest()
    assert manifest["backend"]["row_counts"]["runs"] == 5
    assert manifest["backend"]["row_counts"]["model_versions"] == 2
    assert manifest["backend"]["schema_revision"] == backend_for(source_uri).schema_revision()
    assert all(len(o["sha256"]) == 64 for o in manifest["artifacts"]["objects"])

    restored = run_cli("restore", "--from", str(repo), "--backend-store-uri", target_uri,
                       "--artifacts-destination", str(dst_art), "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr + restored.stdout
    report = json.loads(restored.stdout)
    assert report["verdict"] == "pass"
    assert {c["name"]: c["verdict"] for c in report["checks"]} == dict.fromkeys(
        [
            "schema revision",
            "row counts",
            "artifacts (key, size; checksums verified while copying)",
            "runs read back (ids, times, status, params, metric histories)",
            "registered models, versions, aliases read back",
            "experiments read back",
            "run artifacts through the artifact proxy",
        ],
        "pass",
    )

    # Independently of the restore's own checks: the restored server shows exactly what the source did.
    with TrackingServer(
        tmp_path / "dst", backend_store_uri=target_uri, artifacts_destination=str(dst_art)
    ) as server:
        after = _snapshot_via_server(server.url)
    assert after == before
    assert set(after["runs"]) == set(info["run_ids"])
    assert after["models"][info["model"]][1] == {"champion": "2"}


def _shared(server: TrackingServer) -> tuple[str, str]:
    return _sqlite(server.workdir / "mlflow.db"), str(server.workdir / "artifacts")


def test_restore_refuses_a_non_empty_backend(tracking_server: TrackingServer, tmp_path: Path) -> None:
    db, art = _shared(tracking_server)
    populate(tracking_server.url, runs=2, model=f"refuse_{time.time_ns()}")
    take_backup(backend_store_uri=db, artifacts_uri=art, destination=str(tmp_path / "bk"))
    done = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", db,
                   "--artifacts-destination", str(tmp_path / "empty"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Refusing to restore" in done.stderr
    assert "Traceback" not in done.stderr
    # A non-empty artifact store is refused too, before anything is written.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    done = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", _sqlite(tmp_path / "new.db"),
                   "--artifacts-destination", str(tmp_path / "full"))  # fmt: skip
    assert done.returncode == 2
    assert "already holds objects" in done.stderr
    assert not (tmp_path / "new.db").exists()


def test_dry_run_says_what_and_writes_nothing(tracking_server: TrackingServer, tmp_path: Path) -> None:
    db, art = _shared(tracking_server)
    populate(tracking_server.url, runs=2, model=f"dry_{time.time_ns()}")
    manifest = take_backup(backend_store_uri=db, artifacts_uri=art, destination=str(tmp_path / "bk"))
    target = tmp_path / "t" / "mlflow.db"
    done = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", _sqlite(target),
                   "--artifacts-destination", str(tmp_path / "t-art"), "--dry-run", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["data"]["plan"]
    assert plan["artifacts"]["count"] == manifest["artifacts"]["count"] >= 2
    assert plan["backend"]["row_counts"] == manifest["backend"]["row_counts"]
    assert not target.exists()
    assert not (tmp_path / "t-art").exists()


def test_second_backup_is_incremental_and_damage_is_detected(tmp_path: Path) -> None:
    db, art, repo_dir = tmp_path / "s.db", tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        populate(s.url, runs=3)
        first = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
        populate(s.url, runs=2, model="second_model")
        second = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    assert first["stats"]["copied"] == 3
    assert second["stats"]["copied"] == 2
    assert second["stats"]["reused_checksums"] == 3
    assert second["artifacts"]["count"] == 5
    assert second["previous"] == first["id"]
    repo = BackupRepo.open(str(repo_dir))
    assert repo.latest() == second["id"]
    assert repo.backup_ids() == sorted([first["id"], second["id"]])
    # Corrupt one stored object: the restore stops with an infrastructure error naming it.
    corrupt_stored(repo_dir, second["artifacts"]["objects"][0])
    done = run_cli("restore", "--from", str(repo_dir), "--backend-store-uri", _sqlite(tmp_path / "r.db"),
                   "--artifacts-destination", str(tmp_path / "r-art"), "--no-server-check")  # fmt: skip
    assert done.returncode == 3
    assert "damaged" in done.stderr
    # A damaged dump (restored on a thread beside the artifact copy) fails the restore the same way.
    fresh = take_backup(
        backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(tmp_path / "bk2")
    )
    dump = tmp_path / "bk2" / "backups" / fresh["id"] / fresh["backend"]["dump"]
    dump.write_bytes(dump.read_bytes()[:-100])
    done = run_cli("restore", "--from", str(tmp_path / "bk2"), "--backend-store-uri", _sqlite(tmp_path / "r2.db"),
                   "--artifacts-destination", str(tmp_path / "r2-art"))  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "database dump" in done.stderr
    assert "damaged" in done.stderr
    assert "Traceback" not in done.stderr


def test_read_back_catches_a_history_that_differs(tmp_path: Path) -> None:
    """The read-back compares every sampled metric point (bulk reads), NaN included: one changed
    value in the restored database is a failed check naming the run and the metric."""
    import sqlite3

    from mlflow_ci.mlflowio.tracking import PreparedServer
    from mlflow_ci.serverops.readback import verify_through_server

    db, art, repo_dir = tmp_path / "s.db", tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        info = populate(s.url, runs=3)
    manifest = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    target, target_art = tmp_path / "r.db", tmp_path / "r-art"
    # In a process of its own, to see what it imports: the read-back is plain HTTP, so the
    # restoring process never imports MLflow (only the server's process does).
    script = (
        "import json, sys\n"
        "from mlflow_ci.serverops.restore import restore_backup\n"
        f"r = restore_backup(source={str(repo_dir)!r}, backend_store_uri={_sqlite(target)!r}, "
        f"artifacts_uri={str(target_art)!r})\n"
        "print(json.dumps({'verdict': r.verdict, 'checks': {c.name: c.found for c in r.checks},\n"
        "                  'mlflow': sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow')}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    restored = json.loads(done.stdout.strip().splitlines()[-1])
    assert restored["verdict"] == "pass", restored["checks"]
    assert (
        "metric points identical"
        in restored["checks"]["runs read back (ids, times, status, params, metric histories)"]
    )
    assert "3 files downloaded" in restored["checks"]["run artifacts through the artifact proxy"]
    assert restored["mlflow"] == []
    victim = info["run_ids"][1]
    with sqlite3.connect(target) as conn:
        changed = conn.execute("UPDATE metrics SET value = value + 1 WHERE run_uuid = ? AND key = 'loss' AND step = 2",
                               (victim,)).rowcount  # fmt: skip
    assert changed == 1
    with PreparedServer(
        tmp_path / "v", backend_store_uri=_sqlite(target), artifacts_destination=str(target_art)
    ) as v:
        v.start()
        checks = verify_through_server(v.url, manifest)
        # A restored database the server cannot read answers errors: that check fails with the
        # server's message, the others still run (no exception, so no "internal error" exit).
        with sqlite3.connect(target) as conn:
            conn.execute("DROP TABLE params")
            conn.execute("DROP TABLE model_versions")
        broken = {c.name: c for c in verify_through_server(v.url, manifest)}
    runs_check = next(c for c in checks if c.name.startswith("runs read back"))
    assert runs_check.verdict == "fail"
    assert f"{victim} metric loss" in runs_check.found
    assert next(c for c in checks if c.name.startswith("registered models")).verdict == "pass"
    for name in ("runs read back (ids, times, status, params, metric histories)",
                 "registered models, versions, aliases read back"):  # fmt: skip
        assert broken[name].verdict == "fail"
        assert broken[name].found.startswith("the server answered an error"), broken[name].found
    assert broken["experiments read back"].verdict == "pass"
    assert broken["run artifacts through the artifact proxy"].verdict == "pass"


def test_prune_keeps_the_newest_and_their_objects(tmp_path: Path) -> None:
    db, art, repo_dir = tmp_path / "s.db", tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        info = populate(s.url, runs=2)
        take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
        # An artifact that only the first backup holds goes when that backup is pruned.
        gone = next(art.rglob("notes_0.txt"))
        gone.unlink()
        take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
        third = take_backup(
            backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir), keep=2
        )
    repo = BackupRepo.open(str(repo_dir))
    assert len(repo.backup_ids()) == 2
    assert repo.latest() == third["id"]
    # The artifact only the pruned backup named is released; everything still stored (loose
    # objects and packs) is named by a remaining backup, and everything named is stored.
    assert third["pruned"]["objects_released"] == 1
    # What is left is run 1's artifact (run 0's was deleted before the second backup).
    assert [o["key"].split("/")[1] for o in third["artifacts"]["objects"]] == [info["run_ids"][1]]
    kept = [o for b in repo.backup_ids() for o in repo.manifest(b)["artifacts"]["objects"]]
    assert {o["sha256"] for o in kept if "pack" not in o} == repo.object_shas()
    assert {o["pack"] for o in kept if "pack" in o} == set(repo.pack_sizes())


_LOGGER = r"""
import sys, tempfile, time
from pathlib import Path
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.create_experiment("concurrent")
tmp = Path(tempfile.mkdtemp())
deadline = time.time() + 60
i = 0
while time.time() < deadline:
    run = client.create_run(exp)
    f = tmp / f"payload_{i}.bin"
    f.write_bytes(b"x" * 4096)
    client.log_artifact(run.info.run_id, str(f))
    # The tag comes after the artifact: a run that has it must have its artifact.
    client.set_tag(run.info.run_id, "artifact_done", "1")
    client.set_terminated(run.info.run_id)
    i += 1
    print("RUN", i, flush=True)
"""


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_backup_while_logging_restores_consistently(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """While another process logs runs, the backup's row counts describe exactly its dump (the
    restore's row-count check passes), and every run in it finds its artifacts."""
    if engine == "sqlite":
        src_uri, dst_uri = _sqlite(tmp_path / "s.db"), _sqlite(tmp_path / "d.db")
    else:
        factory = request.getfixturevalue(f"{'pg' if engine == 'postgresql' else 'mysql'}_factory")
        src_uri, dst_uri = factory(), factory()
    art, repo = tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=src_uri, artifacts_destination=str(art)) as s:
        logger = subprocess.Popen([sys.executable, "-c", _LOGGER, s.url], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})  # fmt: skip
        try:
            assert logger.stdout is not None
            while True:  # wait until runs are flowing
                line = logger.stdout.readline()
                assert line, "the logger process died"
                if line.startswith("RUN ") and int(line.split()[1]) >= 3:
                    break
            manifest = take_backup(backend_store_uri=src_uri, artifacts_uri=str(art), destination=str(repo))
            assert logger.poll() is None, "the logger must still be writing when the backup ends"
        finally:
            logger.terminate()
            logger.wait(10)
    from mlflow_ci.serverops.restore import restore_backup

    report = restore_backup(
        source=str(repo), backend_store_uri=dst_uri, artifacts_uri=str(tmp_path / "d-art")
    )
    assert report.verdict == "pass", report.to_markdown()
    # No run in the restored database points at a missing artifact.
    from mlflow import MlflowClient

    with TrackingServer(
        tmp_path / "dst", backend_store_uri=dst_uri, artifacts_destination=str(tmp_path / "d-art")
    ) as d:
        client = MlflowClient(d.url)
        with client_settings(d.url):
            exp = client.get_experiment_by_name("concurrent")
            runs = client.search_runs([exp.experiment_id], "tags.artifact_done = '1'", max_results=1000)
            every_run = client.search_runs([exp.experiment_id], max_results=1000)
            # At least the three the logger had finished before the backup began; how many more
            # depends on timing.
            assert len(runs) >= 3
            for run in runs:
                assert [a.path for a in client.list_artifacts(run.info.run_id)], run.info.run_id
    # The manifest counts exactly the runs the dump holds (the runs table holds no others).
    assert manifest["backend"]["row_counts"]["runs"] == len(every_run)


def _size(path: Path) -> int:
    """A file's size, 0 once it is gone (a pack is renamed when it is complete)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_killed_backup_leaves_the_last_good_one_usable(tmp_path: Path) -> None:
    db, art, repo_dir = tmp_path / "s.db", tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        populate(s.url, runs=2)
    good = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    # Plenty of new artifact bytes so the second backup is still copying when it is killed.
    bulk = art / "bulk"
    bulk.mkdir()
    for i in range(400):
        (bulk / f"blob_{i}.bin").write_bytes(os.urandom(256 * 1024))
    child = subprocess.Popen(
        [sys.executable, "-m", "mlflow_ci", "backup", "--backend-store-uri", _sqlite(db), "--artifacts-destination",
         str(art), "--to", str(repo_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        partial = repo_dir / "backups"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dumps = list(partial.glob(".partial-*/backend.sqlite"))
            # Killed while writing its pack (the blobs are small enough to be packed).
            packing = sum(_size(p) for p in (repo_dir / "packs").glob(".*.pack.tmp"))
            if dumps and packing > 5 << 20:
                break
            time.sleep(0.005)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    repo = BackupRepo.open(str(repo_dir))
    assert repo.backup_ids() == [good["id"]], "the killed backup must not look complete"
    assert (repo_dir / "latest").read_text().strip() == good["id"]
    assert list(partial.glob(".partial-*")), (
        "the kill landed after the backup finished; the test proved nothing"
    )
    assert list((repo_dir / "packs").glob(".*.pack.tmp")), (
        "killed mid-pack: its pack keeps its temporary name"
    )
    done = run_cli("restore", "--from", str(repo_dir), "--backend-store-uri", _sqlite(tmp_path / "r.db"),
                   "--artifacts-destination", str(tmp_path / "r-art"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["plan"]["backup"] == good["id"]
    # The next backup clears the leftovers and completes.
    again = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    assert not list(partial.glob(".partial-*"))
    assert not list((repo_dir / "packs").glob(".*.pack.tmp"))
    assert again["artifacts"]["count"] == 402


def test_restore_drill_uses_throwaway_stores_never_the_profiles(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    db, art = _shared(tracking_server)
    populate(tracking_server.url, runs=2, model=f"drill_{time.time_ns()}")
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(
        f"project: p\nserver:\n  backend_store_uri: {db}\n  artifacts_destination: {art}\n"
        f"backup:\n  destination: {tmp_path / 'bk'}\n"
    )
    assert run_cli("backup", "--policy", str(policy)).returncode == 0
    done = run_cli(
        "restore", "--drill", "--policy", str(policy), "--json", "--report-dir", str(tmp_path / "rep")
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "restore-drill"
    assert report["verdict"] == "pass"
    assert db not in report["data"]["plan"]["backend"]["into"]
    assert (tmp_path / "rep" / "restore-drill.md").exists()


def test_auth_database_is_backed_up_and_restored(tmp_path: Path) -> None:
    """MLflow's basic-auth users live in their own database: a restore brings them back."""
    import requests

    require(importlib.util.find_spec("flask_wtf") is not None, "MLflow's basic-auth app needs Flask-WTF")

    def ini(auth_db: str) -> Path:
        path = tmp_path / f"auth-{time.time_ns()}.ini"
        path.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {auth_db}\nadmin_username = admin\nadmin_password = admin-password-1234\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return path

    src_auth, dst_auth = _sqlite(tmp_path / "auth.db"), _sqlite(tmp_path / "restored-auth.db")
    db, art = _sqlite(tmp_path / "src.db"), tmp_path / "art"
    args = ["--app-name", "basic-auth"]
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini(src_auth)), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"}
    with TrackingServer(tmp_path / "src", backend_store_uri=db, artifacts_destination=str(art), extra_args=args,
                        env=env) as server:  # fmt: skip
        made = requests.post(f"{server.url}/api/2.0/mlflow/users/create", auth=("admin", "admin-password-1234"),
                             json={"username": "alice", "password": "alice-password-1234"}, timeout=30)  # fmt: skip
        assert made.status_code == 200, made.text
    done = run_cli("backup", "--backend-store-uri", db, "--artifacts-destination", str(art), "--auth-db-uri",
                   src_auth, "--to", str(tmp_path / "bk"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["auth_database"] is True
    restored = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", _sqlite(tmp_path / "d.db"),
                       "--artifacts-destination", str(tmp_path / "d-art"), "--auth-db-uri", dst_auth, "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    checks = {c["name"]: c for c in json.loads(restored.stdout)["checks"]}
    assert checks["auth database row counts"]["verdict"] == "pass"
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini(dst_auth))
    with TrackingServer(tmp_path / "dst", backend_store_uri=_sqlite(tmp_path / "d.db"),
                        artifacts_destination=str(tmp_path / "d-art"), extra_args=args, env=env) as server:  # fmt: skip
        url = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(url, auth=("alice", "alice-password-1234"), timeout=30).status_code == 200
        assert requests.get(url, auth=("alice", "wrong-password-0000"), timeout=30).status_code == 401


def test_threaded_copies_keep_order_dedupe_and_stop_at_a_damaged_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of objects (several batches on several threads): the manifest lists them in the
    store's order exactly as a serial copy does, equal contents are stored once, and one damaged
    object in the middle fails the restore with exit 3 and its key."""
    db, art = tmp_path / "s.db", tmp_path / "art"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        populate(s.url, runs=2)
    extra = art / "bulk"
    extra.mkdir(parents=True)
    for i in range(300):
        (extra / f"f{i:03d}.txt").write_text(f"content {i % 100}\n")  # 100 distinct contents
    manifests = {}
    for threads in ("1", "4"):
        monkeypatch.setenv("MLFLOW_CI_COPY_THREADS", threads)
        manifests[threads] = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art),
                                         destination=str(tmp_path / f"bk-{threads}"))  # fmt: skip
    serial, threaded = manifests["1"], manifests["4"]
    assert [(o["key"], o["sha256"]) for o in threaded["artifacts"]["objects"]] == [
        (o["key"], o["sha256"]) for o in serial["artifacts"]["objects"]
    ]
    assert threaded["artifacts"]["count"] == 302  # populate's two and the 300 above
    assert threaded["stats"]["copied"] == serial["stats"]["copied"]
    assert (
        threaded["stats"]["skipped_present"] == serial["stats"]["skipped_present"] == 200
    )  # 300 files, 100 contents
    # Each distinct content is stored once: the small ones in the backup's pack, the rest loose.
    objects = threaded["artifacts"]["objects"]
    assert len({o["sha256"] for o in objects}) == threaded["stats"]["copied"]
    loose = [p for p in (tmp_path / "bk-4" / "objects").rglob("*") if p.is_file()]
    assert len(loose) == len({o["sha256"] for o in objects if "pack" not in o})
    assert sorted(p.name for p in (tmp_path / "bk-4" / "packs").iterdir()) == [f"{threaded['id']}-000.pack"]
    assert threaded["stats"]["packs_written"] == 1

    # A clean threaded restore verifies through the server; a damaged object mid-way fails it.
    ok = run_cli("restore", "--from", str(tmp_path / "bk-4"), "--backend-store-uri", _sqlite(tmp_path / "ok.db"),
                 "--artifacts-destination", str(tmp_path / "ok-art"), "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    restored = sorted(p.relative_to(tmp_path / "ok-art").as_posix() for p in (tmp_path / "ok-art").rglob("*")
                      if p.is_file())  # fmt: skip
    assert restored == sorted(o["key"] for o in threaded["artifacts"]["objects"])
    victim = next(o for o in threaded["artifacts"]["objects"] if o["key"] == "bulk/f250.txt")
    assert victim["pack"] == f"{threaded['id']}-000"
    corrupt_stored(tmp_path / "bk-4", victim)
    bad = run_cli("restore", "--from", str(tmp_path / "bk-4"), "--backend-store-uri", _sqlite(tmp_path / "bad.db"),
                  "--artifacts-destination", str(tmp_path / "bad-art"), env={"MLFLOW_CI_COPY_THREADS": "4"})  # fmt: skip
    assert bad.returncode == 3
    assert "damaged" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_what_a_killed_backup_left_is_written_again(tmp_path: Path) -> None:
    """A killed backup can leave a half-written loose object, a pack under its temporary name and
    a pack no manifest names: none is trusted, so the next backup writes that content again (the
    temporary pack is removed) and the restore gets every byte right."""
    import hashlib

    db, art, repo_dir = tmp_path / "s.db", tmp_path / "art", tmp_path / "bk"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        populate(s.url, runs=2)
    take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    large = b"a new, large artifact\n" * 20_000  # above the packed size: stored loose
    small = b"a new, small artifact\n" * 10  # packed
    sha_large, sha_small = hashlib.sha256(large).hexdigest(), hashlib.sha256(small).hexdigest()
    (repo_dir / "packs").mkdir(exist_ok=True)
    torn = repo_dir / object_key(sha_large)
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(large[:37])  # what a crash mid-write leaves
    (repo_dir / "packs" / ".killed-000.pack.tmp").write_bytes(small[:5])
    (repo_dir / "packs" / "killed-000.pack").write_bytes(small[:5])  # renamed, its manifest never published
    (art / "late.bin").write_bytes(large)
    (art / "late.txt").write_bytes(small)
    second = take_backup(backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(repo_dir))
    entries = {o["key"]: o for o in second["artifacts"]["objects"]}
    assert {"sha256": sha_large, "size": len(large)}.items() <= entries["late.bin"].items()
    assert "pack" not in entries["late.bin"]
    assert entries["late.txt"]["sha256"] == sha_small
    assert entries["late.txt"]["pack"] == f"{second['id']}-000"
    assert torn.read_bytes() == large
    assert not (repo_dir / "packs" / ".killed-000.pack.tmp").exists()
    done = run_cli("restore", "--from", str(repo_dir), "--backend-store-uri", _sqlite(tmp_path / "r.db"),
                   "--artifacts-destination", str(tmp_path / "r-art"), "--no-server-check")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r-art" / "late.bin").read_bytes() == large
    assert (tmp_path / "r-art" / "late.txt").read_bytes() == small


def test_a_read_back_server_that_does_not_start_fails_the_restore_after_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server starts on a thread beside the artifact copy: when it cannot start, the copy
    still completes and is checked, and the report fails on the server check (no traceback)."""
    from mlflow_ci.core.errors import InfraError
    from mlflow_ci.mlflowio.tracking import PreparedServer
    from mlflow_ci.serverops.restore import restore_backup

    db, art = tmp_path / "s.db", tmp_path / "art"
    with TrackingServer(tmp_path / "src", backend_store_uri=_sqlite(db), artifacts_destination=str(art)) as s:
        populate(s.url, runs=2)
    manifest = take_backup(
        backend_store_uri=_sqlite(db), artifacts_uri=str(art), destination=str(tmp_path / "bk")
    )

    def refuse(self: PreparedServer) -> PreparedServer:
        raise InfraError("port taken (simulated)")

    monkeypatch.setattr(PreparedServer, "start", refuse)
    report = restore_backup(source=str(tmp_path / "bk"), backend_store_uri=_sqlite(tmp_path / "r.db"),
                            artifacts_uri=str(tmp_path / "r-art"), workdir=tmp_path / "verify")  # fmt: skip
    by_name = {c.name: c for c in report.checks}
    assert report.verdict == "fail"
    assert by_name["server starts on the restored stores"].failed
    assert "port taken" in by_name["server starts on the restored stores"].detail
    assert by_name["row counts"].verdict == "pass"
    assert by_name["artifacts (key, size; checksums verified while copying)"].verdict == "pass"
    assert "run artifacts through the artifact proxy" not in by_name
    assert report.data["artifacts_copied"] == manifest["artifacts"]["count"]
