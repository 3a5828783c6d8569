"""Entry point ``main``: train the wine classifier and log the run to MLflow.

Run through ``mlflow run`` (which creates the run and passes its id in ``MLFLOW_RUN_ID``) or
directly with ``python -m src.train`` from the project directory (which creates a run in the
experiment named by ``MLFLOW_EXPERIMENT_NAME``). Either way the run gets the team's name
``run_<objective>_<seed>``, the required tags, all parameters, held-out metrics, the training
and evaluation datasets, the model (signature + input example), ``reports/metrics.json`` and,
where mlflow-ci is installed, the training data's profile for drift monitoring.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

try:  # mlflow-ci's profile helper, where the training environment has mlflow-ci installed
    from mlflow_ci.monitoring import log_profile
except ImportError:  # a lean environment (this project's locked one): no reference profile
    log_profile = None

from .config import PROJECT_DIR, RunConfig, load_run_config
from .data import TARGET, features_and_target, load_dataset, resolve_data_path, split, stratified_sample
from .model import OBJECTIVES, build_model, evaluate

MODEL_NAME = "model"
# skops refuses to load types outside its allow-list; a forest's trees are one. The file is
# written by this run, and MLflow stores the list in the MLmodel so every loader reuses it.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
METRICS_ARTIFACT = "reports/metrics.json"
REQUIREMENTS_IN = PROJECT_DIR / "requirements.in"
REQUIREMENTS_LOCK = PROJECT_DIR / "requirements.lock"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 0/1 or true/false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _depth(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or positive, got {number}")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.train", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--objective", default="classify", choices=OBJECTIVES)
    parser.add_argument("--smoke", type=_flag, default=False, help="1: train on a small stratified sample")
    parser.add_argument("--n-estimators", type=_positive_int, default=100)
    parser.add_argument("--max-depth", type=_depth, default=5, help="0 means no limit")
    parser.add_argument("--data-path", default="data/wine.csv", help="CSV; relative to the working directory")
    parser.add_argument("--env", default="dev", help="where the run happens: dev, ci, prod, ...")
    return parser.parse_args(argv)


def run_name(objective: str, seed: int) -> str:
    """The team convention (mlflow-ci.yaml naming.run): ``run_<objective>_<seed>``."""
    return f"run_{objective}_{seed}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def model_requirements(workdir: Path) -> list[str]:
    """The model's pip requirements: the direct dependencies pinned as in ``requirements.lock``,
    plus every locked version as a constraint, so a serving environment matches the training one.

    The hashed lock itself cannot be passed: MLflow 3.17 recognises a hashed ``mlflow-skinny`` line
    only as "not mlflow", prepends an unhashed ``mlflow==`` pin, and pip then refuses the mix.
    """
    pins: dict[str, str] = {}
    for line in REQUIREMENTS_LOCK.read_text(encoding="utf-8").splitlines():
        if m := _PIN_RE.match(line):
            pins[_normalize(m.group(1))] = m.group(2)
    direct: list[str] = []
    for line in REQUIREMENTS_IN.read_text(encoding="utf-8").splitlines():
        if m := _NAME_RE.match(line.split("#", 1)[0]):
            name = _normalize(m.group(1))
            if name not in pins:
                raise RuntimeError(f"{name} is in requirements.in but not in the lock; regenerate it.")
            direct.append(f"{name}=={pins[name]}")
    constraints = workdir / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), encoding="utf-8")
    return [*direct, f"-c {constraints}"]


def _log_params(run_id: str, params: dict[str, Any]) -> None:
    # `mlflow run` has already logged the entry point's parameters (values as it received them);
    # params are immutable, so logging a normalised value under the same key would fail the run.
    existing = MlflowClient().get_run(run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


@contextlib.contextmanager
def _known_mlflow_warnings_silenced() -> Iterator[None]:
    """Silence two MLflow warnings that do not apply here, and nothing else."""
    with warnings.catch_warnings():
        # MLflow registers its local-file dataset source for both the "" and "file" schemes and
        # then warns that a file URI matches two sources; both are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # The integer columns are the class label (dataset target, model output), never missing;
        # the hint about integers and missing values concerns inputs, which are all float here.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        yield


def train(args: argparse.Namespace, config: RunConfig) -> str:
    """Train, evaluate and log one run; returns the run id."""
    data_file = resolve_data_path(args.data_path)
    dataset_name = data_file.stem
    tags = {**config.tags, "dataset": dataset_name, "env": args.env.strip()}
    tags = {k: v for k, v in tags.items() if v}

    with mlflow.start_run(run_name=run_name(args.objective, args.seed), tags=tags) as run:
        full = load_dataset(data_file)
        used = stratified_sample(full, config.smoke_rows, args.seed) if args.smoke else full
        train_df, test_df = split(used, config.test_size, args.seed)
        x_train, y_train = features_and_target(train_df)
        x_test, y_test = features_and_target(test_df)

        _log_params(
            run.info.run_id,
            {
                "seed": args.seed,
                "objective": args.objective,
                "smoke": int(args.smoke),
                "n_estimators": args.n_estimators,
                "max_depth": args.max_depth,
                "data_path": args.data_path,
                "env": args.env,
                "test_size": config.test_size,
                "smoke_rows": config.smoke_rows,
                "n_rows": len(full),
                "n_rows_used": len(used),
                "n_train": len(train_df),
                "n_test": len(test_df),
                "n_features": x_train.shape[1],
                "n_classes": int(y_train.nunique()),
                "model_class": "RandomForestClassifier",
            },
        )
        with _known_mlflow_warnings_silenced():
            source = data_file.as_uri()
            train_ds = from_pandas(train_df, source=source, name=dataset_name, targets=TARGET)
            test_ds = from_pandas(test_df, source=source, name=dataset_name, targets=TARGET)
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(test_ds, context="evaluation")

        model = build_model(args.n_estimators, args.max_depth or None, args.seed)
        model.fit(x_train, y_train)
        metrics = evaluate(model, x_test, y_test)

        with _known_mlflow_warnings_silenced():
            signature = infer_signature(x_train, model.predict(x_train))
        with tempfile.TemporaryDirectory() as tmp:
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_NAME,
                signature=signature,
                input_example=x_train.head(5),
                pip_requirements=model_requirements(Path(tmp)),
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
            )
        if log_profile is not None:
            # The reference `mlflow-ci drift models:/<model>@champion new.parquet` compares with.
            log_profile(x_train, predictions=model.predict(x_train), name="training")
        else:
            print("mlflow-ci is not installed in this environment: no reference profile logged.")
        # Linked to the logged model and the evaluation set, so they show on both in the UI.
        mlflow.log_metrics(metrics, model_id=info.model_id, dataset=test_ds)
        mlflow.log_dict(
            {
                "metrics": metrics,
                "split": "evaluation",
                "n_test": len(test_df),
                "dataset": {"name": dataset_name, "digest": test_ds.digest},
                "model_id": info.model_id,
            },
            METRICS_ARTIFACT,
        )
        print(
            f"run {run.info.run_id} ({run_name(args.objective, args.seed)}): "
            + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f"; model {info.model_uri}"
        )
        return str(run.info.run_id)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    train(args, load_run_config())
    return 0


if __name__ == "__main__":
    sys.exit(main())
