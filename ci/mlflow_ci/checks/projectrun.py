"""Run an MLflow Project's entry point against a tracking server, as ``mlflow run`` does.

Shared by ``smoke`` (smoke parameters, then verification) and ``train`` (full parameters).

The project goes through MLflow's own local project backend (the one behind ``mlflow run``:
parameter validation, the run and its tags, the ``virtualenv``/``uv`` environment built from the
project's lock and cached under ``MLFLOW_ENV_ROOT``, the entry point command), called in this
process.  ``mlflow run`` would start a second interpreter that imports MLflow again only to do the
same; here the entry point is the only child.  The backend's child cannot be given pipes, so its
output is taken from this process's own stdout/stderr (:func:`mlflow_ci.core.proc.captured_stdio`),
and on a timeout its whole process tree is stopped (:func:`mlflow_ci.core.proc.kill_tree`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import ServerUnreachable
from mlflow_ci.mlflowio import tracking

# What every entry point child gets on top of the client settings: unbuffered output, so that a
# crash's last lines reach the report, and no telemetry.
RUN_ENV = {"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class ProjectRun:
    returncode: int  # -1 when stopped at the timeout
    output: str
    elapsed_s: float
    run_id: str | None
    experiment: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.run_id is not None

    @property
    def outcome(self) -> str:
        return "timed out" if self.returncode == -1 else f"exit {self.returncode}"


def param_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def run_env(env_manager: str) -> dict[str, str]:
    """The entry point's extra environment.  With ``local`` the project runs in the environment
    mlflow-ci runs in, so its interpreter's folder comes first on PATH: ``python`` in the
    MLproject command is this interpreter even when its venv was not activated."""
    env = dict(RUN_ENV)
    if env_manager == "local":
        here = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0] != here:
            env["PATH"] = here + (os.pathsep + path if path else "")
    return env


def equivalent_command(project: Path, entry_point: str, parameters: dict[str, str], env_manager: str,
                       experiment: str) -> str:  # fmt: skip
    """The ``mlflow run`` command line that does the same, for people to reproduce it."""
    argv = ["mlflow", "run", str(project), "-e", entry_point, "--env-manager", env_manager,
            "--experiment-name", experiment]  # fmt: skip
    for key, value in parameters.items():
        argv += ["-P", f"{key}={value}"]
    return shlex.join(argv)


def run_project(
    project: Path,
    *,
    entry_point: str,
    parameters: dict[str, str],
    env_manager: str,
    experiment: str,
    tracking_uri: str,
    timeout: int,
) -> ProjectRun:
    """Run and wait; never raises for a failing entry point, only when the server is gone."""
    started_ms = int(time.time() * 1000)
    start = time.monotonic()
    run_id: str | None = None
    with output.step(f"mlflow run {project.name} -e {entry_point} ({env_manager})"):
        output.info("$ " + equivalent_command(project, entry_point, parameters, env_manager, experiment))
        with tracking.client_settings(tracking_uri), proc.scoped_environ(run_env(env_manager)):
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri)
            experiment_id = _experiment_id(client, experiment)
            with proc.captured_stdio() as lines:
                try:
                    submitted = _submit(
                        project, entry_point, parameters, env_manager, tracking_uri, experiment_id
                    )
                except Exception as exc:  # MLflow refused the project: a result, unless the server is gone
                    _raise_if_unreachable(tracking_uri, exc)
                    lines.append(f"\n{type(exc).__name__}: {exc}\n")
                    returncode = 1
                    run_id = _find_run_id(client, experiment_id, started_ms)
                else:
                    run_id = submitted.run_id
                    try:
                        returncode = _wait(submitted.command_proc, timeout)
                    except BaseException:  # Ctrl-C: the process tree is gone; the run says so
                        with contextlib.suppress(Exception):
                            _mark_terminated(client, run_id, "FAILED")
                        raise
                # Inside the capture: MLflow prints the run's link on stdout when it ends a run.
                if run_id is not None and tracking.check_health(tracking_uri):
                    _mark_terminated(client, run_id, "FINISHED" if returncode == 0 else "FAILED")
            out = "".join(lines)
            if returncode == -1:
                out += f"\n(stopped: the entry point did not finish within {timeout}s)\n"
    if returncode != 0 and not tracking.check_health(tracking_uri):
        raise ServerUnreachable(
            f"The tracking server at {tracking_uri} stopped answering while the entry point ran "
            f"(the entry point ended with {'a timeout' if returncode == -1 else f'exit {returncode}'}).",
            hint="Check the server's log; nothing was verified.",
        )
    return ProjectRun(returncode, out, time.monotonic() - start, run_id, experiment)


def _submit(project: Path, entry_point: str, parameters: dict[str, str], env_manager: str, tracking_uri: str,
            experiment_id: str) -> Any:  # fmt: skip
    """Start the entry point through MLflow's local backend; returns its ``LocalSubmittedRun``.

    ``SYNCHRONOUS`` makes the backend start the entry point itself and hand back the process
    (``False`` would make it start another ``mlflow run``); the wait is ours, for the timeout.
    """
    from mlflow import MlflowClient
    from mlflow.projects import utils as project_utils
    from mlflow.projects.backend import loader
    from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

    backend = loader.load_backend("local")
    config = {
        project_utils.PROJECT_ENV_MANAGER: env_manager,
        project_utils.PROJECT_SYNCHRONOUS: True,
        project_utils.PROJECT_DOCKER_ARGS: None,
        project_utils.PROJECT_STORAGE_DIR: None,
        project_utils.PROJECT_BUILD_IMAGE: False,
        project_utils.PROJECT_DOCKER_AUTH: None,
    }
    submitted = backend.run(str(project), entry_point, parameters, None, config, tracking_uri, experiment_id)
    MlflowClient(tracking_uri).set_tag(submitted.run_id, MLFLOW_PROJECT_BACKEND, "local")
    return submitted


def _wait(child: Any, timeout: int) -> int:
    try:
        return int(child.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        proc.kill_tree(child)
        return -1
    except BaseException:  # Ctrl-C: leave no process behind
        proc.kill_tree(child)
        raise


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by a concurrent run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _raise_if_unreachable(tracking_uri: str, exc: BaseException) -> None:
    if not tracking.check_health(tracking_uri):
        raise ServerUnreachable(
            f"The tracking server at {tracking_uri} stopped answering while the project was being started "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}).",
            hint="Check the server's log; nothing was verified.",
        ) from None


def _find_run_id(client: Any, experiment_id: str, started_ms: int) -> str | None:
    """The run MLflow created before it refused to go on (an environment that would not build)."""
    runs = client.search_runs([experiment_id], filter_string=f"attributes.start_time >= {started_ms}",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0].info.run_id if runs else None


def _mark_terminated(client: Any, run_id: str, status: str) -> None:
    """As ``mlflow run`` does: a run its entry point left open ends with the process's outcome."""
    from mlflow.entities import RunStatus

    if not RunStatus.is_terminated(RunStatus.from_string(client.get_run(run_id).info.status)):
        client.set_terminated(run_id, status)
