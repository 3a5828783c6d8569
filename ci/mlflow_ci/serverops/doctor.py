"""``mlflow-ci server doctor`` and ``mlflow-ci server upgrade``.

The doctor checks a planned server (the ``server:`` profile) and, when given its URL, a running
one, for the failure signatures teams actually hit.  Every finding says what to change:

* schema out of date (the server refuses to start) or newer than this MLflow;
* the public Host header rejected (``--allowed-hosts``), the first thing that breaks behind a proxy;
* the artifact store unreachable, or experiments whose artifact location bypasses the proxy;
* a request-body limit smaller than the largest artifact already stored (or ``--model-size-mb``);
* auth misconfigured: credentials passed to an MLflow without an auth app, a missing admin
  password or Flask-WTF, an auth database that backups would miss, an open server;
* SQLite with several workers; backup tools missing or of the wrong version.

``server upgrade`` is the only place mlflow-ci runs ``mlflow db upgrade``: it takes a verified
backup first, upgrades, and checks the revision reached this MLflow's head.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow_ci.config import Server
from mlflow_ci.core import http, output, proc
from mlflow_ci.core.errors import CheckFailed, ConfigError, MlflowCiError
from mlflow_ci.core.redact import redact
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.serverops.artifact_stores import store_for, store_scheme
from mlflow_ci.serverops.backends import backend_for
from mlflow_ci.serverops.profile import allowed_hosts


def head_revision() -> str:
    """The schema revision this MLflow expects (its alembic head)."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return str(ScriptDirectory.from_config(_get_alembic_config("sqlite:///unused.db")).get_current_head())


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return {
        r.revision
        for r in ScriptDirectory.from_config(_get_alembic_config("sqlite:///unused.db")).walk_revisions()
    }


def check_schema(backend_store_uri: str) -> Check:
    name = "database schema"
    try:
        backend = backend_for(backend_store_uri)
        tables = backend.tables()
    except MlflowCiError as exc:
        return check(name, False, expected="database reachable", found="unreachable", detail=str(exc))
    head = head_revision()
    if not tables:
        return check(
            name,
            True,
            expected=f"revision {head}",
            found="empty database (MLflow creates tables at first start)",
        )
    revision = backend.schema_revision()
    if revision == head:
        return check(name, True, expected=f"revision {head}", found=f"revision {revision}")
    if revision in _known_revisions():
        return check(name, False, expected=f"revision {head}", found=f"revision {revision} (out of date)",
                     detail="The server refuses to start on an out-of-date schema. Run `mlflow-ci server upgrade "
                     "--to <backup repository>`: it backs up first, then runs `mlflow db upgrade`.")  # fmt: skip
    return check(name, False, expected=f"revision {head}", found=f"revision {revision} (unknown to this MLflow)",
                 detail="The database was upgraded by a newer MLflow. Pin the server's mlflow to that version "
                 "(schema downgrades are not supported), or restore a backup taken before the upgrade.")  # fmt: skip


def _request(
    url: str, *, host: str | None = None, auth: tuple[str, str] | None = None, timeout: float = 10
) -> tuple[int, str]:
    """One GET through mlflow-ci's HTTP client: the status and the start of the body (raises
    :class:`~mlflow_ci.core.http.HttpError` when nothing answers)."""
    headers = {"Host": host} if host else {}
    if auth:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    answer = http.request("GET", url, timeout=timeout, headers=headers)
    return answer.status, answer.body[:500].decode(errors="replace")


def check_host_header(server: Server, server_url: str) -> Check:
    name = "public Host header accepted"
    host = urlparse(server.public_url or "").hostname
    if not host:
        return Check(name, "server.public_url set", "no public URL: not checked", "skip")
    try:
        status, body = _request(
            f"{server_url.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1", host=host
        )
    except http.HttpError as exc:
        return check(name, False, expected="server answers", found=f"unreachable ({exc.reason})",
                     detail=f"Is the server running at {server_url}?")  # fmt: skip
    if status == 403 and "Host" in body:
        return check(name, False, expected=f"Host: {host} accepted", found="403 Invalid Host header",
                     detail=f"MLflow 3 only accepts localhost unless told otherwise: start it with "
                     f"--allowed-hosts {','.join(allowed_hosts(server))} (mlflow-ci server config writes it).")  # fmt: skip
    return check(name, status in (200, 401), expected=f"Host: {host} accepted", found=f"HTTP {status}")


