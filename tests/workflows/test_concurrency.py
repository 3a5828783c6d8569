"""Concurrency that serialises: the registry-changing workflows queue (GitHub otherwise keeps one
pending run per group and cancels the older), and a rollback never waits behind a release."""

from __future__ import annotations

import pytest
from conftest import ROOT
from mlflow_ci.workflows.lint import load_workflow

WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.mark.parametrize("name", ["release.yml", "rollback.yml", "deploy.yml"])
def test_runs_queue_and_are_never_cancelled(name: str) -> None:
    concurrency = load_workflow(WORKFLOWS / name)["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    assert concurrency["queue"] == "max"


def test_a_rollback_has_a_group_of_its_own() -> None:
    release = load_workflow(WORKFLOWS / "release.yml")["concurrency"]["group"]
    rollback = load_workflow(WORKFLOWS / "rollback.yml")["concurrency"]["group"]
    assert release == "mlflow-ci-release-${{ inputs.model }}"
    assert rollback == "mlflow-ci-rollback-${{ inputs.model }}"


def test_every_workflow_pins_an_action_at_one_release() -> None:
    """The same action at the same commit everywhere (server-ops.yml once lagged a major behind)."""
    import re

    pins: dict[str, set[str]] = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for action, sha in re.findall(
            r"uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text(encoding="utf-8")
        ):
            pins.setdefault(action, set()).add(sha)
    assert pins, "no pinned actions found"
    assert {action: shas for action, shas in pins.items() if len(shas) > 1} == {}
