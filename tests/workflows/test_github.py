"""The sticky PR comment and `mlflow-ci expect`, against a fake GitHub API on 127.0.0.1 (and, for
`expect --alias`, a real tracking server)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from fake_github import FakeGitHub
from mlflow_ci.core.errors import CheckFailed, InfraError
from mlflow_ci.core.report import Report, check
from mlflow_ci.mlflowio.tracking import TrackingServer
from mlflow_ci.workflows.comment import MAX_BODY, _Api, pr_comment
from mlflow_ci.workflows.expect import expect_outputs

REPO = "acme/models"
MARKER = "<!-- mlflow-ci:smoke -->"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def write_report(folder: Path, *, ok: bool, run_id: str = "a" * 32) -> Path:
    report = Report(kind="smoke", title="example_project", run_id=run_id)
    report.add(check("run finished", ok, expected="FINISHED", found="FINISHED" if ok else "FAILED"))
    report.write(folder)
    return folder


def post(github: FakeGitHub, folder: Path, pr: int = 7, **kw: object) -> int:
    return pr_comment(report_dir=folder, kind="smoke", pr=pr, repo=REPO, token=github.token,
                      api_url=github.url, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_first_call_creates_second_updates_the_same_comment(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_comment(REPO, 7, "LGTM")
    assert post(github, write_report(tmp_path, ok=False)) == 0
    bodies = github.bodies(REPO, 7)
    assert len(bodies) == 2
    assert bodies[1].startswith(MARKER)
    assert "FAIL" in bodies[1]

    assert post(github, write_report(tmp_path, ok=True)) == 0
    bodies = github.bodies(REPO, 7)
    assert len(bodies) == 2, "the second run must update, not add"
    assert bodies[0] == "LGTM"
    assert bodies[1].startswith(MARKER)
    assert "PASS" in bodies[1]
    assert "FAIL" not in bodies[1]
    assert [m for m, _ in github.requests].count("PATCH") == 1


def test_finds_its_comment_on_a_later_page(github: FakeGitHub, tmp_path: Path) -> None:
    for i in range(230):
        github.add_comment(REPO, 7, f"chatter {i}")
    mine = github.add_comment(REPO, 7, f"{MARKER}\nold report")
    github.add_comment(REPO, 7, "more chatter")
    github.requests.clear()

    post(github, write_report(tmp_path, ok=True))

    gets = [path for method, path in github.requests if method == "GET"]
    assert len(gets) == 3, gets  # pages 1, 2 and 3 of 100
    assert "page=3" in gets[-1]
    assert len(github.bodies(REPO, 7)) == 232, "no duplicate comment"
    (updated,) = [c for c in github.comments[(REPO, 7)] if c["id"] == mine]
    assert "PASS" in updated["body"]


def test_a_quoted_marker_in_someone_elses_comment_is_not_ours(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_comment(REPO, 7, f"> why does it say {MARKER}?")
    post(github, write_report(tmp_path, ok=True))
    bodies = github.bodies(REPO, 7)
    assert len(bodies) == 2
    assert bodies[0].startswith("> why")


def test_comments_are_per_pull_request(github: FakeGitHub, tmp_path: Path) -> None:
    post(github, write_report(tmp_path, ok=True), pr=7)
    post(github, write_report(tmp_path, ok=True), pr=8)
    assert len(github.bodies(REPO, 7)) == 1
    assert len(github.bodies(REPO, 8)) == 1


def test_marker_is_added_to_a_report_without_it(github: FakeGitHub, tmp_path: Path) -> None:
    (tmp_path / "smoke.md").write_text("### hand-written report\n", encoding="utf-8")
    post(github, tmp_path)
    post(github, tmp_path)
    (body,) = github.bodies(REPO, 7)
    assert body == f"{MARKER}\n### hand-written report\n"


def test_missing_report_replaces_a_stale_green_comment(github: FakeGitHub, tmp_path: Path) -> None:
    post(github, write_report(tmp_path / "first", ok=True))
    post(github, tmp_path / "empty", run_url="https://github.example/acme/models/actions/runs/42")
    (body,) = github.bodies(REPO, 7)
    assert body.startswith(MARKER)
    assert "no report" in body
    assert "PASS" not in body
    assert "actions/runs/42" in body


def test_long_report_is_cut_to_githubs_limit(github: FakeGitHub, tmp_path: Path) -> None:
    (tmp_path / "smoke.md").write_text(MARKER + "\n" + "x" * 100_000, encoding="utf-8")
    post(github, tmp_path)
    (body,) = github.bodies(REPO, 7)
    assert len(body) <= MAX_BODY
    assert body.rstrip().endswith("(truncated: the full report is in the workflow's artifacts)")


def test_pagination_link_to_another_host_is_refused() -> None:
    api = _Api("https://api.github.com", "t")
    assert api._url("/repos/a/b") == "https://api.github.com/repos/a/b"
    assert api._url("https://api.github.com/x?page=2") == "https://api.github.com/x?page=2"
    with pytest.raises(InfraError, match="refusing"):
        api._url("https://evil.example/x?page=2")


# --- through the real CLI, as the workflow runs it ---------------------------------------------


def cli_env(github: FakeGitHub, token: str | None = None) -> dict[str, str]:
    return {"GITHUB_TOKEN": token if token is not None else github.token, "GITHUB_REPOSITORY": REPO,
            "GITHUB_API_URL": github.url, "GITHUB_ACTIONS": ""}  # fmt: skip


def test_cli_posts_then_updates(github: FakeGitHub, tmp_path: Path) -> None:
    write_report(tmp_path, ok=True)
    args = ["pr-comment", "--report-dir", str(tmp_path), "--kind", "smoke", "--pr", "3", "--json"]
    first = run_cli(*args, env=cli_env(github))
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, env=cli_env(github))
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["action"] == "created"
    assert json.loads(second.stdout)["action"] == "updated"
    assert json.loads(first.stdout)["comment_id"] == json.loads(second.stdout)["comment_id"]
    assert len(github.bodies(REPO, 3)) == 1


def test_cli_read_only_token_explains_forks(github: FakeGitHub, tmp_path: Path) -> None:
    github.fail_writes_with = 403
    write_report(tmp_path, ok=True)
    done = run_cli("pr-comment", "--report-dir", str(tmp_path), "--pr", "3", env=cli_env(github))
    assert done.returncode == 3
    assert "HTTP 403" in done.stderr
    assert "pull-requests: write" in done.stderr
    assert "fork" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bad_token_and_missing_token(github: FakeGitHub, tmp_path: Path) -> None:
    write_report(tmp_path, ok=True)
    bad = run_cli("pr-comment", "--report-dir", str(tmp_path), "--pr", "3", env=cli_env(github, "wrong"))
    assert bad.returncode == 3
    assert "HTTP 401" in bad.stderr
    missing = run_cli("pr-comment", "--report-dir", str(tmp_path), "--pr", "3", env=cli_env(github, ""))
    assert missing.returncode == 2
    assert "GITHUB_TOKEN" in missing.stderr
    assert github.bodies(REPO, 3) == []


def test_cli_unreachable_api_is_an_infra_error(tmp_path: Path) -> None:
    write_report(tmp_path, ok=True)
    with FakeGitHub() as gone:
        url = gone.url
    done = run_cli("pr-comment", "--report-dir", str(tmp_path), "--pr", "3",
                   env={"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": url})  # fmt: skip
    assert done.returncode == 3
    assert "Could not reach the GitHub API" in done.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--verdict", "pass", "--run-id", "a" * 32], 0),
        (["--verdict", "pass", "--run-id", ""], 1),
        (["--verdict", "fail", "--run-id", "a" * 32], 1),
        (["--verdict", "", "--run-id", ""], 1),
        (["--verdict", "fail", "--run-id", "", "--want", "fail"], 0),
    ],
)
def test_expect(args: list[str], code: int) -> None:
    done = run_cli("expect", *args)
    assert done.returncode == code, done.stderr


def test_expect_outputs_in_process() -> None:
    assert expect_outputs(verdict=" pass\n", run_id="a" * 32) == 0
    with pytest.raises(CheckFailed, match="the verdict is 'fail', expected 'pass'; the run id is empty"):
        expect_outputs(verdict="fail", run_id="")


def test_expect_aliases_against_the_registry(tracking_server: TrackingServer) -> None:
    """`expect --alias` reads the registry: it passes only when every alias is at the version named."""
    from mlflow import MlflowClient
    from modelfactory import log_run

    model = f"expect-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(tracking_uri=tracking_server.url, registry_uri=tracking_server.url)
    client.create_registered_model(model)
    for _ in range(2):
        run_id = log_run(tracking_server.url, quality="poor", experiment="expect-tests")
        client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(model, "champion", "1")
    client.set_registered_model_alias(model, "challenger", "2")

    def expect(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("expect", "--tracking-uri", tracking_server.url, *args)

    done = expect("--model", model, "--alias", "champion=1", "--alias", "challenger=2")
    assert done.returncode == 0, done.stderr
    assert f"registry as expected: model '{model}' @champion = v1, @challenger = v2" in done.stderr

    done = expect("--model", model, "--alias", "champion=2", "--alias", "challenger=2")
    assert done.returncode == 1, done.stderr
    assert "@champion is v1, expected v2" in done.stderr
    # An empty version is a missing workflow output, never a match (not even of an unset alias).
    done = expect("--model", model, "--alias", "candidate=")
    assert done.returncode == 1, done.stderr
    assert "expected version of @candidate is empty" in done.stderr
    done = expect("--model", "no-such-model", "--alias", "champion=1")
    assert done.returncode == 1, done.stderr
    assert "@champion is not set, expected v1" in done.stderr
    # Both kinds of expectation in one call: either failing fails it.
    done = expect("--verdict", "fail", "--run-id", "", "--model", model, "--alias", "champion=1")
    assert done.returncode == 1, done.stderr


@pytest.mark.parametrize(
    ("args", "why"),
    [([], "Nothing to expect"), (["--alias", "champion=1"], "--alias needs --model"),
     (["--model", "m", "--alias", "champion"], "is not KEY=VALUE")],
)  # fmt: skip
def test_expect_usage_errors(args: list[str], why: str) -> None:
    done = run_cli("expect", *args)
    assert done.returncode == 2, done.stderr
    assert why in done.stderr
