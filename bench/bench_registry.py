"""Gate + register + promote against models with 10, 100 and 1000 registered versions.

Nothing in mlflow-ci lists all versions of a model (idempotent registration is a filtered query,
aliases come from the registered model, the audit head is one ordered query), so the time should
stay flat.  The versions are generated in-process through MLflow's SQLAlchemy registry store on a
SQLite database, then a real ``mlflow server`` is started on it.  Prints the median time of the
three steps for each size and the ratios 100/10 and 1000/10 (about 1.0 means flat).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SIZES = (10, 100, 1000)
REPEATS = 3
MODEL = "bench-model"
POLICY = f"""\
project: bench
registry: {{model_name: {MODEL}}}
gates:
  metrics:
    - {{name: accuracy, threshold: 0.5, max_regression: 0.5}}
"""


def seed_versions(db_uri: str, n: int) -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(db_uri)
    store.create_registered_model(MODEL)
    for _ in range(n):
        store.create_model_version(MODEL, source="mlflow-artifacts:/seeded/model", run_id=uuid.uuid4().hex)
    store.engine.dispose()


def log_candidate(url: str) -> str:
    import mlflow
    from mlflow.models import infer_signature
    from mlflow_ci.mlflowio.tracking import client_settings
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(X, y)
    with client_settings(url):
        mlflow.set_experiment("bench")
        with mlflow.start_run() as run:
            mlflow.log_metric("accuracy", float(model.score(X, y)))
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(X, model.predict(X)),
                input_example=X.head(2),
                pip_requirements=["scikit-learn"],
            )
    return run.info.run_id


def one_size(n: int, root: Path) -> list[float]:
    from mlflow_ci.core import output
    from mlflow_ci.mlflowio.tracking import TrackingServer
    from mlflow_ci.release.gates import gate_command
    from mlflow_ci.release.promotion import promote
    from mlflow_ci.release.register import register_command

    work = root / f"n{n}"
    work.mkdir()
    db = f"sqlite:///{work / 'mlflow.db'}"
    # Let the server create the schema, then seed the versions while it is down.
    with TrackingServer(work):
        pass
    seed_versions(db, n)
    policy = work / "mlflow-ci.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"MLFLOW_CI_ACTOR": "bench"}
    times = []
    with TrackingServer(work) as server:
        url = server.url
        for _ in range(REPEATS):
            run_id = log_candidate(url)
            t0 = time.perf_counter()
            assert (
                gate_command(run_id=run_id, policy_path=policy, tracking_uri=url, report_dir=work / "r") == 0
            )
            assert register_command(run_id=run_id, policy_path=policy, tracking_uri=url, env=env) == 0
            assert (
                promote(
                    model=MODEL,
                    to="challenger",
                    policy_path=policy,
                    tracking_uri=url,
                    report_dir=work / "r",
                    env=env,
                )
                == 0
            )
            assert (
                promote(
                    model=MODEL,
                    to="champion",
                    approved_by="bench",
                    policy_path=policy,
                    tracking_uri=url,
                    report_dir=work / "r",
                    env=env,
                )
                == 0
            )
            times.append(time.perf_counter() - t0)
    del output
    return times


def main() -> None:
    import contextlib
    import io

    results: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-bench-") as tmp:
        for n in SIZES:
            sink = io.StringIO()
            with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
                times = one_size(n, Path(tmp))
            results[n] = statistics.median(times)
            print(
                f"bench_registry: {n:>5} versions: gate+register+promote(challenger, champion) "
                f"median {results[n]:.2f}s of {REPEATS} ({', '.join(f'{t:.2f}' for t in times)})",
                flush=True,
            )
    base = results[SIZES[0]]
    for n in SIZES[1:]:
        print(f"bench_registry: ratio {n}/{SIZES[0]} = {results[n] / base:.2f} (1.00 = flat)")


if __name__ == "__main__":
    main()