def check_artifact_store(server: Server, env: Mapping[str, str]) -> list[Check]:
    checks = []
    uri = server.artifacts_destination
    try:
        store = store_for(uri, env)
        store.probe()
        largest = max((o.size for o in store.list()), default=0)
        checks.append(check("artifact store reachable", True, expected=f"{store_scheme(uri)} store answers",
                            found=f"{uri} answers"))  # fmt: skip
    except ConfigError as exc:
        return [
            Check("artifact store reachable", "a store mlflow-ci can read", "not checked", "warn", str(exc))
        ]
    except MlflowCiError as exc:
        return [check("artifact store reachable", False, expected=f"{uri} answers", found="unreachable",
                      detail=f"{exc} Fix the endpoint or credentials before starting the server; uploads fail otherwise.")]  # fmt: skip
    checks.append(_body_size(server, largest, source="largest stored artifact"))
    return checks


def _body_size(server: Server, size_bytes: int, *, source: str) -> Check:
    limit = server.max_body_size_mb * 1024 * 1024
    need_mb = -(-int(size_bytes * 1.25) // (1024 * 1024))  # 25 % headroom, rounded up
    ok = size_bytes * 1.25 <= limit
    return check("proxy body-size limit", ok, expected=f"≥ {source} + 25 % ({need_mb} MiB)",
                 found=f"client_max_body_size {server.max_body_size_mb} MiB",
                 detail="" if ok else f"Uploads larger than the limit fail with HTTP 413 at the proxy. Set "
                 f"server.max_body_size_mb: {max(need_mb, 1)} (or more) and regenerate the nginx config.")  # fmt: skip


def check_artifact_locations(server: Server) -> Check:
    """Experiments whose artifact location is not the proxied ``mlflow-artifacts:`` scheme."""
    name = "experiments use the artifact proxy"
    if not server.serve_artifacts:
        return Check(name, "--serve-artifacts", "artifacts are not proxied: not checked", "skip")
    try:
        backend = backend_for(server.backend_store_uri)
        if "experiments" not in backend.tables():
            return Check(name, "mlflow-artifacts:/...", "no experiments yet", "pass")
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(
            getattr(backend, "sqlalchemy_url", server.backend_store_uri), poolclass=NullPool
        )
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT experiment_id, artifact_location FROM experiments")
                ).fetchall()
        finally:
            engine.dispose()
    except MlflowCiError as exc:
        return Check(name, "mlflow-artifacts:/...", "database unreachable: not checked", "skip", str(exc))
    direct = [f"{r[0]}: {r[1]}" for r in rows if r[1] and not str(r[1]).startswith("mlflow-artifacts:")]
    return check(name, not direct, advisory=True, expected="mlflow-artifacts:/... for every experiment",
                 found=f"{len(direct)} experiments point elsewhere ({'; '.join(direct[:3])})" if direct else
                 f"all {len(rows)} experiments",
                 detail="Clients of these experiments read and write the store directly (they need its credentials) "
                 "and a restore into another store breaks them; create new experiments on the proxied server "
                 "and move runs, or keep the old store reachable.")  # fmt: skip


