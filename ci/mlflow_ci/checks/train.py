"""``mlflow-ci train PROJECT``: run the project's entry point with its full parameters (``train:``
in the policy, not the smoke parameters) against a tracking server and report the run id, which
``gate`` and ``register`` take next.  Deliberately minimal: the smoke check owns run validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlflow_ci.checks.projectrun import ProjectRun, param_value, run_project
from mlflow_ci.config import Policy, find_policy, load_command_policy
from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import CheckFailed
from mlflow_ci.core.output import emit_json
from mlflow_ci.mlflowio import envmanagers
from mlflow_ci.mlflowio.registry import connect


def train_run(
    *,
    project: Path,
    policy: Policy,
    tracking_uri: str,
    env_manager: str | None = None,
    params: Mapping[str, str] | None = None,
) -> ProjectRun:
    """Run the project with its full parameters; raises CheckFailed when the entry point fails."""
    cfg = policy.train
    manager = envmanagers.get(env_manager or cfg.env_manager)
    manager.preflight()
    experiment = cfg.experiment or policy.naming.render("experiment", policy.project)
    parameters = {**{k: param_value(v) for k, v in cfg.parameters.items()}, **dict(params or {})}
    ran = run_project(project, entry_point=cfg.entry_point, parameters=parameters, env_manager=manager.name,
                      experiment=experiment, tracking_uri=tracking_uri, timeout=cfg.timeout)  # fmt: skip
    if not ran.ok:
        raise CheckFailed(
            f"Training {project} ({cfg.entry_point}) failed: {ran.outcome}"
            + (f", run {ran.run_id}" if ran.run_id else "")
            + f". Last output:\n{proc.tail(ran.output)}"
        )
    return ran


def train_command(
    *,
    project: Path,
    policy_path: Path | None,
    tracking_uri: str | None,
    env_manager: str | None = None,
    params: Mapping[str, str] | None = None,
    as_json: bool = False,
) -> int:
    loaded = load_command_policy(policy_path or find_policy(project), project_default=project.resolve().name)
    conn = connect(tracking_uri)
    ran = train_run(project=project.resolve(), policy=loaded.policy, tracking_uri=conn.server,
                    env_manager=env_manager, params=params)  # fmt: skip
    output.set_output("run_id", ran.run_id or "")
    if as_json:
        emit_json({"run_id": ran.run_id, "experiment": ran.experiment, "elapsed_s": ran.elapsed_s})
    else:
        print(ran.run_id)
    return 0
