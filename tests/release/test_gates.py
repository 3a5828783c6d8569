"""Quality gates: unit tests of the policy, the bootstrap and the chart; integration tests of
`mlflow-ci gate` against a real tracking server with real sklearn models."""

from __future__ import annotations

import json
import math
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from mlflow_ci.config import load_policy
from mlflow_ci.core.errors import PolicyError
from mlflow_ci.mlflowio.registry import Connection
from mlflow_ci.release.gatereport import bar_chart_svg
from mlflow_ci.release.gates import gate_command, gate_record
from mlflow_ci.release.noise import paired_delta_interval
from modelfactory import log_run, write_eval_set

POLICY = """\
project: gates-test
registry:
  model_name: {model}
gates:
  baseline: {{source: run, run_id: {baseline}}}
  metrics:
    - {{name: accuracy, threshold: 0.5, min_absolute_change: 0.01}}
    - {{name: f1_macro, threshold: 0.5, max_regression: 0.02, required: false}}
  model: {{max_size_mb: 5, max_latency_ms: 500}}
"""


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlflow-ci.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- unit tests ------------------------------------------------------------------------------


def test_policy_rejects_improvement_and_tolerance_together(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        "project: p\ngates:\n  metrics:\n"
        "    - {name: accuracy, min_absolute_change: 0.01, max_regression: 0.02}\n",
    )
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert f"{path}:4" in text
    assert "gates.metrics.0" in text
    assert "not both" in text


def test_policy_confidence_needs_a_comparison(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path, "project: p\ngates:\n  metrics:\n    - {name: accuracy, threshold: 0.9, confidence: 0.95}\n"
    )
    with pytest.raises(PolicyError, match="confidence needs a baseline comparison"):
        load_policy(path)


def test_bootstrap_separates_real_improvement_from_noise() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    base = np.where(rng.random(300) < 0.7, y, (y + 1) % 3)  # about 70 % right
    better = np.where(rng.random(300) < 0.5, y, base)  # fixes about half of its mistakes
    iv = paired_delta_interval("accuracy", y, better, base, higher_is_better=True, level=0.95)
    assert iv.delta > 0.1
    assert iv.low > 0
    same = paired_delta_interval("accuracy", y, base, base, higher_is_better=True, level=0.95)
    assert same.low == same.high == 0.0
    # A lower-is-better metric: an improvement is a positive signed delta too.
    yr = rng.normal(size=200)
    worse, good = yr + rng.normal(scale=1.0, size=200), yr + rng.normal(scale=0.3, size=200)
    assert paired_delta_interval("rmse", yr, good, worse, higher_is_better=False, level=0.9).low > 0


def test_chart_is_wellformed_svg_and_marks_missing_values() -> None:
    rows = [
        {"metric": "accuracy", "candidate": 0.9, "baseline": 0.8},
        {"metric": "f1<&>", "candidate": float("nan"), "baseline": 0.7},
    ]
    svg = bar_chart_svg(rows)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert svg.count("<rect") == 2 + 3  # legend + three bars
    assert "missing" in svg
    assert "f1&lt;&amp;&gt;" in svg


# --- integration tests against a real server ----------------------------------------------------


@pytest.fixture(scope="module")
def runs(tracking_server) -> dict[str, str]:
    url = tracking_server.url
    return {
        "fair": log_run(url, quality="fair"),
        "good": log_run(url, quality="good"),
        "weak": log_run(url, quality="weak"),
        "good2": log_run(url, quality="good"),
        "no_accuracy": log_run(url, quality="good", metrics={"accuracy": None}),  # type: ignore[dict-item]
        "nan": log_run(url, quality="good", metrics={"accuracy": float("nan")}),
        "bare": log_run(url, quality="good", signature=False, input_example=False),
    }


def gate(tmp_path: Path, server: str, run_id: str, policy_text: str, **kw) -> tuple[int, dict]:
    policy = write_policy(tmp_path, policy_text)
    out = tmp_path / "reports"
    code = gate_command(run_id=run_id, policy_path=policy, tracking_uri=server, report_dir=out, **kw)
    return code, json.loads((out / "gate.json").read_text())


def verdicts(report: dict) -> dict[str, str]:
    return {g["id"]: g["verdict"] for g in report["data"]["gates"]}


def test_better_candidate_passes_and_records_its_verdict(tracking_server, runs, tmp_path) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    code, report = gate(
        tmp_path, tracking_server.url, runs["good"], POLICY.format(model=model, baseline=runs["fair"])
    )
    assert code == 0, report
    v = verdicts(report)
    assert v["metric:accuracy:change"] == "pass"
    assert v["model:signature"] == v["model:input_example"] == v["model:size"] == v["model:latency"] == "pass"
    row = next(r for r in report["data"]["comparison"] if r["metric"] == "accuracy")
    assert row["delta"] == pytest.approx(row["candidate"] - row["baseline"])
    assert row["delta"] > 0.05
    html = (tmp_path / "reports" / "gate.html").read_text()
    assert "<svg" in html
    assert "Candidate against baseline" in html
    md = (tmp_path / "reports" / "gate.md").read_text()
    assert "| accuracy | higher |" in md
    # The verdict is attached to the run and its digest checks out.
    record, reason = gate_record(Connection(tracking_server.url), runs["good"])
    assert record is not None, reason
    assert record["verdict"] == "pass"


