"""``mlflow-ci register RUN``: register the run's model with lineage tags, idempotently, and put
the new version at the ``candidate`` alias (the start of the promotion state machine).

Idempotent: a version already registered from the run is found with one filtered query
(``search_model_versions("name = ... and run_id = ...")``) and returned unchanged.  The check and
the creation happen under the model's lease, so two registrations of one run make one version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.config import Policy, load_command_policy
from mlflow_ci.core import faults, output
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.mlflowio import lineage
from mlflow_ci.mlflowio import tags as T
from mlflow_ci.mlflowio.registry import (
    Connection,
    connect,
    error_code,
    get_run,
    mlflow_errors,
    model_name,
    version_for_run,
)
from mlflow_ci.release.audit import registry_change
from mlflow_ci.release.promotion import Actor, move_alias, settle_after_failure


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    run_id: str
    created: bool
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "created": self.created,
            "tags": self.tags,
        }


def lineage_tags(
    run: Any, env: Mapping[str, str], *, project_dir: Path | None, pull_request: str | None
) -> dict[str, str]:
    tags = run.data.tags
    return {
        T.RUN_ID: run.info.run_id,
        T.GIT_COMMIT: lineage.git_commit(env, tags),
        T.PULL_REQUEST: lineage.pull_request(env, pull_request, tags),
        T.WORKFLOW_RUN: lineage.workflow_run_url(env) or "",
        T.DATASET_DIGEST: lineage.dataset_digest(run),
        T.LOCK_FILE_HASH: lineage.lock_file_hash(project_dir, tags),
        T.VERSION_GATE_VERDICT: tags.get(T.GATE_VERDICT, "none"),
        T.VERSION_GATE_DIGEST: tags.get(T.GATE_DIGEST, ""),
    }


def register_run(
    conn: Connection,
    policy: Policy,
    *,
    run_id: str,
    model: str,
    actor: Actor,
    env: Mapping[str, str],
    project_dir: Path | None = None,
    pull_request: str | None = None,
) -> Registered:
    """Register ``run_id``'s model as ``model`` (or return the version that already is)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlflow_ci.mlflowio.tracking import client_settings

    run = get_run(conn, run_id)
    with registry_change(conn, model, operation=f"register run {run_id}", actor=actor, registry=policy.registry,
                         wait=60) as (lease, log):  # fmt: skip
        existing = version_for_run(conn, model, run_id)
        if existing is not None:
            return Registered(model, str(existing.version), run_id, False, dict(existing.tags or {}))
        tags = lineage_tags(run, env, project_dir=project_dir, pull_request=pull_request)
        intent = log.append(
            model,
            op="register",
            phase="intent",
            who=actor.who,
            run_id=run_id,
            workflow_run=actor.workflow_run,
            details=tags,
        )
        faults.point("register_after_intent")
        uri = f"runs:/{run_id}/{policy.registry.model_artifact_path}"
        try:
            with client_settings(conn.server), mlflow_errors(conn.server, f"registering {uri} as {model!r}"):
                try:
                    mv = mlflow.register_model(uri, model, tags=tags)
                except MlflowException as exc:
                    if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                        raise ConfigError(
                            f"Run {run_id} has no model named {policy.registry.model_artifact_path!r} "
                            "to register "
                            f"as {model!r} ({str(exc).splitlines()[0][:200]}).",
                            hint="registry.model_artifact_path must match the name= given to log_model.",
                        ) from None
                    raise
        except BaseException:
            settle_after_failure(log, intent, actor)
            raise
        version = str(mv.version)
        log.append(
            model,
            op="register",
            phase="commit",
            who=actor.who,
            ref=intent.seq,
            to_version=version,
            run_id=run_id,
            workflow_run=actor.workflow_run,
        )
        move_alias(
            conn,
            log,
            lease,
            model=model,
            alias=policy.registry.aliases.candidate,
            to_version=version,
            op="register",
            actor=actor,
            why=f"registered from run {run_id}",
            run_id=run_id,
        )
    return Registered(model, version, run_id, True, tags)


def register_command(
    *,
    run_id: str,
    policy_path: Path | None,
    tracking_uri: str | None,
    model: str | None = None,
    project_dir: Path | None = None,
    pull_request: str | None = None,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    env = os.environ if env is None else env
    loaded = load_command_policy(policy_path)
    name = model_name(loaded.policy, model)
    if project_dir is None and loaded.path is not None:
        project_dir = loaded.path.parent
    conn = connect(tracking_uri)
    result = register_run(
        conn,
        loaded.policy,
        run_id=run_id,
        model=name,
        actor=Actor.from_env(env),
        env=env,
        project_dir=project_dir,
        pull_request=pull_request,
    )
    output.set_output("version", result.version)
    output.set_output("model", name)
    summary = (
        f"model {name!r} version {result.version} "
        f"{'registered' if result.created else 'was already registered'} from run {run_id}."
    )
    output.write_step_summary(
        f"### mlflow-ci register\n\n{summary} [{conn.version_url(name, result.version)}]"
        f"({conn.version_url(name, result.version)})"
    )
    if as_json:
        output.emit_json(result.to_dict())
    output.info(summary)
    return 0