def check_auth(server: Server, env: Mapping[str, str], server_url: str | None) -> list[Check]:
    checks: list[Check] = []
    if server.proxy_auth == "mlflow" and server.app_name != "basic-auth":
        checks.append(check("auth configuration", False, expected="MLflow checks the credentials nginx passes on",
                            found="proxy_auth: mlflow but no app_name: basic-auth",
                            detail="Set server.app_name: basic-auth, or proxy_auth: nginx-basic; as configured, "
                            "nobody checks credentials."))  # fmt: skip
    elif server.proxy_auth == "nginx-basic" and server.app_name == "basic-auth":
        checks.append(check("auth configuration", False, advisory=True, expected="one authority for Basic auth",
                            found="nginx basic auth and MLflow basic-auth both enabled",
                            detail="Both read the same Authorization header: users would need the same password "
                            "in both. Use proxy_auth: mlflow with the basic-auth app."))  # fmt: skip
    elif server.proxy_auth == "none" and server.public_url and not _is_local(server.public_url):
        checks.append(check("auth configuration", False, expected="authentication on a public URL",
                            found=f"proxy_auth: none for {server.public_url}",
                            detail="Anyone who reaches the URL can read and delete runs and models. Set "
                            "proxy_auth: nginx-basic or use MLflow's basic-auth app."))  # fmt: skip
    else:
        checks.append(check("auth configuration", True, expected="consistent", found=f"proxy_auth: {server.proxy_auth}"
                            + (f", app_name: {server.app_name}" if server.app_name else "")))  # fmt: skip
    if server.app_name == "basic-auth":
        try:
            import flask_wtf  # noqa: F401
        except ImportError:
            checks.append(check("basic-auth dependencies", False, expected="Flask-WTF installed", found="missing",
                                detail="pip install Flask-WTF next to mlflow; the auth app does not start without it."))  # fmt: skip
        if not server.auth_db_uri:
            checks.append(check("auth database backed up", False, advisory=True, expected="server.auth_db_uri set",
                                found="not set",
                                detail="Users and permissions live in their own database (basic_auth.ini "
                                "database_uri). Set server.auth_db_uri so backups include it."))  # fmt: skip
        config_path = env.get("MLFLOW_AUTH_CONFIG_PATH")
        has_password = bool(env.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
        if config_path and Path(config_path).is_file():
            text = Path(config_path).read_text(errors="replace")
            has_password = has_password or bool(re.search(r"^\s*admin_password\s*=\s*\S", text, re.M))
        if not has_password:
            checks.append(check("basic-auth admin password", False, advisory=True,
                                expected="MLFLOW_AUTH_ADMIN_PASSWORD or admin_password set",
                                found="neither set",
                                detail="On an empty user store the auth app refuses to start without one."))  # fmt: skip
    if server_url and server.proxy_auth != "none" and server.public_url:
        try:
            status, _ = _request(
                f"{server.public_url.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
            )
            checks.append(check("unauthenticated request refused", status == 401, expected="HTTP 401 at the public URL",
                                found=f"HTTP {status}",
                                detail="" if status == 401 else "The public URL answers without credentials."))  # fmt: skip
        except http.HttpError:
            checks.append(
                Check(
                    "unauthenticated request refused",
                    "HTTP 401",
                    "public URL not reachable from here",
                    "skip",
                )
            )
    return checks


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".local")


def doctor(*, server: Server, server_url: str | None = None, model_size_mb: float | None = None,
           env: Mapping[str, str] | None = None) -> Report:  # fmt: skip
    env = dict(os.environ if env is None else env)
    if server.s3_endpoint_url:
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", server.s3_endpoint_url)
    report = Report(kind="doctor", title=f"server profile ({redact(server.backend_store_uri)})")
    report.add(check_schema(server.backend_store_uri))
    report.add(check_artifact_locations(server))
    for item in check_artifact_store(server, env):
        report.add(item)
    if model_size_mb:
        report.add(
            _body_size(server, int(model_size_mb * 1024 * 1024), source=f"a {model_size_mb:g} MiB model")
        )
    for item in check_auth(server, env, server_url):
        report.add(item)
    if server.backend_store_uri.startswith("sqlite") and server.workers > 1:
        report.add(check("workers", False, advisory=True, expected="1 worker on SQLite", found=f"{server.workers} workers",
                         detail="SQLite serialises writers; several workers produce 'database is locked' errors. "
                         "Use workers: 1, or PostgreSQL/MySQL."))  # fmt: skip
    try:
        tool = backend_for(server.backend_store_uri).check_tools()
        report.add(
            check(
                "backup tools",
                True,
                expected="dump client present, at least as new as the server",
                found=tool,
            )
        )
    except MlflowCiError as exc:
        report.add(check("backup tools", False, expected="dump client present, at least as new as the server", found="problem",
                         detail=str(exc)))  # fmt: skip
    if server_url:
        from mlflow_ci.mlflowio.tracking import check_health

        healthy = check_health(server_url)
        report.add(check("server health", healthy, expected=f"{server_url}/health answers 200",
                         found="healthy" if healthy else "no answer",
                         detail="" if healthy else "Start the server (systemctl start mlflow) and check its log."))  # fmt: skip
        if healthy:
            report.add(check_host_header(server, server_url))
    return report


