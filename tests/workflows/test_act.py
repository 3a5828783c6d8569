"""The repository's own CI, run for real with act on this host.

`act pull_request` runs `.github/workflows/self-test.yml`: the reusable `pr-checks.yml` (smoke on
example_project/ with mlflow-ci pip-installed from the checkout, the report uploaded, the sticky
comment posted) and then the job that checks the called workflow's outputs with `mlflow-ci
expect`. Remote actions are replaced by the stand-ins in tests/act/actions/ (see its README),
GitHub's API by the fake in tests/fake_github.py.

Two differences from GitHub, both mechanical: act does not know the self-repository form
``uses: $/...`` yet, so the copy act runs says ``./...``; and ``job.workflow_*`` is empty under
act, which is why self-test.yml names the mlflow-ci to install (``.``) instead of the default.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from actkit import ActRun, commit, copy_checkout, log_messages, require_act, run_act
from conftest import ROOT
from fake_github import ACTIONS_BOT, FakeGitHub
from mlflow_ci.workflows.comment import Marker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = "acme/mlflow-ci"
PR = 5
ARTIFACT = "mlflow-ci-smoke"


@dataclass
class SelfTestRun(ActRun):
    comments: list[str] = field(default_factory=list)  # bodies on the PR, from the fake GitHub API
    authors: list[str] = field(default_factory=list)  # who wrote each
    head: str = ""  # the pull request's head commit

    @property
    def marker(self) -> Marker:
        """The marker the sticky comment must carry: kind, artifact, the head commit."""
        return Marker("smoke", ARTIFACT, self.head)

    @property
    def report(self) -> Path:
        """The smoke report artifact pr-checks.yml uploaded."""
        return self.artifacts / ARTIFACT


def run_self_test(tmp_path: Path, *, break_entry_point: bool = False) -> SelfTestRun:
    """`act pull_request` on a copy of this checkout; optionally with a failing entry point."""
    require_act()
    assert (ROOT / "example_project" / "MLproject").is_file(), (
        "self-test.yml smokes example_project/: missing"
    )
    work = copy_checkout(tmp_path / "repo")
    if break_entry_point:
        mlproject = work / "example_project" / "MLproject"
        spec = yaml.safe_load(mlproject.read_text())
        spec["entry_points"]["main"]["command"] = "python -c 'raise SystemExit(7)'"
        mlproject.write_text(yaml.safe_dump(spec))
        commit(work, "break")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    event = {
        "pull_request": {"number": PR, "head": {"sha": head, "ref": "feature", "repo": {"full_name": REPO}},
                         "base": {"ref": "main", "repo": {"full_name": REPO}}},
        "repository": {"full_name": REPO},
    }  # fmt: skip
    with FakeGitHub(token="act-token") as github:
        github.add_pull(REPO, PR, head)
        run = run_act(
            work, tmp_path, event_name="pull_request", workflow=".github/workflows/self-test.yml",
            event=event, secrets={"GITHUB_TOKEN": github.token},
            env={"GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": github.url},
        )  # fmt: skip
        comments = github.bodies(REPO, PR)
        authors = [author for author, _ in github.by(REPO, PR)]
    return SelfTestRun(**vars(run), comments=comments, authors=authors, head=head)


def test_self_test_passes_under_act(tmp_path: Path) -> None:
    run = run_self_test(tmp_path)
    assert run.returncode == 0, run.explain()

    # Every job ran and succeeded: smoke and comment (pr-checks.yml), then outputs (self-test.yml),
    # which is `mlflow-ci expect` on the verdict and run id pr-checks.yml passed up.
    assert run.results == {"smoke": "success", "comment": "success", "outputs": "success"}, run.explain()

    # The smoke step's own outputs, the ones pr-checks.yml exposes.
    verdict = run.outputs.get(("smoke", "verdict"))
    run_id = run.outputs.get(("smoke", "run_id"), "")
    assert verdict == "pass", run.outputs
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), run.outputs

    # ... passed up through pr-checks.yml's outputs to the job that checked them.
    checked = [
        m for job, m in log_messages(run.log) if job == "outputs" and "workflow outputs as expected" in m
    ]
    assert checked == [f"workflow outputs as expected: verdict pass, run id {run_id}"], checked

    # The uploaded report is the one the outputs describe.
    report = json.loads((run.report / "smoke.json").read_text())
    assert report["verdict"] == "pass"
    assert report["run_id"] == run_id
    assert (run.report / "smoke.md").is_file()
    assert (run.report / "smoke.html").is_file()

    # The comment job posted exactly one sticky comment with that report, as the workflow's bot,
    # marked with the report kind, the artifact and the pull request's head commit.
    assert len(run.comments) == 1, run.comments
    assert Marker.parse(run.comments[0]) == run.marker
    assert run.authors == [ACTIONS_BOT]
    assert run_id in run.comments[0]
    assert "PASS" in run.comments[0]


def test_self_test_fails_closed_under_act(tmp_path: Path) -> None:
    """A failing entry point fails the smoke job, and the PR still hears about it.

    (On GitHub the outputs job would then run and fail too; act stops after a failed stage, so
    it is not checked here: `mlflow-ci expect` on a failure is covered in test_github.py.)
    """
    run = run_self_test(tmp_path, break_entry_point=True)
    assert run.returncode != 0, run.explain()
    assert run.results.get("smoke") == "failure", run.explain()
    assert run.outputs.get(("smoke", "verdict")) != "pass", run.outputs
    # The comment job runs after a failed smoke (always()) and replaces nothing with a pass.
    assert run.results.get("comment") == "success", run.explain()
    assert len(run.comments) == 1, run.comments
    assert Marker.parse(run.comments[0]) == run.marker
    assert "FAIL" in run.comments[0]
    assert "PASS" not in run.comments[0]
