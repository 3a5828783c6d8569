"""The tracking-server fixture: a real server that starts healthy and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow_ci.core.errors import InfraError, ServerUnreachable
from mlflow_ci.mlflowio.tracking import TrackingServer, check_health, free_port, require_reachable


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_context_manager_starts_logs_and_cleans_up(tmp_path: Path) -> None:
    import mlflow

    with TrackingServer(tmp_path) as server:
        assert check_health(server.url)
        pid = server.pid
        assert pid is not None
        client = mlflow.MlflowClient(server.url)
        exp = client.create_experiment("fixture-check")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "m", 1.5)
        assert client.get_run(run.info.run_id).data.metrics["m"] == 1.5
    assert not check_health(server.url)
    assert not _group_alive(pid), "the server's process group survived the context manager"
    assert (tmp_path / "mlflow.db").is_file()


def test_server_that_cannot_start_is_a_clear_infra_error(tmp_path: Path) -> None:
    server = TrackingServer(
        tmp_path, backend_store_uri="postgresql+psycopg2://nobody@127.0.0.1:1/none", startup_timeout=60
    )
    with pytest.raises(InfraError) as caught:
        server.start()
    # The database's own error, not the startup timeout: MLflow would retry it for 100 s.
    assert "cannot reach its database postgresql+psycopg2://nobody@127.0.0.1:1/none" in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert "did not answer /health" not in str(caught.value)
    assert server.pid is None


def test_an_earlier_starts_database_errors_do_not_stop_a_new_start(tmp_path: Path) -> None:
    # The log is appended to across starts in one folder (`server up` reuses its folder).
    (tmp_path / "server.log").write_text(
        "WARNING mlflow.store.db.utils: SQLAlchemy engine could not be created. ...\n"
        "(psycopg2.OperationalError) connection refused\n" * 8
    )
    with TrackingServer(tmp_path) as server:
        assert check_health(server.url)


def test_unreachable_uri_is_server_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=rf"{url} did not answer /health"):
        require_reachable(url, attempts=2, delay=0.05)


def test_cli_server_up_and_down(tmp_path: Path) -> None:
    workdir = tmp_path / "srv"
    up = run_cli("server", "up", "--workdir", str(workdir), "--json")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        assert check_health(state["url"])
        again = run_cli("server", "up", "--workdir", str(workdir), "--json")
        assert json.loads(again.stdout)["reused"] is True
    finally:
        down = run_cli("server", "down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not check_health(state["url"])
    # Nothing of it runs. Its leader, a child of the `up` process that has exited, may stay a
    # zombie until the machine's init reaps it, which `down` does not wait for.
    assert not _group_members(state["pid"])
    assert not (workdir / "server.json").exists()


def test_cli_server_down_without_state_is_usage_error(tmp_path: Path) -> None:
    result = run_cli("server", "down", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "nothing to stop" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_killed_is_reported_unhealthy(tmp_path: Path) -> None:
    with TrackingServer(tmp_path) as server:
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        with pytest.raises(ServerUnreachable):
            require_reachable(server.url, attempts=2, delay=0.05)


def test_children_do_not_inherit_the_callers_run_or_virtualenv(monkeypatch: pytest.MonkeyPatch) -> None:
    """nox sets VIRTUAL_ENV: `uv pip install` in a child would then install a project's lock into
    mlflow-ci's own environment; a leaked MLFLOW_RUN_ID would attach the child to another run."""
    from mlflow_ci.mlflowio.tracking import client_env, client_settings

    for name in ("VIRTUAL_ENV", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "leaked")
    env = client_env("http://127.0.0.1:5000")
    assert not {"VIRTUAL_ENV", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"} & set(env)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    with client_settings("http://127.0.0.1:5000"):
        assert "VIRTUAL_ENV" not in os.environ
    assert os.environ["VIRTUAL_ENV"] == "leaked"


def test_prepared_server_serves_stores_filled_after_it_started(tmp_path: Path) -> None:
    """The restore's read-back server: its process exists (importing MLflow) before the database
    does; once started it serves MLflow's API and artifact proxy on what was written meanwhile."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow_ci.mlflowio.tracking import PreparedServer

    db, artifacts = tmp_path / "later.db", tmp_path / "art"
    server = PreparedServer(
        tmp_path / "w", backend_store_uri=f"sqlite:///{db}", artifacts_destination=str(artifacts)
    )
    with server:
        pid = server.pid
        assert pid is not None
        assert not db.exists()
        store = SqlAlchemyStore(f"sqlite:///{db}", "mlflow-artifacts:/")  # written while it imports
        exp = store.create_experiment("filled-later")
        store.engine.dispose()
        server.start()
        assert check_health(server.url)
        client = mlflow.MlflowClient(server.url)
        assert client.get_experiment(exp).name == "filled-later"
        run = client.create_run(exp)
        (tmp_path / "a.txt").write_text("through the proxy")
        client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["a.txt"]
        if Path("/proc/self/stat").exists():  # a serving process per core (at most 4), one group
            assert len(_group_members(pid)) == min(len(os.sched_getaffinity(0)), 4)
    assert not check_health(server.url)
    assert not _group_alive(pid)  # every copy reaped: not even a zombie left
    assert any(artifacts.rglob("a.txt")), "artifacts went to the destination given"


def test_prepared_server_that_dies_before_start_is_a_clear_infra_error(tmp_path: Path) -> None:
    from mlflow_ci.mlflowio.tracking import PreparedServer

    server = PreparedServer(tmp_path, backend_store_uri=f"sqlite:///{tmp_path / 'x.db'}").prepare()
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    with pytest.raises(InfraError, match="did not get ready"):
        server.start()
    assert server.pid is None
