"""The serving commands: ``build-image``, ``serve-check``, ``deploy`` and ``undeploy``."""

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
@tracking_option
@json_option
@_handle
def undeploy(model: str | None, deploy_target: str | None, policy_path: Path | None, tracking_uri: str | None,
             as_json: bool) -> int:  # fmt: skip
    """Stop the deployment of MODEL that `mlflow-ci deploy` left running.

    Deployments are recorded per tracking server: without --tracking-uri (or $MLFLOW_TRACKING_URI)
    the model's only recorded deployment is stopped.
    """
    from mlflow_ci.serving.deploy import undeploy_command

    return undeploy_command(model=model, target=deploy_target, policy_path=policy_path,
                            tracking_uri=tracking_uri, as_json=as_json)  # fmt: skip
