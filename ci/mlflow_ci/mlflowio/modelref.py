"""Which model? Resolve a model URI once into an immutable reference with its lineage, and fetch it.

Accepted: ``models:/<name>@<alias>``, ``models:/<name>/<version>`` (or ``latest``),
``models:/<model_id>`` (an MLflow 3 logged model), ``runs:/<run_id>/<path>``, and a local folder
holding an ``MLmodel`` file.  Aliases move; the resolved :attr:`ModelRef.uri` does not
(``models:/<name>/<version>``, ``models:/<model_id>`` or the folder), so an image label or a report
names exactly the model that was built or checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.core.errors import ConfigError
from mlflow_ci.mlflowio import lineage
from mlflow_ci.mlflowio.registry import Connection, connect, error_code, get_run, get_version, mlflow_errors
from mlflow_ci.mlflowio.tags import GIT_COMMIT

MODEL_DIR_FILE = "MLmodel"
SERVING_EXAMPLE = "serving_input_example.json"


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to something that cannot move, with what is known of its lineage."""

    requested: str
    uri: str
    name: str
    version: str | None = None
    model_id: str | None = None
    run_id: str | None = None
    git_commit: str = ""
    tracking_uri: str | None = None

    @property
    def registered(self) -> bool:
        return self.version is not None

    @property
    def label(self) -> str:
        """Short human name: ``name v3``, ``name (m-...)`` or ``name (run ...)``."""
        if self.version:
            return f"{self.name} v{self.version}"
        if self.model_id:
            return f"{self.name} ({self.model_id})"
        if self.run_id:
            return f"{self.name} (run {self.run_id[:12]})"
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LocalModel:
    """A model's files on this machine."""

    path: Path
    mlflow_version: str
    python_version: str | None
    has_signature: bool
    input_names: tuple[str, ...]

    @property
    def serving_example(self) -> Path | None:
        path = self.path / SERVING_EXAMPLE
        return path if path.is_file() else None


def is_model_uri(text: str) -> bool:
    """True for a ``models:/`` or ``runs:/`` URI or a local model folder (vs an image or a URL)."""
    if text.startswith(("models:/", "runs:/", "file://")):
        return True
    path = Path(text)
    return path.is_dir() and (path / MODEL_DIR_FILE).is_file()


def resolve(uri: str, *, tracking_uri: str | None, env: Mapping[str, str] | None = None) -> ModelRef:
    """Resolve ``uri``; registry URIs need the tracking server (``ConfigError`` when it is missing)."""
    env = env or {}
    if uri.startswith("file://") or not uri.startswith(("models:/", "runs:/")):
        return _resolve_folder(uri, env)
    conn = connect(tracking_uri)
    if uri.startswith("runs:/"):
        return _resolve_run(conn, uri, env)
    rest = uri[len("models:/") :].strip("/")
    if not rest:
        raise ConfigError(
            f"{uri!r} names no model; expected models:/<name>@<alias> or models:/<name>/<version>."
        )
    if "@" in rest and "/" not in rest.split("@", 1)[1]:
        name, alias = rest.rsplit("@", 1)
        return _resolve_alias(conn, uri, name, alias, env)
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        if version == "latest":
            from mlflow_ci.mlflowio.registry import latest_version_number

            newest = latest_version_number(conn, name)
            if newest is None:
                raise ConfigError(f"{uri!r}: registered model {name!r} has no versions.")
            version = str(newest)
        if not version.isdigit():
            raise ConfigError(
                f"{uri!r}: {version!r} is not a version number; stages are deprecated, use models:/{name}@<alias>."
            )
        return _from_version(conn, uri, get_version(conn, name, version), env)
    return _resolve_model_id(conn, uri, rest, env)


def _resolve_folder(uri: str, env: Mapping[str, str]) -> ModelRef:
    from mlflow.models import Model

    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).resolve()
    if not (path / MODEL_DIR_FILE).is_file():
        raise ConfigError(
            f"{uri!r} is neither a model URI (models:/..., runs:/...) nor a folder holding an MLmodel file."
        )
    meta = Model.load(str(path))
    return ModelRef(
        requested=uri,
        uri=str(path),
        name=_name(path.name),
        model_id=getattr(meta, "model_id", None),
        run_id=meta.run_id,
        git_commit=env.get("GITHUB_SHA", ""),
    )


@dataclass(frozen=True)
class LoggedModelRef:
    """The model a run logged: its URI (``models:/<id>`` in MLflow 3, else ``runs:/...``)."""

    uri: str
    model_id: str | None
    name: str


def find_logged_model(client: Any, run: Any, name: str) -> LoggedModelRef | None:
    """The model logged under ``name`` by ``run`` (MLflow 3 logged model, or a run artifact)."""
    outputs = getattr(run, "outputs", None)
    model_ids = [m.model_id for m in (getattr(outputs, "model_outputs", None) or [])]
    if model_ids:
        for model_id in model_ids:
            model = client.get_logged_model(model_id)
            if model.name == name:
                return LoggedModelRef(uri=f"models:/{model_id}", model_id=model_id, name=name)
    else:
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
            max_results=1,
        )
        if found:
            return LoggedModelRef(uri=f"models:/{found[0].model_id}", model_id=found[0].model_id, name=name)
    # MLflow 2 style: the model is a folder of run artifacts.
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, name)}
    if f"{name}/MLmodel" in artifacts:
        return LoggedModelRef(uri=f"runs:/{run.info.run_id}/{name}", model_id=None, name=name)
    return None


