"""The release commands: ``gate``, ``register``, ``promote``, ``rollback`` and ``audit``."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_ci.cli.app import (
    EPILOG,
    _handle,
    cli,
    json_option,
    policy_option,
    report_dir_option,
    tracking_option,
)


@cli.command(epilog=EPILOG)
@click.argument("run_id")
@policy_option
@tracking_option
@click.option("--model", "model", default=None, help="Registered model name (default: registry.model_name).")
@click.option("--eval-data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
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
