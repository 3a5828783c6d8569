"""Kept deployments are recorded per tracking server and model: two servers with a model of the
same name do not overwrite or stop each other's, and undeploy says which it stops."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import run_cli
from mlflow_ci.config import Deploy
from mlflow_ci.core.fsutil import atomic_write_json
from mlflow_ci.serving.deploy import server_key, state_path
from mlflow_ci.serving.targets import Deployment

A, B = "http://127.0.0.1:5001", "http://user:secret@mlflow.example:443/team"


def test_two_servers_get_two_records() -> None:
    settings = Deploy(state_dir="/s")
    assert state_path(settings, A, "churn", "local") != state_path(settings, B, "churn", "local")
    assert state_path(settings, A, "churn", "local") == state_path(settings, A + "/", "churn", "local")


def test_the_server_key_names_the_host_and_never_the_password() -> None:
    key = server_key(B)
    assert key.startswith("mlflow.example_443_team-")
    assert "secret" not in key
    assert server_key(B) != server_key(B.replace("/team", "/other"))


def record(tmp_path: Path, server: str) -> int:
    """A recorded local deployment whose process is real: a session leader that is not our child
    (as one left by an earlier `deploy`), stopped as the target stops it."""
    started = subprocess.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(started.stdout)
    deployment = Deployment(target="local", url="http://127.0.0.1:1", subject=f"pid {pid}",
                            handle={"pid": pid, "log": str(tmp_path / "log"), "name": "x"})  # fmt: skip
    path = state_path(Deploy(state_dir=str(tmp_path / "state")), server, "churn", "local")
    atomic_write_json(
        path, {**deployment.to_dict(), "version": "1", "alias": "champion", "tracking_uri": server}
    )
    return pid


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_undeploy_stops_only_the_named_servers_deployment(tmp_path: Path) -> None:
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(f"project: churn\ndeploy: {{state_dir: {tmp_path / 'state'}}}\n", encoding="utf-8")
    on_a, on_b = record(tmp_path, A), record(tmp_path, B)
    env = {"MLFLOW_TRACKING_URI": ""}
    try:
        r = run_cli("undeploy", "churn", "--policy", str(policy), env=env)
        assert r.returncode == 2
        assert "from 2 tracking servers" in r.stderr
        assert alive(on_a), "an ambiguous undeploy stops nothing"
        assert alive(on_b), "an ambiguous undeploy stops nothing"

        r = run_cli("undeploy", "churn", "--policy", str(policy), "--tracking-uri", A, "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["stopped"]["tracking_uri"] == A
        assert not alive(on_a)
        assert alive(on_b), "the other server's deployment still runs"

        r = run_cli("undeploy", "churn", "--policy", str(policy), env=env)  # now the only one
        assert r.returncode == 0, r.stderr
        assert not alive(on_b)
    finally:
        for pid in (on_a, on_b):
            if alive(pid):
                os.killpg(pid, 9)
