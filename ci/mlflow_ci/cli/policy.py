"""``mlflow-ci policy check|show|schema|init``: validate, show and publish the schema of
mlflow-ci.yaml, and write a first one from an experiment's runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlflow_ci.cli.app import EPILOG, _handle, cli, json_option, tracking_option
from mlflow_ci.core import output
from mlflow_ci.core.output import emit_json


@cli.group(epilog=EPILOG)
def policy() -> None:
    """Validate, show and publish the schema of mlflow-ci.yaml; write a first one from runs."""


@policy.command("check", epilog=EPILOG)
@click.argument("path", type=click.Path(path_type=Path), default=Path("mlflow-ci.yaml"))
@json_option
@_handle
def policy_check(path: Path, as_json: bool) -> int:
    """Validate a policy file; exit 2 naming file, line and key when it is invalid."""
    from mlflow_ci.config import find_policy, load_policy

    if path.is_dir():
        path = find_policy(path) or path / "mlflow-ci.yaml"
    loaded = load_policy(path)
    if as_json:
        emit_json({"path": str(path), "valid": True, "policy": loaded.policy.model_dump(mode="json")})
    else:
        output.info(f"{path}: valid mlflow-ci policy for project {loaded.policy.project!r}.")
    return 0


@policy.command("show", epilog=EPILOG)
@click.argument("path", type=click.Path(path_type=Path), default=Path("mlflow-ci.yaml"))
@_handle
def policy_show(path: Path) -> int:
    """Print the resolved policy with where each value came from (default, file:line, env, flag)."""
    from mlflow_ci.config import find_policy, load_policy

    if path.is_dir():
        path = find_policy(path) or path / "mlflow-ci.yaml"
    loaded = load_policy(path)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", loaded.policy.model_dump(mode="json"))
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        click.echo(f"{key:<{width}}  {json.dumps(value)}  [{loaded.source_of(key)}]")
    return 0


@policy.command("schema", epilog=EPILOG)
@click.option("--output", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_handle
def policy_schema(out: Path | None) -> int:
    """Print (or write) the JSON Schema of mlflow-ci.yaml, for editors."""
    from mlflow_ci.config import json_schema
    from mlflow_ci.core.fsutil import atomic_write_text

    if out:
        atomic_write_text(out, json.dumps(json_schema(), indent=2) + "\n")
        output.info(f"wrote {out}")
    else:
        emit_json(json_schema())
    return 0


@policy.command("init", epilog=EPILOG)
@click.option(
    "--from-runs",
    "experiment",
    required=True,
    metavar="EXPERIMENT",
    help="Experiment (name or id) whose runs show what the project already logs.",
)
@tracking_option
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mlflow-ci.yaml"),
    show_default=True,
    help="Where to write the policy; an existing file is never overwritten.",
)
@click.option("--project", default=None, help="Project name (default: taken from the experiment's name).")
@click.option(
    "--max-runs",
    type=int,
    default=100,
    show_default=True,
    help="Learn from at most this many runs (newest first).",
)
@_handle
def policy_init(
    experiment: str, tracking_uri: str | None, out: Path, project: str | None, max_runs: int
) -> int:
    """Write a starting mlflow-ci.yaml from what EXPERIMENT's runs already log.

    Tags on every run, params and metrics every run logs and a naming template every name fits
    are required and enforced; where the runs fall short (generated names, no dataset, no model)
    the family is set to warn, so the first pull request passes and its report lists what is
    missing. Exit 2 if the file exists or the experiment does not.
    """
    from mlflow_ci.checks.adopt import init_from_runs_command

    return init_from_runs_command(
        experiment=experiment, tracking_uri=tracking_uri, out=out, project=project, max_runs=max_runs
    )
