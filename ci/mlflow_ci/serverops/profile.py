"""Server profiles: the ``server:``/``backup:``/``retention:`` policy sections resolved once.

Precedence, lowest first (the same as every mlflow-ci setting, see :mod:`mlflow_ci.config.loader`):
defaults in the models < ``mlflow-ci.yaml`` < ``MLFLOW_CI__SERVER__*`` variables < CLI flags.
:func:`load_ops` applies it and :class:`Ops` remembers where each value came from.

The profile also knows how to turn itself into ``mlflow server`` arguments: proxied artifact
serving, ``--allowed-hosts`` derived from the public URL (the first thing that breaks behind a
proxy), workers, the auth app.  ``mlflow db upgrade`` is never implied: see :func:`upgrade`.
With ``replicas: N`` the same arguments run N stateless servers, replica i on ``port + i``
(:func:`replica_ports`), on one database and one artifact store behind nginx.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow_ci.config import Backup, LoadedPolicy, Retention, Server, find_policy, load_policy


@dataclass(frozen=True)
class Ops:
    server: Server
    backup: Backup
    retention: Retention
    loaded: LoadedPolicy | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    # Convenience views used by the commands.
    @property
    def backend_store_uri(self) -> str:
        return self.server.backend_store_uri

    @property
    def artifacts_uri(self) -> str:
        return self.server.artifacts_destination

    @property
    def destination(self) -> str | None:
        return self.backup.destination

    @property
    def auth_db_uri(self) -> str | None:
        return self.server.auth_db_uri if self.backup.include_auth else None

    @property
    def keep(self) -> int | None:
        return self.backup.keep

    def source_of(self, dotted: str) -> str:
        return self.loaded.source_of(dotted) if self.loaded else "default"


def load_ops(policy_path: Path | None, *, overrides: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> Ops:  # fmt: skip
    """Resolve the server-ops settings. ``policy_path=None`` uses ./mlflow-ci.yaml when it exists."""
    path = policy_path or find_policy(Path.cwd())
    loaded = load_policy(path, env=env, overrides=overrides, project_default="mlflow-server")
    policy = loaded.policy
    return Ops(
        server=policy.server or Server(),
        backup=policy.backup or Backup(),
        retention=policy.retention or Retention(),
        loaded=loaded,
        sources=loaded.sources,
    )


def resolve_ops(policy_path: Path | None, *, backend_store_uri: str | None = None, artifacts_uri: str | None = None,
                destination: str | None = None, auth_db_uri: str | None = None, keep: int | None = None,
                env: Mapping[str, str] | None = None) -> Ops:  # fmt: skip
    """:func:`load_ops` with the flags every server-ops command shares."""
    return load_ops(
        policy_path,
        env=env,
        overrides={
            "server.backend_store_uri": backend_store_uri,
            "server.artifacts_destination": artifacts_uri,
            "server.auth_db_uri": auth_db_uri,
            "backup.destination": destination,
            "backup.keep": keep,
        },
    )


def allowed_hosts(server: Server) -> list[str]:
    """Host header values the server must accept: the public host (with and without port), plus extras.

    MLflow 3 rejects any Host that is not localhost unless ``--allowed-hosts`` lists it, which is
    what breaks first behind nginx or a load balancer.
    """
    hosts: list[str] = []
    if server.public_url:
        parsed = urlparse(server.public_url)
        if parsed.hostname:
            hosts.append(parsed.hostname)
            if parsed.port:
                hosts.append(f"{parsed.hostname}:{parsed.port}")
    hosts += ["localhost", "127.0.0.1"]
    for port in replica_ports(server):
        hosts += [f"localhost:{port}", f"127.0.0.1:{port}"]
    hosts += server.allowed_hosts
    return list(dict.fromkeys(hosts))


def replica_ports(server: Server) -> list[int]:
    """The port of each replica: ``server.port``, ``server.port + 1``, ... (one with ``replicas: 1``)."""
    return [server.port + i for i in range(server.replicas)]


def server_args(server: Server, *, port: int | str | None = None) -> list[str]:
    """``mlflow server`` arguments for a profile (without the executable); ``port``: one replica's
    (``%i`` in a templated systemd unit), ``server.port`` by default."""
    args = [
        "--backend-store-uri", server.backend_store_uri,
        "--artifacts-destination", server.artifacts_destination,
        "--host", server.host,
        "--port", str(server.port if port is None else port),
        "--workers", str(server.workers),
        "--allowed-hosts", ",".join(allowed_hosts(server)),
    ]  # fmt: skip
    args.append("--serve-artifacts" if server.serve_artifacts else "--no-serve-artifacts")
    if server.app_name:
        args += ["--app-name", server.app_name]
    return args


def up_kwargs(server: Server, *, port: int | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`mlflow_ci.mlflowio.tracking.up` that start the profile's server
    (``port``: one replica's, ``server.port`` by default).

    The backend, artifact root, host, port and workers map onto TrackingServer's own flags; the
    rest (allowed hosts, the auth app, artifact proxying off) are extra arguments.  The health
    timeout is the profile's.
    """
    extra = ["--allowed-hosts", ",".join(allowed_hosts(server))]
    if server.app_name:
        extra += ["--app-name", server.app_name]
    if not server.serve_artifacts:
        extra.append("--no-serve-artifacts")
    return {
        "backend_store_uri": server.backend_store_uri,
        "artifacts_destination": server.artifacts_destination,
        "host": server.host,
        "port": server.port if port is None else port,
        "workers": server.workers,
        "extra_args": extra,
        "env": server_env(server),
        "startup_timeout": server.health_timeout_s,
    }


def server_env(server: Server, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment the server process needs for the profile (no secrets are invented here)."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if server.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = server.s3_endpoint_url
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING",
                "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY"):  # fmt: skip
        value = (base if base is not None else os.environ).get(key)
        if value:
            env[key] = value
    return env
