"""The run checks: ``smoke`` and ``conventions`` (pull requests) and ``train`` (the full run a
release starts from)."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_ci.cli.app import (
    EPILOG,
    _handle,
    _parse_params,
    cli,
    json_option,
    policy_option,
    tracking_option,
    writable_report_dir,
)


@cli.command(epilog=EPILOG)
@click.argument("project", type=click.Path(exists=True, file_okay=False, path_type=Path))
@policy_option
@tracking_option
@click.option(
    "--env-manager",
    type=click.Choice(["local", "virtualenv", "uv"]),
    default=None,
    help="Override smoke.env_manager.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=writable_report_dir,
    help="Where to write smoke.json/.md/.html (default: <project>/reports/mlflow-ci).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work folder for the embedded server (default: a temporary folder).",
)
@click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra entry-point parameter (repeatable); overrides smoke.parameters.",
)
@json_option
@_handle
def smoke(
    project: Path,
    policy_path: Path | None,
    tracking_uri: str | None,
    env_manager: str | None,
    report_dir: Path | None,
    workdir: Path | None,
    params: tuple[str, ...],
    as_json: bool,
) -> int:
    """Run PROJECT's entry point in smoke mode and verify the run and its model.

    The run must finish, follow the naming conventions, carry the required tags, params and
    metrics (finite), record its dataset, and log a model with signature and input example that
    loads and predicts in its own environment.
    """
    from mlflow_ci.checks.smoke import smoke as run_smoke

    return run_smoke(
        project=project,
        policy_path=policy_path,
        tracking_uri=tracking_uri,
        env_manager=env_manager,
        report_dir=report_dir,
        workdir=workdir,
        params=_parse_params(params),
        as_json=as_json,
    )


@cli.command(epilog=EPILOG)
@click.argument("target")
@policy_option
@tracking_option
@click.option("--max-runs", type=int, default=1000, show_default=True, help="Check at most this many runs.")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=writable_report_dir,
)
@json_option
@_handle
def conventions(
    target: str,
    policy_path: Path | None,
    tracking_uri: str | None,
    max_runs: int,
    report_dir: Path | None,
    as_json: bool,
) -> int:
    """Check existing runs against the policy: TARGET is a run id, an experiment name or id."""
    from mlflow_ci.checks.conventions import conventions_command

    return conventions_command(
        target=target,
        policy_path=policy_path,
        tracking_uri=tracking_uri,
        max_runs=max_runs,
        report_dir=report_dir,
        as_json=as_json,
    )


@cli.command(epilog=EPILOG)
@click.argument("project", type=click.Path(exists=True, file_okay=False, path_type=Path))
@policy_option
@tracking_option
@click.option("--env-manager", type=click.Choice(["local", "virtualenv", "uv"]), default=None,
              help="Override train.env_manager.")  # fmt: skip
@click.option(
    "-P", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a train parameter."
)
@json_option
@_handle
def train(project: Path, policy_path: Path | None, tracking_uri: str | None, env_manager: str | None,
          params: tuple[str, ...], as_json: bool) -> int:  # fmt: skip
    """Run PROJECT with its full parameters (policy train:) and print the run id."""
    from mlflow_ci.checks.train import train_command

    return train_command(project=project, policy_path=policy_path, tracking_uri=tracking_uri,
                         env_manager=env_manager, params=_parse_params(params), as_json=as_json)  # fmt: skip
