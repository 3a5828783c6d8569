"""The prediction worker (mlflow_ci.checks._predict_worker) for real: a real interpreter with MLflow, real
saved models, the line protocol, and the record of what to start ahead next time.

Here the worker runs in this test environment's own Python (an "activate" command that puts it
first on PATH), so no model environment has to be built; the full path through a model's uv
environment, started ahead or not, is tests/checks/test_smoke.py::test_uv_smoke_starts_the_prediction_ahead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow_ci.checks import modelenv
from mlflow_ci.mlflowio import tracking

ACTIVATE = [f"export PATH={Path(sys.executable).parent}:$PATH"]


# A model from code (no pickle that would import this test module inside the worker).
EXPLODING = """import mlflow


class Exploding(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise ValueError("feature churn_30d has the wrong dtype")


mlflow.models.set_model(Exploding())
"""


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("models")
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    path = folder / "sk"
    mlflow.sklearn.save_model(model, path, input_example=x.head(3))
    return path, path / "serving_input_example.json"


def _serve_one(worker: modelenv.Worker, model: Path, example: Path, out: Path) -> dict:
    deadline = time.monotonic() + 120
    assert worker.reply(deadline) == {"ready": True}, "".join(worker.output)
    assert worker.child.stdin is not None
    request = {"model_uri": model.as_uri(), "input_path": str(example), "output_path": str(out),
               "content_type": "json"}  # fmt: skip
    worker.child.stdin.write(json.dumps(request) + "\n")
    worker.child.stdin.flush()
    answer = worker.reply(deadline)
    assert answer is not None, "".join(worker.output)
    return answer


def test_worker_predicts_and_reports_what_it_imported(sklearn_model, tmp_path: Path) -> None:
    model, example = sklearn_model
    out = tmp_path / "predictions.json"
    worker = modelenv.Worker.start(ACTIVATE, [], tracking.client_env("http://127.0.0.1:1"))
    try:
        answer = _serve_one(worker, model, example, out)
    finally:
        worker.close()
    assert answer["ok"] is True
    assert len(json.loads(out.read_text())["predictions"]) == 3
    # What the next worker for this project imports ahead: the flavor's own modules.
    assert "sklearn.linear_model" in answer["imported"]
    assert worker.child.poll() is not None


def test_worker_reports_the_models_own_failure(tmp_path: Path) -> None:
    code = tmp_path / "exploding.py"
    code.write_text(EXPLODING)
    model = tmp_path / "exploding"
    mlflow.pyfunc.save_model(model, python_model=str(code))  # an input example would be predicted on save
    example = tmp_path / "example.json"
    example.write_text(json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}))
    worker = modelenv.Worker.start(ACTIVATE, [], tracking.client_env("http://127.0.0.1:1"))
    try:
        answer = _serve_one(worker, model, example, tmp_path / "out.json")
    finally:
        worker.close()
    assert answer["ok"] is False
    assert "wrong dtype" in answer["error"]
    assert "Traceback" in answer["traceback"]


def test_worker_preloads_the_recorded_modules(sklearn_model, tmp_path: Path) -> None:
    model, example = sklearn_model
    worker = modelenv.Worker.start(ACTIVATE, ["sklearn.linear_model", "no_such_module_xyz"],
                                   tracking.client_env("http://127.0.0.1:1"))  # fmt: skip
    try:
        answer = _serve_one(worker, model, example, tmp_path / "p.json")
    finally:
        worker.close()
    # A module that no longer imports is skipped, not fatal; what was preloaded is still reported.
    assert answer["ok"] is True
    assert "sklearn.linear_model" in answer["imported"]
    assert "no_such_module_xyz" not in answer["imported"]


def test_a_worker_that_cannot_start_is_seen_as_gone(tmp_path: Path) -> None:
    worker = modelenv.Worker.start(["source /nonexistent/bin/activate"], [], tracking.client_env("http://x"))
    try:
        assert worker.reply(time.monotonic() + 60) is None
    finally:
        worker.close()
    assert "nonexistent" in "".join(worker.output)


def test_started_ahead_uses_the_record_and_skips_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ENV_ROOT", str(tmp_path))
    env = tracking.client_env("http://127.0.0.1:1")
    with modelenv.started_ahead("k1", "uv", env) as worker:
        assert worker is None  # nothing recorded yet
    modelenv._remember(tmp_path, "k1", ACTIVATE, ["json"])
    record = json.loads((tmp_path / modelenv.RECORD).read_text())
    assert record["k1"]["activate"] == ACTIVATE
    with modelenv.started_ahead("k1", "uv", env) as worker:
        assert worker is not None
        assert worker.activate == ACTIVATE
        assert worker.reply(time.monotonic() + 120) == {"ready": True}
    assert worker.child.poll() is not None  # always stopped
    with modelenv.started_ahead("k1", "local", env) as worker:
        assert worker is None  # local predicts in this process


def test_env_root_matches_mlflows_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.environment_variables import MLFLOW_ENV_ROOT

    monkeypatch.delenv("MLFLOW_ENV_ROOT", raising=False)
    assert modelenv.env_root() == Path(MLFLOW_ENV_ROOT.get())
    monkeypatch.setenv("MLFLOW_ENV_ROOT", "/tmp/elsewhere")
    assert modelenv.env_root() == Path(MLFLOW_ENV_ROOT.get())
