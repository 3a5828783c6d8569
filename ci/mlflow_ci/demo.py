"""``mlflow-ci demo``: the main job end to end on the embedded default (SQLite + local artifacts).

Starts a tracking server in ``.mlflow-ci/demo``, smoke-checks the example project against it and
prints the report and where it is written.  Later stages (gate, register, promote, serve) are
added to :data:`STAGES` as they land.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from . import output, tracking
from .conventions import finish
from .errors import ConfigError
from .smoke import load_project_policy, run_smoke


def demo(*, project: Path, workdir: Path, env_manager: str | None, keep: bool) -> int:
    project = Path(project).resolve()
    if not (project / "MLproject").is_file():
        raise ConfigError(
            f"{project} is not an MLflow Project (no MLproject file); pass the example project path."
        )
    workdir = Path(workdir).resolve()
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    reports = workdir / "reports"
    loaded = load_project_policy(project, None, {"smoke.env_manager": env_manager})
    with output.step("start the tracking server (SQLite + local artifacts)"):
        server = tracking.TrackingServer(workdir / "server").start()
    try:
        output.info(f"tracking server: {server.url} (log {server.log_path})")
        report = run_smoke(
            project=project,
            policy=loaded.policy,
            tracking_uri=server.url,
            params={},
            scratch=workdir / "scratch",
        )
        code = finish(report, report_dir=reports, as_json=False)
    finally:
        server.stop()
    click.echo(
        f"\nDemo {'passed' if code == 0 else 'FAILED'}. Reports: {reports} "
        f"(smoke.md, smoke.json, smoke.html); server data: {workdir / 'server'}"
    )
    return code
