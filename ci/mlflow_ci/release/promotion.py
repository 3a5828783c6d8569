"""Promotion: aliases as a state machine ``candidate → challenger → champion`` (names configurable).

:func:`move_alias` is the one way mlflow-ci moves an alias, shared by register (→ candidate),
promote and rollback.  The caller holds the model's lease (:mod:`mlflow_ci.release.lease`).  Write order:

1. audit *intent* entry (from, to, who, why, approval);
2. version tags on the new version (``mlflow_ci.previous_<alias>`` = the version it replaces,
   approval) — harmless if we stop here, they are only read while the version holds the alias;
3. fencing check of the lease, then ``set_registered_model_alias`` — the single commit point;
4. audit *commit* entry.

A failure before 3 leaves the alias where it was and appends an *abort*; a failure during or after
3 (server gone) leaves a pending intent that the next registry command, or ``mlflow-ci audit
--verify``, settles by reading where the alias actually points.

:func:`promote` reads in four steps: :func:`plan_promotion` (which version would move, under which
rule), :func:`promotion_checks` (what the rule asks: gates, serve-check, approval), then, when they
pass, :func:`apply_promotion` (the move under the lease), and the report.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.config import Policy, PromotionRule, load_command_policy
from mlflow_ci.core import faults, output
from mlflow_ci.core.errors import CheckFailed, ConcurrentChange, ConfigError, PolicyError
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.mlflowio import lineage
from mlflow_ci.mlflowio.registry import (
    Connection,
    aliases,
    connect,
    get_version,
    mlflow_errors,
    version_label,
)
from mlflow_ci.mlflowio.tags import SUBJECT_TAG, VERDICT_TAG, approved_at_tag, approved_by_tag, previous_tag
from mlflow_ci.release.audit import AuditLog, Entry, observe, registry_change
from mlflow_ci.release.lease import Lease

FIRST = "none (first model)"  # how promotion reports names an alias no version holds yet


@dataclass(frozen=True)
class Actor:
    who: str
    workflow_run: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str], who: str | None = None) -> Actor:
        return cls(lineage.actor(env, who), lineage.workflow_run_url(env))


def move_alias(
    conn: Connection,
    log: AuditLog,
    lease: Lease,
    *,
    model: str,
    alias: str,
    to_version: str,
    op: str,
    actor: Actor,
    why: str = "",
    approved_by: str | None = None,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Entry | None:
    """Move ``model@alias`` to ``to_version`` atomically with its audit entries; None if already there."""
    current = aliases(conn, model).get(alias)
    if current == str(to_version):
        return None
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    extra = dict(details or {})
    if approved_by:
        extra["approved_at"] = stamp
    intent = log.append(
        model,
        op=op,
        phase="intent",
        who=actor.who,
        alias=alias,
        from_version=current,
        to_version=str(to_version),
        run_id=run_id,
        why=why,
        approved_by=approved_by,
        workflow_run=actor.workflow_run,
        details=extra,
    )
    faults.point("after_intent")
    try:
        client = conn.client
        with mlflow_errors(conn.server, f"tagging version {to_version} of model {model!r}"):
            client.set_model_version_tag(model, str(to_version), previous_tag(alias), current or "")
            if approved_by:
                client.set_model_version_tag(model, str(to_version), approved_by_tag(alias), approved_by)
                client.set_model_version_tag(model, str(to_version), approved_at_tag(alias), stamp)
        lease.check()
        faults.point("before_alias")
        with mlflow_errors(conn.server, f"moving alias {alias!r} of model {model!r} to version {to_version}"):
            client.set_registered_model_alias(model, alias, str(to_version))
        faults.point("after_alias")
        return log.append(
            model,
            op=op,
            phase="commit",
            who=actor.who,
            ref=intent.seq,
            alias=alias,
            from_version=current,
            to_version=str(to_version),
            run_id=run_id,
            workflow_run=actor.workflow_run,
        )
    except BaseException:
        settle_after_failure(log, intent, actor)
        raise


def settle_after_failure(log: AuditLog, intent: Entry, actor: Actor) -> None:
    """Best effort: record whether the failed change took effect; if the server is gone the intent
    stays pending and is reconciled later."""
    try:
        phase, _, why = observe(log.conn, intent)
        log.append(
            intent.model,
            op=intent.op,
            phase=phase,
            who=actor.who,
            ref=intent.seq,
            alias=intent.alias,
            from_version=intent.from_version,
            to_version=intent.to_version,
            run_id=intent.run_id,
            why=f"after a failure: {why}",
            workflow_run=actor.workflow_run,
        )
    except Exception as exc:  # the original error is what the user needs to see
        output.warning(f"could not record the outcome of audit entry #{intent.seq}: {exc}")


def role_of(policy: Policy, alias: str) -> str:
    a = policy.registry.aliases
    for role in ("candidate", "challenger", "champion"):
        if getattr(a, role) == alias:
            return role
    raise ConfigError(
        f"{alias!r} is not an alias of the promotion state machine; expected one of "
        f"{a.challenger!r} or {a.champion!r} (registry.aliases)."
    )


def gate_checks(
    conn: Connection,
    policy: Policy,
    rule: PromotionRule,
    *,
    model: str,
    alias: str,
    mv: Any,
    current_target: str | None,
    report: Report,
) -> None:
    """Add the checks a promotion rule asks for: gate verdicts and a baseline that is still current."""
    from mlflow_ci.release.gates import gate_record

    if rule.require_gates == "none":
        return
    record, reason = gate_record(conn, mv.run_id)
    if record is None:
        report.add(check("gates passed", False, expected="a recorded gate verdict", found=reason))
        return
    gates = record.get("data", {}).get("gates", [])
    if rule.require_gates == "all":
        verdict = record.get("verdict")
        failed = record.get("failures", [])
        report.add(
            check(
                "gates passed",
                verdict == "pass",
                expected="every gate passed",
                found="pass" if verdict == "pass" else f"failed: {', '.join(failed)}",
            )
        )
    else:
        for wanted in rule.require_gates:
            matching = [g for g in gates if g["id"] == wanted or g["id"].startswith(wanted + ":")]
            ok = bool(matching) and all(g["verdict"] == "pass" for g in matching)
            found = ", ".join(f"{g['id']}={g['verdict']}" for g in matching) or "not evaluated"
            report.add(check(f"gate {wanted}", ok, expected="pass", found=found))
    spec = record.get("data", {}).get("baseline_spec") or {}
    if rule.fresh_baseline and spec.get("source") == "alias" and spec.get("alias") == alias:
        base = record.get("data", {}).get("baseline") or {}
        compared = base.get("version")
        report.add(
            check(
                "baseline still current",
                compared == current_target,
                expected=f"gate compared with {model}@{alias} = {version_label(current_target, none=FIRST)}",
                found=f"gate compared with {version_label(compared, none=FIRST)}",
                detail=f"{model}@{alias} moved since the gate ran: run `mlflow-ci gate {mv.run_id}` again.",
            )
        )


def serve_check_passed(mv: Any) -> Check:
    """``require_serve_check``: the version carries a passed ``mlflow-ci serve-check`` (deploy branch)."""
    verdict = (mv.tags or {}).get(VERDICT_TAG)
    subject = (mv.tags or {}).get(SUBJECT_TAG, "")
    return check(
        "serve check passed",
        verdict == "pass",
        expected="a passed `mlflow-ci serve-check` of this version",
        found=f"{verdict} ({subject})" if verdict else "never serve-checked",
        detail=f"Run `mlflow-ci serve-check models:/{mv.name}/{mv.version}` (or of its image) first.",
    )


@dataclass(frozen=True)
class Plan:
    """What a promotion would move: ``version`` of ``model`` from ``@source`` to ``@to``, as the
    registry stood when it was read (``@to`` held ``previous``, ``@source`` held ``at_source``)."""

    model: str
    to: str
    source: str
    rule: PromotionRule
    version: str
    previous: str | None
    at_source: str | None
    mv: Any

    @property
    def changes(self) -> bool:
        return self.previous != self.version


def plan_promotion(conn: Connection, policy: Policy, *, model: str, to: str, version: str | None) -> Plan:
    """Which version would move to ``@to`` (``version``, else the one at the alias before it in the
    state machine) and under which rule; raises when nothing can move."""
    role = role_of(policy, to)
    if role == "candidate":
        raise PolicyError(
            f"{to!r} is where `mlflow-ci register` puts new versions; promote to "
            f"{policy.registry.aliases.challenger!r} or {policy.registry.aliases.champion!r}."
        )
    order = policy.registry.aliases.order()
    source = order[order.index(to) - 1]
    state = aliases(conn, model)
    chosen = version or state.get(source)
    if chosen is None:
        raise CheckFailed(
            f"No version of model {model!r} holds alias {source!r}, so nothing can move to {to!r}.",
            hint=f"Promote one to {source!r} first (the order is {' → '.join(order)}).",
        )
    return Plan(
        model=model,
        to=to,
        source=source,
        rule=getattr(policy.registry.promotion, role),
        version=str(chosen),
        previous=state.get(to),
        at_source=state.get(source),
        mv=get_version(conn, model, str(chosen)),
    )


def promotion_checks(
    conn: Connection, policy: Policy, plan: Plan, *, approved_by: str | None, report: Report
) -> None:
    """Add what the rule of ``@to`` asks for: the state machine, gates and a current baseline,
    a passed serve-check, an approver."""
    report.add(
        check(
            "state machine",
            plan.at_source == plan.version,
            expected=f"v{plan.version} holds @{plan.source}",
            found=f"@{plan.source} = {version_label(plan.at_source, none=FIRST)}",
            detail=f"Only the version at @{plan.source} can move to @{plan.to}.",
        )
    )
    gate_checks(
        conn,
        policy,
        plan.rule,
        model=plan.model,
        alias=plan.to,
        mv=plan.mv,
        current_target=plan.previous,
        report=report,
    )
    if plan.rule.require_serve_check:
        report.add(serve_check_passed(plan.mv))
    if plan.rule.approval:
        report.add(
            check(
                "approval",
                bool(approved_by),
                expected="an approver (--approved-by)",
                found=approved_by or "none",
                detail=f"Promotion to @{plan.to} requires approval: in GitHub, the job bound to the protected "
                "environment; on the command line, --approved-by NAME.",
            )
        )


def apply_promotion(
    conn: Connection, policy: Policy, plan: Plan, *, actor: Actor, reason: str, approved_by: str | None
) -> Entry | None:
    """Move the alias under the model's lease, through :func:`move_alias` and its audit entries;
    raises :class:`ConcurrentChange` when the registry moved since the plan was read."""
    faults.point("prepared")
    with registry_change(conn, plan.model, operation=f"promote v{plan.version} to @{plan.to}", actor=actor,
                         registry=policy.registry) as (lease, log):  # fmt: skip
        now = aliases(conn, plan.model)
        if now.get(plan.to) != plan.previous or now.get(plan.source) != plan.version:
            to_now, to_was, source_now = (
                version_label(v, none=FIRST) for v in (now.get(plan.to), plan.previous, now.get(plan.source))
            )
            raise ConcurrentChange(
                f"Model {plan.model!r} changed while this promotion was prepared: @{plan.to} is "
                f"{to_now} (was {to_was}), @{plan.source} is {source_now}. Nothing was changed.",
                hint="Another promotion or rollback won; check `mlflow-ci audit` and run again if still wanted.",
            )
        faults.point("locked")
        return move_alias(
            conn,
            log,
            lease,
            model=plan.model,
            alias=plan.to,
            to_version=plan.version,
            op="promote",
            actor=actor,
            why=reason,
            approved_by=approved_by,
            run_id=plan.mv.run_id,
        )


def promote(
    *,
    model: str | None,
    to: str,
    version: str | None = None,
    approved_by: str | None = None,
    reason: str = "",
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    report_dir: Path | None = None,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """``mlflow-ci promote MODEL --to ALIAS``: 0 promoted (or already there), 1 refused or lost a race."""
    env = os.environ if env is None else env
    policy = load_command_policy(policy_path, project_default=model or "mlflow-ci").policy
    name = model or policy.registry.model_name or policy.project
    conn = connect(tracking_uri)
    actor = Actor.from_env(env)
    plan = plan_promotion(conn, policy, model=name, to=to, version=version)
    report = _report(conn, plan, approved_by)
    if not plan.changes:
        output.info(f"model {name!r} version {plan.version} already holds alias {to!r}: nothing to do.")
        if as_json:
            report.add(
                check(f"alias {to}", True, expected=f"v{plan.version}", found=f"v{plan.version} (already)")
            )
            output.emit_json(report.to_dict())
        return 0
    was = version_label(plan.previous, none=FIRST)
    promotion_checks(conn, policy, plan, approved_by=approved_by, report=report)
    if report.verdict == "pass":
        try:
            entry = apply_promotion(conn, policy, plan, actor=actor, reason=reason, approved_by=approved_by)
        except ConcurrentChange as exc:
            report.add(check("exclusive change", False, expected="no concurrent change", found=str(exc)))
            _finish(report, report_dir, as_json)
            raise
        report.add(
            check(f"alias {to}", True, expected=f"v{plan.version}", found=f"v{plan.version} (was {was})")
        )
        report.data.update({"audit_seq": entry.seq if entry else None, "changed": entry is not None})
    if _finish(report, report_dir, as_json) != 0:
        failed = ", ".join(f"{c.name} ({c.found})" for c in report.failures)
        output.error(
            f"promotion of model {name!r} v{plan.version} to @{to} refused: {failed}.",
            title="promotion refused",
        )
        return 1
    output.set_output("version", plan.version)
    output.info(f"model {name!r} version {plan.version} is now @{to} (was {was}).")
    return 0


def _report(conn: Connection, plan: Plan, approved_by: str | None) -> Report:
    """The promotion's report, one shape whatever happens next (``data.changed`` says if it moved)."""
    report = Report(
        kind="promote",
        title=f"{plan.model} → @{plan.to}",
        tracking_uri=conn.server,
        run_id=plan.mv.run_id,
        run_url=conn.version_url(plan.model, plan.version),
    )
    report.data.update(
        {
            "model": plan.model,
            "alias": plan.to,
            "version": plan.version,
            "previous": plan.previous,
            "audit_seq": None,
            "approved_by": approved_by,
            "changed": False,
        }
    )
    return report


def _finish(report: Report, report_dir: Path | None, as_json: bool) -> int:
    """Files, job summary and ``--json``; people read the Markdown on stderr."""
    code = output.finish(
        report, report_dir=report_dir or Path("reports") / "mlflow-ci", as_json=as_json, echo=False
    )
    if not as_json:
        output.info(report.to_markdown())
    return code
