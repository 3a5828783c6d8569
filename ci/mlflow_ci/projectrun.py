"""Run an MLflow Project's entry point with ``mlflow run`` against a tracking server.

Shared by ``smoke`` (smoke parameters, then verification) and ``train`` (full parameters).  The
run id is read from MLflow's own output, or found in the experiment when the process died early.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import output, proc, tracking
from .errors import CommandFailed, ServerUnreachable

RUN_ID_IN_OUTPUT = re.compile(r"=== Run \(ID '([0-9a-f]{32})'\)")


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
    argv = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point,
            "--env-manager", env_manager, "--experiment-name", experiment]  # fmt: skip
    for key, value in parameters.items():
        argv += ["-P", f"{key}={value}"]
    started_ms = int(time.time() * 1000)
    with output.step(f"mlflow run {project.name} -e {entry_point} ({env_manager})"):
        try:
            done = proc.run(argv, env=tracking.client_env(tracking_uri), cwd=project, timeout=timeout,
                            check=False, stream=True)  # fmt: skip
            returncode, out, elapsed = done.returncode, done.output, done.duration_s
        except CommandFailed as exc:  # the timeout
            returncode, out, elapsed = -1, exc.output_tail, float(timeout)
    if returncode != 0 and not tracking.check_health(tracking_uri):
        raise ServerUnreachable(
            f"The tracking server at {tracking_uri} stopped answering while the entry point ran "
            f"(mlflow run exited {returncode}).",
            hint="Check the server's log; nothing was verified.",
        )
    with tracking.client_settings(tracking_uri):
        from mlflow import MlflowClient

        run_id = _find_run_id(MlflowClient(tracking_uri), out, experiment, started_ms)
    return ProjectRun(returncode, out, elapsed, run_id, experiment)


def _find_run_id(client: Any, out: str, experiment: str, started_ms: int) -> str | None:
    match = RUN_ID_IN_OUTPUT.search(out)
    if match:
        return match.group(1)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.start_time >= {started_ms}",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0].info.run_id if runs else None
