"""Does a run follow the team's conventions? Naming, tags, params, metrics, dataset, model.

:func:`verify_run` is shared by ``mlflow-ci smoke`` (for the run it just made) and
``mlflow-ci conventions`` (for audits of older work on any tracking server). Each family of
conventions is checked at its level (policy ``levels:``): ``enforce`` fails, ``warn`` reports
what would fail without failing, ``off`` does not check.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from mlflow_ci.config import Level, LoadedPolicy, Policy, find_policy, load_policy
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


# --------------------------------------------------------------------------------------------
# The conventions: one function per convention, each returning its checks of one run (none
# raised), run in the order of CONVENTIONS. The check names, their order and their texts are what
# the smoke and conventions reports show.

Convention = Callable[[Any, Any, Policy], list[Check]]


def _run_status(client: Any, run: Any, policy: Policy) -> list[Check]:
    status = run.info.status
    return [check("run status", status == "FINISHED", expected="FINISHED", found=status)]


def _name_check(policy: Policy, which: Literal["experiment", "run"], name: str, found: str) -> Check:
    pattern = policy.naming.pattern(which, policy.project)
    return check(
        f"{which} name",
        bool(re.match(pattern, name)),
        expected=f"matches {getattr(policy.naming, which)}",
        found=found,
        detail=f"pattern: `{pattern}`",
    )


def _naming(client: Any, run: Any, policy: Policy) -> list[Check]:
    experiment = client.get_experiment(run.info.experiment_id).name
    run_name = run.info.run_name or run.data.tags.get("mlflow.runName", "")
    return [
        _name_check(policy, "experiment", experiment, found=experiment),
        _name_check(policy, "run", run_name or "", found=run_name or "(none)"),
    ]


def _found_tag(value: str | None) -> str:
    return repr(value) if value is not None else "missing"


def _required_tags(client: Any, run: Any, policy: Policy) -> list[Check]:
    checks = []
    for tag in policy.tags.required:
        value = run.data.tags.get(tag)
        ok = bool(value and value.strip())
        checks.append(check(f"tag {tag}", ok, expected="present, non-empty", found=_found_tag(value)))
    return checks


def _tag_patterns(client: Any, run: Any, policy: Policy) -> list[Check]:
    checks = []
    for tag, pattern in policy.tags.patterns.items():
        value = run.data.tags.get(tag)
        ok = value is not None and re.search(pattern, value) is not None
        checks.append(check(f"tag {tag} value", ok, expected=f"matches {pattern}", found=_found_tag(value)))
    return checks


def _required_params(client: Any, run: Any, policy: Policy) -> list[Check]:
    required, params = policy.smoke.required_params, run.data.params
    missing = [p for p in required if p not in params]
    return [
        check(
            "required params",
            not missing,
            expected=", ".join(required) or "(none required)",
            found=f"missing: {', '.join(missing)}" if missing else f"{len(params)} params",
        )
    ]


def _required_metrics(client: Any, run: Any, policy: Policy) -> list[Check]:
    """Each required metric logged, and finite in its last value and its whole history."""
    checks = []
    for name in policy.smoke.required_metrics:
        value = run.data.metrics.get(name)
        if value is None:
            checks.append(check(f"metric {name}", False, expected="logged, finite", found="missing"))
            continue
        bad = [m.value for m in client.get_metric_history(run.info.run_id, name) if not finite(m.value)]
        found = f"{value:.6g}" + (f" (non-finite in history: {bad[:3]})" if bad else "")
        checks.append(
            check(f"metric {name}", finite(value) and not bad, expected="logged, finite", found=found)
        )
    return checks


def _other_metrics_finite(client: Any, run: Any, policy: Policy) -> list[Check]:
    """The metrics not required: one failing check naming the non-finite ones, if any."""
    metrics = run.data.metrics
    non_finite = sorted(
        k for k, v in metrics.items() if not finite(v) and k not in policy.smoke.required_metrics
    )
    if not non_finite:
        return []
    found = ", ".join(f"{k}={metrics[k]}" for k in non_finite)
    return [check("all metrics finite", False, expected="no NaN or infinity", found=found)]


def _required_artifacts(client: Any, run: Any, policy: Policy) -> list[Check]:
    checks = []
    for path in policy.smoke.required_artifacts:
        present = _artifact_exists(client, run.info.run_id, path)
        checks.append(
            check(f"artifact {path}", present, expected="present", found="present" if present else "missing")
        )
    return checks


def _dataset_input(client: Any, run: Any, policy: Policy) -> list[Check]:
    if not policy.smoke.require_dataset:
        return []
    inputs = getattr(run, "inputs", None)
    datasets = [d.dataset for d in (getattr(inputs, "dataset_inputs", None) or [])]
    found = ", ".join(f"{d.name} ({d.digest})" for d in datasets) or "none"
    return [check("dataset input", bool(datasets), expected="recorded with mlflow.log_input", found=found)]


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


# In report order. "model" is left out when verify_run is told not to check the model.
CONVENTIONS: tuple[tuple[str, Convention], ...] = (
    ("status", _run_status),
    ("naming", _naming),
    ("tags", _required_tags),
    ("tag patterns", _tag_patterns),
    ("params", _required_params),
    ("metrics", _required_metrics),
    ("finite metrics", _other_metrics_finite),
    ("artifacts", _required_artifacts),
    ("dataset", _dataset_input),
    ("model", verify_model_metadata),
)


# The family (policy levels:) of each convention; the run's status has none and is always enforced.
FAMILY: dict[str, str] = {
    "naming": "naming",
    "tags": "tags",
    "tag patterns": "tags",
    "params": "params",
    "metrics": "metrics",
    "finite metrics": "metrics",
    "artifacts": "artifacts",
    "dataset": "dataset",
    "model": "model",
}


def leveled(checks: list[Check], level: Level) -> list[Check]:
    """The checks at ``level``: at ``warn`` a failing check becomes a warning with its expected
    and found unchanged (what it would have failed); otherwise they are returned as they are."""
    if level != "warn":
        return checks
    return [replace(item, verdict="warn") if item.failed else item for item in checks]


def verify_run(client: Any, run: Any, policy: Policy, *, check_model: bool = True) -> list[Check]:
    """Every convention the policy asks of one run, each at its family's level, as a list of
    checks (nothing raised); a family at ``off`` is not checked."""
    checks: list[Check] = []
    for name, convention in CONVENTIONS:
        level = policy.levels.of(FAMILY.get(name))
        if level == "off" or (name == "model" and not check_model):
            continue
        checks += leveled(convention(client, run, policy), level)
    return checks


MAX_NAMED = 10


def adoption_notes(report: Report, policy: Policy) -> None:
    """Say in the report which families only warn, what they would have failed, and which are
    off; a policy that enforces everything adds nothing (its report reads as it always did)."""
    levels = policy.levels
    warn, off = levels.at("warn"), levels.at("off")
    if not warn and not off:
        return
    report.data["levels"] = levels.model_dump()
    if warn:
        names = [c.name for c in report.warnings]
        shown = ", ".join(names[:MAX_NAMED]) + (
            f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
        )
        would = (
            f"{len(names)} check{'s' if len(names) != 1 else ''} would fail at enforce (marked warn): {shown}."
            if names
            else "Nothing would fail at enforce: ready to tighten."
        )
        report.notes.append(f"Level warn (reported, never failing): {', '.join(warn)}. {would}")
    if off:
        report.notes.append(f"Not checked (level off): {', '.join(off)}.")


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
    adoption_notes(report, loaded.policy)
    report.data["runs_checked"] = len(runs)
    report.data["runs_failing"] = len({c.name.split(": ")[0] for c in report.failures})
    if report.warnings:
        report.data["runs_warning"] = len({c.name.split(": ")[0] for c in report.warnings})
    return finish(report, report_dir=report_dir or Path("reports/mlflow-ci"), as_json=as_json)
