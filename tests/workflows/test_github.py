"""The sticky PR comment and `mlflow-ci expect`, against a fake GitHub API on 127.0.0.1 (and, for
`expect --alias`, a real tracking server).

The comment is ours alone (only comments by the token's user are ever edited), one per report
kind and artifact, and never moved back by a run for an older commit."""

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
from mlflow_ci.workflows.comment import ACTIONS_BOT, MAX_BODY, Marker, _Api, pr_comment
from mlflow_ci.workflows.expect import expect_outputs

REPO = "acme/models"
MARKER = "<!-- mlflow-ci:smoke -->"
SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40


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


def ids_patched(github: FakeGitHub) -> list[int]:
    return [int(path.rsplit("/", 1)[1]) for method, path in github.requests if method == "PATCH"]


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
    mine = github.add_comment(REPO, 7, f"{MARKER}\nold report", user=ACTIONS_BOT)
    github.add_comment(REPO, 7, "more chatter")
    github.requests.clear()

    post(github, write_report(tmp_path, ok=True))

    gets = [path for method, path in github.requests if method == "GET" and "/comments" in path]
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


# --- only ours: the token's own user ----------------------------------------------------------


def test_a_comment_by_another_user_that_carries_the_marker_is_left_alone(
    github: FakeGitHub, tmp_path: Path
) -> None:
    """Someone pastes our exact marker (artifact and head included) at the top of a comment: it is
    not ours, so it is never edited (nor deleted); we write and then update our own."""
    github.add_pull(REPO, 7, SHA1)
    forged = Marker("smoke", artifact="mlflow-ci-smoke", head=SHA1).render()
    theirs = github.add_comment(REPO, 7, f"{forged}\n### ✅ all green, trust me", user="mallory")
    github.add_comment(REPO, 7, f"{MARKER}\nan old-style marker, by a person", user="alice")
    report = write_report(tmp_path, ok=False)

    post(github, report, artifact="mlflow-ci-smoke", head_sha=SHA1)
    post(github, report, artifact="mlflow-ci-smoke", head_sha=SHA1)

    comments = github.by(REPO, 7)
    assert len(comments) == 3, comments
    assert comments[0] == ("mallory", f"{forged}\n### ✅ all green, trust me"), "never edited"
    assert comments[1][1].startswith(f"{MARKER}\nan old-style"), "never adopted: not ours"
    author, body = comments[2]
    assert author == ACTIONS_BOT
    assert body.startswith(forged + "\n"), "same marker, our own comment"
    assert "FAIL" in body
    assert theirs not in ids_patched(github)
    assert [m for m, _ in github.requests].count("PATCH") == 1, "the second run updated ours"
    assert not [m for m, _ in github.requests if m == "DELETE"]


def test_a_personal_token_comments_as_its_user_and_leaves_the_bots_comment(
    tmp_path: Path,
) -> None:
    with FakeGitHub(login="octocat") as github:
        bots = github.add_comment(REPO, 7, f"{MARKER}\nby the workflow", user=ACTIONS_BOT)
        post(github, write_report(tmp_path, ok=True))
        post(github, write_report(tmp_path, ok=True))
        assert [author for author, _ in github.by(REPO, 7)] == [ACTIONS_BOT, "octocat"]
        assert github.bodies(REPO, 7)[0] == f"{MARKER}\nby the workflow"
        assert bots not in ids_patched(github)
        assert ("GET", "/user") in github.requests


def test_a_github_app_token_is_named_with_author(tmp_path: Path) -> None:
    """An App's installation token has no user either (GET /user: 403) and writes as
    <slug>[bot]: --author says so; without it, the App's comment is not taken for ours."""
    with FakeGitHub(bot="acme-ml[bot]") as github:
        post(github, write_report(tmp_path, ok=True), author="acme-ml[bot]")
        post(github, write_report(tmp_path, ok=False), author="ACME-ML[bot]")  # logins ignore case
        ((author, body),) = github.by(REPO, 7)
        assert author == "acme-ml[bot]"
        assert "FAIL" in body


def test_the_token_user_comes_from_get_user_or_is_the_actions_bot(github: FakeGitHub) -> None:
    from mlflow_ci.workflows.comment import token_login

    assert token_login(_Api(github.url, github.token)) == ACTIONS_BOT
    with FakeGitHub(login="octocat") as personal:
        assert token_login(_Api(personal.url, personal.token)) == "octocat"


# --- one comment per kind and artifact -------------------------------------------------------------


def test_two_artifact_names_give_two_comments(github: FakeGitHub, tmp_path: Path) -> None:
    gpu, cpu = write_report(tmp_path / "gpu", ok=False), write_report(tmp_path / "cpu", ok=True)
    post(github, gpu, artifact="smoke-gpu")
    post(github, cpu, artifact="smoke-cpu")
    post(github, write_report(tmp_path / "gpu", ok=True), artifact="smoke-gpu")

    bodies = github.bodies(REPO, 7)
    assert len(bodies) == 2, bodies
    assert [Marker.parse(b) for b in bodies] == [Marker("smoke", "smoke-gpu"), Marker("smoke", "smoke-cpu")]
    assert all("PASS" in b and "FAIL" not in b for b in bodies)


