"""The GitHub Actions workflows: linters clean, thin, pinned, least privilege, and the contract
of the reusable pr-checks.yml that callers rely on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, require
from mlflow_ci import workflow_lint
from mlflow_ci.cli import cli
from mlflow_ci.workflows.lint import (
    BOOTSTRAP,
    check_command,
    check_permissions,
    check_pins,
    check_run_steps,
    cli_commands,
    load_workflow,
    nox_sessions,
    workflow_files,
)

WORKFLOWS = ROOT / ".github" / "workflows"
NOXFILE = ROOT / "noxfile.py"
FILES = workflow_files([WORKFLOWS])
COMMANDS = cli_commands(cli)


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return subprocess.run([sys.executable, "-m", "mlflow_ci.workflow_lint", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "bad.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_workflows_exist() -> None:
    expected = {
        "pr-checks.yml",
        "self-test.yml",
        "ci.yml",
        "release.yml",
        "rollback.yml",
        "self-test-release.yml",
        "server-ops.yml",
        "deploy.yml",
    }
    assert expected <= {p.name for p in FILES}


# --- the linters -------------------------------------------------------------------------------


def test_workflow_lint_is_clean() -> None:
    """actionlint (+shellcheck), zizmor --offline, the workflow JSON schema, yamllint, our rules."""
    done = lint()
    assert done.returncode == 0, done.stderr
    for tool in (
        "actionlint: ok",
        "zizmor: ok",
        "check-jsonschema: ok",
        "yamllint: ok",
        "mlflow-ci workflow rules: ok",
    ):
        assert tool in done.stderr
    assert f"workflow lint: {len(FILES)} file(s) clean" in done.stderr


def test_workflow_lint_reports_a_bad_workflow(tmp_path: Path) -> None:
    bad = write(tmp_path, """\
        name: bad
        on:
          workflow_dispatch:
            inputs:
              x:
                type: string
        permissions: {}
        jobs:
          build:
            runs-on: ubuntu-latest
            permissions:
              contents: read
            steps:
              - uses: actions/checkout@v4
                with:
                  persist-credentials: false
              - run: mlflow-ci smoke "${{ inputs.x }}"
        """)  # fmt: skip
    done = lint("--root", str(ROOT), str(bad))
    assert done.returncode == 1, done.stderr
    out = done.stderr
    # zizmor sees both problems ...
    assert "template-injection" in out
    assert "unpinned-uses" in out
    # ... and so do our own rules, which do not depend on zizmor's policy defaults.
    assert "actions/checkout@v4 is not pinned by a 40-hex commit SHA" in out
    assert "`${{ }}` in run: pass the value through env: instead" in out
    (verdict,) = [line for line in out.splitlines() if "workflow lint failed:" in line]
    assert "zizmor" in verdict
    assert "mlflow-ci workflow rules" in verdict


def test_missing_tool_is_an_infra_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fail closed: without shellcheck the scripts would go unchecked, so the lint stops (exit 3)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("actionlint", "zizmor", "check-jsonschema", "yamllint"):
        found = shutil.which(tool)
        require(found is not None, f"{tool} is not installed")
        (bindir / tool).symlink_to(str(found))
    # Tools are looked up beside the interpreter first, then on PATH: hide both.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(bindir))
    assert workflow_lint.main(["--root", str(ROOT)]) == 3
    assert "shellcheck is not installed" in capsys.readouterr().err


# --- thin workflows: every run: calls nox or mlflow-ci ------------------------------------------


def test_every_run_step_calls_nox_or_mlflow_ci() -> None:
    assert check_run_steps(FILES, noxfile=NOXFILE, commands=COMMANDS) == []
    scripts = [str(step["run"]) for path in FILES for job in load_workflow(path)["jobs"].values()
               for step in job.get("steps", []) if "run" in step]  # fmt: skip
    # Not vacuous: the commands the feature is made of are there.
    assert any(s.startswith("mlflow-ci smoke ") for s in scripts)
    assert any(s.startswith("mlflow-ci pr-comment ") for s in scripts)
    assert any(s.startswith("mlflow-ci expect ") for s in scripts)
    assert "nox -s lint" in scripts


def test_nox_sessions_match_nox_itself() -> None:
    """The ast reading of noxfile.py agrees with `nox --list` (which runs it)."""
    nox = shutil.which("nox")
    require(nox is not None, "nox is not installed")
    listed = subprocess.run([nox, "--list", "-f", str(NOXFILE)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True).stdout  # fmt: skip
    names = set(re.findall(r"^[*-] (\S+)", listed, flags=re.M))
    assert names == nox_sessions(NOXFILE) == {"tests", "lint", "smoke", "bench", "demo", "lock"}


def test_cli_command_paths() -> None:
    paths = COMMANDS
    for path in [("smoke",), ("pr-comment",), ("expect",), ("policy", "check")]:
        assert path in paths
    assert ("policy",) not in paths, "a group is not a command"


SESSIONS = {"tests", "lint", "smoke", "bench", "demo", "lock"}


@pytest.mark.parametrize(
    "command",
    [
        *sorted(BOOTSTRAP),
        "nox -s lint",
        "nox -s lint tests",
        "nox --session=smoke -- example_project",
        'mlflow-ci smoke "$PROJECT" --policy "$POLICY" --env-manager "$ENV" --report-dir "$REPORT_DIR"',
        'mlflow-ci pr-comment --report-dir "$R" --kind smoke --pr "$PR" --json',
        "mlflow-ci policy check example_project",
        "python -m mlflow_ci expect --verdict pass --run-id abc",
        "mlflow-ci smoke . \\\n  --env-manager local",
    ],
)
def test_allowed_run_commands(command: str) -> None:
    assert check_command(command, sessions=SESSIONS, commands=COMMANDS) is None


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("python -m pip install nox==2024.10.9", "neither"),
        ('python -m pip install "$MLFLOW_CI_SPEC" requests', "neither"),
        ("pip install nox", "neither"),
        ('test "$VERDICT" = pass', "neither"),
        ("echo hello", "neither"),
        ("nox -s nosuch", "not in noxfile.py"),
        ("mlflow-ci frobnicate", "not a mlflow-ci command"),
        ("mlflow-ci policy", "not a mlflow-ci command"),
        ("mlflow-ci smoke . --no-such-flag", "has no option --no-such-flag"),
        ("mlflow-ci smoke . && curl https://example.com", "shell operators"),
        ("mlflow-ci smoke . > out.txt", "shell operators"),
        ("nox -s lint\nnox -s tests", "one command"),
    ],
)
def test_rejected_run_commands(command: str, why: str) -> None:
    problem = check_command(command, sessions=SESSIONS, commands=COMMANDS)
    assert problem is not None
    assert why in problem


def test_scripts_read_only_variables_some_env_sets(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        on: push
        permissions: {}
        env:
          A: a
        jobs:
          j:
            runs-on: ubuntu-latest
            env:
              B: b
            steps:
              - env:
                  C: c
                run: mlflow-ci smoke "$A" --policy "$B" --report-dir "$C" --env-manager "$TYPO"
              - run: mlflow-ci smoke "$GITHUB_WORKSPACE" --report-dir "${RUNNER_TEMP}/r"
        """)  # fmt: skip
    (finding,) = check_run_steps([path], noxfile=NOXFILE, commands=COMMANDS)
    assert "$TYPO is not set by any env: block" in finding.message


