"""`mlflow-ci smoke` and `mlflow-ci conventions` against real tracking servers.

The example project is smoke-tested for real (local env here, uv in the slow tier); generated
tiny projects drive the failure modes: a failing entry point, a NaN metric, a missing tag, a
server that dies mid-run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import EXAMPLE, make_project, run_cli
from mlflow_ci.mlflowio import lineage
from mlflow_ci.mlflowio.tracking import TrackingServer, check_health


def smoke_json(project: Path, tracking_uri: str, *extra: str, env: dict[str, str] | None = None):
    result = run_cli(
        "smoke",
        str(project),
        "--tracking-uri",
        tracking_uri,
        "--json",
        "--report-dir",
        str(project / "out"),
        *extra,
        env=env,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = None
    return result, report


def verdicts(report: dict) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in report["checks"]}


@pytest.fixture(scope="module")
def example_smoke(tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory):
    """One local smoke run of a copy of the example project, shared by the tests that read it."""
    project = tmp_path_factory.mktemp("example") / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    result, report = smoke_json(project, tracking_server.url, "--env-manager", "local")
    return project, result, report


def test_example_project_passes_with_local_env(example_smoke, tracking_server: TrackingServer) -> None:
    project, result, report = example_smoke
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["verdict"] == "pass"
    names = set(verdicts(report))
    for expected in (
        "entry point",
        "run status",
        "experiment name",
        "run name",
        "tag owner",
        "dataset input",
        "model logged",
        "model signature",
        "model input example",
        "model loads and predicts",
    ):
        assert expected in names
    assert all(v == "pass" for v in verdicts(report).values()), verdicts(report)
    run = mlflow.MlflowClient(tracking_server.url).get_run(report["run_id"])
    assert run.data.tags["mlflow_ci.git_commit"] == lineage.head_commit(
        project
    )  # "unknown": not a git checkout
    assert run.data.tags["mlflow_ci.lock_hash"] == lineage.lock_hash(project)
    assert lineage.parse_lock_hash(run.data.tags["mlflow_ci.lock_hash"]).files == (
        "python_env.yaml",
        "requirements.lock",
    )
    assert run.data.tags["mlflow_ci.mlflow_version"] == mlflow.__version__
    for fmt in ("json", "md", "html"):
        assert (project / "out" / f"smoke.{fmt}").is_file()
    markdown = (project / "out" / "smoke.md").read_text()
    assert "| check | expected | found | verdict |" in markdown
    assert report["run_id"] in markdown


def test_conventions_on_existing_runs(example_smoke, tracking_server: TrackingServer, tmp_path: Path) -> None:
    project, _, report = example_smoke
    experiment = report["data"]["experiment"]
    ok = run_cli(
        "conventions",
        experiment,
        "--policy",
        str(project / "mlflow-ci.yaml"),
        "--json",
        "--tracking-uri",
        tracking_server.url,
        "--report-dir",
        str(tmp_path),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    client = mlflow.MlflowClient(tracking_server.url)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    bad = client.create_run(exp_id, run_name="quick-try", tags={"owner": "me"})
    client.set_terminated(bad.info.run_id)
    result = run_cli(
        "conventions",
        bad.info.run_id,
        "--policy",
        str(project / "mlflow-ci.yaml"),
        "--json",
        "--tracking-uri",
        tracking_server.url,
        "--report-dir",
        str(tmp_path),
    )
    assert result.returncode == 1
    failed = {c["name"]: c for c in json.loads(result.stdout)["checks"] if c["verdict"] == "fail"}
    assert "quick-try: run name" in failed
    assert failed["quick-try: run name"]["expected"] == "matches run_{objective}_{seed}"
    assert {"quick-try: tag dataset", "quick-try: tag env", "quick-try: tag purpose"} <= set(failed)
    assert "quick-try: tag owner" not in failed


def test_missing_owner_tag_fails_and_is_named(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    config = project / "experiments" / "run_config.yaml"
    data = yaml.safe_load(config.read_text())
    del data["tags"]["owner"]
    config.write_text(yaml.safe_dump(data))
    result, report = smoke_json(project, tracking_server.url, "--env-manager", "local")
    assert result.returncode == 1, result.stderr
    assert verdicts(report)["tag owner"] == "fail"
    assert report["failures"] == ["tag owner"]
    assert "tag owner" in (project / "out" / "smoke.md").read_text()


def test_failing_entry_point_exits_1_with_output_tail(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "p", "raise RuntimeError('feature column churn_30d is missing')\n")
    result, report = smoke_json(project, tracking_server.url)
    assert result.returncode == 1
    assert verdicts(report)["entry point"] == "fail"
    assert "feature column churn_30d is missing" in report["output_tail"]
    assert report["run_id"]
    assert report["run_url"].startswith(tracking_server.url)
    markdown = (project / "out" / "smoke.md").read_text()
    assert "feature column churn_30d is missing" in markdown


def test_nan_metric_fails(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "mlflow.log_metric('loss', 0.5, step=0)\nmlflow.log_metric('loss', float('nan'), step=1)\n",
        policy="  required_metrics: [loss]\n",
    )
    result, report = smoke_json(project, tracking_server.url)
    assert result.returncode == 1
    assert verdicts(report)["metric loss"] == "fail"
    assert "nan" in next(c["found"] for c in report["checks"] if c["name"] == "metric loss").lower()


def test_infinite_metric_not_required_still_fails(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "mlflow.log_metric('grad_norm', float('inf'))\n")
    result, report = smoke_json(project, tracking_server.url)
    assert result.returncode == 1
    assert verdicts(report)["all metrics finite"] == "fail"


def test_server_dying_mid_run_exits_3_and_leaves_no_process(tmp_path: Path) -> None:
    body = (
        "import signal, time\n"
        "os.killpg(int(os.environ['KILL_PGID']), signal.SIGKILL)\n"
        "time.sleep(1)\n"
        "mlflow.log_metric('after', 1.0)\n"
    )
    project = make_project(tmp_path / "p", body)
    server = TrackingServer(tmp_path / "srv").start()
    try:
        result, _ = smoke_json(
            project, server.url, env={"KILL_PGID": str(server.pid), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
        )
    finally:
        server.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "stopped answering" in result.stderr
    # The entry point's own traceback is streamed; mlflow-ci's last word is one sentence, not a crash.
    assert "internal error" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: The tracking server at")
    assert not check_health(server.url)


def _copy_example(tmp_path: Path) -> Path:
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    return project


def _predict_found(report: dict) -> str:
    return next(c["found"] for c in report["checks"] if c["name"] == "model loads and predicts")


@pytest.mark.slow
def test_example_project_passes_with_virtualenv(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = _copy_example(tmp_path)
    result, report = smoke_json(project, tracking_server.url, "--env-manager", "virtualenv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["data"]["env_manager"] == "virtualenv"
    assert verdicts(report)["model loads and predicts"] == "pass"
    run = mlflow.MlflowClient(tracking_server.url).get_run(report["run_id"])
    assert run.data.tags["mlflow_ci.env_manager"] == "virtualenv"


@pytest.mark.slow
def test_uv_smoke_starts_the_prediction_ahead(tracking_server: TrackingServer, tmp_path: Path) -> None:
    """With uv, the model predicts in its own environment; from the second run of the same project
    on, that interpreter was started while the entry point ran, and a worker started in any other
    environment is never used."""
    from mlflow_ci.checks import modelenv

    project = _copy_example(tmp_path)
    first, report = smoke_json(project, tracking_server.url, "--env-manager", "uv")
    assert first.returncode == 0, first.stderr[-3000:]
    assert report["data"]["env_manager"] == "uv"
    run = mlflow.MlflowClient(tracking_server.url).get_run(report["run_id"])
    assert run.data.tags["mlflow_ci.env_manager"] == "uv"

    second, report = smoke_json(project, tracking_server.url, "--env-manager", "uv")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(uv, started ahead)" in _predict_found(report)

    # Point the record at a working interpreter in the wrong environment (this test's own).
    record_path = modelenv.env_root() / modelenv.RECORD
    key = modelenv.record_key("example", lineage.lock_hash(project), "uv")
    records = json.loads(record_path.read_text())
    wrong = [f"export PATH={Path(sys.executable).parent}:$PATH"]
    records[key]["activate"] = wrong
    record_path.write_text(json.dumps(records))
    third, report = smoke_json(project, tracking_server.url, "--env-manager", "uv")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "(uv, started)" in _predict_found(report)
    assert json.loads(record_path.read_text())[key]["activate"] != wrong  # the right one is remembered again
