"""Tracking-server commands: ``server up|down|config|doctor|upgrade``, ``backup``, ``restore`` and
``retention``. Every command parses flags and calls one function of its own module."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_ci.cli.app import (
    EPILOG,
    _handle,
    cli,
    json_option,
    policy_option,
    tracking_option,
    writable_report_dir,
)
from mlflow_ci.core import output
from mlflow_ci.core.output import emit_json

# Where the server keeps its data; the flags default to the policy's server: profile.
backend_option = click.option("--backend-store-uri", default=None,
                              help="Tracking database (default: server.backend_store_uri).")  # fmt: skip
artifacts_option = click.option("--artifacts-destination", "artifacts_uri", default=None,
                                help="Artifact root: path, s3://, wasbs:// (default: server.artifacts_destination).")  # fmt: skip
auth_db_option = click.option("--auth-db-uri", default=None,
                              help="basic-auth users database (default: server.auth_db_uri).")  # fmt: skip


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
# Named --url first (as before) and --tracking-uri as every other command names the server; no
# $MLFLOW_TRACKING_URI default: without a URL the doctor checks the plan only.
@click.option("--url", "--tracking-uri", "tracking_uri", default=None,
              help="A running server to probe directly (e.g. http://127.0.0.1:5000); omit to check the plan only.")  # fmt: skip
@backend_option
@artifacts_option
@click.option("--model-size-mb", type=float, default=None, help="Largest model you expect to upload (MiB).")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=writable_report_dir,
)
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
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=writable_report_dir,
)
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
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=writable_report_dir,
)
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