# --- pins -----------------------------------------------------------------------------------------


def test_every_remote_action_is_pinned_by_sha() -> None:
    assert check_pins(FILES) == []
    refs = [line.split("uses:")[1].strip() for path in FILES for line in path.read_text().splitlines()
            if re.match(r"\s*-?\s*uses:\s*[\w-]+/", line)]  # fmt: skip
    assert len(refs) >= 10, refs
    for ref in refs:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+# v\d+\.\d+\.\d+", ref), ref


def test_unpinned_and_uncommented_pins_are_found(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        on: push
        permissions: {}
        jobs:
          a:
            uses: someone/repo/.github/workflows/x.yml@main
          b:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@v4
              - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065
              - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065  # v5.6.0
              - uses: docker://alpine:3
              - uses: ./local-action
              - uses: $/local-action
        """)  # fmt: skip
    problems = sorted(f"{f.where}: {f.message}" for f in check_pins([path]))
    assert len(problems) == 4, problems
    assert any("job a:" in p and "not pinned by a 40-hex" in p for p in problems)
    assert any("actions/checkout@v4 is not pinned" in p for p in problems)
    assert any("needs the version in a trailing comment" in p for p in problems)
    assert any("docker://alpine:3 is not pinned by digest" in p for p in problems)


# --- permissions --------------------------------------------------------------------------------------


def test_least_privilege() -> None:
    assert check_permissions(FILES) == []
    writes = set()
    for path in FILES:
        data = load_workflow(path)
        assert data["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
        for job_id, job in data["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {job_id} must declare its permissions"
            for scope, level in job["permissions"].items():
                if level == "write":
                    writes.add((path.name, job_id, scope))
    # pull-requests: write is held by the comment job alone; the self-test job calling
    # pr-checks.yml only passes the ceiling down (a called job cannot exceed its caller).
    assert writes == {
        ("pr-checks.yml", "comment", "pull-requests"),
        ("self-test.yml", "pr-checks", "pull-requests"),
    }
    smoke = load_workflow(WORKFLOWS / "pr-checks.yml")["jobs"]["smoke"]
    assert smoke["permissions"] == {"contents": "read"}


def test_broad_permissions_are_found(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        on: push
        permissions: read-all
        jobs:
          a:
            runs-on: ubuntu-latest
            permissions: write-all
            steps: [{run: nox -s lint}]
          smoke:
            runs-on: ubuntu-latest
            permissions:
              pull-requests: write
            steps: [{run: nox -s lint}]
        """, name="pr-checks.yml")  # fmt: skip
    found = {f"{f.where}: {f.message}" for f in check_permissions([path])}
    assert found == {
        "top level: grants 'read-all'; use {} and per-job scopes",
        "job a: 'write-all': list the scopes it needs",
        "job smoke: write access to pull-requests is not allowed here",
    }


