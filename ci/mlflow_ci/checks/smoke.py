"""``mlflow-ci smoke``: run a project's entry point in smoke mode and verify what it produced.

Steps: load the policy; start (or reach) a tracking server; ``mlflow run`` the entry point with
the smoke parameters in the chosen environment; tag the run with reproducibility facts; verify
the run against the policy (:func:`mlflow_ci.checks.conventions.verify_run`); load the logged model in
its own environment and predict on its input example.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow_ci.checks import modelenv
from mlflow_ci.checks.conventions import adoption_notes, leveled, run_url, verify_run
from mlflow_ci.checks.projectrun import ProjectRun, param_value, run_project
from mlflow_ci.config import LoadedPolicy, Policy, find_policy, load_policy
from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import ConfigError, PolicyError
from mlflow_ci.core.fsutil import writable_folder
from mlflow_ci.core.output import finish
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.mlflowio import envmanagers, lineage, tracking
from mlflow_ci.mlflowio.modelref import find_logged_model


def load_project_policy(project: Path, policy_path: Path | None, overrides: dict[str, Any]) -> LoadedPolicy:
    path = policy_path or find_policy(project)
    if path is None:
        raise PolicyError(
            f"{project / 'mlflow-ci.yaml'}: policy file not found.",
            hint="Every project carries an mlflow-ci.yaml (at least `project: <name>`); pass --policy to use another.",
        )
    return load_policy(path, overrides=overrides)


def smoke(
    *,
    project: Path,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    env_manager: str | None = None,
    report_dir: Path | None = None,
    workdir: Path | None = None,
    params: dict[str, str] | None = None,
    as_json: bool = False,
) -> int:
    """The ``mlflow-ci smoke`` command; returns the exit code."""
    project = Path(project).resolve()
    if not (project / "MLproject").is_file():
        raise ConfigError(f"{project} is not an MLflow Project: it has no MLproject file.")
    loaded = load_project_policy(project, policy_path, {"smoke.env_manager": env_manager})
    policy = loaded.policy
    report_dir = writable_folder(Path(report_dir) if report_dir else project / "reports" / "mlflow-ci")
    preflight(project, policy)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-smoke-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        output.info(
            "tracking server: " + (tracking_uri or "starting an embedded one (SQLite + local artifacts)")
        )
        with tracking.tracking(tracking_uri, base / "server") as uri:
            report = run_smoke(
                project=project, policy=policy, tracking_uri=uri, params=params or {}, scratch=Path(tmp)
            )
    return finish(report, report_dir=report_dir, as_json=as_json)


def preflight(project: Path, policy: Policy) -> None:
    """Before anything starts: the env managers' tools are there, and the interpreter
    python_env.yaml asks for can be had (exit 3 with one sentence if not)."""
    settings = policy.smoke
    manager = envmanagers.get(settings.env_manager)
    manager.preflight()
    envmanagers.get(settings.predict_env_manager or settings.env_manager).preflight()
    manager.ensure_python(project, proc.base_env())


def run_smoke(
    *, project: Path, policy: Policy, tracking_uri: str, params: dict[str, str], scratch: Path
) -> Report:
    """Run and verify; returns the report (raises only for infrastructure and configuration)."""
    settings = policy.smoke
    manager = envmanagers.get(settings.env_manager)
    predictor = envmanagers.get(settings.predict_env_manager or settings.env_manager)
    manager.preflight()
    predictor.preflight()

    experiment = settings.experiment or policy.naming.render("experiment", policy.project)
    parameters = {**{k: param_value(v) for k, v in settings.parameters.items()}, **params}
    report = Report(
        kind="smoke",
        title=f"{policy.project} ({settings.entry_point}, {manager.name})",
        tracking_uri=tracking_uri,
    )
    report.data.update({"experiment": experiment, "parameters": parameters, "env_manager": manager.name})

    # The prediction's interpreter starts while the entry point runs (see mlflow_ci.checks.modelenv).
    env_key = modelenv.record_key(policy.project, lineage.lock_hash(project), predictor.name)
    with modelenv.started_ahead(env_key, predictor.name, tracking.client_env(tracking_uri)) as warm:
        ran = run_project(project, entry_point=settings.entry_point, parameters=parameters, env_manager=manager.name,
                          experiment=experiment, tracking_uri=tracking_uri, timeout=settings.timeout)  # fmt: skip
        _verify(project, policy, report, ran, manager, predictor, tracking_uri, scratch, warm, env_key)
    adoption_notes(report, policy)
    return report


def _verify(project: Path, policy: Policy, report: Report, ran: ProjectRun, manager: envmanagers.EnvManager,
            predictor: envmanagers.EnvManager, tracking_uri: str, scratch: Path, warm: modelenv.Worker | None,
            env_key: str) -> Report:  # fmt: skip
    settings = policy.smoke
    out, run_id = ran.output, ran.run_id
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    with tracking.client_settings(tracking_uri):
        client = MlflowClient(tracking_uri)
        if run_id:
            run = client.get_run(run_id)
            report.run_id = run_id
            report.run_url = run_url(tracking_uri, run.info.experiment_id, run_id)
        if ran.returncode != 0:
            found = f"timed out after {settings.timeout}s" if ran.returncode == -1 else ran.outcome
            report.add(check("entry point", False, expected="exit 0", found=found))
            report.output_tail = proc.tail(out)
            return report
        report.add(check("entry point", True, expected="exit 0", found=f"exit 0 in {ran.elapsed_s:.1f}s"))
        if not run_id:
            report.add(check("run found", False, expected="the run mlflow run created", found="none"))
            report.output_tail = proc.tail(out)
            return report

        facts = lineage.facts(
            project, python_version=manager.python_version(project), env_manager=manager.name
        )
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in facts.items()])
        run = client.get_run(run_id)
        report.data["reproducibility"] = {
            k: v for k, v in run.data.tags.items() if k.startswith("mlflow_ci.")
        }
        report.checks.extend(verify_run(client, run, policy))

        # Loading and predicting belongs to the model family: not done at off, a warning at warn.
        model_level = policy.levels.model
        ref = find_logged_model(client, run, settings.model_artifact_path) if model_level != "off" else None
        if ref is not None:
            with output.step(f"load and predict {ref.uri} ({predictor.name})"):
                predicted = predict_check(ref.uri, predictor.name, tracking_uri, scratch, warm=warm, key=env_key,
                                          timeout=settings.timeout)  # fmt: skip
            report.checks.extend(leveled([predicted], model_level))
    if report.verdict == "fail":
        report.output_tail = proc.tail(out)
    return report


def predict_check(model_uri: str, env_manager: str, tracking_uri: str, scratch: Path, *,
                  warm: modelenv.Worker | None = None, key: str | None = None, timeout: float = 900) -> Check:  # fmt: skip
    """Load the model in its own environment and predict on its saved input example.

    The environment is built from the model's requirements and cached under ``MLFLOW_ENV_ROOT``
    (:mod:`mlflow_ci.checks.modelenv`); ``local`` predicts in this process.
    """
    import mlflow.artifacts

    with tracking.client_settings(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(scratch / "model")))
    example = local / "serving_input_example.json"
    name, expected = "model loads and predicts", "predictions, one per input-example row"
    if not example.is_file():
        return check(name, False, expected=expected, found="no serving input example saved")
    rows = _example_rows(json.loads(example.read_text(encoding="utf-8")))
    out_file = scratch / "predictions.json"
    how = "in this process"
    try:
        if env_manager == "local":
            from mlflow.pyfunc import scoring_server

            with tracking.client_settings(tracking_uri), output.stdout_to_stderr():
                scoring_server._predict(local.as_uri(), str(example), str(out_file), "json")
        else:
            how = modelenv.predict(local, env_manager=env_manager, input_path=example, output_path=out_file,
                                   env=tracking.client_env(tracking_uri), timeout=timeout, warm=warm, key=key)  # fmt: skip
    except Exception as exc:  # the model's own code failing is a check result, not our crash
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return check(name, False, expected=expected, found=f"{type(exc).__name__}: {first}",
                     detail=f"```\n{str(exc)[-3000:]}\n```")  # fmt: skip
    if not out_file.is_file():
        return check(name, False, expected=expected, found="no predictions written")
    predictions = json.loads(out_file.read_text(encoding="utf-8"))
    if isinstance(predictions, dict):
        predictions = predictions.get("predictions", predictions)
    count = len(predictions) if isinstance(predictions, list) else 0
    ok = count > 0 and (rows is None or count == rows)
    found = f"{count} predictions for {rows if rows is not None else '?'} rows ({env_manager}, {how})"
    return check(name, ok, expected=expected, found=found)


def _example_rows(payload: dict[str, Any]) -> int | None:
    if "dataframe_split" in payload:
        return len(payload["dataframe_split"].get("data", []))
    if "dataframe_records" in payload:
        return len(payload["dataframe_records"])
    for key in ("inputs", "instances"):
        if isinstance(payload.get(key), list):
            return len(payload[key])
    return None
