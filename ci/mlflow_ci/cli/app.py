"""The ``mlflow-ci`` command line: parse, dispatch, handle errors. No logic lives here.

Each command is a plain function in its own module taking keyword arguments and returning an
exit code; :func:`main` wraps them in the single error handler (see :mod:`mlflow_ci.core.errors`).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mlflow_ci import __version__
from mlflow_ci.core import output
from mlflow_ci.core.errors import EXIT_BUG, EXIT_CODES, EXIT_CONFIG, EXIT_INTERRUPTED, MlflowCiError
from mlflow_ci.core.output import emit_json

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."


def _handle(fn: F) -> F:
    """Run a command function and turn its outcome into an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except MlflowCiError as exc:
            output.error(str(exc), title=type(exc).__name__)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            output.error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            log = Path(tempfile.gettempdir()) / f"mlflow-ci-crash-{os.getpid()}.log"
            log.write_text(
                f"mlflow-ci {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
                + "".join(traceback.format_exception(exc)),
                encoding="utf-8",
            )
            output.error(
                f"mlflow-ci hit an internal error ({type(exc).__name__}: {exc}). This is a bug in mlflow-ci; "
                f"the traceback is in {log}. Please report it with that file."
            )
            sys.exit(EXIT_BUG)
        sys.exit(int(code or 0))

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
tracking_option = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="HTTP tracking server to use (default: $MLFLOW_TRACKING_URI, else an embedded local server).",
)
policy_option = click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (default: <project>/mlflow-ci.yaml).",
)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-ci")
def cli() -> None:
    """CI/CD and operations for MLflow projects.

    PR checks (smoke, conventions), quality gates, registry promotion with audit and rollback,
    serving images, and tracking-server operations, all configured by one mlflow-ci.yaml.
    """


# --------------------------------------------------------------------------------------------
# policy


@cli.group(epilog=EPILOG)
def policy() -> None:
    """Validate, show and publish the schema of mlflow-ci.yaml."""


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

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        atomic_write_text(out, text)
        output.info(f"wrote {out}")
    else:
        click.echo(text, nl=False)
    return 0


# --------------------------------------------------------------------------------------------
# server


@cli.group(epilog=EPILOG)
def server() -> None:
    """Start and stop a local tracking server; generate deployment files, check, upgrade a server."""


@server.command("up", epilog=EPILOG)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".mlflow-ci/server"),
    show_default=True,
    help="Folder for the database, artifacts, log and state file.",
)
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
@click.option("--backend-store-uri", default=None, help="Backend store (default: SQLite in the workdir).")
@click.option(
    "--artifacts-destination", default=None, help="Artifact root (default: a folder in the workdir)."
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start the server: profile of this policy (backend, artifacts, port, workers, allowed hosts, auth app); "
    "the flags above override it.",
)
@json_option
@_handle
def server_up(
    workdir: Path,
    port: int | None,
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    policy_path: Path | None,
    as_json: bool,
) -> int:
    """Start a tracking server in the background and print its URL."""
    from mlflow_ci.mlflowio import tracking

    if policy_path is not None:  # server ops (issue 5): a profile's server
        from mlflow_ci.serverops.profile import load_ops, up_kwargs

        kwargs = up_kwargs(load_ops(policy_path).server)
        kwargs.update({k: v for k, v in {"port": port, "backend_store_uri": backend_store_uri,
                                         "artifacts_destination": artifacts_destination}.items() if v})  # fmt: skip
        state = tracking.up(workdir, **kwargs)
    else:
        state = tracking.up(
            workdir,
            port=port,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
        )
    output.set_output("tracking_uri", str(state["url"]))
    if as_json:
        emit_json(state)
    else:
        click.echo(state["url"])
        output.info(
            f"tracking server {'already running' if state['reused'] else 'started'} at {state['url']} "
            f"(pid {state['pid']}, log {state['log']}); stop it with `mlflow-ci server down`."
        )
    return 0