def test_no_checkout_keeps_credentials() -> None:
    for path in FILES:
        for job in load_workflow(path)["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, path.name


# --- the contract of pr-checks.yml -------------------------------------------------------------------


def test_pr_checks_inputs_and_outputs() -> None:
    wf = load_workflow(WORKFLOWS / "pr-checks.yml")
    call = wf["on"]["workflow_call"]
    inputs = call["inputs"]
    assert set(wf["on"]) == {"workflow_call"}
    assert "secrets" not in call, "the checks need no secrets, so fork PRs are safe"
    for name, spec in inputs.items():
        assert spec.get("description"), f"input {name} is undocumented"
        assert spec.get("type") in ("string", "boolean", "number"), name
        assert "default" in spec, f"input {name} has no default"
    defaults = {name: spec["default"] for name, spec in inputs.items()}
    assert defaults == {
        "project-path": ".",
        "python-version": "3.11",
        "env-manager": "",
        "policy-path": "",
        "mlflow-ci-version": "",
        "comment": True,
        "artifact-name": "mlflow-ci-smoke",
        "projects": "",
    }
    assert call["outputs"]["run_id"]["value"] == "${{ jobs.smoke.outputs.run_id }}"
    assert call["outputs"]["verdict"]["value"] == "${{ jobs.smoke.outputs.verdict }}"
    assert call["outputs"]["projects"]["value"] == "${{ jobs.projects.outputs.projects }}"
    smoke = wf["jobs"]["smoke"]
    assert smoke["outputs"] == {"run_id": "${{ steps.smoke.outputs.run_id }}",
                                "verdict": "${{ steps.smoke.outputs.verdict }}"}  # fmt: skip


def test_pr_checks_steps() -> None:
    jobs = load_workflow(WORKFLOWS / "pr-checks.yml")["jobs"]
    steps = {
        step.get("id") or step.get("name") or step["uses"].split("@")[0]: step
        for step in jobs["smoke"]["steps"]
    }
    smoke = steps["smoke"]
    assert smoke["run"].startswith('mlflow-ci smoke "$PROJECT"')
    assert smoke["env"]["PROJECT"] == "${{ inputs.project-path }}"
    assert smoke["env"]["MLFLOW_CI__SMOKE__ENV_MANAGER"] == "${{ inputs.env-manager }}"
    assert "inputs.policy-path" in smoke["env"]["POLICY"]
    assert "mlflow-ci.yaml" in smoke["env"]["POLICY"], "empty policy-path means <project>/mlflow-ci.yaml"
    upload = steps["Upload the report"]
    assert upload["if"] == "always()", "the report is uploaded when the checks fail too"
    assert upload["uses"].startswith("actions/upload-artifact@")
    install = steps["Install mlflow-ci"]
    assert install["run"] in BOOTSTRAP
    assert "inputs.mlflow-ci-version" in install["env"]["MLFLOW_CI_SPEC"]
    assert "job.workflow_sha" in install["env"]["MLFLOW_CI_SPEC"], "default: the workflow's own commit"

    assert jobs["smoke"]["if"] == "inputs.projects == ''", "the single project unless projects is set"

    comment = jobs["comment"]
    assert comment["needs"] == ["smoke", "projects", "smoke-projects"]
    for part in ("always()", "inputs.comment", "github.event_name == 'pull_request'",
                 "github.event.pull_request.head.repo.full_name == github.repository"):  # fmt: skip
        assert part in comment["if"]
    (post,) = [s for s in comment["steps"] if "run" in s and s["run"].startswith("mlflow-ci pr-comment")]
    assert post["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert post["env"]["PR"] == "${{ github.event.pull_request.number }}"
    # The commit the report is for is the pull request's head, not GITHUB_SHA (the merge commit);
    # the marker names the artifact, so two calls keep two comments.
    assert post["env"]["HEAD_SHA"] == "${{ github.event.pull_request.head.sha }}"
    assert post["env"]["ARTIFACT"] == "${{ inputs.artifact-name }}"
    assert post["env"]["MATRIX"] == "${{ inputs.projects != '' && needs.projects.outputs.matrix || '' }}"
    for flag in ('--head-sha "$HEAD_SHA"', '--artifact "$ARTIFACT"', '--matrix "$MATRIX"'):
        assert flag in post["run"]


def test_pr_checks_monorepo_mode() -> None:
    """`projects:` fans out: a job finds the touched projects, a matrix smokes each (skipped when
    there are none: GitHub refuses an empty matrix), and the one comment job sums them up."""
    jobs = load_workflow(WORKFLOWS / "pr-checks.yml")["jobs"]
    find = jobs["projects"]
    assert find["if"] == "inputs.projects != ''"
    assert find["permissions"] == {"contents": "read"}
    checkout = next(s for s in find["steps"] if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0, "the merge base needs the history"
    (step,) = [s for s in find["steps"] if str(s.get("run", "")).startswith("mlflow-ci projects ")]
    assert step["run"] == 'mlflow-ci projects "$ROOT" --changed-since "$BASE"'
    assert step["env"]["ROOT"] == "${{ inputs.project-path }}"
    assert "github.event.pull_request.base.sha" in step["env"]["BASE"]
    assert find["outputs"] == {name: f"${{{{ steps.{step['id']}.outputs.{name} }}}}"
                               for name in ("matrix", "projects", "count")}  # fmt: skip

    fan = jobs["smoke-projects"]
    assert fan["needs"] == "projects"
    assert fan["if"] == "needs.projects.outputs.count != '0'"
    assert fan["strategy"] == {"fail-fast": False, "matrix": "${{ fromJSON(needs.projects.outputs.matrix) }}"}
    assert fan["permissions"] == {"contents": "read"}
    steps = {s.get("id") or s.get("name") or s["uses"].split("@")[0]: s for s in fan["steps"]}
    assert steps["smoke"]["run"].startswith('mlflow-ci smoke "$PROJECT"')
    assert steps["smoke"]["env"]["PROJECT"] == "${{ matrix.project }}"
    assert steps["smoke"]["env"]["REPORT_DIR"].endswith("/mlflow-ci-report/${{ matrix.name }}")
    upload = steps["Upload the report"]
    assert upload["if"] == "always()"
    assert upload["with"]["name"] == "${{ inputs.artifact-name }}-${{ matrix.name }}"

    comment = jobs["comment"]
    assert "needs.projects.result == 'success'" in comment["if"]
    download = next(s for s in comment["steps"] if s.get("name") == "Download the projects' reports")
    assert download["with"]["pattern"] == "${{ inputs.artifact-name }}-*"
    assert download["with"]["merge-multiple"] is True


def test_self_test_calls_pr_checks_and_checks_its_outputs() -> None:
    wf = load_workflow(WORKFLOWS / "self-test.yml")
    assert set(wf["on"]) == {"pull_request", "push", "workflow_dispatch"}
    call = wf["jobs"]["pr-checks"]
    assert call["uses"] == "$/.github/workflows/pr-checks.yml"
    assert call["with"] == {
        "project-path": "example_project",
        "env-manager": "local",
        "mlflow-ci-version": ".",
    }
    check = wf["jobs"]["outputs"]
    assert check["needs"] == "pr-checks"
    (expect,) = [s for s in check["steps"] if str(s.get("run", "")).startswith("mlflow-ci expect")]
    assert expect["env"] == {"VERDICT": "${{ needs.pr-checks.outputs.verdict }}",
                             "RUN_ID": "${{ needs.pr-checks.outputs.run_id }}"}  # fmt: skip


def test_self_test_release_releases_twice_rolls_back_and_checks() -> None:
    """The release self-test: by hand only, a disposable server, two releases, a rollback, a check."""
    wf = load_workflow(WORKFLOWS / "self-test-release.yml")
    assert set(wf["on"]) == {"workflow_dispatch"}, "it changes a registry: never on push or PR"
    jobs = wf["jobs"]
    secrets = {"MLFLOW_TRACKING_URI": "${{ secrets.SELF_TEST_TRACKING_URI }}"}
    common = {"model": "self-test-wine-classifier", "project": "example_project", "environment": "self-test",
              "mlflow-ci-version": "."}  # fmt: skip
    for n, needs in ((1, None), (2, "release-1")):
        job = jobs[f"release-{n}"]
        assert job["uses"] == "$/.github/workflows/release.yml"
        assert job.get("needs") == needs
        assert job["with"] == {
            **common,
            "env-manager": "local",
            "artifact-suffix": f"-{n}",
            "build-image": False,
        }
        assert job["secrets"] == secrets
    rollback = jobs["rollback"]
    assert rollback["uses"] == "$/.github/workflows/rollback.yml"
    assert rollback["needs"] == "release-2"
    assert rollback["with"]["reason"]
    assert {k: v for k, v in rollback["with"].items() if k != "reason"} == common
    assert rollback["secrets"] == secrets
    # release.yml and rollback.yml take exactly these inputs.
    release_inputs = set(load_workflow(WORKFLOWS / "release.yml")["on"]["workflow_call"]["inputs"])
    rollback_inputs = set(load_workflow(WORKFLOWS / "rollback.yml")["on"]["workflow_call"]["inputs"])
    assert set(jobs["release-1"]["with"]) <= release_inputs
    assert set(rollback["with"]) <= rollback_inputs

    check = jobs["check"]
    assert set(check["needs"]) == {"release-1", "release-2", "rollback"}
    assert check["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.SELF_TEST_TRACKING_URI }}"
    runs = {s["run"]: s for s in check["steps"] if "run" in s}
    (expect,) = [s for r, s in runs.items() if r.startswith("mlflow-ci expect")]
    assert expect["env"] == {"FIRST": "${{ needs.release-1.outputs.version }}",
                             "SECOND": "${{ needs.release-2.outputs.version }}"}  # fmt: skip
    assert '--alias "champion=$FIRST"' in expect["run"]
    assert any(r.startswith('mlflow-ci audit "$MODEL" --verify') for r in runs)


def test_ci_runs_the_script_ci_runs_here() -> None:
    """ci.yml's test job runs .ci/run, which sets the services up and then runs the README's test
    command, so GitHub and this project's own CI cannot drift apart."""
    tests = load_workflow(WORKFLOWS / "ci.yml")["jobs"]["tests"]
    assert [step["run"] for step in tests["steps"] if "run" in step] == ["bash .ci/run"]
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert script.rstrip().endswith("nox -s tests")
