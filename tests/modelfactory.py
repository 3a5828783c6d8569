"""Runs with real sklearn models of chosen quality, logged to a real tracking server in-process.

``quality``: ``good`` (logistic regression, accuracy 0.98 on the held-out split), ``fair``
(0.87), ``weak`` (heavily regularised, 0.73), ``poor`` (a majority-class dummy, 0.33).
Metrics are measured on a held-out split, so they are real.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

QUALITIES = ("good", "fair", "weak", "poor")


def iris_split() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    return train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)


def make_estimator(quality: str) -> Any:
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    if quality == "good":
        return LogisticRegression(max_iter=300)
    if quality == "fair":
        return LogisticRegression(C=0.01, max_iter=300)
    if quality == "weak":
        return LogisticRegression(C=0.001, max_iter=300)
    if quality == "poor":
        return DummyClassifier(strategy="most_frequent")
    raise ValueError(quality)


def log_run(
    tracking_uri: str,
    *,
    quality: str = "good",
    experiment: str = "gates-tests",
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    signature: bool = True,
    input_example: bool = True,
) -> str:
    """Train, evaluate and log one run with a model named ``model``; return the run id."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow_ci.mlflowio.tracking import client_settings
    from sklearn.metrics import accuracy_score, f1_score

    X_train, X_test, y_train, y_test = iris_split()
    est = make_estimator(quality).fit(X_train, y_train)
    pred = est.predict(X_test)
    measured = {
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1_macro": float(f1_score(y_test, pred, average="macro")),
    }
    if metrics is not None:
        measured.update(metrics)
    with client_settings(tracking_uri):
        mlflow.set_experiment(experiment)
        with mlflow.start_run(
            tags={"dataset": "iris", "env": "ci", "purpose": "test", "owner": "gates", **(tags or {})}
        ) as run:
            mlflow.log_input(
                mlflow.data.from_pandas(X_train.assign(target=y_train), name="iris-train"), context="training"
            )
            for k, v in measured.items():
                if v is not None:
                    mlflow.log_metric(k, v)
            mlflow.sklearn.log_model(
                est,
                name="model",
                signature=infer_signature(X_train, pred) if signature else None,
                input_example=X_train.head(3) if input_example else None,
                pip_requirements=["scikit-learn", "skops"],
            )
        return run.info.run_id


def write_eval_set(path: Path) -> Path:
    _, X_test, _, y_test = iris_split()
    X_test.assign(target=y_test).to_csv(path, index=False)
    return path