def test_a_comment_from_before_markers_named_the_artifact_is_adopted(
    github: FakeGitHub, tmp_path: Path
) -> None:
    """Our own old-style comment (`<!-- mlflow-ci:smoke -->`) is updated, not duplicated."""
    old = github.add_comment(REPO, 7, f"{MARKER}\nold report", user=ACTIONS_BOT)
    post(github, write_report(tmp_path, ok=True), artifact="mlflow-ci-smoke")
    post(github, write_report(tmp_path, ok=True), artifact="other")
    bodies = github.bodies(REPO, 7)
    assert len(bodies) == 2
    assert Marker.parse(bodies[0]) == Marker("smoke", "mlflow-ci-smoke")
    assert Marker.parse(bodies[1]) == Marker("smoke", "other")
    assert ids_patched(github) == [old]


@pytest.mark.parametrize("artifact", ["plain", "with space", "a-->b", "x=y z", "ünï/cødé", "*"])
def test_the_marker_round_trips(artifact: str) -> None:
    marker = Marker("smoke", artifact=artifact, head=SHA1)
    rendered = marker.render()
    assert rendered.startswith("<!-- mlflow-ci:smoke ")
    assert rendered.endswith(" -->")
    assert rendered.count("-->") == 1
    assert "\n" not in rendered
    assert Marker.parse(rendered + "\n### report") == marker
    assert Marker.parse("> " + rendered) is None, "only at the start of the body"
    assert Marker.parse(MARKER) == Marker("smoke")
    assert Marker("smoke").render() == MARKER, "without artifact and head: the marker as it always was"


# --- never stale: the pull request's head -------------------------------------------------------------


def test_a_stale_head_sha_leaves_the_newer_comment_as_it_is(github: FakeGitHub, tmp_path: Path) -> None:
    """Commit 1's run is slow; commit 2 is pushed and its run comments first. Commit 1's run then
    finds the pull request's head has moved and leaves commit 2's comment as it is."""
    github.add_pull(REPO, 7, SHA1)
    post(github, write_report(tmp_path / "c1-first", ok=True), artifact="a", head_sha=SHA1)
    github.push(REPO, 7, SHA2)
    post(github, write_report(tmp_path / "c2", ok=True, run_id="2" * 32), artifact="a", head_sha=SHA2)
    newer = github.bodies(REPO, 7)
    assert Marker.parse(newer[0]) == Marker("smoke", "a", SHA2)
    assert f"for commit {SHA2[:12]}" in newer[0]

    writes = len([m for m, _ in github.requests if m in ("POST", "PATCH")])
    assert post(github, write_report(tmp_path / "c1-late", ok=False, run_id="1" * 32), artifact="a",
                head_sha=SHA1) == 0  # fmt: skip
    assert github.bodies(REPO, 7) == newer, "the older run changed nothing"
    assert len([m for m, _ in github.requests if m in ("POST", "PATCH")]) == writes
    assert ("GET", f"/repos/{REPO}/pulls/7") in github.requests


