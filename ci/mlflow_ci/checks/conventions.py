"""Does a run follow the team's conventions? Naming, tags, params, metrics, dataset, model.

:func:`verify_run` is shared by ``mlflow-ci smoke`` (for the run it just made) and
``mlflow-ci conventions`` (for audits of older work on any tracking server).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

from mlflow_ci.config import LoadedPolicy, Policy, find_policy, load_policy
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.output import finish
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.mlflowio import tracking
from mlflow_ci.mlflowio.modelref import find_logged_model

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def finite(value: float) -> bool:
    """MLflow's SQL stores keep +/-inf as +/-float max, so that counts as infinite too."""
    return math.isfinite(value) and abs(value) < sys.float_info.max


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _artifact_exists(client: Any, run_id: str, path: str) -> bool:
    parent = str(Path(path).parent) if "/" in path else None
    listing = client.list_artifacts(run_id, parent) if parent else client.list_artifacts(run_id)
    return any(a.path == path for a in listing)


def verify_run(client: Any, run: Any, policy: Policy, *, check_model: bool = True) -> list[Check]:
    """Every convention the policy asks of one run, as a list of checks (nothing raised)."""
    checks: list[Check] = []
    info, data = run.info, run.data
    smoke = policy.smoke

    checks.append(check("run status", info.status == "FINISHED", expected="FINISHED", found=info.status))

    experiment = client.get_experiment(info.experiment_id)
    pattern = policy.naming.pattern("experiment", policy.project)
    checks.append(
        check(
            "experiment name",
            bool(re.match(pattern, experiment.name)),
            expected=f"matches {policy.naming.experiment}",
            found=experiment.name,
            detail=f"pattern: `{pattern}`",
        )
    )
    pattern = policy.naming.pattern("run", policy.project)
    run_name = info.run_name or data.tags.get("mlflow.runName", "")
    checks.append(
        check(
            "run name",
            bool(re.match(pattern, run_name or "")),
            expected=f"matches {policy.naming.run}",
            found=run_name or "(none)",
            detail=f"pattern: `{pattern}`",
        )
    )

    for tag in policy.tags.required:
        value = data.tags.get(tag)
        checks.append(
            check(
                f"tag {tag}",
                bool(value and value.strip()),
                expected="present, non-empty",
                found=repr(value) if value is not None else "missing",
            )
        )
    for tag, tag_pattern in policy.tags.patterns.items():
        value = data.tags.get(tag)
        checks.append(
            check(
                f"tag {tag} value",
                value is not None and re.search(tag_pattern, value) is not None,
                expected=f"matches {tag_pattern}",
                found=repr(value) if value is not None else "missing",
            )
        )

    missing_params = [p for p in smoke.required_params if p not in data.params]
    checks.append(
        check(
            "required params",
            not missing_params,
            expected=", ".join(smoke.required_params) or "(none required)",
            found=f"missing: {', '.join(missing_params)}" if missing_params else f"{len(data.params)} params",
        )
    )

    for name in smoke.required_metrics:
        value = data.metrics.get(name)
        if value is None:
            checks.append(check(f"metric {name}", False, expected="logged, finite", found="missing"))
            continue
        history = client.get_metric_history(info.run_id, name)
        bad = [m.value for m in history if not finite(m.value)]
        checks.append(
            check(
                f"metric {name}",
                finite(value) and not bad,
                expected="logged, finite",
                found=f"{value:.6g}" + (f" (non-finite in history: {bad[:3]})" if bad else ""),
            )
        )
    non_finite = sorted(
        k for k, v in data.metrics.items() if not finite(v) and k not in smoke.required_metrics
    )
    if non_finite:
        checks.append(
            check(
                "all metrics finite",
                False,
                expected="no NaN or infinity",
                found=", ".join(f"{k}={data.metrics[k]}" for k in non_finite),
            )
        )

    for path in smoke.required_artifacts:
        checks.append(
            check(
                f"artifact {path}",
                _artifact_exists(client, info.run_id, path),
                expected="present",
                found="present" if _artifact_exists(client, info.run_id, path) else "missing",
            )
        )

    if smoke.require_dataset:
        inputs = getattr(run, "inputs", None)
        datasets = [d.dataset for d in (getattr(inputs, "dataset_inputs", None) or [])]
        found = ", ".join(f"{d.name} ({d.digest})" for d in datasets) or "none"
        checks.append(
            check("dataset input", bool(datasets), expected="recorded with mlflow.log_input", found=found)
        )

    if check_model:
        checks.extend(verify_model_metadata(client, run, policy))
    return checks


