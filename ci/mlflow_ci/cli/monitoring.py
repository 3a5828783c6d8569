"""The monitoring commands: ``drift``."""

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
@click.argument("reference")
@click.argument("current", nargs=-1, required=True)
@policy_option
@tracking_option
@report_dir_option
@json_option
@_handle
def drift(reference: str, current: tuple[str, ...], policy_path: Path | None, tracking_uri: str | None,
          report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    """Compare CURRENT data with REFERENCE: exit 1 when the data set (or the prediction) drifted.

    REFERENCE: a model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/MODEL) or
    runs:/RUN_ID, whose training run logged a profile (mlflow_ci.monitoring.log_profile); a
    profile .json; or CSV/Parquet data. CURRENT: CSV/Parquet files, folders or globs, read in
    chunks. With a tracking server the result is logged as a run of the monitoring experiment.
    """
    from mlflow_ci.monitoring.command import drift_command

    return drift_command(reference=reference, current=current, policy_path=policy_path,
                         tracking_uri=tracking_uri, report_dir=report_dir, as_json=as_json)  # fmt: skip
