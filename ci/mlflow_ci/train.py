"""``mlflow-ci train PROJECT``: run the project's entry point with its full parameters (``train:``
in the policy, not the smoke parameters) against a tracking server and report the run id, which
``gate`` and ``register`` take next.  Deliberately minimal: the smoke check owns run validation.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from . import output, proc
from .errors import InfraError
from .policy import find_policy
from .registry import connect, load_command_policy
from .tracking import client_env

RUN_ID_RE = re.compile(r"Run \(ID '([0-9a-f]{32})'\) succeeded")


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
    policy = loaded.policy
    cfg = policy.train
    conn = connect(tracking_uri)
    experiment = cfg.experiment or policy.naming.render("experiment", policy.project)
    parameters = {**{k: str(v) for k, v in cfg.parameters.items()}, **dict(params or {})}
    args = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(project),
        "-e",
        cfg.entry_point,
        "--env-manager",
        env_manager or cfg.env_manager,
        "--experiment-name",
        experiment,
    ]
    for key, value in parameters.items():
        args += ["-P", f"{key}={value}"]
    with output.step(f"train {project} ({cfg.entry_point}, {len(parameters)} parameters)"):
        done = proc.run(
            args, env=client_env(conn.server), timeout=cfg.timeout, stream=True, what=f"mlflow run {project}"
        )
    match = RUN_ID_RE.search(done.output)
    if not match:
        raise InfraError(f"mlflow run {project} succeeded but printed no run id. Last output:\n{done.tail}")
    run_id = match.group(1)
    output.set_output("run_id", run_id)
    if as_json:
        print(json.dumps({"run_id": run_id, "experiment": experiment, "parameters": parameters}))
    else:
        print(run_id)
    return 0
