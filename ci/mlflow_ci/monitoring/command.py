"""``mlflow-ci drift REFERENCE CURRENT``: exit 1 when the policy's data-set rule (or a blocking
prediction, missing-value or unseen-category check) finds drift, 0 when not."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_ci.config import load_command_policy
from mlflow_ci.core import output
from mlflow_ci.core.fsutil import writable_folder
from mlflow_ci.mlflowio.registry import connect
from mlflow_ci.monitoring.drift import compare, selected_features
from mlflow_ci.monitoring.record import (
    TAG_KIND,
    TAG_MODEL,
    TAG_MODEL_VERSION,
    TAG_REFERENCE,
    TAG_REFERENCE_RUN,
    experiment_name,
    fail_run,
    log_results,
    start_run,
)
from mlflow_ci.monitoring.reference import load_reference
from mlflow_ci.monitoring.report import build_report, html_extra
from mlflow_ci.monitoring.tabular import expand, profile_files


def drift_command(
    *,
    reference: str,
    current: Sequence[str],
    policy_path: Path | None,
    tracking_uri: str | None,
    report_dir: Path | None,
    as_json: bool,
    env: Mapping[str, str] | None = None,
) -> int:
    env = os.environ if env is None else env
    policy = load_command_policy(policy_path).policy
    cfg = policy.monitoring
    folder = writable_folder(report_dir or Path("reports") / "mlflow-ci")
    files = expand(current, what="current data")
    conn = connect(tracking_uri) if tracking_uri else None

    # MLflow's client prints to stdout (run links); --json keeps stdout for the report alone.
    with output.step(f"reference profile from {reference}"), output.stdout_to_stderr():
        ref = load_reference(
            reference,
            tracking_uri=tracking_uri,
            cfg=cfg,
            prediction_column=cfg.prediction.column,
        )
    names, prediction = selected_features(ref.profile, cfg)
    specs = {
        n: ref.profile.features[n].spec
        for n in [*names, *([prediction] if prediction else [])]
        if n in ref.profile.features
    }
    shown = current[0] if len(files) == 1 else f"{', '.join(current)} ({len(files)} files)"
    with output.step(f"profile of {shown} ({len(files)} file{'s' if len(files) != 1 else ''})"):
        cur, scan = profile_files(
            files, specs, name="current", prediction=prediction, batch_rows=cfg.batch_rows
        )
    result = compare(ref.profile, cur, cfg, absent=scan.absent, extra_columns=scan.extra)

    title = f"{shown} against {ref.description}"
    report = build_report(result, cfg, reference=ref.description, current=shown, title=title)
    report.data.update(result.to_dict())
    report.data["reference"] = ref.to_dict()
    report.data["current"] = {"files": [str(f) for f in files], "rows": scan.rows}
    extra = html_extra(result, ref.profile, cur)

    if conn is not None:
        model = ref.model
        tags = {TAG_KIND: "drift", TAG_REFERENCE: ref.description[:5000]}
        if ref.run_id:
            tags[TAG_REFERENCE_RUN] = ref.run_id
        if model is not None:
            tags[TAG_MODEL] = model.name
            if model.version:
                tags[TAG_MODEL_VERSION] = model.version
        experiment = experiment_name(
            cfg.experiment, project=policy.project, model=model.name if model else None
        )
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with output.stdout_to_stderr():
            run_id, url = start_run(conn, experiment, run_name=f"drift {when}", tags=tags)
        report.run_id, report.run_url, report.tracking_uri = run_id, url, conn.server
        params: dict[str, Any] = {
            "reference": ref.description,
            "current": shown,
            "profile": cfg.profile,
            "false_alarm_rate": cfg.false_alarm_rate,
            "correction": cfg.correction,
            "large_sample": cfg.large_sample,
            "min_rows": cfg.min_rows,
            "wasserstein_threshold": cfg.thresholds.wasserstein,
            "jensenshannon_threshold": cfg.thresholds.jensenshannon,
            "drift_share": cfg.dataset.drift_share,
            "git_commit": env.get("GITHUB_SHA", ""),
        }
        try:
            with output.stdout_to_stderr():
                log_results(
                    conn, run_id, result=result, report=report, html_extra=extra, current=cur, params=params
                )
        except BaseException:
            fail_run(conn, run_id)
            raise
        output.info(f"logged to {url}")
    return output.finish(report, report_dir=folder, as_json=as_json, html_extra=extra)
