"""Sections read by the server operations: ``server``, ``backup`` and ``retention``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlflow_ci.config.base import Section


class Server(Section):
    """How the tracking server is (or will be) deployed: the profile every server-ops command reads."""

    backend_store_uri: str = Field(
        "sqlite:///mlflow.db",
        description="Database: sqlite:///path.db, postgresql+psycopg2://user@host/db or mysql+pymysql://user@host/db.",
    )
    artifacts_destination: str = Field(
        "./mlartifacts",
        description="Artifact root: a local path, s3://bucket/prefix, wasbs://container@account.blob.core.windows.net/"
        "prefix or gs://bucket/prefix.",
    )
    serve_artifacts: bool = Field(
        True, description="Proxy artifact traffic through the server (--serve-artifacts)."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MLFLOW_S3_ENDPOINT_URL).")
    public_url: str | None = Field(
        None,
        description="URL users reach the server at (behind the proxy); --allowed-hosts is derived from it.",
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Extra Host header values to accept.")
    host: str = Field("127.0.0.1", description="Interface mlflow server binds to (the proxy talks to it).")
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Uvicorn/gunicorn workers (per replica).")
    replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="Stateless `mlflow server` processes on the same database and artifact store behind nginx; "
        "replica i listens on port + i. More than 1 needs a server database (PostgreSQL or MySQL), not SQLite.",
    )
    app_name: Literal["basic-auth"] | None = Field(None, description="MLflow app plugin, e.g. basic-auth.")
    auth_db_uri: str | None = Field(
        None, description="The basic-auth users database (backed up with the rest when set)."
    )
    proxy_auth: Literal["nginx-basic", "mlflow", "none"] = Field(
        "nginx-basic",
        description="Who authenticates: nginx basic auth (htpasswd), MLflow's basic-auth app (nginx passes "
        "Authorization through), or nobody (a private network only).",
    )
    max_body_size_mb: int = Field(
        4096,
        ge=1,
        description="Largest request nginx accepts, in MiB; size it above your largest model artifact.",
    )
    proxy_timeout_s: int = Field(
        900, ge=1, description="nginx read/send timeout for long uploads and downloads."
    )
    health_timeout_s: float = Field(60, gt=0, description="Seconds to wait for /health after start.")

    @field_validator("replicas")
    @classmethod
    def _replicas_need_a_server_database(cls, value: int, info: ValidationInfo) -> int:
        backend = str(info.data.get("backend_store_uri", ""))
        if value > 1 and backend.startswith("sqlite:"):
            raise ValueError(
                "1 with a SQLite backend store (several mlflow server processes writing one SQLite file is not "
                "safe; use PostgreSQL or MySQL for replicas)"
            )
        port = info.data.get("port")
        if isinstance(port, int) and port + value - 1 > 65535:
            raise ValueError(f"at most {65536 - port} with port {port} (replica i listens on port + i)")
        return value


class Backup(Section):
    destination: str | None = Field(
        None, description="Backup repository: a local folder or s3://bucket/prefix (or wasbs://...)."
    )
    keep: int = Field(
        7, ge=1, description="Complete backups to keep; older ones and their unshared objects go."
    )
    include_auth: bool = Field(True, description="Back up server.auth_db_uri too when it is set.")
    sample_runs: int = Field(
        25, ge=0, description="Runs recorded in the manifest and read back after a restore."
    )


class KeepBest(Section):
    metric: str = Field(..., description="Metric (latest value) that ranks runs.")
    k: int = Field(..., ge=1, description="How many of the best runs to keep.")
    mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better.")


class RetentionRule(Section):
    experiments: list[str] = Field(
        default_factory=lambda: ["*"], description="Experiment names (glob patterns) the rule applies to."
    )
    older_than_days: float | None = Field(
        None, gt=0, description="Only runs that started longer ago than this."
    )
    keep_last: int | None = Field(None, ge=0, description="Always keep the newest N runs per experiment.")
    keep_best: KeepBest | None = Field(
        None, description="Always keep the best K runs per experiment by a metric."
    )

    @model_validator(mode="after")
    def _bounded(self) -> RetentionRule:
        if self.older_than_days is None and self.keep_last is None:
            raise ValueError(
                "a retention rule needs older_than_days or keep_last (otherwise it would delete every run)"
            )
        return self


class Retention(Section):
    rules: list[RetentionRule] = Field(
        default_factory=list, description="Rules; a run is deleted if any rule says so."
    )
    grace_days: float = Field(
        7,
        ge=0,
        description="Days between soft delete and `mlflow gc` (the deletion time is kept on the run).",
    )
    protect_tag: str = Field(
        "pinned", description="Runs with this tag set to a true value are never deleted."
    )