def test_a_stale_run_creates_no_comment_either(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_pull(REPO, 7, SHA2)
    post(github, write_report(tmp_path, ok=False), head_sha=SHA1)
    assert github.bodies(REPO, 7) == []


def test_the_current_head_replaces_an_older_heads_comment(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_pull(REPO, 7, SHA1)
    post(github, write_report(tmp_path, ok=False), head_sha=SHA1)
    github.push(REPO, 7, SHA3)
    post(github, write_report(tmp_path, ok=True), head_sha=SHA3.upper())
    (body,) = github.bodies(REPO, 7)
    assert Marker.parse(body) == Marker("smoke", "", SHA3)
    assert "PASS" in body


def test_a_run_that_names_no_commit_never_replaces_the_heads_comment(
    github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_pull(REPO, 7, SHA1)
    post(github, write_report(tmp_path, ok=True), head_sha=SHA1)
    post(github, write_report(tmp_path / "unknown", ok=False))
    (body,) = github.bodies(REPO, 7)
    assert "PASS" in body
    # Once the head has moved on, the comment is stale anyway and any run may replace it.
    github.push(REPO, 7, SHA2)
    post(github, write_report(tmp_path / "unknown", ok=False))
    (body,) = github.bodies(REPO, 7)
    assert "FAIL" in body


# --- one comment for several projects (--matrix) -------------------------------------------------


def matrix(*entries: tuple[str, str]) -> str:
    return json.dumps({"include": [{"project": p, "name": n} for p, n in entries]})


def test_one_summary_comment_lists_every_projects_verdict(github: FakeGitHub, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    write_report(reports / "churn", ok=True, run_id="c" * 32)
    write_report(reports / "fraud score", ok=False, run_id="f" * 32)
    # "forecast" has no report: its job died before writing one.
    projects = matrix(("models/churn", "churn"), ("models/fraud score", "fraud score"),
                      ("models/forecast", "forecast"))  # fmt: skip
    github.add_pull(REPO, 7, SHA1)
    post(github, reports, artifact="mlflow-ci-smoke", head_sha=SHA1, matrix=projects,
         run_url="https://github.example/acme/models/actions/runs/9")  # fmt: skip
    post(github, reports, artifact="mlflow-ci-smoke", head_sha=SHA1, matrix=projects)

    (body,) = github.bodies(REPO, 7)
    assert Marker.parse(body) == Marker("smoke", "mlflow-ci-smoke", SHA1)
    lines = body.splitlines()
    assert lines[1] == "### ❌ mlflow-ci smoke: 3 projects — **FAIL** (2 of 3 failed)"
    assert f"| `models/churn` | ✅ pass | `{'c' * 32}` |  |" in lines
    assert f"| `models/fraud score` | ❌ fail | `{'f' * 32}` | failed: run finished |" in lines
    (missing,) = [ln for ln in lines if ln.startswith("| `models/forecast`")]
    assert "❌ no report" in missing
    # Each report folded below the table; the failed one open.
    assert "<details><summary><code>models/churn</code>: PASS</summary>" in body
    assert "<details open><summary><code>models/fraud score</code>: FAIL</summary>" in body
    assert body.count("<!-- mlflow-ci:") == 1, "the reports' own markers are not repeated"


def test_a_summary_of_passing_projects_passes(github: FakeGitHub, tmp_path: Path) -> None:
    write_report(tmp_path / "a", ok=True)
    post(github, tmp_path, matrix=matrix(("a", "a")))
    (body,) = github.bodies(REPO, 7)
    assert body.splitlines()[1] == "### ✅ mlflow-ci smoke: 1 project — **PASS**"


def test_no_project_changed_creates_no_comment_but_corrects_an_old_one(
    github: FakeGitHub, tmp_path: Path
) -> None:
    empty = matrix()
    post(github, tmp_path, artifact="x", matrix=empty)
    assert github.bodies(REPO, 7) == [], "nothing to say, nothing said"

    write_report(tmp_path / "a", ok=False)
    post(github, tmp_path, artifact="x", matrix=matrix(("models/a", "a")))
    post(github, tmp_path, artifact="x", matrix=empty)  # the change to models/a was reverted
    (body,) = github.bodies(REPO, 7)
    assert "no MLflow project changed" in body
    assert "FAIL" not in body


def test_a_long_summary_stays_under_githubs_limit(github: FakeGitHub, tmp_path: Path) -> None:
    entries = []
    for i in range(8):
        folder = tmp_path / f"p{i}"
        write_report(folder, ok=True)
        (folder / "smoke.md").write_text("### report\n" + "y" * 20_000, encoding="utf-8")
        entries.append((f"models/p{i}", f"p{i}"))
    post(github, tmp_path, matrix=matrix(*entries))
    (body,) = github.bodies(REPO, 7)
    assert len(body) <= MAX_BODY
    assert all(f"| `models/p{i}` | ✅ pass |" in body for i in range(8)), "every row stays"
    assert "left out to stay under GitHub's comment size limit" in body


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


def test_cli_stale_head_is_skipped_with_a_message(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_pull(REPO, 3, SHA2)
    write_report(tmp_path, ok=True)
    done = run_cli("pr-comment", "--report-dir", str(tmp_path), "--pr", "3", "--artifact", "mlflow-ci-smoke",
                   "--head-sha", SHA1, "--json", env=cli_env(github))  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["action"] == "skipped"
    assert answer["author"] == ACTIONS_BOT
    assert (
        f"this run reports on commit {SHA1[:12]}, but the pull request's head is now {SHA2[:12]}"
        in done.stderr
    )
    assert github.bodies(REPO, 3) == []


@pytest.mark.parametrize(
    ("args", "code", "why"),
    [
        (["--head-sha", "abc123"], 2, "is not a full commit SHA"),
        (["--kind", "smoke -->"], 2, "is not a report kind"),
        (["--head-sha", SHA1, "--pr", "99"], 3, "The repository or pull request does not exist"),
        (["--matrix", "[1, 2]"], 2, "is not the `matrix` output of mlflow-ci projects"),
        (["--matrix", '{"include": [{"project": "a", "name": "../x"}]}'], 2, "is not a folder name"),
    ],
)
def test_cli_bad_comment_arguments(
    github: FakeGitHub, tmp_path: Path, args: list[str], code: int, why: str
) -> None:
    github.add_pull(REPO, 3, SHA1)
    write_report(tmp_path, ok=True)
    argv = ["pr-comment", "--report-dir", str(tmp_path), *args]
    if "--pr" not in args:
        argv += ["--pr", "3"]
    done = run_cli(*argv, env=cli_env(github))
    assert done.returncode == code, done.stderr
    assert why in done.stderr
    assert "Traceback" not in done.stderr
    assert github.bodies(REPO, 3) == []


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
