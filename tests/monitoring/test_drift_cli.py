"""`mlflow-ci drift` as a user runs it: real files, a real tracking server with a logged and
registered model whose training run logged its profile, the exit codes, the JSON, the MLflow run
per check, and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require, run_cli
from driftdata import frame
from mlflow_ci.mlflowio.tracking import TrackingServer, free_port

FEATURES = ["x", "y", "count", "city", "flag"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drift-data")
    frame(6000, seed=1).to_parquet(folder / "reference.parquet")
    frame(3000, seed=2).to_csv(folder / "same.csv", index=False)
    shifted = frame(3000, seed=3, shift=0.5, share_a=0.6)
    for i in range(3):
        shifted.iloc[i * 1000 : (i + 1) * 1000].to_parquet(folder / f"shifted-{i}.parquet")
    return folder


def _json(done: subprocess.CompletedProcess[str]) -> dict:
    """The report's results (its ``data``), with the run and the overall verdict."""
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    return {**report["data"], "verdict": report["verdict"], "run_id": report["run_id"]}


def test_file_reference_no_drift_exits_0_and_names_every_test(files: Path, tmp_path: Path) -> None:
    done = run_cli("drift", str(files / "reference.parquet"), str(files / "same.csv"), "--json",
                   "--report-dir", str(tmp_path / "r"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = _json(done)
    assert out["verdict"] == "pass"
    assert out["dataset"]["verdict"] == "no drift"
    assert [f["name"] for f in out["features"]] == FEATURES
    for feature in out["features"]:
        assert feature["test"] in ("ks", "chi2")
        assert feature["statistic"] is not None
        assert feature["threshold"] == 0.05
        assert feature["verdict"] == "no drift"
    assert out["prediction"]["name"] == "prediction"
    assert out["prediction"]["test"] == "chi2"
    assert (tmp_path / "r" / "drift.html").is_file()


def test_drift_exits_1_and_names_the_drifted_features(files: Path, tmp_path: Path) -> None:
    done = run_cli("drift", str(files / "reference.parquet"), str(files / "shifted-*.parquet"), "--json",
                   "--report-dir", str(tmp_path / "r"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    out = _json(done)
    assert out["dataset"]["verdict"] == "drift"
    assert sorted(out["dataset"]["drifted"]) == ["city", "x"]
    assert out["current"]["rows"] == 3000
    assert len(out["current"]["files"]) == 3
    html = (tmp_path / "r" / "drift.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 2


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["{d}/reference.parquet", "{d}/nothing.csv"], "nothing.csv"),
        (["{d}/reference.parquet", "{d}/none-*.parquet"], "none-*.parquet"),
        (["{d}/reference.parquet", "{t}/broken.parquet"], "broken.parquet"),
        (["{t}/broken.parquet", "{d}/same.csv"], "broken.parquet"),
        (["{t}/profile.json", "{d}/same.csv"], "profile.json"),
    ],
)
def test_bad_input_exits_2_with_one_sentence_naming_the_file(
    files: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "profile.json").write_text('{"format": "something else"}', encoding="utf-8")
    argv = [a.format(d=files, t=tmp_path) for a in args]
    done = run_cli("drift", *argv, "--report-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert named in message
    assert "Traceback" not in done.stderr


def test_unreachable_server_exits_3(files: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli("drift", str(files / "reference.parquet"), str(files / "same.csv"),
                   "--tracking-uri", url, "--report-dir", str(tmp_path / "r"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert url in done.stderr


@pytest.fixture(scope="module")
def registered(tracking_server: TrackingServer) -> dict[str, str]:
    """A model trained and logged for real, with its training profile; registered as version 1.
    A second run logs a model without a profile."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow_ci.mlflowio.tracking import client_settings
    from mlflow_ci.monitoring import log_profile
    from sklearn.linear_model import LogisticRegression

    df = frame(6000, seed=1)
    X = df[["x", "y", "count"]]
    y = (df["x"] + df["y"] > 1.5).astype(int)
    model = LogisticRegression(max_iter=300).fit(X, y)
    out = {}
    with client_settings(tracking_server.url):
        mlflow.set_experiment("drift-tests")
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(X, model.predict(X)),
                registered_model_name="drift-model", pip_requirements=["scikit-learn", "skops"],
            )  # fmt: skip
            log_profile(df[FEATURES], predictions=model.predict(X))
            out["run_id"] = run.info.run_id
            out["model_id"] = info.model_id
        with mlflow.start_run() as bare:
            mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn", "skops"])
            out["bare_run_id"] = bare.info.run_id
    current = df[FEATURES].assign(prediction=model.predict(X))
    out["df"] = current
    return out


def test_model_uri_reference_against_a_real_server(
    registered: dict, tracking_server: TrackingServer, tmp_path: Path
) -> None:
    import mlflow

    same = tmp_path / "same.parquet"
    frame(3000, seed=5)[FEATURES].assign(
        prediction=registered["df"]["prediction"].iloc[:3000].to_numpy()
    ).to_parquet(same)
    shifted = tmp_path / "shifted.parquet"
    drifted = frame(3000, seed=6, shift=0.6)[FEATURES]
    drifted.assign(prediction=1).to_parquet(shifted)
    url = tracking_server.url

    done = run_cli("drift", "models:/drift-model/1", str(same), "--tracking-uri", url, "--json",
                   "--report-dir", str(tmp_path / "a"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = _json(done)
    assert out["reference"]["kind"] == "model"
    assert out["reference"]["run_id"] == registered["run_id"]
    assert out["reference"]["model"]["version"] == "1"
    first_run_id = out["run_id"]

    done = run_cli("drift", f"runs:/{registered['run_id']}/model", str(shifted), "--tracking-uri", url,
                   "--json", "--report-dir", str(tmp_path / "b"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    out = _json(done)
    assert "x" in out["dataset"]["drifted"]
    assert out["prediction"]["verdict"] == "drift"
    run_id = out["run_id"]

    # One run per check in the monitoring experiment, with per-feature metrics.
    client = mlflow.MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "monitoring_mlflow-ci"
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow_ci.monitoring.verdict"] == "drift"
    assert run.data.metrics["x/drifted"] == 1.0
    assert run.data.metrics["x/ks"] > 0.1
    assert run.data.metrics["_dataset/drift_share"] >= 0.2
    artifacts = {a.path for a in client.list_artifacts(run_id, "mlflow-ci")}
    assert {"mlflow-ci/drift.json", "mlflow-ci/drift.html"} <= artifacts
    # This test's two checks are two runs there (the session's server may hold other tests' runs).
    runs = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    assert first_run_id != run_id
    assert {first_run_id, run_id} <= runs


def test_a_model_without_a_profile_exits_2_and_says_what_to_do(
    registered: dict, tracking_server: TrackingServer, files: Path, tmp_path: Path
) -> None:
    done = run_cli("drift", f"runs:/{registered['bare_run_id']}/model", str(files / "same.csv"),
                   "--tracking-uri", tracking_server.url, "--report-dir", str(tmp_path / "r"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "no reference profile 'training'" in done.stderr
    assert "log_profile" in done.stderr


def test_html_report_renders_its_plots_in_chromium(files: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(chromium is not None, "chromium is not installed (apt-get install -y chromium)")
    assert chromium is not None
    report = tmp_path / "r"
    done = run_cli("drift", str(files / "reference.parquet"), str(files / "shifted-*.parquet"), "--json",
                   "--report-dir", str(report), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    out = _json(done)
    drifted = [f["name"] for f in out["features"] if f["verdict"] == "drift"]
    if out["prediction"] and out["prediction"]["verdict"] == "drift":
        drifted.append(out["prediction"]["name"])
    html = (report / "drift.html").read_text(encoding="utf-8")
    assert html.count("<svg") == len(drifted) > 0
    for name in drifted:
        assert f'data-feature="{name}"' in html
    assert "<script" not in html
    shot = tmp_path / "drift.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,2400", (report / "drift.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file()
    assert shot.stat().st_size > 10_000
