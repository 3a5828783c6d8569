"""Helpers for serving tests: a model whose predict raises, registered versions moved to aliases
without gates, and a policy whose serve checks are small."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from conftest import port_open
from mlflow_ci.release.promotion import promote
from mlflow_ci.release.register import register_command
from registryflow import ENV, call

POLICY = """\
project: deploy-test
registry:
  model_name: {model}
  lease_seconds: 60
  promotion:
    challenger: {{require_gates: none}}
    champion: {{require_gates: none, approval: false, require_serve_check: {serve_check}}}
deploy:
  target: local
  state_dir: {state}
  image: {{repository: "{repository}"}}
  docker: {{workers: 1}}
  check:
    startup_timeout: 120
    batch_rows: 40
    load: {{requests: 30, concurrency: 2, max_seconds: 20}}
    # Budgets are not what these tests check; generous ones keep a loaded CI machine green.
    budgets: {{p95_ms: 10000, p99_ms: 20000}}
"""

RAISING_MODEL = '''\
import mlflow
from mlflow.pyfunc import PythonModel


class Raising(PythonModel):
    """Loads fine, serves /ping fine, and fails every prediction."""

    def predict(self, context, model_input, params=None):
        raise RuntimeError("this model cannot predict")


mlflow.models.set_model(Raising())
'''


def write_policy(
    folder: Path, model: str, *, serve_check: bool = False, repository: str = "mlflow-ci-test/{model}"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlflow-ci.yaml"
    text = POLICY.format(
        model=model,
        serve_check=str(serve_check).lower(),
        state=folder / "deployments",
        repository=repository,
    )
    path.write_text(text, encoding="utf-8")
    return path


def log_raising_run(tracking_uri: str, folder: Path) -> str:
    """A pyfunc model (models from code) with signature and input example whose predict raises."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow_ci.mlflowio.tracking import client_settings
    from modelfactory import iris_split

    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "raising_model.py"
    code.write_text(RAISING_MODEL, encoding="utf-8")
    X_train, _, y_train, _ = iris_split()
    with client_settings(tracking_uri):
        mlflow.set_experiment("deploy-tests")
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                signature=infer_signature(X_train, y_train),
                input_example=X_train.head(3),
                pip_requirements=["pandas"],
            )
        return run.info.run_id


def register_and_promote(server: str, policy: Path, run_id: str, *, to: tuple[str, ...] = ()) -> list[int]:
    """Register ``run_id`` (→ candidate) and promote it along ``to``; the exit codes."""
    codes = [call(register_command, run_id=run_id, policy_path=policy, tracking_uri=server, env=ENV)]
    for alias in to:
        codes.append(
            call(
                promote,
                model=None,
                to=alias,
                policy_path=policy,
                tracking_uri=server,
                report_dir=policy.parent / "reports",
                env=ENV,
            )
        )
    return codes


def port_answers(url: str) -> bool:
    """Whether anything still listens where ``url`` points."""
    parts = urlsplit(url)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 80)