@server.command("down", epilog=EPILOG)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".mlflow-ci/server"),
    show_default=True,
)
@json_option
@_handle
def server_down(workdir: Path, as_json: bool) -> int:
    """Stop the tracking server started by `server up` (and everything it started)."""
    from mlflow_ci.mlflowio import tracking

    state = tracking.down(workdir)
    if as_json:
        emit_json(state)
    else:
        output.info(f"stopped tracking server at {state['url']}.")
    return 0


# --------------------------------------------------------------------------------------------
# PR checks


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
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
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
@click.option(
    "--project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("example_project"),
    show_default=True,
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".mlflow-ci/demo"),
    show_default=True,
    help="Server data and reports (wiped at start unless --keep).",
)
@click.option("--env-manager", type=click.Choice(["local", "virtualenv", "uv"]), default=None)
@click.option("--keep", is_flag=True, help="Keep the previous demo's data.")
@_handle
def demo(project: Path, workdir: Path, env_manager: str | None, keep: bool) -> int:
    """The main job end to end on the embedded default server (no services needed)."""
    from mlflow_ci.cli.demo import demo as run_demo

    return run_demo(project=project, workdir=workdir, env_manager=env_manager, keep=keep)


# --------------------------------------------------------------------------------------------
# GitHub: sticky PR comment and workflow-output checks (module: github.py)


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
@json_option
@_handle
def pr_comment(
    *, report_dir: Path, kind: str, pr: int, repo: str, api_url: str, run_url: str | None, as_json: bool
) -> int:
    """Post the report as ONE pull-request comment, updated in place on every run.

    The token comes from $GITHUB_TOKEN only (never a flag, so it stays out of process lists).
    """
    from mlflow_ci.workflows.comment import pr_comment as post

    token = os.environ.get("GITHUB_TOKEN", "")
    return post(
        report_dir=report_dir, kind=kind, pr=pr, repo=repo, token=token, api_url=api_url,
        run_url=run_url, as_json=as_json,
    )  # fmt: skip


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


# --------------------------------------------------------------------------------------------
# ============================================================================================
# Server operations (issue 5): backup, restore, retention, server doctor/config/upgrade.
# Every command parses flags and calls one function of its own module.

backend_option = click.option("--backend-store-uri", default=None,
                              help="Tracking database (default: server.backend_store_uri).")  # fmt: skip
artifacts_option = click.option("--artifacts-destination", "artifacts_uri", default=None,
                                help="Artifact root: path, s3://, wasbs:// (default: server.artifacts_destination).")  # fmt: skip
auth_db_option = click.option("--auth-db-uri", default=None,
                              help="basic-auth users database (default: server.auth_db_uri).")  # fmt: skip


@cli.command("backup", epilog=EPILOG)
@backend_option
@artifacts_option
@auth_db_option
@click.option("--to", "destination", default=None, help="Backup repository: folder or s3://bucket/prefix "
              "(default: backup.destination).")  # fmt: skip
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Complete backups to keep (default: backup.keep).",
)
@policy_option
@json_option
@_handle
def backup_cmd(backend_store_uri: str | None, artifacts_uri: str | None, auth_db_uri: str | None,
               destination: str | None, keep: int | None, policy_path: Path | None, as_json: bool) -> int:  # fmt: skip
    """Back up the tracking database, then the artifacts, then the auth database, with a manifest.

    The backup is consistent (database snapshot first), atomic (a crash leaves the previous
    backup and the `latest` pointer intact) and incremental (unchanged artifacts are not copied).
    """
    from mlflow_ci.serverops.backup import backup_command

    return backup_command(backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri, destination=destination,
                          auth_db_uri=auth_db_uri, keep=keep, policy_path=policy_path, as_json=as_json)  # fmt: skip


