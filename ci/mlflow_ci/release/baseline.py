"""What a candidate is compared with: a registry alias (default ``champion``), a pinned run, or the
newest finished run of the main branch.  Each is one query; none lists versions or runs wholesale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_ci.config import Policy
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.mlflowio.registry import Connection, aliases_or_empty, get_run, get_version, mlflow_errors


@dataclass(frozen=True)
class BaselineRef:
    kind: str  # alias | run | main_branch
    description: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    alias: str | None = None
    version: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "run_id": self.run_id,
            "alias": self.alias,
            "version": self.version,
            "model_uri": self.model_uri,
            "url": self.url,
        }


def resolve(conn: Connection, policy: Policy, model: str, candidate: Any) -> tuple[BaselineRef | None, str]:
    """The baseline for ``candidate``, or ``None`` with the reason (first model, no main run)."""
    spec = policy.gates.baseline
    artifact = policy.registry.model_artifact_path
    if spec.source == "alias":
        alias = spec.alias or policy.registry.aliases.champion
        version = aliases_or_empty(conn, model).get(alias)
        if version is None:
            return None, f"model {model!r} has no {alias!r} yet (first model)"
        mv = get_version(conn, model, version)
        if mv.run_id == candidate.info.run_id:
            return None, f"the candidate run is already {model!r}@{alias} (v{version})"
        run = get_run(conn, mv.run_id)
        return (
            BaselineRef(
                kind="alias",
                description=f"{model}@{alias} (v{version})",
                run_id=mv.run_id,
                metrics=dict(run.data.metrics),
                model_uri=f"models:/{model}/{version}",
                alias=alias,
                version=str(version),
                url=conn.version_url(model, str(version)),
            ),
            "",
        )
    if spec.source == "run":
        assert spec.run_id is not None
        run = get_run(conn, spec.run_id)
        return (
            BaselineRef(
                kind="run",
                description=f"pinned run {spec.run_id}",
                run_id=spec.run_id,
                metrics=dict(run.data.metrics),
                model_uri=f"runs:/{spec.run_id}/{artifact}",
                url=conn.run_url(run.info.experiment_id, spec.run_id),
            ),
            "",
        )
    # main_branch: the newest finished run of the branch in the experiment (one query).
    experiment_id = candidate.info.experiment_id
    if spec.experiment:
        with mlflow_errors(conn.server, f"looking up experiment {spec.experiment!r}"):
            exp = conn.client.get_experiment_by_name(spec.experiment)
        if exp is None:
            raise ConfigError(
                f"gates.baseline.experiment {spec.experiment!r} does not exist on {conn.server}."
            )
        experiment_id = exp.experiment_id
    flt = (
        f"tags.`{spec.branch_tag}` = '{spec.branch}' and attributes.status = 'FINISHED' "
        f"and attributes.run_id != '{candidate.info.run_id}'"
    )
    with mlflow_errors(conn.server, f"searching the newest run of branch {spec.branch!r}"):
        runs = conn.client.search_runs(
            [experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1
        )
    if not runs:
        return (
            None,
            f"no finished run of branch {spec.branch!r} (tag {spec.branch_tag}) "
            f"in experiment {experiment_id}",
        )
    run = runs[0]
    return (
        BaselineRef(
            kind="main_branch",
            description=f"newest {spec.branch} run {run.info.run_id}",
            run_id=run.info.run_id,
            metrics=dict(run.data.metrics),
            model_uri=f"runs:/{run.info.run_id}/{artifact}",
            url=conn.run_url(run.info.experiment_id, run.info.run_id),
        ),
        "",
    )
