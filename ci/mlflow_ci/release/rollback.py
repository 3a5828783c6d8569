"""Rollback: move ``champion`` back to the version it replaced, or to ``--to-version N``, saying why.

"The version it replaced" is the ``mlflow_ci.previous_champion`` tag that every move writes on the
version it makes champion, so a rollback (which writes it too) can itself be rolled back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mlflow_ci.config import load_command_policy
from mlflow_ci.core import output
from mlflow_ci.core.errors import CheckFailed, ConcurrentChange, ConfigError
from mlflow_ci.core.report import Report, check
from mlflow_ci.mlflowio.registry import aliases, connect, get_version
from mlflow_ci.mlflowio.tags import previous_tag
from mlflow_ci.release.audit import registry_change
from mlflow_ci.release.promotion import Actor, move_alias


def rollback(
    *,
    model: str | None,
    reason: str,
    to_version: str | None = None,
    alias: str | None = None,
    approved_by: str | None = None,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    report_dir: Path | None = None,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """``mlflow-ci rollback MODEL --reason WHY``: 0 rolled back, 1 nothing to roll back to or lost a race."""
    env = os.environ if env is None else env
    if not reason.strip():
        raise ConfigError("A rollback must say why: pass --reason.")
    policy = load_command_policy(policy_path, project_default=model or "mlflow-ci").policy
    name = model or policy.registry.model_name or policy.project
    alias = alias or policy.registry.aliases.champion
    conn = connect(tracking_uri)
    actor = Actor.from_env(env)
    current = aliases(conn, name).get(alias)
    if current is None:
        raise CheckFailed(f"Model {name!r} has no {alias!r}: there is nothing to roll back.")
    if to_version is None:
        to_version = get_version(conn, name, current).tags.get(previous_tag(alias)) or None
        if not to_version:
            raise CheckFailed(
                f"Model {name!r} v{current} (@{alias}) records no previous {alias}: it was the first.",
                hint="Pass --to-version N to choose the version explicitly.",
            )
    to_version = str(to_version)
    target = get_version(conn, name, to_version)
    if to_version == current:
        raise CheckFailed(f"Model {name!r} @{alias} is already v{current}; choose another --to-version.")
    report = Report(
        kind="rollback",
        title=f"{name} @{alias}: v{current} → v{to_version}",
        tracking_uri=conn.server,
        run_id=target.run_id,
        run_url=conn.version_url(name, to_version),
    )
    with registry_change(conn, name, operation=f"rollback @{alias} to v{to_version}", actor=actor,
                         registry=policy.registry) as (lease, log):  # fmt: skip
        now = aliases(conn, name).get(alias)
        if now != current:
            raise ConcurrentChange(
                f"Model {name!r} @{alias} moved from v{current} to v{now} while this rollback was prepared. "
                "Nothing was changed."
            )
        entry = move_alias(
            conn,
            log,
            lease,
            model=name,
            alias=alias,
            to_version=to_version,
            op="rollback",
            actor=actor,
            why=reason,
            approved_by=approved_by,
            run_id=target.run_id,
        )
    report.add(
        check(f"alias {alias}", True, expected=f"v{to_version}", found=f"v{to_version} (was v{current})")
    )
    report.notes.append(f"Reason: {reason}")
    report.data.update(
        {
            "model": name,
            "alias": alias,
            "version": to_version,
            "previous": current,
            "audit_seq": entry.seq if entry else None,
        }
    )
    output.finish(report, report_dir=report_dir or Path("reports") / "mlflow-ci", as_json=as_json, echo=False)
    output.set_output("version", to_version)
    output.info(f"model {name!r} @{alias} rolled back from v{current} to v{to_version}: {reason}")
    return 0
