"""Quality gates: may this run's model replace the one in production?

Per metric (``gates.metrics``): an absolute bound, and against the baseline either a minimum
improvement (absolute / relative) or a tolerated regression; the verdicts come from MLflow's own
``mlflow.validate_evaluation_results`` with one ``MetricThreshold`` per row, so mlflow-ci and
MLflow agree on what "better by 1 %" means.  Optional noise control: a paired bootstrap interval
on the evaluation set (:mod:`mlflow_ci.release.noise`).  Model checks: :mod:`mlflow_ci.release.modelchecks`.

Fail closed: a missing or non-finite metric (candidate or baseline) fails its gate; a gate that
asks for confidence without an evaluation set fails.  A first model (no baseline) passes the
relative gates with a visible note.  Every gate has a stable id (``metric:accuracy:change``,
``model:signature``) that promotion rules name.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ci.config import Evaluation, MetricGate, Policy, load_command_policy
from mlflow_ci.core import output
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.mlflowio.registry import GATE_ARTIFACT, Connection, connect, get_run, mlflow_errors, model_name
from mlflow_ci.mlflowio.tags import GATE_BASELINE, GATE_DIGEST, GATE_VERDICT
from mlflow_ci.release.baseline import BaselineRef, resolve
from mlflow_ci.release.gatereport import comparison_html, comparison_markdown


@dataclass
class GateOutcome:
    report: Report
    gates: list[dict[str, Any]] = field(default_factory=list)
    baseline: BaselineRef | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    blocking: bool = True
    markdown: str = ""
    html_extra: str = ""

    @property
    def passed(self) -> bool:
        return self.report.verdict == "pass"

    def add(self, gate_id: str, item: Check, *, required: bool = True) -> None:
        self.report.add(item)
        self.gates.append({"id": gate_id, "name": item.name, "verdict": item.verdict, "required": required})


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _mlflow_verdict(
    metric: str, threshold: Any, candidate: float, baseline: float | None
) -> tuple[bool, str]:
    """Ask MLflow's validator about one threshold: (passed, MLflow's explanation)."""
    import mlflow
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    cand = EvaluationResult({metric: candidate}, {}, run_id="candidate")
    base = EvaluationResult({metric: baseline}, {}, run_id="baseline") if baseline is not None else None
    try:
        mlflow.validate_evaluation_results({metric: threshold}, cand, base)
    except ModelValidationFailedException as exc:
        return False, " ".join(str(exc).split())
    return True, ""


def metric_checks(
    gate: MetricGate, candidate: Mapping[str, float], baseline: BaselineRef | None, outcome: GateOutcome
) -> None:
    from mlflow.models import MetricThreshold

    name, higher = gate.name, gate.direction == "higher"
    adv = not gate.required
    cmp = "≥" if higher else "≤"
    value = candidate.get(name)
    if not _finite(value):
        found = "missing" if value is None else str(value)
        outcome.add(
            f"metric:{name}",
            check(
                f"{name} logged",
                False,
                expected="a finite value",
                found=found,
                advisory=adv,
                detail=f"The candidate run has no usable metric {name!r}: a gate fails closed.",
            ),
            required=gate.required,
        )
        return
    assert value is not None
    if gate.threshold is not None:
        ok, why = _mlflow_verdict(
            name, MetricThreshold(threshold=gate.threshold, greater_is_better=higher), value, None
        )
        outcome.add(
            f"metric:{name}:threshold",
            check(
                f"{name} {cmp} {gate.threshold:g}",
                ok,
                expected=f"{cmp} {gate.threshold:g}",
                found=f"{value:.4f}",
                advisory=adv,
                detail=why,
            ),
            required=gate.required,
        )
    wants_change = gate.min_absolute_change is not None or gate.min_relative_change is not None
    if not wants_change and gate.max_regression is None:
        return
    expected = _change_expectation(gate)
    gid = f"metric:{name}:change"
    label = f"{name} vs baseline"
    if baseline is None:
        outcome.add(
            gid,
            check(
                label, True, expected=expected, found=f"{value:.4f} (no baseline: first model)", advisory=adv
            ),
            required=gate.required,
        )
        return
    base = baseline.metrics.get(name)
    if not _finite(base):
        outcome.add(
            gid,
            check(
                label,
                False,
                expected=expected,
                found=f"baseline {baseline.description} has {'no' if base is None else base} {name}",
                advisory=adv,
                detail="The baseline lacks this metric: the gate fails closed. "
                "Pin another baseline (--baseline-run) or fix the baseline run.",
            ),
            required=gate.required,
        )
        return
    assert base is not None
    delta = value - base
    rel = delta / abs(base) if base else float("nan")
    found = f"{value:.4f} vs {base:.4f} (Δ {delta:+.4f}" + (f", {rel:+.2%})" if base else ")")
    if wants_change:
        threshold = MetricThreshold(
            min_absolute_change=gate.min_absolute_change,
            min_relative_change=gate.min_relative_change,
            greater_is_better=higher,
        )
        ok, why = _mlflow_verdict(name, threshold, value, base)
    else:
        assert gate.max_regression is not None
        floor = base - gate.max_regression if higher else base + gate.max_regression
        ok, why = _mlflow_verdict(
            name, MetricThreshold(threshold=float(floor), greater_is_better=higher), value, None
        )
    outcome.add(
        gid,
        check(
            label,
            ok,
            expected=expected.replace("baseline", f"{base:.4f}"),
            found=found,
            advisory=adv,
            detail=why,
        ),
        required=gate.required,
    )


def _change_expectation(gate: MetricGate) -> str:
    higher = gate.direction == "higher"
    sign, cmp = ("+", "≥") if higher else ("-", "≤")
    parts = []
    if gate.min_absolute_change is not None:
        parts.append(f"{cmp} baseline {sign} {gate.min_absolute_change:g}")
    if gate.min_relative_change is not None:
        parts.append(f"{cmp} baseline {sign} {gate.min_relative_change:.1%}")
    if gate.max_regression is not None:
        parts.append(
            f"{cmp} baseline {'-' if higher else '+'} {gate.max_regression:g} (tolerated regression)"
        )
    return " and ".join(parts)


def _load_eval(path: Path, cfg: Evaluation) -> tuple[Any, Any]:
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"Evaluation set {path} not found (gates.evaluation.data or --eval-data).")
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    if cfg.target not in df.columns:
        raise ConfigError(
            f"Evaluation set {path} has no target column {cfg.target!r} (gates.evaluation.target); "
            f"columns: {', '.join(map(str, df.columns))}."
        )
    return df.drop(columns=[cfg.target]), df[cfg.target].to_numpy()


def confidence_checks(
    policy: Policy,
    outcome: GateOutcome,
    *,
    candidate_model: Any,
    baseline: BaselineRef | None,
    eval_path: Path | None,
    workdir: Path,
) -> None:
    import numpy as np

    from mlflow_ci.release.modelchecks import download_and_load
    from mlflow_ci.release.noise import METRICS, paired_delta_interval

    wanted = [g for g in policy.gates.metrics if g.confidence is not None]
    if not wanted:
        return
    cfg = policy.gates.evaluation
    data = None
    if baseline is not None and eval_path is not None and candidate_model is not None:
        data = _load_eval(eval_path, cfg)
        base_model = download_and_load(baseline.model_uri or "", workdir / "baseline").pyfunc
        if base_model is None:
            raise InfraError(
                f"The baseline model {baseline.model_uri} does not load; "
                "cannot compare on the evaluation set."
            )
        X, y = data
        pc = np.asarray(candidate_model.predict(X)).ravel()
        pb = np.asarray(base_model.predict(X)).ravel()
    for gate in wanted:
        assert gate.confidence is not None
        gid, label = f"metric:{gate.name}:confidence", f"{gate.name} holds ({gate.confidence:.0%} CI)"
        margin = -gate.max_regression if gate.max_regression is not None else 0.0
        expected = f"CI of improvement > {margin:g}" if margin else "CI of improvement excludes 0"
        fn_name = gate.eval_metric or gate.name
        if fn_name not in METRICS:
            raise ConfigError(
                f"metric gate {gate.name!r}: no bootstrap metric {fn_name!r}; set eval_metric to one of "
                f"{', '.join(sorted(METRICS))}."
            )
        if baseline is None:
            outcome.add(
                gid,
                check(
                    label,
                    True,
                    expected=expected,
                    found="no baseline (first model)",
                    advisory=not gate.required,
                ),
                required=gate.required,
            )
            continue
        if data is None:
            outcome.add(
                gid,
                check(
                    label,
                    False,
                    expected=expected,
                    found="no evaluation set",
                    advisory=not gate.required,
                    detail="This gate asks for confidence: give the evaluation set with --eval-data or "
                    "gates.evaluation.data.",
                ),
                required=gate.required,
            )
            continue
        iv = paired_delta_interval(
            fn_name,
            y,
            pc,
            pb,
            higher_is_better=gate.direction == "higher",
            level=gate.confidence,
            n_resamples=cfg.n_resamples,
            method=cfg.method,
            seed=cfg.seed,
        )
        ok = iv.low > margin
        found = f"Δ {iv.delta:+.4f}, CI [{iv.low:+.4f}, {iv.high:+.4f}] on {iv.rows} rows"
        outcome.add(
            gid,
            check(
                label,
                ok,
                expected=expected,
                found=found,
                advisory=not gate.required,
                detail="" if ok else "The difference is within the noise of the evaluation set.",
            ),
            required=gate.required,
        )


def evaluate(
    conn: Connection,
    policy: Policy,
    *,
    run_id: str,
    model: str,
    eval_path: Path | None = None,
    workdir: Path | None = None,
) -> GateOutcome:
    """Evaluate every gate of ``policy`` for ``run_id``; nothing is written anywhere."""
    from mlflow_ci.release.modelchecks import download_and_load, run_checks

    run = get_run(conn, run_id)
    report = Report(
        kind="gate",
        title=f"run {run_id} for model {model}",
        run_id=run_id,
        run_url=conn.run_url(run.info.experiment_id, run_id),
        tracking_uri=conn.server,
    )
    outcome = GateOutcome(report=report, blocking=policy.gates.blocking)
    if run.info.status != "FINISHED":
        outcome.add("run:finished", check("run finished", False, expected="FINISHED", found=run.info.status))
    baseline, reason = resolve(conn, policy, model, run)
    outcome.baseline = baseline
    if baseline is None:
        report.notes.append(f"No baseline: {reason}. Relative gates pass; absolute bounds still apply.")
    metrics = dict(run.data.metrics)
    for gate in policy.gates.metrics:
        metric_checks(gate, metrics, baseline, outcome)
        base = baseline.metrics.get(gate.name) if baseline else None
        cand = metrics.get(gate.name)
        delta = cand - base if _finite(cand) and _finite(base) else None  # type: ignore[operator]
        rel = delta / abs(base) if delta is not None and base else None  # type: ignore[arg-type]
        outcome.comparison.append(
            {
                "metric": gate.name,
                "direction": gate.direction,
                "candidate": cand,
                "baseline": base,
                "delta": delta,
                "relative": rel,
            }
        )
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="mlflow-ci-gate-")) if workdir is None else workdir
    try:
        uri = f"runs:/{run_id}/{policy.registry.model_artifact_path}"
        from mlflow_ci.mlflowio.tracking import client_settings

        with client_settings(conn.server):
            loaded = download_and_load(uri, work / "candidate")
            for gid, item in run_checks(loaded, policy.gates.model):
                outcome.add(gid, item, required=not policy.gates.model.advisory)
            confidence_checks(
                policy,
                outcome,
                candidate_model=loaded.pyfunc,
                baseline=baseline,
                eval_path=eval_path,
                workdir=work,
            )
    finally:
        if owned:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if not policy.gates.metrics:
        report.notes.append("No metric gates are configured (gates.metrics): only model checks ran.")
    label = baseline.description if baseline else "none"
    links = [f"[candidate run]({report.run_url})"] + (
        [f"[baseline]({baseline.url})"] if baseline and baseline.url else []
    )
    outcome.markdown = comparison_markdown(outcome.comparison, label, links)
    html_links = [("candidate run", report.run_url or "")] + (
        [("baseline", baseline.url)] if baseline and baseline.url else []
    )
    outcome.html_extra = comparison_html(outcome.comparison, label, html_links)
    report.data.update(
        {
            "model": model,
            "gates": outcome.gates,
            "passed_gates": sorted(g["id"] for g in outcome.gates if g["verdict"] == "pass"),
            "baseline": baseline.to_dict() if baseline else None,
            "baseline_spec": {
                "source": policy.gates.baseline.source,
                "alias": policy.gates.baseline.alias or policy.registry.aliases.champion,
            },
            "comparison": outcome.comparison,
            "blocking": outcome.blocking,
        }
    )
    return outcome


def write_outputs(outcome: GateOutcome, report_dir: Path) -> tuple[dict[str, Path], str]:
    """Write gate.json/.md/.html; return the paths and the SHA-256 of gate.json (the verdict digest)."""
    from mlflow_ci.core.fsutil import atomic_write_text

    paths = outcome.report.write(report_dir, html_extra=outcome.html_extra)
    markdown = outcome.report.to_markdown() + outcome.markdown
    atomic_write_text(paths["markdown"], markdown)
    digest = hashlib.sha256(paths["json"].read_bytes()).hexdigest()
    return paths, digest


def record(conn: Connection, outcome: GateOutcome, json_path: Path, digest: str) -> None:
    """Attach the verdict to the run: gate.json as an artifact, verdict and digest as tags."""
    run_id = outcome.report.run_id
    assert run_id is not None
    baseline = outcome.baseline
    with mlflow_errors(conn.server, f"recording the gate verdict on run {run_id}"):
        client = conn.client
        client.log_artifact(run_id, str(json_path), artifact_path=GATE_ARTIFACT.rsplit("/", 1)[0])
        client.set_tag(run_id, GATE_VERDICT, outcome.report.verdict)
        client.set_tag(run_id, GATE_DIGEST, digest)
        client.set_tag(run_id, GATE_BASELINE, baseline.description if baseline else "none")


def gate_record(conn: Connection, run_id: str) -> tuple[dict[str, Any] | None, str]:
    """The recorded verdict of ``run_id``, checked against its digest; (None, reason) if unusable."""
    import json

    import mlflow

    run = get_run(conn, run_id)
    digest = run.data.tags.get(GATE_DIGEST)
    if not digest:
        return None, f"run {run_id} has no gate verdict (run `mlflow-ci gate {run_id}`)"
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-gate-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=GATE_ARTIFACT, dst_path=tmp, tracking_uri=conn.server
            )
        except Exception as exc:
            return None, f"the gate report of run {run_id} cannot be read ({type(exc).__name__})"
        raw = Path(local).read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:
        return None, f"the gate report of run {run_id} does not match its digest (edited after the gate ran)"
    return json.loads(raw), ""


def gate_command(
    *,
    run_id: str,
    policy_path: Path | None,
    tracking_uri: str | None,
    model: str | None = None,
    eval_data: Path | None = None,
    baseline_run: str | None = None,
    baseline_alias: str | None = None,
    report_dir: Path | None = None,
    record_verdict: bool = True,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """``mlflow-ci gate RUN``: 0 when every blocking gate passes, 1 otherwise."""
    env = os.environ if env is None else env
    overrides: dict[str, Any] = {}
    if baseline_run:
        overrides.update({"gates.baseline.source": "run", "gates.baseline.run_id": baseline_run})
    if baseline_alias:
        overrides.update({"gates.baseline.source": "alias", "gates.baseline.alias": baseline_alias})
    loaded = load_command_policy(policy_path, overrides=overrides)
    policy = loaded.policy
    name = model_name(policy, model)
    if eval_data is None and policy.gates.evaluation.data:
        base = loaded.path.parent if loaded.path else Path.cwd()
        eval_data = base / policy.gates.evaluation.data
    conn = connect(tracking_uri)
    with output.step(f"gate run {run_id} for model {name}"):
        outcome = evaluate(conn, policy, run_id=run_id, model=name, eval_path=eval_data)
    folder = report_dir or Path("reports") / "mlflow-ci"
    paths, digest = write_outputs(outcome, folder)
    outcome.report.data["digest"] = digest
    if record_verdict:
        record(conn, outcome, paths["json"], digest)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    output.write_step_summary(markdown)
    output.set_output("verdict", outcome.report.verdict)
    output.set_output("gate_digest", digest)
    output.set_output("report_dir", str(folder))
    if as_json:
        output.emit_json(dict(outcome.report.to_dict(), report_files={k: str(v) for k, v in paths.items()}))
    else:
        output.info(markdown)
        output.info(f"reports: {', '.join(str(p) for p in paths.values())}")
    if outcome.passed:
        return 0
    failed = ", ".join(c.name for c in outcome.report.failures) or "no checks ran"
    if not outcome.blocking:
        output.warning(f"gates failed for run {run_id} ({failed}) but gates.blocking is false: not blocking.")
        return 0
    output.error(f"gates failed for run {run_id} (model {name}): {failed}.", title="gate failed")
    return 1
