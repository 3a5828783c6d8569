"""The model registry as mlflow-ci sees it: a client bound to one server, error translation, and
the few reads every registry command needs, each a single indexed query (nothing here lists all
versions of a model).

``mlflow-ci register`` lives in :mod:`mlflow_ci.release.register`; promotions in :mod:`mlflow_ci.release.promotion`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlflow_ci.config import Policy
from mlflow_ci.core.errors import ConfigError, InfraError, MlflowCiError, ServerUnreachable

# Where the gate's report is kept among the run's artifacts (the tag names are in mlflowio.tags).
GATE_ARTIFACT = "mlflow-ci/gate.json"

_CONNECTION_MARKERS = (
    "Max retries exceeded",
    "Connection refused",
    "ConnectionError",
    "Failed to establish",
    "Read timed out",
    "RemoteDisconnected",
    "Connection aborted",
)


@contextlib.contextmanager
def mlflow_errors(server: str, what: str) -> Iterator[None]:
    """Turn MLflow client failures into one-paragraph errors naming the server and the operation."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowCiError:
        raise
    except requests.exceptions.RequestException as exc:
        raise ServerUnreachable(
            f"The tracking server at {server} did not answer while {what}: {type(exc).__name__}.",
            hint="Is the server running and MLFLOW_TRACKING_URI right? Nothing was changed after this point; "
            "`mlflow-ci audit --verify` reconciles a half-finished registry change.",
        ) from None
    except MlflowException as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if any(m in str(exc) for m in _CONNECTION_MARKERS):
            raise ServerUnreachable(
                f"The tracking server at {server} did not answer while {what}.",
                hint="Is the server running and MLFLOW_TRACKING_URI right? "
                "`mlflow-ci audit --verify` reconciles a half-finished registry change.",
            ) from None
        raise InfraError(f"The tracking server at {server} refused {what}: {text[:400]}") from None


def version_label(version: str | None, *, none: str = "(none)") -> str:
    """``v3`` for version 3; ``none`` when no version (an alias that points nowhere yet)."""
    return f"v{version}" if version else none


def error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


@dataclass(frozen=True)
class Connection:
    """An MLflow client bound to one HTTP tracking server (also the registry)."""

    server: str

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.server, registry_uri=self.server)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, model: str, version: str) -> str:
        return f"{self.server.rstrip('/')}/#/models/{model}/versions/{version}"


def connect(tracking_uri: str | None) -> Connection:
    """Check ``tracking_uri`` is an HTTP server that answers; registry commands need one."""
    from mlflow_ci.mlflowio.tracking import require_reachable

    if not tracking_uri:
        raise ConfigError(
            "No tracking server given: registry commands (gate, register, promote, rollback, audit) act on "
            "the team's server.",
            hint="Pass --tracking-uri or set MLFLOW_TRACKING_URI (`mlflow-ci server up` starts a local one).",
        )
    if not tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"Tracking URI {tracking_uri!r} is not an HTTP server.",
            hint="mlflow-ci keeps the audit log and the registry lease on the tracking server; "
            "use its http(s) URL.",
        )
    require_reachable(tracking_uri)
    return Connection(server=tracking_uri.rstrip("/"))


def model_name(policy: Policy, given: str | None) -> str:
    name = given or policy.registry.model_name or policy.project
    if not name:
        raise ConfigError("No registered model name: pass it or set registry.model_name in mlflow-ci.yaml.")
    return name


def aliases(conn: Connection, model: str) -> dict[str, str]:
    """alias → version of ``model`` (one call). A model that does not exist is a ConfigError."""
    from mlflow.exceptions import MlflowException

    with mlflow_errors(conn.server, f"reading registered model {model!r}"):
        try:
            rm = conn.client.get_registered_model(model)
        except MlflowException as exc:
            if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                raise ConfigError(
                    f"Registered model {model!r} does not exist on {conn.server}.",
                    hint="Register a run first with `mlflow-ci register <run>`.",
                ) from None
            raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def aliases_or_empty(conn: Connection, model: str) -> dict[str, str]:
    try:
        return aliases(conn, model)
    except ConfigError:
        return {}


def get_version(conn: Connection, model: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    with mlflow_errors(conn.server, f"reading version {version} of model {model!r}"):
        try:
            return conn.client.get_model_version(model, str(version))
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ConfigError(f"Model {model!r} has no version {version} on {conn.server}.") from None
            raise


def version_for_run(conn: Connection, model: str, run_id: str) -> Any | None:
    """The version of ``model`` registered from ``run_id``, if any (a filtered query, no scan)."""
    with mlflow_errors(conn.server, f"searching versions of {model!r} for run {run_id}"):
        found = conn.client.search_model_versions(
            filter_string=f"name = '{_quote(model)}' and run_id = '{_quote(run_id)}'",
            order_by=["version_number ASC"],
            max_results=10,
        )
    return found[0] if found else None


def latest_version_number(conn: Connection, model: str) -> int | None:
    with mlflow_errors(conn.server, f"reading the newest version of {model!r}"):
        found = conn.client.search_model_versions(
            filter_string=f"name = '{_quote(model)}'", order_by=["version_number DESC"], max_results=1
        )
    return int(found[0].version) if found else None


def get_run(conn: Connection, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    with mlflow_errors(conn.server, f"reading run {run_id}"):
        try:
            return conn.client.get_run(run_id)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ConfigError(f"Run {run_id!r} does not exist on {conn.server}.") from None
            raise


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