def test_worse_candidate_is_blocked_by_the_cli_with_a_table_showing_why(
    tracking_server, runs, tmp_path
) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    policy = write_policy(tmp_path, POLICY.format(model=model, baseline=runs["good"]))
    r = run_cli(
        "gate",
        runs["weak"],
        "--policy",
        str(policy),
        "--tracking-uri",
        tracking_server.url,
        "--report-dir",
        str(tmp_path / "out"),
        "--no-record",
    )
    assert r.returncode == 1, r.stderr
    table_row = next(line for line in r.stderr.splitlines() if line.startswith("| accuracy vs baseline"))
    assert "❌ fail" in table_row
    assert "Δ -0.2" in table_row
    assert "minimum absolute change check failed" in r.stderr  # MLflow's own explanation
    # The advisory f1 gate regressed too, but only warns.
    assert "⚠️ warn" in next(
        line for line in r.stderr.splitlines() if line.startswith("| f1_macro vs baseline")
    )


def test_first_model_passes_relative_gates_with_a_note(tracking_server, runs, tmp_path) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    text = POLICY.format(model=model, baseline="x").replace("{source: run, run_id: x}", "{source: alias}")
    code, report = gate(tmp_path, tracking_server.url, runs["weak"], text)
    assert code == 0
    assert report["data"]["baseline"] is None
    assert any("first model" in n for n in report["notes"])
    assert verdicts(report)["metric:accuracy:change"] == "pass"


def test_absolute_bound_still_applies_without_baseline(tracking_server, runs, tmp_path) -> None:
    text = POLICY.format(model="m-abs", baseline="x").replace("{source: run, run_id: x}", "{source: alias}")
    code, report = gate(
        tmp_path,
        tracking_server.url,
        runs["weak"],
        text.replace("threshold: 0.5, min", "threshold: 0.9, min"),
    )
    assert code == 1
    assert verdicts(report)["metric:accuracy:threshold"] == "fail"


@pytest.mark.parametrize("which", ["no_accuracy", "nan"])
def test_missing_or_nan_metric_fails_closed(tracking_server, runs, tmp_path, which) -> None:
    code, report = gate(
        tmp_path, tracking_server.url, runs[which], POLICY.format(model="m-closed", baseline=runs["fair"])
    )
    assert code == 1
    assert verdicts(report)["metric:accuracy"] == "fail"


def test_baseline_without_the_metric_fails_closed(tracking_server, runs, tmp_path) -> None:
    code, report = gate(
        tmp_path,
        tracking_server.url,
        runs["good"],
        POLICY.format(model="m-closed", baseline=runs["no_accuracy"]),
    )
    assert code == 1
    assert verdicts(report)["metric:accuracy:change"] == "fail"


def test_model_checks_fail_without_signature_and_over_budget(tracking_server, runs, tmp_path) -> None:
    text = POLICY.format(model="m-bare", baseline=runs["fair"]).replace(
        "max_size_mb: 5", "max_size_mb: 0.000001"
    )
    code, report = gate(tmp_path, tracking_server.url, runs["bare"], text)
    assert code == 1
    v = verdicts(report)
    assert v["model:signature"] == "fail"
    assert v["model:input_example"] == "fail"
    assert v["model:size"] == "fail"


def test_non_blocking_gates_report_but_exit_zero(tracking_server, runs, tmp_path) -> None:
    text = POLICY.format(model="m-nb", baseline=runs["good"]) + "  blocking: false\n"
    code, report = gate(tmp_path, tracking_server.url, runs["weak"], text, record_verdict=False)
    assert code == 0
    assert report["verdict"] == "fail"


CONFIDENCE = """\
project: gates-test
registry: {{model_name: m-conf}}
gates:
  baseline: {{source: run, run_id: {baseline}}}
  evaluation: {{target: target, n_resamples: 500}}
  metrics:
    - {{name: accuracy, min_absolute_change: 0.0001, confidence: 0.95}}
"""


def test_confidence_gate_needs_an_improvement_beyond_noise(tracking_server, runs, tmp_path) -> None:
    eval_set = write_eval_set(tmp_path / "eval.csv")
    # weak → good: a real improvement on the 60 held-out rows.
    code, report = gate(
        tmp_path,
        tracking_server.url,
        runs["good"],
        CONFIDENCE.format(baseline=runs["weak"]),
        eval_data=eval_set,
        record_verdict=False,
    )
    assert code == 0, report
    assert verdicts(report)["metric:accuracy:confidence"] == "pass"
    # good → an identical retrain: the logged metric may tick, the paired delta is pure noise.
    code, report = gate(
        tmp_path,
        tracking_server.url,
        runs["good2"],
        CONFIDENCE.format(baseline=runs["good"]),
        eval_data=eval_set,
        record_verdict=False,
    )
    assert code == 1
    assert verdicts(report)["metric:accuracy:confidence"] == "fail"
    # Without the evaluation set the gate fails closed.
    code, report = gate(
        tmp_path,
        tracking_server.url,
        runs["good"],
        CONFIDENCE.format(baseline=runs["weak"]),
        record_verdict=False,
    )
    assert code == 1
    assert "no evaluation set" in json.dumps(report)


def test_baseline_newest_main_branch_run(tracking_server, tmp_path) -> None:
    exp = f"branch-{uuid.uuid4().hex[:6]}"
    url = tracking_server.url
    log_run(url, quality="weak", experiment=exp, tags={"mlflow.source.git.branch": "main"})
    newest_main = log_run(url, quality="good", experiment=exp, tags={"mlflow.source.git.branch": "main"})
    log_run(url, quality="weak", experiment=exp, tags={"mlflow.source.git.branch": "feature"})
    candidate = log_run(url, quality="fair", experiment=exp, tags={"mlflow.source.git.branch": "feature"})
    text = POLICY.format(model="m-main", baseline="x").replace(
        "{source: run, run_id: x}", "{source: main_branch}"
    )
    code, report = gate(tmp_path, url, candidate, text, record_verdict=False)
    assert report["data"]["baseline"]["run_id"] == newest_main
    assert code == 1  # fair is worse than the newest main run (good)
    assert not math.isnan(report["data"]["comparison"][0]["delta"])
