"""Helpers for registry tests: a policy file, in-process command calls with the CLI's exit codes,
and the release flow train → gate → register → promote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow_ci.core.errors import MlflowCiError
from mlflow_ci.release.gates import gate_command
from mlflow_ci.release.promotion import promote
from mlflow_ci.release.register import register_command
from mlflow_ci.release.rollback import rollback
from modelfactory import log_run

POLICY = """\
project: registry-test
registry:
  model_name: {model}
  lease_seconds: 60
gates:
  metrics:
    - {{name: accuracy, threshold: 0.5, min_absolute_change: 0.01}}
  model: {{max_latency_ms: 1000}}
"""

ENV = {"MLFLOW_CI_ACTOR": "tester"}


def write_policy(folder: Path, model: str, text: str = POLICY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlflow-ci.yaml"
    path.write_text(text.format(model=model), encoding="utf-8")
    return path


def call(fn: Any, **kw: Any) -> int:
    """Run a command function as the CLI would: its code, or the code of the error it raised."""
    try:
        return int(fn(**kw))
    except MlflowCiError as exc:
        return exc.exit_code


def release(server: str, policy: Path, *, quality: str, approver: str | None = "alice") -> dict[str, Any]:
    """One merge to main: train a run, gate it, register it, promote to challenger and champion."""
    reports = policy.parent / "reports"
    run_id = log_run(server, quality=quality)
    out: dict[str, Any] = {"run_id": run_id}
    out["gate"] = call(
        gate_command, run_id=run_id, policy_path=policy, tracking_uri=server, report_dir=reports
    )
    out["gate_report"] = json.loads((reports / "gate.json").read_text())
    if out["gate"] != 0:
        return out
    out["register"] = call(register_command, run_id=run_id, policy_path=policy, tracking_uri=server, env=ENV)
    out["challenger"] = call(
        promote,
        model=None,
        to="challenger",
        policy_path=policy,
        tracking_uri=server,
        report_dir=reports,
        env=ENV,
    )
    out["champion"] = call(
        promote,
        model=None,
        to="champion",
        approved_by=approver,
        policy_path=policy,
        tracking_uri=server,
        report_dir=reports,
        env=ENV,
    )
    return out


def do_rollback(server: str, policy: Path, **kw: Any) -> int:
    return call(
        rollback,
        model=None,
        reason=kw.pop("reason", "test rollback"),
        policy_path=policy,
        tracking_uri=server,
        report_dir=policy.parent / "reports",
        env=ENV,
        **kw,
    )