def verify_model_metadata(client: Any, run: Any, policy: Policy) -> list[Check]:
    """Model logged, with signature and input example (no loading: that is smoke's job)."""
    import mlflow.models

    smoke = policy.smoke
    ref = find_logged_model(client, run, smoke.model_artifact_path)
    checks = [
        check(
            "model logged",
            ref is not None,
            expected=f"a model named {smoke.model_artifact_path!r}",
            found=ref.uri if ref else "none",
        )
    ]
    if ref is None:
        return checks
    info = mlflow.models.get_model_info(ref.uri)
    if smoke.require_signature:
        checks.append(
            check(
                "model signature",
                info.signature is not None,
                expected="present",
                found=_describe_signature(info.signature),
            )
        )
    if smoke.require_input_example:
        example = info.saved_input_example_info
        checks.append(
            check(
                "model input example",
                bool(example),
                expected="present",
                found=str(example.get("type", "present")) if example else "none",
            )
        )
    return checks


def _describe_signature(signature: Any) -> str:
    if signature is None:
        return "none"
    inputs = signature.inputs.input_names() if signature.inputs else []
    return f"{len(inputs)} inputs → {'outputs' if signature.outputs else 'no outputs'}"


# --------------------------------------------------------------------------------------------
# `mlflow-ci conventions TARGET`


def _resolve_runs(client: Any, target: str, max_runs: int) -> tuple[str, list[Any]]:
    from mlflow.exceptions import MlflowException

    if RUN_ID_RE.match(target):
        try:
            return f"run {target}", [client.get_run(target)]
        except MlflowException:
            pass
    experiment = client.get_experiment_by_name(target)
    if experiment is None and target.isdigit():
        try:
            experiment = client.get_experiment(target)
        except MlflowException:
            experiment = None
    if experiment is None:
        raise ConfigError(
            f"{target!r} is neither a run id nor an experiment name or id on this tracking server."
        )
    runs = client.search_runs(
        [experiment.experiment_id], max_results=max_runs, order_by=["attributes.start_time DESC"]
    )
    return f"experiment {experiment.name}", list(runs)


def conventions_command(
    *,
    target: str,
    policy_path: Path | None,
    tracking_uri: str | None,
    max_runs: int,
    report_dir: Path | None,
    as_json: bool,
) -> int:
    loaded: LoadedPolicy = load_policy(policy_path or find_policy(Path.cwd()) or Path("mlflow-ci.yaml"))
    if not tracking_uri:
        raise ConfigError("No tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI.")
    tracking.require_reachable(tracking_uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with tracking.client_settings(tracking_uri):
        client = MlflowClient(tracking_uri)
        try:
            label, runs = _resolve_runs(client, target, max_runs)
            report = Report(kind="conventions", title=label, tracking_uri=tracking_uri)
            for run in runs:
                name = run.info.run_name or run.info.run_id
                for item in verify_run(client, run, loaded.policy):
                    report.add(Check(f"{name}: {item.name}", item.expected, item.found, item.verdict))
        except MlflowException as exc:
            raise InfraError(
                f"The tracking server at {tracking_uri} refused a request: {exc.message}"
            ) from None
    if not runs:
        report.notes.append("No runs found.")
    report.data["runs_checked"] = len(runs)
    report.data["runs_failing"] = len({c.name.split(": ")[0] for c in report.failures})
    return finish(report, report_dir=report_dir or Path("reports/mlflow-ci"), as_json=as_json)
