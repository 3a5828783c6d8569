"""Retention: the selection logic (unit) and dry run vs real run on a real server (integration)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from mlflow_ci.config import KeepBest, Retention, RetentionRule
from mlflow_ci.mlflowio.tracking import TrackingServer, client_settings
from mlflow_ci.serverops.retention import DAY_MS, RunView, grace_expired, select

NOW = 1_800_000_000_000


def _run(i: int, *, days_old: float, exp: str = "exp_a", **kw: object) -> RunView:
    return RunView(run_id=f"{i:032x}", experiment_id="1" if exp == "exp_a" else "2", experiment_name=exp,
                   start_time=int(NOW - days_old * DAY_MS), status=str(kw.get("status", "FINISHED")),
                   tags=dict(kw.get("tags", {})), metrics=dict(kw.get("metrics", {})))  # type: ignore[arg-type]  # fmt: skip


def test_older_than_with_keep_last_and_keep_best() -> None:
    runs = [_run(i, days_old=100 - i, metrics={"auc": [0.9, 0.1, 0.5, 0.2, 0.3, 0.4][i]}) for i in range(6)]
    policy = Retention(rules=[RetentionRule(experiments=["exp_*"], older_than_days=30, keep_last=2,
                                            keep_best=KeepBest(metric="auc", k=1))])  # fmt: skip
    plan = select(runs, policy, {}, now_ms=NOW)
    # Newest two (4, 5) and the best by auc (0) stay; 1, 2, 3 go.
    assert sorted(c["run_id"] for c in plan.candidates) == [f"{i:032x}" for i in (1, 2, 3)]
    assert plan.protected == []


def test_young_runs_and_other_experiments_are_untouched() -> None:
    runs = [_run(0, days_old=5), _run(1, days_old=50), _run(2, days_old=50, exp="other")]
    policy = Retention(rules=[RetentionRule(experiments=["exp_a"], older_than_days=30)])
    plan = select(runs, policy, {}, now_ms=NOW)
    assert [c["run_id"] for c in plan.candidates] == [f"{1:032x}"]


def test_protected_runs_are_listed_with_reasons_and_never_candidates() -> None:
    runs = [_run(0, days_old=50), _run(1, days_old=50, tags={"pinned": "true"}),
            _run(2, days_old=50, status="RUNNING"), _run(3, days_old=50)]  # fmt: skip
    protection = {f"{0:032x}": ["registered version m v1", "alias m@champion"]}
    plan = select(runs, Retention(rules=[RetentionRule(older_than_days=1)]), protection, now_ms=NOW)
    assert [c["run_id"] for c in plan.candidates] == [f"{3:032x}"]
    reasons = {p["run_id"]: p["protected_by"] for p in plan.protected}
    assert reasons == {f"{0:032x}": ["registered version m v1", "alias m@champion"], f"{1:032x}": ["tag pinned"],
                       f"{2:032x}": ["still running"]}  # fmt: skip


def test_a_rule_without_bounds_is_rejected_and_grace_is_counted_from_deletion() -> None:
    with pytest.raises(ValueError, match="older_than_days or keep_last"):
        RetentionRule(experiments=["*"])
    assert grace_expired(NOW - 8 * DAY_MS, 7, NOW)
    assert not grace_expired(NOW - 6 * DAY_MS, 7, NOW)


# --- integration -----------------------------------------------------------------------------


def _seed(url: str, tmp: Path) -> dict[str, str]:
    """Seven runs, 60 days old, in one experiment; four of them protected in four different ways."""
    import mlflow
    from mlflow import MlflowClient

    with client_settings(url):
        client = MlflowClient(url)
        exp = client.create_experiment(f"ret_{time.time_ns()}")
        old = int(time.time() * 1000) - 60 * DAY_MS
        ids = []
        for i in range(7):
            run = client.create_run(exp, start_time=old + i * 1000, run_name=f"r{i}")
            f = tmp / f"a{i}.txt"
            f.write_text(f"artifact {i} " * 100)
            client.log_artifact(run.info.run_id, str(f))
            client.log_metric(run.info.run_id, "auc", 0.1 * i)
            client.set_terminated(run.info.run_id, end_time=old + i * 1000 + 500)
            ids.append(run.info.run_id)
        client.create_registered_model("ret_model")
        client.create_model_version("ret_model", f"runs:/{ids[0]}/a0.txt", run_id=ids[0])  # version → run 0
        mlflow.set_experiment(experiment_id=exp)
        logged = mlflow.initialize_logged_model(name="lm", source_run_id=ids[1])
        mlflow.finalize_logged_model(logged.model_id, "READY")
        mv = client.create_model_version("ret_model", logged.artifact_location, model_id=logged.model_id)
        client.set_registered_model_alias("ret_model", "champion", mv.version)  # alias → logged model → run 1
        client.set_tag(ids[2], "pinned", "true")
    return {"exp": exp, **{f"r{i}": rid for i, rid in enumerate(ids)}}


def _policy(tmp: Path, grace_days: float) -> Path:
    path = tmp / "mlflow-ci.yaml"
    path.write_text(yaml.safe_dump({"project": "ret", "retention": {
        "grace_days": grace_days, "rules": [{"experiments": ["ret_*"], "older_than_days": 30, "keep_last": 1}]}}))  # fmt: skip
    return path


def test_dry_run_and_real_run_agree_and_protected_runs_survive_gc(tmp_path: Path) -> None:
    art = tmp_path / "art"
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with TrackingServer(tmp_path / "srv", backend_store_uri=db, artifacts_destination=str(art)) as server:
        ids = _seed(server.url, tmp_path)
        # An orphan: artifacts under a run id the server does not know.
        orphan = art / ids["exp"] / ("f" * 32) / "artifacts"
        orphan.mkdir(parents=True)
        (orphan / "left.bin").write_bytes(b"x" * 1234)
        common = ["--tracking-uri", server.url, "--backend-store-uri", db, "--artifacts-destination", str(art),
                  "--policy", str(_policy(tmp_path, 0)), "--json"]  # fmt: skip
        dry = run_cli("retention", "--dry-run", *common)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)["data"]
        # r6 is the newest (kept), r0/r1/r2 protected; r3, r4, r5 go.
        assert sorted(c["run_id"] for c in planned["candidates"]) == sorted(
            ids[k] for k in ("r3", "r4", "r5")
        )
        assert all(c["bytes"] == 1100 for c in planned["candidates"])
        reasons = {p["run_id"]: p["protected_by"] for p in planned["protected"]}
        assert reasons[ids["r0"]] == ["registered version ret_model v1"]
        assert reasons[ids["r1"]] == ["registered version ret_model v2", "alias ret_model@champion"]
        assert reasons[ids["r2"]] == ["tag pinned"]
        assert planned["orphans"] == [{"prefix": f"{ids['exp']}/{'f' * 32}/", "objects": 1, "bytes": 1234}]
        # The logged model behind v2 has no files: reported, not hidden.
        assert [m["version"] for m in planned["missing_version_artifacts"]] == ["2"]

        real = run_cli("retention", "--apply", *common)
        assert real.returncode == 0, real.stderr
        done = json.loads(real.stdout)["data"]
        assert sorted(done["soft_deleted"]) == sorted(c["run_id"] for c in planned["candidates"])
        assert sorted(done["purged"]) == sorted(done["soft_deleted"])

        from mlflow import MlflowClient
        from mlflow.entities import ViewType

        with client_settings(server.url):
            client = MlflowClient(server.url)
            left = {r.info.run_id for r in client.search_runs([ids["exp"]], run_view_type=ViewType.ALL)}
    assert left == {ids[k] for k in ("r0", "r1", "r2", "r6")}
    remaining = {p.parent.parent.name for p in art.rglob("a*.txt")}
    assert remaining == {ids[k] for k in ("r0", "r1", "r2", "r6")}


def test_grace_period_waits_and_gc_refuses_collateral(tmp_path: Path) -> None:
    art = tmp_path / "art"
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with TrackingServer(tmp_path / "srv", backend_store_uri=db, artifacts_destination=str(art)) as server:
        ids = _seed(server.url, tmp_path)
        common = [
            "--tracking-uri",
            server.url,
            "--backend-store-uri",
            db,
            "--artifacts-destination",
            str(art),
            "--json",
        ]
        waiting = run_cli("retention", "--apply", "--policy", str(_policy(tmp_path, 7)), *common)
        assert waiting.returncode == 0, waiting.stderr
        data = json.loads(waiting.stdout)["data"]
        assert len(data["soft_deleted"]) == 3
        assert data["purged"] == []
        assert {w["run_id"] for w in data["awaiting_grace"]} == set(data["soft_deleted"])
        assert len(list(art.rglob("a*.txt"))) == 7  # nothing purged yet: restorable

        # Someone deleted an unrelated experiment: `mlflow gc` would purge it too, so retention refuses.
        from mlflow import MlflowClient

        with client_settings(server.url):
            client = MlflowClient(server.url)
            client.delete_experiment(client.create_experiment(f"unrelated_{time.time_ns()}"))
        refused = run_cli("retention", "--apply", "--policy", str(_policy(tmp_path, 0)), *common)
        assert refused.returncode == 1, refused.stderr
        assert "would also purge deleted experiments" in refused.stderr
        assert len(list(art.rglob("a*.txt"))) == 7
    # The three candidates stay soft-deleted (restorable), waiting for a gc that may run.
    assert sorted(data["soft_deleted"]) == sorted(ids[k] for k in ("r3", "r4", "r5"))
