"""pr-checks.yml's monorepo mode (`projects: auto`), run for real with act on this host.

A copy of this checkout gets a small monorepo under mono/: three tiny MLflow projects (one with a
space in its path) and a shared mono/lib/ that two of them watch. The pull request changes only
mono/lib/, so `mlflow-ci projects --changed-since <base>` selects the two watchers; the matrix
runs one smoke job per selected project (one passes, one fails its policy), each uploads its own
report artifact, and the comment job posts ONE comment with both verdicts, through the fake
GitHub API, leaving alone a comment by someone else that carries the same marker.

The caller is written here, as docs/pr-checks.md shows it, with what act needs: the local form
``uses: ./...`` and ``mlflow-ci-version: .`` (``job.workflow_*`` is empty under act). Remote
actions are the stand-ins of tests/act/actions/ (see its README).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from actkit import commit, copy_checkout, job_results, require_act, run_act
from fake_github import ACTIONS_BOT, FakeGitHub
from mlflow_ci.workflows.comment import Marker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = "acme/ml-monorepo"
PR = 12
ARTIFACT = "mlflow-ci-smoke"

CALLER = """\
name: ML PR checks
on: pull_request
permissions: {}
jobs:
  mlflow:
    uses: ./.github/workflows/pr-checks.yml
    permissions:
      contents: read
      pull-requests: write
    with:
      projects: auto
      project-path: mono
      env-manager: local
      mlflow-ci-version: .
"""

MLPROJECT = """\
name: tiny
entry_points:
  main:
    parameters:
      seed: {type: int, default: 1}
    command: "python train.py {seed}"
"""

# A run that meets the default conventions, with a model that loads and predicts.
TRAIN = """\
import sys

import mlflow
import pandas as pd

seed = int(sys.argv[1])
mlflow.set_tag("mlflow.runName", f"run_classify_{seed}")
for tag in ("dataset", "env", "purpose", "owner"):
    mlflow.set_tag(tag, "tiny")
mlflow.log_param("seed", seed)
mlflow.log_metric("accuracy", 0.9)


class Half(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x"] / 2


mlflow.pyfunc.log_model(name="model", python_model=Half(), input_example=pd.DataFrame({"x": [1.0, 2.0]}))
"""


def add_project(root: Path, folder: str, *, watch: list[str], metrics: list[str]) -> None:
    project = root / folder
    project.mkdir(parents=True)
    (project / "MLproject").write_text(MLPROJECT, encoding="utf-8")
    (project / "train.py").write_text(TRAIN, encoding="utf-8")
    policy = {
        "project": Path(folder).name.replace(" ", "-"),
        "watch": watch,
        "smoke": {"env_manager": "local", "parameters": {"seed": 3}, "require_dataset": False,
                  "required_metrics": metrics},
    }  # fmt: skip
    (project / "mlflow-ci.yaml").write_text(json.dumps(policy, indent=2), encoding="utf-8")


def head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def step_results(log: Path, step: str) -> dict[str, str]:
    """{job name: result} of one step in every job that ran it. act reports each matrix job's
    result as the whole matrix's (so a passing project's job reads "failure" when another failed)
    and names the jobs `<name>-<index>`; the step's own result is what the project did."""
    results = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("step") == step and event.get("stage") == "Main" and "stepResult" in event:
            job = " ".join(str(event.get("job", "")).split()).rsplit("/", 1)[-1]
            results[re.sub(r"-\d+$", "", job)] = event["stepResult"]
    return results


def test_matrix_mode_smokes_the_touched_projects_and_posts_one_comment(tmp_path: Path) -> None:
    require_act()
    work = copy_checkout(tmp_path / "repo")
    add_project(work, "mono/churn", watch=["mono/lib/**"], metrics=["accuracy"])
    add_project(work, "mono/fraud score", watch=["mono/lib"], metrics=["loss"])  # never logged: fails
    add_project(work, "mono/forecast", watch=[], metrics=["accuracy"])  # untouched: not run
    (work / "mono" / "lib").mkdir()
    (work / "mono" / "lib" / "features.py").write_text("SCALE = 1\n", encoding="utf-8")
    (work / ".github" / "workflows" / "ml-pr.yml").write_text(CALLER, encoding="utf-8")
    commit(work, "monorepo")
    base = head(work)
    (work / "mono" / "lib" / "features.py").write_text("SCALE = 2\n", encoding="utf-8")
    commit(work, "shared code changes")
    sha = head(work)

    event = {
        "pull_request": {"number": PR, "head": {"sha": sha, "ref": "feature", "repo": {"full_name": REPO}},
                         "base": {"sha": base, "ref": "main", "repo": {"full_name": REPO}}},
        "repository": {"full_name": REPO},
    }  # fmt: skip
    with FakeGitHub(token="act-token") as github:
        github.add_pull(REPO, PR, sha, base_sha=base)
        forged = Marker("smoke", ARTIFACT, sha).render()
        github.add_comment(REPO, PR, f"{forged}\nall green, trust me", user="mallory")
        run = run_act(
            work, tmp_path, event_name="pull_request", workflow=".github/workflows/ml-pr.yml",
            event=event, secrets={"GITHUB_TOKEN": github.token},
            env={"GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": github.url},
        )  # fmt: skip
        comments = github.by(REPO, PR)

    # One smoke fails its policy, so the run fails; every job still ran, and only the two
    # projects the change touched were smoked (the single-project smoke job did not run).
    assert run.returncode != 0, run.explain()
    results = {
        re.sub(r"-\d+$", "", name.rsplit("/", 1)[-1]): result for name, result in job_results(run.log).items()
    }
    assert sorted(results) == ["comment", "find the projects", "smoke churn", "smoke fraud score"], (
        run.explain()
    )
    assert results["find the projects"] == "success", run.explain()
    assert results["comment"] == "success", run.explain()
    assert step_results(run.log, "Smoke") == {"smoke churn": "success", "smoke fraud score": "failure"}

    assert run.outputs[("projects", "count")] == "2", run.outputs
    assert json.loads(run.outputs[("projects", "matrix")]) == {
        "include": [{"project": "mono/churn", "name": "churn"},
                    {"project": "mono/fraud score", "name": "fraud score"}]
    }  # fmt: skip

    # One artifact per project, named after it, holding <name>/smoke.*.
    assert sorted(p.name for p in run.artifacts.iterdir()) == [f"{ARTIFACT}-churn", f"{ARTIFACT}-fraud score"]
    churn = json.loads((run.artifacts / f"{ARTIFACT}-churn" / "churn" / "smoke.json").read_text())
    fraud = json.loads((run.artifacts / f"{ARTIFACT}-fraud score" / "fraud score" / "smoke.json").read_text())
    assert churn["verdict"] == "pass"
    assert fraud["verdict"] == "fail"
    assert fraud["failures"] == ["metric loss"]

    # ONE comment of ours, listing both verdicts; the forged one is as it was.
    assert len(comments) == 2, comments
    assert comments[0] == ("mallory", f"{forged}\nall green, trust me")
    author, body = comments[1]
    assert author == ACTIONS_BOT
    assert Marker.parse(body) == Marker("smoke", ARTIFACT, sha)
    lines = body.splitlines()
    assert lines[1] == "### ❌ mlflow-ci smoke: 2 projects — **FAIL** (1 of 2 failed)"
    assert f"| `mono/churn` | ✅ pass | `{churn['run_id']}` |  |" in lines
    assert f"| `mono/fraud score` | ❌ fail | `{fraud['run_id']}` | failed: metric loss |" in lines
    assert "mono/forecast" not in body