def _resolve_run(conn: Connection, uri: str, env: Mapping[str, str]) -> ModelRef:
    m = re.match(r"^runs:/([0-9a-f]{32})/(.+)$", uri)
    if not m:
        raise ConfigError(f"{uri!r} is not runs:/<run_id>/<model path>.")
    run = get_run(conn, m.group(1))
    path = m.group(2).strip("/")
    with mlflow_errors(conn.server, f"finding the model {path!r} of run {run.info.run_id}"):
        found = find_logged_model(conn.client, run, path)
    if found is None:
        raise ConfigError(f"Run {run.info.run_id} logged no model named {path!r}.")
    return ModelRef(
        requested=uri,
        uri=uri,
        name=_name(path),
        model_id=found.model_id,
        run_id=run.info.run_id,
        git_commit=lineage.git_commit(env, run.data.tags),
        tracking_uri=conn.server,
    )


def _resolve_alias(conn: Connection, uri: str, name: str, alias: str, env: Mapping[str, str]) -> ModelRef:
    from mlflow.exceptions import MlflowException

    with mlflow_errors(conn.server, f"resolving {uri}"):
        try:
            mv = conn.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ConfigError(
                    f"{uri!r}: model {name!r} has no alias {alias!r} on {conn.server}."
                ) from None
            raise
    return _from_version(conn, uri, mv, env)


def _from_version(conn: Connection, uri: str, mv: Any, env: Mapping[str, str]) -> ModelRef:
    run_tags: dict[str, str] = {}
    if mv.run_id:
        run_tags = dict(get_run(conn, mv.run_id).data.tags)
    commit = (mv.tags or {}).get(GIT_COMMIT) or lineage.git_commit(env, run_tags)
    return ModelRef(
        requested=uri,
        uri=f"models:/{mv.name}/{mv.version}",
        name=mv.name,
        version=str(mv.version),
        model_id=getattr(mv, "model_id", None) or _model_id_in(getattr(mv, "source", "") or ""),
        run_id=mv.run_id,
        git_commit=commit,
        tracking_uri=conn.server,
    )


def _resolve_model_id(conn: Connection, uri: str, model_id: str, env: Mapping[str, str]) -> ModelRef:
    from mlflow.exceptions import MlflowException

    with mlflow_errors(conn.server, f"resolving {uri}"):
        try:
            logged = conn.client.get_logged_model(model_id)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise ConfigError(
                    f"{uri!r}: no logged model with id {model_id!r} on {conn.server}.",
                    hint="Registered models are models:/<name>/<version> or models:/<name>@<alias>.",
                ) from None
            raise
    run_tags: dict[str, str] = {}
    if logged.source_run_id:
        run_tags = dict(get_run(conn, logged.source_run_id).data.tags)
    return ModelRef(
        requested=uri,
        uri=f"models:/{logged.model_id}",
        name=_name(logged.name),
        model_id=logged.model_id,
        run_id=logged.source_run_id,
        git_commit=lineage.git_commit(env, run_tags),
        tracking_uri=conn.server,
    )


def _model_id_in(source: str) -> str | None:
    """MLflow 3 records the logged model as the version's source (``models:/m-...``)."""
    m = re.match(r"^models:/(m-[0-9a-f]+)$", source)
    return m.group(1) if m else None


def _name(text: str) -> str:
    return text.strip("/").split("/")[-1] or "model"


def fetch(ref: ModelRef, dst: Path) -> LocalModel:
    """The model's files: the folder itself, or a download into ``dst``."""
    if ref.tracking_uri is None:
        path = Path(ref.uri)
    else:
        import mlflow.artifacts

        from mlflow_ci.mlflowio.tracking import client_settings

        dst.mkdir(parents=True, exist_ok=True)
        with client_settings(ref.tracking_uri), mlflow_errors(ref.tracking_uri, f"downloading {ref.uri}"):
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(dst)))
    return describe(path)


def describe(path: Path) -> LocalModel:
    import yaml
    from mlflow.models import Model

    meta = Model.load(str(path))
    python = None
    env_file = path / "python_env.yaml"
    if env_file.is_file():
        python = str((yaml.safe_load(env_file.read_text(encoding="utf-8")) or {}).get("python") or "") or None
    names: tuple[str, ...] = ()
    if meta.signature is not None and meta.signature.inputs is not None:
        try:
            names = tuple(n for n in meta.signature.inputs.input_names() if isinstance(n, str))
        except Exception:  # tensor specs have no names
            names = ()
    return LocalModel(
        path=path,
        mlflow_version=str(meta.mlflow_version or ""),
        python_version=python,
        has_signature=meta.signature is not None,
        input_names=names,
    )
