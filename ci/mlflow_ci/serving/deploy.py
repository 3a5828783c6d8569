"""``mlflow-ci deploy``: serve the version at an alias, check it, and roll back when the check fails.

1. read ``<model>@<alias>`` (default ``champion``) and stop what an earlier ``deploy`` of this model
   to this target left running (a deploy replaces; it is not blue/green);
2. start that version with the deploy target (:mod:`mlflow_ci.serving.targets`) and run the
   post-deploy check (:func:`mlflow_ci.serving.servecheck.run_checks`); its verdict is recorded on the
   version;
3. on failure (a failed check, or a start that failed) stop it, move the alias back to the
   previous version through :func:`mlflow_ci.release.rollback.rollback` (audited, with the failing checks
   as the reason) and deploy and check that version instead.

A deployment is kept running by default and recorded in ``deploy.state_dir``, under the tracking
server and the model (two servers may each have a model of the same name);
``mlflow-ci undeploy`` stops it.  Exit 0 when the version at the alias serves and passed, 1 when
it failed (whether or not the rollback worked: the report says).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow_ci.config import Deploy, load_command_policy
from mlflow_ci.core import output
from mlflow_ci.core.errors import CheckFailed, ConfigError, MlflowCiError
from mlflow_ci.core.fsutil import atomic_write_json
from mlflow_ci.core.output import emit_json, finish
from mlflow_ci.core.redact import redact
from mlflow_ci.core.report import Report, check
from mlflow_ci.mlflowio.modelref import fetch, resolve
from mlflow_ci.mlflowio.registry import Connection, aliases, connect, get_version
from mlflow_ci.serving import targets as deploy_targets
from mlflow_ci.serving.servecheck import record_verdict, run_checks
from mlflow_ci.serving.targets import Deployment, DeployTarget


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.") or "model"


def server_key(tracking_uri: str) -> str:
    """A folder name for a tracking server: readable (host and port) and unique (a hash of the
    URI without its credentials)."""
    uri = redact(tracking_uri).rstrip("/")
    parts = urlsplit(uri)
    readable = f"{parts.hostname or parts.scheme or 'server'}_{parts.port or ''}{parts.path}"
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", readable).strip("_.")[:60] or "server"
    return f"{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def state_path(settings: Deploy, tracking_uri: str, model: str, target: str) -> Path:
    """Where a kept deployment of ``model`` from this tracking server to ``target`` is recorded."""
    return Path(settings.state_dir) / server_key(tracking_uri) / _slug(model) / f"{target}.json"


def _legacy_state_path(settings: Deploy, model: str, target: str) -> Path:
    """Where releases before 2026-12-08 recorded it: keyed by the model alone."""
    return Path(settings.state_dir) / _slug(model) / f"{target}.json"


def _records(settings: Deploy, tracking_uri: str | None, model: str, target: str) -> list[Path]:
    """The records of ``model`` on ``target``: from this server (and the legacy one), or, with no
    server named, from every server."""
    if tracking_uri:
        found = [state_path(settings, tracking_uri, model, target)]
    else:
        found = sorted(Path(settings.state_dir).glob(f"*/{_slug(model)}/{target}.json"))
    return [path for path in [*found, _legacy_state_path(settings, model, target)] if path.is_file()]


def deploy_command(
    *,
    model: str | None,
    target: str | None = None,
    alias: str | None = None,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    report_dir: Path | None = None,
    keep: bool = True,
    rollback: bool | None = None,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    env = os.environ if env is None else env
    loaded = load_command_policy(
        policy_path,
        overrides={"deploy.target": target, "deploy.rollback_on_failure": rollback},
        project_default=model or "mlflow-ci",
    )
    policy = loaded.policy
    settings = policy.deploy
    name = model or policy.registry.model_name or policy.project
    alias = alias or policy.registry.aliases.champion
    base_dir = loaded.path.parent if loaded.path else Path.cwd()
    report_dir = report_dir or Path("reports/mlflow-ci")
    conn = connect(tracking_uri)
    chosen = deploy_targets.get(settings.target)
    chosen.preflight()
    version = aliases(conn, name).get(alias)
    if version is None:
        raise CheckFailed(f"Model {name!r} has no version at @{alias}: there is nothing to deploy.")
    report = Report(
        kind="deploy", title=f"{name}@{alias} (v{version}) on {chosen.name}", tracking_uri=conn.server
    )
    report.run_url = conn.version_url(name, version)
    report.run_id = get_version(conn, name, version).run_id
    state_file = state_path(settings, conn.server, name, chosen.name)
    for earlier in _records(settings, conn.server, name, chosen.name):
        _stop_recorded(chosen, earlier, report)

    deployment: Deployment | None = None
    recorded = False
    try:
        deployment, outcome = _deploy_with_rollback(
            conn, name, version, alias, chosen, settings, report, loaded.path, report_dir, env,
            workdir=state_file.parent / chosen.name, base_dir=base_dir,
        )  # fmt: skip
        if deployment is not None:
            outcome["url"] = deployment.url
            if keep:
                atomic_write_json(
                    state_file,
                    {
                        **deployment.to_dict(),
                        "version": outcome["version"],
                        "alias": alias,
                        "tracking_uri": redact(conn.server),
                    },
                )
                recorded = True
                report.notes.append(
                    f"Serving v{outcome['version']} at {deployment.url}; stop it with "
                    f"`mlflow-ci undeploy {name} --target {chosen.name}`."
                )
                outcome["state"] = str(state_file)
            else:
                chosen.stop(deployment)
                shutil.rmtree(state_file.parent / chosen.name, ignore_errors=True)
                with contextlib.suppress(OSError):
                    state_file.parent.rmdir()  # only when empty: another target's record stays
                report.notes.append(f"Stopped v{outcome['version']} after the check (--stop).")
    except BaseException:
        # Ctrl-C, SIGTERM or SIGHUP before the deployment was recorded: nothing could find it
        # again (undeploy reads the record), so it is stopped on the way out.
        if deployment is not None and not recorded:
            chosen.stop(deployment)
        raise
    report.data.update(outcome)
    output.set_output("url", str(outcome.get("url", "")))
    output.set_output("deployed_version", str(outcome["version"]) if deployment is not None else "")
    output.set_output("rolled_back", "true" if "rolled_back_to" in outcome else "false")
    return finish(report, report_dir=report_dir, as_json=as_json)


def _deploy_with_rollback(
    conn: Connection,
    name: str,
    version: str,
    alias: str,
    chosen: DeployTarget,
    settings: Deploy,
    report: Report,
    policy_file: Path | None,
    report_dir: Path,
    env: Mapping[str, str],
    *,
    workdir: Path,
    base_dir: Path,
) -> tuple[Deployment | None, dict[str, Any]]:
    """Deploy ``version`` and check it; on a failed check stop it and, as the policy says, roll
    the alias back and deploy the previous version. Returns what serves (None when nothing does,
    not yet recorded) and the outcome."""
    deployment, passed = _deploy_version(
        conn, name, version, alias, chosen, settings, report, workdir=workdir, base_dir=base_dir, env=env
    )
    outcome: dict[str, Any] = {"model": name, "alias": alias, "target": chosen.name, "version": version}
    if passed:
        return deployment, outcome
    if deployment is not None:
        chosen.stop(deployment)
    outcome["failed_version"] = version
    if not settings.rollback_on_failure:
        report.notes.append("deploy.rollback_on_failure is off: the alias was left where it is.")
        return None, outcome
    previous = _roll_back(conn, name, version, alias, chosen, report, policy_file, report_dir, env)
    if previous is None:
        return None, outcome
    outcome["version"] = previous
    outcome["rolled_back_to"] = previous
    deployment, passed_previous = _deploy_version(
        conn, name, previous, alias, chosen, settings, report, workdir=workdir, base_dir=base_dir, env=env,
        rollback=True,
    )  # fmt: skip
    if not passed_previous and deployment is not None:
        chosen.stop(deployment)
        deployment = None
    return deployment, outcome


def _deploy_version(
    conn: Connection,
    name: str,
    version: str,
    alias: str,
    chosen: DeployTarget,
    settings: Deploy,
    report: Report,
    *,
    workdir: Path,
    base_dir: Path,
    env: Mapping[str, str],
    rollback: bool = False,
) -> tuple[Deployment | None, bool]:
    """Start ``name`` v``version`` and run the post-deploy check into ``report``."""
    prefix = f"v{version}{' (rollback)' if rollback else ''}: "
    ref = resolve(f"models:/{name}/{version}", tracking_uri=conn.server, env=env)
    shutil.rmtree(workdir, ignore_errors=True)
    local = fetch(ref, workdir / "model")
    part = Report(kind="serve-check", title=f"post-deploy check of {ref.label}", tracking_uri=conn.server)
    deployment: Deployment | None = None
    try:
        with output.step(f"deploy {ref.label} to {chosen.name}"):
            deployment = chosen.start(
                ref, local, settings=settings, workdir=workdir, name=f"mlflow-ci-{_slug(name)}-{_slug(alias)}"
            )
    except MlflowCiError as exc:
        part.add(check(f"{prefix}start on {chosen.name}", False, expected="started", found=str(exc)[:300]))
    if deployment is not None:
        started = deployment
        part.add(check(f"{prefix}start on {chosen.name}", True, expected="started", found=started.subject))
        try:
            run_checks(
                started.url, local, settings.check, report=part, scratch=workdir / "check", base_dir=base_dir,
                alive=lambda: chosen.alive(started), logs=lambda: chosen.logs(started), prefix=prefix,
            )  # fmt: skip
            record_verdict(ref, part, f"{chosen.name}: {started.subject}")
        except BaseException:  # interrupted during the check: the caller never sees this deployment
            chosen.stop(started)
            raise
    report.checks.extend(part.checks)
    report.output_tail = part.output_tail or report.output_tail
    report.data.setdefault("checks_by_version", {})[version] = part.data
    return deployment, part.verdict == "pass"


def _roll_back(
    conn: Connection,
    name: str,
    version: str,
    alias: str,
    chosen: DeployTarget,
    report: Report,
    policy_path: Path | None,
    report_dir: Path,
    env: Mapping[str, str],
) -> str | None:
    """Move ``alias`` back from ``version`` (audited); the version it now names, or None."""
    from mlflow_ci.release.rollback import rollback

    now = aliases(conn, name).get(alias)
    if now != version:
        report.add(check(f"@{alias} unchanged during the deploy", False, expected=f"v{version}",
                         found=f"v{now}" if now else "no version",
                         detail="Someone moved the alias meanwhile; mlflow-ci rolls back only what it deployed."))  # fmt: skip
        return None
    failed = ", ".join(c.name for c in report.failures)
    reason = f"post-deploy check of v{version} on {chosen.name} failed: {failed}"[:1500]
    try:
        with output.step(f"roll back @{alias} from v{version}"):
            rollback(model=name, reason=reason, alias=alias, policy_path=policy_path, tracking_uri=conn.server,
                     report_dir=report_dir, env=env)  # fmt: skip
    except MlflowCiError as exc:
        report.add(
            check(f"rollback @{alias}", False, expected="the previous version restored", found=str(exc)[:300])
        )
        return None
    previous = aliases(conn, name).get(alias)
    report.add(check(f"rollback @{alias}", True, expected="the previous version restored",
                     found=f"v{version} → v{previous} (audit: {reason[:120]})"))  # fmt: skip
    return previous


def _stop_recorded(chosen: DeployTarget, state_file: Path, report: Report) -> None:
    if not state_file.is_file():
        return
    state = json.loads(state_file.read_text(encoding="utf-8"))
    fields = {k: state[k] for k in ("target", "url", "subject", "handle", "model", "started") if k in state}
    with output.step(f"stop the earlier deployment (v{state.get('version')}, {state.get('url')})"):
        chosen.stop(Deployment.from_dict(fields))
    state_file.unlink()
    report.notes.append(f"Replaced the earlier deployment of v{state.get('version')} at {state.get('url')}.")


def undeploy_command(
    *,
    model: str | None,
    target: str | None = None,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    as_json: bool = False,
) -> int:
    """Stop a deployment kept by ``mlflow-ci deploy``: the one from ``tracking_uri``'s model, or,
    with no server named, the only one of that model name."""
    loaded = load_command_policy(
        policy_path, overrides={"deploy.target": target}, project_default=model or "mlflow-ci"
    )
    policy = loaded.policy
    name = model or policy.registry.model_name or policy.project
    chosen = deploy_targets.get(policy.deploy.target)
    records = _records(policy.deploy, tracking_uri, name, chosen.name)
    if not records:
        where = f" from {redact(tracking_uri)}" if tracking_uri else ""
        raise ConfigError(
            f"Nothing of {name!r}{where} is deployed to {chosen.name} (no record under {policy.deploy.state_dir})."
        )
    if len(records) > 1 and not tracking_uri:
        servers = ", ".join(
            json.loads(path.read_text(encoding="utf-8")).get("tracking_uri", "(recorded before 2026-12-08)")
            for path in records
        )
        raise ConfigError(
            f"{name!r} is deployed to {chosen.name} from {len(records)} tracking servers ({servers}); "
            "pass --tracking-uri to say which one to stop."
        )
    stopped = []
    for state_file in records:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        fields = {
            k: state[k] for k in ("target", "url", "subject", "handle", "model", "started") if k in state
        }
        chosen.stop(Deployment.from_dict(fields))
        state_file.unlink()
        shutil.rmtree(state_file.parent / chosen.name, ignore_errors=True)
        output.info(f"stopped {name} v{state.get('version')} at {state.get('url')} ({chosen.name}).")
        stopped.append(state)
    if as_json:
        emit_json(
            {"model": name, "target": chosen.name, "stopped": stopped[0] if len(stopped) == 1 else stopped}
        )
    return 0
