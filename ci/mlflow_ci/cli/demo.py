"""``mlflow-ci demo``: the main job end to end on the embedded default (SQLite + local artifacts).

Starts a tracking server in ``.mlflow-ci/demo`` and runs what CI runs: the PR smoke check of the
example project, then the release (train with full parameters, gate against the champion,
register, promote to challenger, serve-check the challenger, promote it, approved, to champion),
the deployment of the champion with the embedded default target (``local``: ``mlflow models
serve``, no container engine) and its post-deploy check, stopped afterwards, and a verification
of the audit trail.  Reports land in ``.mlflow-ci/demo/reports``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from mlflow_ci.cli.app import EPILOG, _handle, cli
from mlflow_ci.core import output
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.core.output import finish

DEMO_ACTOR = {"MLFLOW_CI_ACTOR": "mlflow-ci-demo"}


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
    return run_demo(project=project, workdir=workdir, env_manager=env_manager, keep=keep)


# The capability packages are imported inside the functions below, not at module level, so that
# `mlflow-ci --help` and every other command do not import them.


def run_demo(*, project: Path, workdir: Path, env_manager: str | None, keep: bool) -> int:
    from mlflow_ci.checks.smoke import load_project_policy, run_smoke
    from mlflow_ci.mlflowio import tracking

    project = Path(project).resolve()
    if not (project / "MLproject").is_file():
        raise ConfigError(
            f"{project} is not an MLflow Project (no MLproject file); pass the example project path."
        )
    workdir = Path(workdir).resolve()
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    reports = workdir / "reports"
    policy_path = project / "mlflow-ci.yaml"
    loaded = load_project_policy(project, None, {"smoke.env_manager": env_manager})
    with output.step("start the tracking server (SQLite + local artifacts)"):
        server = tracking.TrackingServer(workdir / "server").start()
    steps: list[tuple[str, int]] = []
    try:
        url = server.url
        output.info(f"tracking server: {url} (log {server.log_path})")
        report = run_smoke(project=project, policy=loaded.policy, tracking_uri=url, params={},
                           scratch=workdir / "scratch")  # fmt: skip
        steps.append(("PR check: smoke", finish(report, report_dir=reports, as_json=False)))
        if steps[-1][1] == 0:
            steps += release(project=project, policy_path=policy_path, tracking_uri=url, reports=reports,
                             env_manager=env_manager)  # fmt: skip
    finally:
        server.stop()
    failed = [name for name, code in steps if code != 0]
    lines = [f"  {'ok ' if code == 0 else 'FAIL'} {name}" for name, code in steps]
    click.echo("\n".join(["", "Demo summary:", *lines]))
    table = [f"| {name} | {'✅ ok' if code == 0 else f'❌ exit {code}'} |" for name, code in steps]
    output.write_step_summary("\n".join([
        f"## mlflow-ci demo: {'FAILED at ' + failed[0] if failed else 'passed'}", "", "| step | result |",
        "|---|---|", *table,
    ]))  # fmt: skip
    click.echo(f"\nDemo {'FAILED at ' + failed[0] if failed else 'passed'}. Reports: {reports} "
               f"(smoke, gate, promote, serve-check, deploy: .md/.json/.html); server data: "
               f"{workdir / 'server'}")  # fmt: skip
    return next((code for _, code in steps if code != 0), 0)


def release(*, project: Path, policy_path: Path, tracking_uri: str, reports: Path,
            env_manager: str | None) -> list[tuple[str, int]]:  # fmt: skip
    """What a merge to main runs: train, gate, register, promote, verify the audit trail."""
    from mlflow_ci.checks.smoke import load_project_policy
    from mlflow_ci.checks.train import train_run
    from mlflow_ci.release.audit import audit_command
    from mlflow_ci.release.gates import gate_command
    from mlflow_ci.release.promotion import promote
    from mlflow_ci.release.register import register_command
    from mlflow_ci.serving.deploy import deploy_command
    from mlflow_ci.serving.servecheck import serve_check_command

    policy = load_project_policy(project, policy_path, {}).policy
    ran = train_run(project=project, policy=policy, tracking_uri=tracking_uri, env_manager=env_manager)
    run_id = str(ran.run_id)
    steps = [(f"release: train (run {run_id})", 0)]
    common = {"policy_path": policy_path, "tracking_uri": tracking_uri}
    code = gate_command(run_id=run_id, report_dir=reports, **common)
    steps.append(("release: gate against the champion", code))
    if code != 0:
        return steps
    steps.append(
        ("release: register", register_command(run_id=run_id, project_dir=project, env=DEMO_ACTOR, **common))
    )
    for alias, approver in (("challenger", None), ("champion", "demo-approver")):
        if alias == "champion":
            # The challenger must answer like itself when served before it may become champion.
            model = policy.registry.model_name or policy.project
            code = serve_check_command(target=f"models:/{model}@challenger", deploy_target="local",
                                       report_dir=reports, env=DEMO_ACTOR, **common)  # fmt: skip
            steps.append(("release: serve-check the challenger (mlflow models serve)", code))
            if code != 0:
                return steps
        code = promote(model=None, to=alias, approved_by=approver, reason="demo release", report_dir=reports,
                       env=DEMO_ACTOR, **common)  # fmt: skip
        steps.append((f"release: promote to {alias}", code))
        if code != 0:
            return steps
    # Serve, check, report, stop: the demo leaves nothing running.
    code = deploy_command(
        model=None, target="local", keep=False, report_dir=reports, env=DEMO_ACTOR, **common
    )
    steps.append(("deploy: the champion serves locally, post-deploy check, stopped", code))
    if code != 0:
        return steps
    steps.append(
        (
            "release: audit trail verifies",
            audit_command(model=None, verify_chain=True, env=DEMO_ACTOR, **common),
        )
    )
    return steps
