"""The release and deploy workflows' contract: the challenger's image is built and serve-checked
before the champion job may start, and deploy.yml deploys, checks and verifies the audit trail
through the CLI (the rollback itself lives in `mlflow-ci deploy`)."""

from __future__ import annotations

from conftest import ROOT
from mlflow_ci.workflows.lint import load_workflow

WORKFLOWS = ROOT / ".github" / "workflows"


def _runs(job: dict) -> list[str]:
    return [" ".join(str(s["run"]).split()) for s in job["steps"] if "run" in s]


def test_release_serve_checks_the_challenger_image_before_champion() -> None:
    wf = load_workflow(WORKFLOWS / "release.yml")
    candidate, champion = wf["jobs"]["candidate"], wf["jobs"]["champion"]
    runs = _runs(candidate)
    promote = next(i for i, r in enumerate(runs) if 'promote "$MODEL" --to challenger' in r)
    build = next(
        i for i, r in enumerate(runs) if r.startswith('mlflow-ci build-image "models:/$MODEL@challenger"')
    )
    check = next(i for i, r in enumerate(runs) if r.startswith('mlflow-ci serve-check "$IMAGE"'))
    assert promote < build < check
    image_step = next(s for s in candidate["steps"] if s.get("id") == "image")
    assert "${MLFLOW_CI_REGISTRY:+--push}" in image_step["run"]
    assert image_step["env"]["MLFLOW_CI_REGISTRY_PASSWORD"] == "${{ secrets.MLFLOW_CI_REGISTRY_PASSWORD }}"
    assert candidate["outputs"]["image"] == "${{ steps.image.outputs.image }}"
    assert champion["needs"] == "candidate"  # a failed serve-check stops the release here
    assert wf["on"]["workflow_call"]["outputs"]["digest"]["value"] == "${{ jobs.candidate.outputs.digest }}"


def test_deploy_workflow_contract() -> None:
    wf = load_workflow(WORKFLOWS / "deploy.yml")
    call = wf["on"]["workflow_call"]
    assert set(call["inputs"]) >= {"model", "alias", "target", "project", "environment", "mlflow-ci-version"}
    assert call["inputs"]["alias"]["default"] == "champion"
    assert set(call["outputs"]) == {"url", "deployed_version", "rolled_back"}
    assert call["secrets"]["MLFLOW_TRACKING_URI"]["required"] is True
    assert "mlflow-ci-deploy-" in wf["concurrency"]["group"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    job = wf["jobs"]["deploy"]
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["permissions"] == {"contents": "read"}
    runs = _runs(job)
    assert runs[1].startswith('mlflow-ci deploy "$MODEL" --target "$TARGET" --alias "$ALIAS"')
    audit = next(s for s in job["steps"] if "audit" in str(s.get("run", "")))
    assert audit["if"] == "always()"
    assert "--verify" in audit["run"]
    for name in ("url", "deployed_version", "rolled_back"):
        assert job["outputs"][name] == f"${{{{ steps.deploy.outputs.{name} }}}}"