def doctor_command(*, tracking_uri: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                   model_size_mb: float | None, policy_path: Path | None, report_dir: Path | None,
                   as_json: bool) -> int:  # fmt: skip
    from mlflow_ci.serverops.profile import resolve_ops

    ops = resolve_ops(policy_path, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri)
    report = doctor(server=ops.server, server_url=tracking_uri, model_size_mb=model_size_mb)
    output.emit_report(report, report_dir=report_dir, as_json=as_json)
    return 1 if report.verdict == "fail" else 0


# --------------------------------------------------------------------------------------------
# server upgrade: the one explicit, backed-up `mlflow db upgrade`


def upgrade(*, backend_store_uri: str, artifacts_uri: str, destination: str, auth_db_uri: str | None = None,
            dry_run: bool = False) -> dict[str, Any]:  # fmt: skip
    from mlflow_ci.mlflowio.tracking import client_env
    from mlflow_ci.serverops.backup import take_backup

    backend = backend_for(backend_store_uri)
    before = backend.schema_revision() if backend.tables() else None
    head = head_revision()
    result: dict[str, Any] = {"before": before, "head": head, "backup": None, "after": before}
    if before is None:
        raise ConfigError(f"{redact(backend_store_uri)} holds no MLflow schema: nothing to upgrade.",
                          hint="A new database gets its tables when the server first starts.")  # fmt: skip
    if before == head:
        result["status"] = "up to date"
        return result
    if dry_run:
        result["status"] = f"would back up to {destination}, then upgrade {before} → {head}"
        return result
    with output.step("backup before the upgrade"):
        manifest = take_backup(backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                               destination=destination, auth_db_uri=auth_db_uri)  # fmt: skip
    result["backup"] = manifest["id"]
    with output.step(f"mlflow db upgrade ({before} → {head})"):
        proc.run(["mlflow", "db", "upgrade", backend_store_uri], env=client_env("http://unused"),
                 what="mlflow db upgrade", timeout=3600)  # fmt: skip
    after = backend.schema_revision()
    result["after"] = after
    if after != head:
        raise CheckFailed(
            f"mlflow db upgrade finished but the schema is at {after}, not {head}.",
            hint=f"Restore backup {manifest['id']} (mlflow-ci restore --backup {manifest['id']}) into a new database.",
        )
    result["status"] = "upgraded"
    return result


def upgrade_command(*, backend_store_uri: str | None, artifacts_uri: str | None, destination: str | None,
                    dry_run: bool, policy_path: Path | None, as_json: bool) -> int:  # fmt: skip
    from mlflow_ci.serverops.profile import resolve_ops

    ops = resolve_ops(policy_path, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                      destination=destination)  # fmt: skip
    if not ops.destination:
        raise ConfigError("An upgrade needs a backup first: no backup destination.",
                          hint="Pass --to DEST or set backup.destination.")  # fmt: skip
    result = upgrade(backend_store_uri=ops.backend_store_uri, artifacts_uri=ops.artifacts_uri,
                     destination=ops.destination, auth_db_uri=ops.auth_db_uri, dry_run=dry_run)  # fmt: skip
    output.emit(result, as_json=as_json,
                text=f"schema {result['before']} → {result['after']} ({result['status']})"
                + (f"; backup {result['backup']}" if result["backup"] else ""))  # fmt: skip
    return 0
