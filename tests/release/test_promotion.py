"""Promotion, rollback and their atomicity against real tracking servers (SQLite and PostgreSQL):
the release flow, two promotions racing in two real processes, and the server killed mid-change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow_ci.mlflowio.registry import Connection, aliases
from mlflow_ci.mlflowio.tracking import TrackingServer
from mlflow_ci.release.promotion import promote
from mlflow_ci.release.register import register_command
from modelfactory import log_run
from registryflow import ENV, call, do_rollback, release, write_policy


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrackingServer]:
    uri = request.getfixturevalue("postgres_uri") if request.param == "postgresql" else None
    with TrackingServer(tmp_path / "server", backend_store_uri=uri) as server:
        yield server


def champion(server: str, model: str) -> str | None:
    return aliases(Connection(server), model).get("champion")


def test_release_flow_gate_promote_block_rollback_audit(
    backend_server: TrackingServer, tmp_path: Path
) -> None:
    url, model = backend_server.url, f"iris-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "project", model)

    first = release(url, policy, quality="fair")
    assert (first["gate"], first["register"], first["challenger"], first["champion"]) == (0, 0, 0, 0), first
    assert champion(url, model) == "1"

    better = release(url, policy, quality="good")
    assert better["champion"] == 0, better
    assert champion(url, model) == "2"
    v2 = Connection(url).client.get_model_version(model, "2")
    assert v2.tags["mlflow_ci.previous_champion"] == "1"
    assert v2.tags["mlflow_ci.approved_by.champion"] == "alice"
    assert v2.tags["mlflow_ci.run_id"] == better["run_id"]
    assert v2.tags["mlflow_ci.gate_verdict"] == "pass"
    assert v2.tags["mlflow_ci.dataset_digest"].startswith("iris-train:")

    worse = release(url, policy, quality="weak")
    assert worse["gate"] == 1
    failed = [c for c in worse["gate_report"]["checks"] if c["verdict"] == "fail"]
    assert [c["name"] for c in failed] == ["accuracy vs baseline"]
    assert champion(url, model) == "2"
    # Registered anyway (by hand), its failed gate still keeps it from moving on.
    assert call(register_command, run_id=worse["run_id"], policy_path=policy, tracking_uri=url, env=ENV) == 0
    assert (
        call(
            promote,
            model=model,
            to="challenger",
            policy_path=policy,
            tracking_uri=url,
            report_dir=tmp_path / "r",
            env=ENV,
        )
        == 1
    )
    assert aliases(Connection(url), model)["challenger"] == "2"

    assert do_rollback(url, policy, reason="canary error rate") == 0
    assert champion(url, model) == "1"
    assert do_rollback(url, policy, reason="the rollback was a mistake") == 0  # a rollback rolls back
    assert champion(url, model) == "2"
    assert do_rollback(url, policy, reason="pin", to_version="1") == 0
    assert champion(url, model) == "1"

    # Registering the same run again returns the same version.
    r = run_cli("register", better["run_id"], "--policy", str(policy), "--tracking-uri", url, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "2"
    assert json.loads(r.stdout)["created"] is False

    r = run_cli("audit", model, "--policy", str(policy), "--tracking-uri", url, "--json", "--limit", "500")
    history = json.loads(r.stdout)
    commits = [
        (e["op"], e["alias"], e["to_version"]) for e in history if e["phase"] == "commit" and e["alias"]
    ]
    assert ("promote", "champion", "2") in commits
    assert ("rollback", "champion", "1") in commits
    assert all(e["phase"] != "abort" for e in history)
    r = run_cli("audit", model, "--verify", "--policy", str(policy), "--tracking-uri", url, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (report,) = json.loads(r.stdout)
    assert report["verdict"] == "pass"
    assert {c["name"]: c["found"] for c in report["checks"]}["alias champion"] == "v1 (registry)"


def test_champion_needs_approval_and_fresh_baseline(tracking_server: TrackingServer, tmp_path: Path) -> None:
    url, model = tracking_server.url, f"iris-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    assert release(url, policy, quality="fair", approver=None)["champion"] == 1  # no approver
    assert champion(url, model) is None
    assert (
        call(
            promote,
            model=model,
            to="champion",
            approved_by="carol",
            policy_path=policy,
            tracking_uri=url,
            report_dir=tmp_path / "r",
            env=ENV,
        )
        == 0
    )
    # The next candidate is gated against v1, then champion moves (rollback to nothing is impossible,
    # so pin a second good version first) and the stale gate verdict is refused.
    nxt = release(url, policy, quality="good", approver=None)
    assert nxt["challenger"] == 0
    third = log_run(url, quality="good")
    assert call(register_command, run_id=third, policy_path=policy, tracking_uri=url, env=ENV) == 0
    conn = Connection(url)
    conn.client.set_registered_model_alias(model, "champion", "3")  # out of band, on purpose
    assert (
        call(
            promote,
            model=model,
            to="champion",
            approved_by="carol",
            policy_path=policy,
            tracking_uri=url,
            report_dir=tmp_path / "r",
            env=ENV,
        )
        == 1
    )
    report = json.loads((tmp_path / "r" / "promote.json").read_text())
    stale = next(c for c in report["checks"] if c["name"] == "baseline still current")
    assert stale["verdict"] == "fail"


def test_promote_json_has_one_shape_changed_or_not(
    tracking_server: TrackingServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, model = tracking_server.url, f"iris-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    assert release(url, policy, quality="fair", approver=None)["champion"] == 1  # v1 waits at challenger

    def promote_json(to: str, approved_by: str | None = None) -> tuple[int, dict]:
        capsys.readouterr()
        code = call(promote, model=model, to=to, approved_by=approved_by, policy_path=policy, tracking_uri=url,
                    report_dir=tmp_path / "r", as_json=True, env=ENV)  # fmt: skip
        return code, json.loads(capsys.readouterr().out)

    codes, (refused, changed, unchanged) = zip(
        promote_json("champion"),  # no approver
        promote_json("champion", approved_by="carol"),
        promote_json("champion", approved_by="carol"),  # already there
        strict=True,
    )
    assert codes == (1, 0, 0)
    assert set(refused) == set(changed) == set(unchanged)
    assert set(refused["data"]) == set(changed["data"]) == set(unchanged["data"])
    outcomes = [(r["verdict"], r["data"]["changed"]) for r in (refused, changed, unchanged)]
    assert outcomes == [("fail", False), ("pass", True), ("pass", False)]
    assert changed["data"]["version"] == unchanged["data"]["version"] == "1"
    assert changed["data"]["previous"] is None
    assert unchanged["data"]["previous"] == "1"
    assert isinstance(changed["data"]["audit_seq"], int)
    assert unchanged["data"]["audit_seq"] is None
    assert unchanged["run_id"] == changed["run_id"]


def _setup_champion_and_challenger(url: str, policy: Path) -> None:
    assert release(url, policy, quality="fair")["champion"] == 0
    nxt = release(url, policy, quality="good", approver=None)
    assert nxt["challenger"] == 0  # v2 waits at challenger, v1 is champion


def _cli_env(fault_dir: Path, point: str, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.pop("GITHUB_OUTPUT", None)
    env.update(
        {
            "MLFLOW_CI_FAULT_POINT": point,
            "MLFLOW_CI_FAULT_DIR": str(fault_dir),
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_CI_ACTOR": "racer",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        }
    )
    return env


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the processes under test")
        time.sleep(0.1)


def test_two_concurrent_promotions_exactly_one_wins(fresh_server: TrackingServer, tmp_path: Path) -> None:
    url, model = fresh_server.url, f"iris-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    _setup_champion_and_challenger(url, policy)
    faults = tmp_path / "faults"
    faults.mkdir()
    env = _cli_env(faults, "prepared", url)
    cmd = [
        sys.executable,
        "-m",
        "mlflow_ci",
        "promote",
        model,
        "--to",
        "champion",
        "--approved-by",
        "dave",
        "--policy",
        str(policy),
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "--report-dir", str(tmp_path / f"r{i}")],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        # Both have read the registry and checked the rules; now release them at the same instant.
        _wait_for(lambda: len(list(faults.glob("prepared.*.reached"))) == 2)
        (faults / "prepared.release").touch()
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 1)
    assert "Nothing was changed" in loser
    assert f"model {model!r}" in loser or f"Model {model!r}" in loser
    assert champion(url, model) == "2"
    r = run_cli("audit", model, "--verify", "--policy", str(policy), "--tracking-uri", url, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    history = json.loads(
        run_cli("audit", model, "--policy", str(policy), "--tracking-uri", url, "--json").stdout
    )
    moves = [
        e for e in history if e["op"] == "promote" and e["alias"] == "champion" and e["phase"] == "commit"
    ]
    assert [(e["from_version"], e["to_version"]) for e in moves] == [("1", "2"), (None, "1")]


@pytest.mark.parametrize(("point", "expected"), [("after_intent", "1"), ("after_alias", "2")])
def test_server_killed_mid_promotion_then_verify_reconciles(
    tmp_path: Path, point: str, expected: str
) -> None:
    model = f"iris-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    server = TrackingServer(tmp_path / "server").start()
    try:
        url, port = server.url, server.port
        _setup_champion_and_challenger(url, policy)
        faults = tmp_path / "faults"
        faults.mkdir()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow_ci",
                "promote",
                model,
                "--to",
                "champion",
                "--approved-by",
                "erin",
                "--policy",
                str(policy),
                "--report-dir",
                str(tmp_path / "r"),
            ],
            env=_cli_env(faults, point, url),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for(lambda: any(faults.glob(f"{point}.*.reached")))
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)  # the tracking server dies mid-promotion
        server.stop()
        (faults / f"{point}.release").touch()
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 3, err
        assert "did not answer" in err
        server = TrackingServer(tmp_path / "server", port=port).start()  # same database, same URL
        r = run_cli("audit", model, "--verify", "--policy", str(policy), "--tracking-uri", url, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (report,) = json.loads(r.stdout)
        assert any("Settled a pending change" in n for n in report["notes"]), report
        assert champion(url, model) == expected
        history = json.loads(
            run_cli("audit", model, "--policy", str(policy), "--tracking-uri", url, "--json").stdout
        )
        last = history[0]
        assert last["details"].get("reconciled") is True
        assert last["phase"] == ("commit" if expected == "2" else "abort")
    finally:
        server.stop()