@cli.command("restore", epilog=EPILOG)
@click.option("--from", "source", default=None, help="Backup repository (default: backup.destination).")
@click.option("--backup", "backup_id", default=None, help="Backup id (default: the latest complete one).")
@backend_option
@artifacts_option
@auth_db_option
@click.option("--dry-run", is_flag=True, help="Say what would be restored; change nothing.")
@click.option("--drill", is_flag=True, help="Restore drill: into throwaway stores (a temporary SQLite and folder, "
              "or the empty --backend-store-uri given), verified, then removed. Never the profile's stores.")  # fmt: skip
@click.option("--no-server-check", "server_check", is_flag=True, flag_value=False, default=True,
              help="Skip reading the restore back through a started tracking server.")  # fmt: skip
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@policy_option
@json_option
@_handle
def restore_cmd(source: str | None, backup_id: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                auth_db_uri: str | None, dry_run: bool, drill: bool, server_check: bool, report_dir: Path | None,
                policy_path: Path | None, as_json: bool) -> int:  # fmt: skip
    """Restore a backup into an EMPTY database and artifact store, then verify it.

    Verified against the manifest (schema revision, row counts, artifact keys, sizes, checksums)
    and by reading runs, metric histories, models, versions and aliases back through a started
    server. Refuses (exit 2) a target that is not empty.
    """
    from mlflow_ci.serverops.restore import restore_command

    return restore_command(source=source, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                           auth_db_uri=auth_db_uri, backup_id=backup_id, dry_run=dry_run, server_check=server_check,
                           policy_path=policy_path, report_dir=report_dir, as_json=as_json, drill=drill)  # fmt: skip


@cli.command("retention", epilog=EPILOG)
@tracking_option
@backend_option
@artifacts_option
@click.option("--dry-run/--apply", default=True, show_default=True,
              help="List what would go (default) or soft-delete, then gc runs whose grace expired.")  # fmt: skip
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@policy_option
@json_option
@_handle
def retention_cmd(tracking_uri: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                  dry_run: bool, report_dir: Path | None, policy_path: Path | None, as_json: bool) -> int:  # fmt: skip
    """Apply retention.rules: delete old runs, never one behind a version, an alias or a pinned tag.

    A real run (--apply) soft-deletes and tags the deletion time on the run, and purges with
    `mlflow gc` only runs whose grace period (retention.grace_days) has expired. Also reports
    orphaned artifacts and registered versions whose artifacts are missing.
    """
    from mlflow_ci.serverops.retention import retention_command

    return retention_command(tracking_uri=tracking_uri, backend_store_uri=backend_store_uri,
                             artifacts_uri=artifacts_uri, dry_run=dry_run, policy_path=policy_path,
                             report_dir=report_dir, as_json=as_json)  # fmt: skip


@server.command("config", epilog=EPILOG)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("deploy"),
              show_default=True, help="Folder for nginx.conf, mlflow.service, compose.yaml, mlflow.env.example.")  # fmt: skip
@policy_option
@json_option
@_handle
def server_config_cmd(out: Path, policy_path: Path | None, as_json: bool) -> int:
    """Generate deployment files from the server: profile (nginx, systemd, docker compose)."""
    from mlflow_ci.serverops.config_files import config_command

    return config_command(out=out, policy_path=policy_path, as_json=as_json)


@server.command("doctor", epilog=EPILOG)
@click.option("--url", "tracking_uri", default=None,
              help="A running server to probe directly (e.g. http://127.0.0.1:5000); omit to check the plan only.")  # fmt: skip
