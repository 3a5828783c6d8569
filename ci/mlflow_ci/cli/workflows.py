"""Commands for GitHub workflows: the sticky PR comment (``pr-comment``), the checks of a
workflow's outputs (``expect``) and the projects of a monorepo a change touches (``projects``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mlflow_ci.cli.app import EPILOG, _handle, _parse_params, cli, json_option, tracking_option


@cli.command("pr-comment", epilog=EPILOG)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder holding <kind>.md (e.g. the downloaded report artifact).",
)
@click.option(
    "--kind",
    default="smoke",
    show_default=True,
    help="Report kind: reads <kind>.md; owns the comment marked <!-- mlflow-ci:<kind> -->.",
)
@click.option("--pr", type=int, required=True, help="Pull request number.")
@click.option(
    "--repo",
    envvar="GITHUB_REPOSITORY",
    default="",
    show_envvar=True,
    help="OWNER/NAME (default: $GITHUB_REPOSITORY).",
)
@click.option(
    "--api-url",
    envvar="GITHUB_API_URL",
    default="https://api.github.com",
    show_default=True,
    show_envvar=True,
    help="GitHub REST API root.",
)
@click.option("--run-url", default=None, help="Link used when the report is missing (the workflow run).")
@click.option(
    "--artifact",
    default="",
    help="The report's artifact name; one comment per kind and artifact (the marker holds both).",
)
@click.option(
    "--head-sha",
    default="",
    metavar="SHA",
    help="The commit the report is for (the pull request's head.sha, not the merge commit "
    "GITHUB_SHA names). A run whose commit is no longer the pull request's head leaves the "
    "comment alone.",
)
@click.option(
    "--author",
    default="",
    metavar="LOGIN",
    help="Who the token comments as, when GET /user cannot say (a GitHub App's token: "
    "<app-slug>[bot]). Default: GET /user, or github-actions[bot] for a workflow's GITHUB_TOKEN.",
)
@click.option(
    "--matrix",
    default="",
    metavar="JSON",
    help="The matrix output of `mlflow-ci projects`: one comment summing up every project's "
    "report, read from <report-dir>/<name>/<kind>.json. Empty: the one report in --report-dir.",
)
@json_option
@_handle
def pr_comment(
    *,
    report_dir: Path,
    kind: str,
    pr: int,
    repo: str,
    api_url: str,
    run_url: str | None,
    artifact: str,
    head_sha: str,
    author: str,
    matrix: str,
    as_json: bool,
) -> int:
    """Post the report as ONE pull-request comment, updated in place on every run.

    Only comments written by the token's own user are ever edited. The token comes from
    $GITHUB_TOKEN only (never a flag, so it stays out of process lists).
    """
    from mlflow_ci.workflows.comment import pr_comment as post

    token = os.environ.get("GITHUB_TOKEN", "")
    return post(
        report_dir=report_dir, kind=kind, pr=pr, repo=repo, token=token, api_url=api_url,
        run_url=run_url, as_json=as_json, artifact=artifact, head_sha=head_sha, author=author,
        matrix=matrix,
    )  # fmt: skip


@cli.command("projects", epilog=EPILOG)
@click.argument("root", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--changed-since",
    default=None,
    metavar="REF",
    help="Only the projects that `git diff REF...HEAD` touches (their folder, or a file their "
    "policy's watch: list names). Without it, or empty: every project.",
)
@_handle
def projects(*, root: Path, changed_since: str | None) -> int:
    """Print, as JSON, the MLflow projects under ROOT (folders holding MLproject and
    mlflow-ci.yaml), or those a change touches, shaped for a GitHub Actions matrix.

    Prints {"matrix": {"include": [{"project": ..., "name": ...}]}, "projects": [...], "count": N,
    ...}; in GitHub Actions it also sets the step outputs matrix, projects and count. An empty
    matrix is no error: skip the matrix job with `if: needs.<job>.outputs.count != '0'`.
    """
    from mlflow_ci.workflows.projects import projects_command

    return projects_command(root=root, changed_since=changed_since)


@cli.command("expect", epilog=EPILOG)
@click.option("--verdict", default=None, help="The verdict output of a workflow that ran mlflow-ci.")
@click.option("--run-id", default="", help="The run_id output of that workflow.")
@click.option("--want", type=click.Choice(["pass", "fail"]), default="pass", show_default=True)
@click.option("--model", default=None, help="Registered model whose aliases --alias checks.")
@click.option(
    "--alias",
    "alias_pairs",
    multiple=True,
    metavar="ALIAS=VERSION",
    help="Expect MODEL@ALIAS to be VERSION in the registry (repeatable; needs --model).",
)
@tracking_option
@_handle
def expect(
    *,
    verdict: str | None,
    run_id: str,
    want: str,
    model: str | None,
    alias_pairs: tuple[str, ...],
    tracking_uri: str | None,
) -> int:
    """Exit 1 unless a workflow's outputs say the checks ended as wanted (a pass needs a run id),
    and, with --alias, unless the registry holds the versions the outputs name."""
    from mlflow_ci.workflows.expect import expect_aliases, expect_outputs

    if verdict is None and not alias_pairs:
        raise click.UsageError("Nothing to expect: pass --verdict, or --model with --alias.")
    if alias_pairs and not model:
        raise click.UsageError("--alias needs --model.")
    wanted = _parse_params(alias_pairs, param_hint="--alias")
    if verdict is not None:
        expect_outputs(verdict=verdict, run_id=run_id, want=want)
    if wanted:
        expect_aliases(model=str(model), wanted=wanted, tracking_uri=tracking_uri)
    return 0
