"""One MLflow run per drift check, in the monitoring experiment: per-feature metrics (so the UI
charts each feature's statistic over time, run after run), the verdicts as tags, the report and
the current data's profile as artifacts."""

from __future__ import annotations

import contextlib
import math
import re
import time
from typing import Any

from mlflow_ci.core.report import Report
from mlflow_ci.mlflowio.registry import Connection, mlflow_errors
from mlflow_ci.monitoring.drift import DriftResult, FeatureResult
from mlflow_ci.monitoring.profile import Profile

TAG_KIND = "mlflow_ci.monitoring.kind"
TAG_VERDICT = "mlflow_ci.monitoring.verdict"
TAG_REFERENCE = "mlflow_ci.monitoring.reference"
TAG_REFERENCE_RUN = "mlflow_ci.monitoring.reference_run"
TAG_MODEL = "mlflow_ci.monitoring.model"
TAG_MODEL_VERSION = "mlflow_ci.monitoring.model_version"
DATASET_PREFIX = "_dataset"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """A metric name MLflow accepts (letters, digits, _ - . space /), grouped by feature in the UI."""
    return "/".join(_UNSAFE.sub("_", p) for p in parts)[:250]


def feature_metrics(res: FeatureResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for stat, value in res.effects.items():
        if value is not None and math.isfinite(value):
            out[metric_key(res.name, stat)] = float(value)
    if res.p_adjusted is not None:
        out[metric_key(res.name, "p_adjusted")] = res.p_adjusted
    out[metric_key(res.name, "drifted")] = 1.0 if res.drifted else 0.0
    out[metric_key(res.name, "missing_share")] = res.missing_current
    if res.unseen_share is not None:
        out[metric_key(res.name, "unseen_share")] = res.unseen_share
    return out


def experiment_name(template: str, *, project: str, model: str | None) -> str:
    return template.replace("{project}", project).replace("{model}", model or "data")


def start_run(conn: Connection, experiment: str, *, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
    """Create the check's run (RUNNING); (run id, its URL)."""
    with mlflow_errors(conn.server, f"creating a run in the monitoring experiment {experiment!r}"):
        client = conn.client
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id, conn.run_url(experiment_id, run.info.run_id)


def log_results(
    conn: Connection,
    run_id: str,
    *,
    result: DriftResult,
    report: Report,
    html_extra: str,
    current: Profile,
    params: dict[str, Any],
) -> None:
    """Metrics, params, verdict tags and artifacts; the run ends FINISHED."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metrics: dict[str, float] = {}
    for res in result.all:
        metrics.update(feature_metrics(res))
    metrics[metric_key(DATASET_PREFIX, "drift_share")] = result.drift_share
    metrics[metric_key(DATASET_PREFIX, "drifted")] = 1.0 if result.dataset_verdict == "drift" else 0.0
    metrics[metric_key(DATASET_PREFIX, "drifted_features")] = float(len(result.drifted))
    metrics[metric_key(DATASET_PREFIX, "rows")] = float(result.rows_current)
    entries = [Metric(k, v, now, 0) for k, v in metrics.items()]
    with mlflow_errors(conn.server, f"logging the drift results to run {run_id}"):
        client = conn.client
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in list(params.items())[:100]],
            tags=[
                RunTag(TAG_VERDICT, result.dataset_verdict),
                RunTag("mlflow_ci.monitoring.report_verdict", report.verdict),
            ],
        )
        for i in range(0, len(entries), 1000):
            client.log_batch(run_id, metrics=entries[i : i + 1000])
        client.log_text(run_id, report.to_json(), "mlflow-ci/drift.json")
        client.log_text(run_id, report.to_html(html_extra), "mlflow-ci/drift.html")
        client.log_text(run_id, current.to_json(), "mlflow-ci/profiles/current.json")
        client.set_terminated(run_id, "FINISHED")


def fail_run(conn: Connection, run_id: str) -> None:
    """Mark the run FAILED when the check broke before its results were logged."""
    # The server may be the reason; the error already on its way says so.
    with contextlib.suppress(Exception):
        conn.client.set_terminated(run_id, "FAILED")