@backend_option
@artifacts_option
@click.option("--model-size-mb", type=float, default=None, help="Largest model you expect to upload (MiB).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@policy_option
@json_option
@_handle
def server_doctor_cmd(tracking_uri: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                      model_size_mb: float | None, report_dir: Path | None, policy_path: Path | None,
                      as_json: bool) -> int:  # fmt: skip
    """Check a planned or running server for known failure signatures; each finding says what to change.

    Schema out of date, Host header rejected behind a proxy, artifact store unreachable or bypassed,
    body-size limit below the models, auth misconfigured, SQLite with several workers, backup tools.
    """
    from mlflow_ci.serverops.doctor import doctor_command

    return doctor_command(tracking_uri=tracking_uri, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                          model_size_mb=model_size_mb, policy_path=policy_path, report_dir=report_dir,
                          as_json=as_json)  # fmt: skip


@server.command("upgrade", epilog=EPILOG)
@backend_option
@artifacts_option
@click.option("--to", "destination", default=None, help="Backup repository for the mandatory backup first.")
@click.option("--dry-run", is_flag=True, help="Say what would happen.")
@policy_option
@json_option
@_handle
def server_upgrade_cmd(backend_store_uri: str | None, artifacts_uri: str | None, destination: str | None,
                       dry_run: bool, policy_path: Path | None, as_json: bool) -> int:  # fmt: skip
    """Back up, then run `mlflow db upgrade`, then check the schema reached this MLflow's head.

    The only place mlflow-ci changes the schema: never implicitly, never without a backup.
    """
    from mlflow_ci.serverops.doctor import upgrade_command

    return upgrade_command(backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri, destination=destination,
                           dry_run=dry_run, policy_path=policy_path, as_json=as_json)  # fmt: skip


# ============================================================================================ END server ops


# ============================================================================================
# gates, registry, promotion, rollback, audit (issue 3) -- owned by the `gates` branch

report_dir_option = click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where to write the report files (default: reports/mlflow-ci).",
)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("run_id")
@policy_option
@tracking_option
@click.option("--model", "model", default=None, help="Registered model name (default: registry.model_name).")
@click.option("--eval-data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Evaluation set (CSV/Parquet) for gates with confidence; overrides gates.evaluation.data.")  # fmt: skip
@click.option(
    "--baseline-run", default=None, help="Compare with this pinned run instead of the policy's baseline."
)
@click.option("--baseline-alias", default=None, help="Compare with this registry alias instead.")
@click.option("--no-record", is_flag=True, help="Do not attach the verdict to the run (dry run).")
@report_dir_option
@json_option
@_handle
def gate(run_id: str, policy_path: Path | None, tracking_uri: str | None, model: str | None,
         eval_data: Path | None, baseline_run: str | None, baseline_alias: str | None, no_record: bool,
         report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Quality gates for RUN_ID against the baseline: exit 1 when a blocking gate fails.

    Writes gate.json/.md/.html (candidate against baseline, deltas, a chart) and records the
    verdict and its digest on the run, where `promote` checks it.
    """
    from mlflow_ci.release.gates import gate_command

    return gate_command(run_id=run_id, policy_path=policy_path, tracking_uri=tracking_uri, model=model,
                        eval_data=eval_data, baseline_run=baseline_run, baseline_alias=baseline_alias,
                        report_dir=report_dir, record_verdict=not no_record, as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("run_id")
@policy_option
@tracking_option
@click.option("--model", "model", default=None, help="Registered model name (default: registry.model_name).")
@click.option("--project", "project_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Project folder whose lock file is hashed into the lineage (default: the policy's folder).")  # fmt: skip
@click.option("--pull-request", default=None, help="Pull request number for the lineage tags.")
@json_option
@_handle
def register(run_id: str, policy_path: Path | None, tracking_uri: str | None, model: str | None,
             project_dir: Path | None, pull_request: str | None, as_json: bool) -> int:  # fmt: skip
    """Register RUN_ID's model with lineage tags and make it the candidate (idempotent)."""
    from mlflow_ci.release.register import register_command

    return register_command(run_id=run_id, policy_path=policy_path, tracking_uri=tracking_uri, model=model,
                            project_dir=project_dir, pull_request=pull_request, as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("model", required=False)
@click.option(
    "--to", "to", required=True, help="Target alias (challenger or champion, as named in the policy)."
)
@click.option(
    "--version", "version", default=None, help="Version to promote (default: the one at the previous alias)."
)
@click.option(
    "--approved-by", default=None, help="Who approved (required when the policy asks for approval)."
)
@click.option("--reason", default="", help="Why, recorded in the audit log.")
@policy_option
@tracking_option
@report_dir_option
@json_option
@_handle
def promote(model: str | None, to: str, version: str | None, approved_by: str | None, reason: str,
            policy_path: Path | None, tracking_uri: str | None, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Move MODEL's version one step along candidate → challenger → champion, atomically and audited."""
    from mlflow_ci.release.promotion import promote as run_promote

    return run_promote(model=model, to=to, version=version, approved_by=approved_by, reason=reason,
                       policy_path=policy_path, tracking_uri=tracking_uri, report_dir=report_dir,
                       as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("model", required=False)
@click.option("--reason", required=True, help="Why the rollback happens (recorded in the audit log).")
@click.option("--to-version", default=None, help="Version to restore (default: the previous champion).")
@click.option("--alias", default=None, help="Alias to roll back (default: champion).")
@click.option("--approved-by", default=None, help="Who approved, if anyone (recorded).")
@policy_option
@tracking_option
@report_dir_option
@json_option
@_handle
def rollback(model: str | None, reason: str, to_version: str | None, alias: str | None, approved_by: str | None,
             policy_path: Path | None, tracking_uri: str | None, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Move MODEL's champion back to the previous champion (or --to-version N)."""
    from mlflow_ci.release.rollback import rollback as run_rollback

    return run_rollback(model=model, reason=reason, to_version=to_version, alias=alias, approved_by=approved_by,
                        policy_path=policy_path, tracking_uri=tracking_uri, report_dir=report_dir,
                        as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("model", required=False)
@click.option("--verify", "verify_chain", is_flag=True,
              help="Check the hash chain and compare it with the registry (exit 1 if broken or out of band).")  # fmt: skip
@click.option("--no-reconcile", is_flag=True, help="With --verify: do not settle a pending change.")
@click.option("--limit", type=int, default=50, show_default=True, help="History entries to show.")
@policy_option
@tracking_option
@report_dir_option
@json_option
@_handle
def audit(model: str | None, verify_chain: bool, no_reconcile: bool, limit: int, policy_path: Path | None,
          tracking_uri: str | None, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Print MODEL's registry history, or verify it (--verify)."""
    from mlflow_ci.release.audit import audit_command

    return audit_command(model=model, verify_chain=verify_chain, reconcile_pending=not no_reconcile, limit=limit,
                         policy_path=policy_path, tracking_uri=tracking_uri, report_dir=report_dir,
                         as_json=as_json)  # fmt: skip


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


# ============================================================================================


# ============================================================================================
# serving images, serve-check, deploy (issue 4) -- owned by the `deploy` branch

target_option = click.option(
    "--target", "deploy_target", default=None,
    help="Deploy target: local (`mlflow models serve`) or docker (default: deploy.target).",
)  # fmt: skip


@cli.command("build-image", epilog=EPILOG)
@click.argument("model_uri")
@policy_option
@tracking_option
@click.option("--push", "push_image", is_flag=True, help="Push every tag to the registry.")
@click.option("--registry", default=None,
              help="Registry host[:port] (default: $MLFLOW_CI_REGISTRY, else deploy.image.registry).")  # fmt: skip
@click.option("--tag", "extra_tags", multiple=True, help="Another tag (repeatable).")
@click.option("--no-cache", "nocache", is_flag=True, help="Build every layer again.")
@json_option
@_handle
def build_image(model_uri: str, policy_path: Path | None, tracking_uri: str | None, push_image: bool,
                registry: str | None, extra_tags: tuple[str, ...], nocache: bool, as_json: bool) -> int:  # fmt: skip
    """Build MODEL_URI's serving image from MLflow's Dockerfile; tag, label and optionally push it.

    MODEL_URI: models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID, runs:/RUN_ID/PATH or a
    model folder. Tags: vVERSION (or the model id) and git-COMMIT; labels: OCI and io.mlflow-ci.*
    lineage. Registry credentials: $MLFLOW_CI_REGISTRY_USER / $MLFLOW_CI_REGISTRY_PASSWORD.
    """
    from mlflow_ci.serving.images import build_image_command

    return build_image_command(model_uri=model_uri, policy_path=policy_path, tracking_uri=tracking_uri,
                               registry=registry, push_image=push_image, extra_tags=extra_tags, nocache=nocache,
                               as_json=as_json)  # fmt: skip


@cli.command("serve-check", epilog=EPILOG)
@click.argument("target")
@click.option("--model", "model", default=None,
              help="Model the answers must match (default: the image's io.mlflow-ci.model.uri label; "
              "required for a URL).")  # fmt: skip
@target_option
@policy_option
@tracking_option
@click.option("--batch-data", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="CSV/Parquet rows for the batch (default: deploy.check.batch_data, else synthesized).")  # fmt: skip
@click.option("--requests", type=click.IntRange(1), default=None, help="Load test: requests (N).")
@click.option("--concurrency", type=click.IntRange(1), default=None, help="Load test: concurrency (C).")
@click.option("--no-record", is_flag=True, help="Do not record the verdict on the model version.")
@report_dir_option
@json_option
@_handle
def serve_check(target: str, model: str | None, deploy_target: str | None, policy_path: Path | None,
                tracking_uri: str | None, batch_data: Path | None, requests: int | None, concurrency: int | None,
                no_record: bool, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Check that TARGET answers exactly like its model; exit 1 if not.

    TARGET is an image (run as a container, removed afterwards), a URL (checked as is) or a model
    URI (served with --target, stopped afterwards). Compares /invocations answers for the input
    example and a batch with the model's own predictions, expects HTTP 400 for malformed input,
    and load-tests loopback targets against deploy.check.budgets.
    """
    from mlflow_ci.serving.servecheck import serve_check_command

    return serve_check_command(target=target, model=model, deploy_target=deploy_target, policy_path=policy_path,
                               tracking_uri=tracking_uri, report_dir=report_dir, batch_data=batch_data,
                               requests=requests, concurrency=concurrency, record=not no_record,
                               as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("model", required=False)
@target_option
@click.option("--alias", default=None, help="Alias to deploy (default: champion).")
@click.option("--keep/--stop", default=True, show_default=True,
              help="Leave the deployment running (recorded for `undeploy`), or stop it after the check.")  # fmt: skip
@click.option("--no-rollback", is_flag=True, help="On a failed check, leave the alias where it is.")
@policy_option
@tracking_option
@report_dir_option
@json_option
@_handle
def deploy(model: str | None, deploy_target: str | None, alias: str | None, keep: bool, no_rollback: bool,
           policy_path: Path | None, tracking_uri: str | None, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Deploy MODEL@ALIAS, run the post-deploy check; on failure roll back and redeploy the previous version.

    The rollback moves the alias through `mlflow-ci rollback` (audited, the failed checks as the
    reason). Exit 0: the version at the alias serves and passed; 1: it failed (rolled back or not).
    """
    from mlflow_ci.serving.deploy import deploy_command

    return deploy_command(model=model, target=deploy_target, alias=alias, policy_path=policy_path,
                          tracking_uri=tracking_uri, report_dir=report_dir, keep=keep,
                          rollback=False if no_rollback else None, as_json=as_json)  # fmt: skip


@cli.command(epilog=EPILOG)
@click.argument("model", required=False)
@target_option
@policy_option
@json_option
@_handle
def undeploy(model: str | None, deploy_target: str | None, policy_path: Path | None, as_json: bool) -> int:
    """Stop the deployment of MODEL that `mlflow-ci deploy` left running."""
    from mlflow_ci.serving.deploy import undeploy_command

    return undeploy_command(model=model, target=deploy_target, policy_path=policy_path, as_json=as_json)


# ============================================================================================


def _parse_params(items: tuple[str, ...], param_hint: str = "-P/--param") -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=param_hint)
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="mlflow-ci", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
