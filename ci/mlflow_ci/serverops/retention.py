"""``mlflow-ci retention``: delete old runs by policy, never the ones that matter.

Rules (``retention.rules`` in ``mlflow-ci.yaml``) select runs per experiment: older than N days,
beyond the newest N, outside the best K by a metric.  A run is a candidate when some rule selects
it and no rule covering its experiment keeps it.  A candidate is **protected** (never touched,
listed with the reason) when

* a registered model version points at it: ``run_id``, a ``runs:/<id>/...`` source, or, in
  MLflow 3, a logged model whose ``source_run_id`` is the run;
* an alias points at such a version;
* it carries the ``pinned`` tag (``retention.protect_tag``) with a true value;
* it is still running.

A real run is two-phase, with state kept on the server:

1. candidates get the tag ``mlflow-ci.retention.deleted_at`` (epoch ms) and are soft-deleted
   (restorable with ``mlflow runs restore``);
2. runs carrying that tag whose grace period (``retention.grace_days``) has expired are checked
   again for protection (a version may have been registered meanwhile: then the run is restored)
   and purged with ``mlflow gc --run-ids``.

``mlflow gc`` also purges *every* deleted experiment and deleted logged model it finds, whatever
the run ids given.  Retention therefore refuses to call it while such collateral exists and says
which (exit 1): purging those is a decision for a person.

Every run (dry or real) also reports orphaned artifacts (objects under a run prefix with no run)
and registered versions whose artifacts are missing.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ci.config import Retention, RetentionRule
from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import CheckFailed, ConfigError
from mlflow_ci.core.report import Report, check
from mlflow_ci.serverops.artifact_stores import store_for

DELETED_AT_TAG = "mlflow-ci.retention.deleted_at"
DAY_MS = 86_400_000
_TRUE = {"1", "true", "yes", "on"}
_RUN_KEY = re.compile(r"^([^/]+)/([0-9a-f]{32})/")


@dataclass(frozen=True)
class RunView:
    """What retention needs to know about a run (built from the REST API; pure logic uses only this)."""

    run_id: str
    experiment_id: str
    experiment_name: str
    start_time: int
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    artifact_uri: str | None = None


@dataclass
class Plan:
    candidates: list[dict[str, Any]] = field(default_factory=list)
    protected: list[dict[str, Any]] = field(default_factory=list)


def _rules_for(experiment_name: str, rules: Iterable[RetentionRule]) -> list[RetentionRule]:
    return [r for r in rules if any(fnmatch.fnmatchcase(experiment_name, pat) for pat in r.experiments)]


def select(
    runs: Iterable[RunView], policy: Retention, protection: Mapping[str, list[str]], *, now_ms: int
) -> Plan:
    """Pure selection: which runs go, which are protected and why. No I/O."""
    by_exp: dict[str, list[RunView]] = {}
    for run in runs:
        by_exp.setdefault(run.experiment_id, []).append(run)
    plan = Plan()
    for exp_runs in by_exp.values():
        rules = _rules_for(exp_runs[0].experiment_name, policy.rules)
        if not rules:
            continue
        newest_first = sorted(exp_runs, key=lambda r: (r.start_time, r.run_id), reverse=True)
        kept: set[str] = set()
        selected: dict[str, str] = {}
        for rule in rules:
            rule_keep: set[str] = set()
            if rule.keep_last is not None:
                rule_keep.update(r.run_id for r in newest_first[: rule.keep_last])
            if rule.keep_best is not None:
                best = rule.keep_best
                scored = [r for r in exp_runs if best.metric in r.metrics]
                scored.sort(key=lambda r: r.metrics[best.metric], reverse=best.mode == "max")
                rule_keep.update(r.run_id for r in scored[: best.k])
            kept |= rule_keep
            cutoff = now_ms - int(rule.older_than_days * DAY_MS) if rule.older_than_days is not None else None
            for r in newest_first:
                if r.run_id in rule_keep:
                    continue
                if cutoff is not None and r.start_time >= cutoff:
                    continue
                why = []
                if rule.older_than_days is not None:
                    why.append(f"started more than {rule.older_than_days:g} days ago")
                if rule.keep_last is not None:
                    why.append(f"not among the newest {rule.keep_last}")
                if rule.keep_best is not None:
                    why.append(f"not among the best {rule.keep_best.k} by {rule.keep_best.metric}")
                selected.setdefault(r.run_id, ", ".join(why))
        for r in newest_first:
            if r.run_id not in selected or r.run_id in kept:
                continue
            reasons = list(protection.get(r.run_id, []))
            if r.tags.get(policy.protect_tag, "").strip().lower() in _TRUE:
                reasons.append(f"tag {policy.protect_tag}")
            if r.status == "RUNNING":
                reasons.append("still running")
            entry = {"run_id": r.run_id, "experiment": r.experiment_name, "experiment_id": r.experiment_id,
                     "start_time": r.start_time, "why": selected[r.run_id]}  # fmt: skip
            if reasons:
                plan.protected.append({**entry, "protected_by": reasons})
            else:
                plan.candidates.append(entry)
    return plan


def grace_expired(deleted_at_ms: int, grace_days: float, now_ms: int) -> bool:
    return now_ms - deleted_at_ms >= grace_days * DAY_MS


# --------------------------------------------------------------------------------------------
# Reading the server


def _paged(fetch: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = fetch(token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def protection_map(client: Any) -> dict[str, list[str]]:
    """run id → why it must be kept, from every registered version and alias."""
    out: dict[str, list[str]] = {}
    logged_source: dict[str, str | None] = {}
    for rm in _paged(lambda t: client.search_registered_models(max_results=1000, page_token=t)):
        full = client.get_registered_model(rm.name)
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in (full.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        versions = _paged(
            lambda t, name=rm.name: client.search_model_versions(
                f"name = '{name}'", max_results=1000, page_token=t
            )
        )
        for mv in versions:
            run_ids = set()
            if mv.run_id:
                run_ids.add(mv.run_id)
            m = re.match(r"^runs:/([0-9a-f]{32})/", mv.source or "")
            if m:
                run_ids.add(m.group(1))
            model_id = getattr(mv, "model_id", None)
            if model_id:
                if model_id not in logged_source:
                    try:
                        logged_source[model_id] = client.get_logged_model(model_id).source_run_id
                    except Exception:
                        logged_source[model_id] = None
                if logged_source[model_id]:
                    run_ids.add(logged_source[model_id])
            for run_id in run_ids:
                out.setdefault(run_id, []).append(f"registered version {mv.name} v{mv.version}")
                for alias in aliases_by_version.get(str(mv.version), []):
                    out[run_id].append(f"alias {mv.name}@{alias}")
    return out


def list_runs(client: Any, *, view: str = "active") -> list[RunView]:
    from mlflow.entities import ViewType

    exps = _paged(lambda t: client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=t))
    names = {e.experiment_id: e.name for e in exps}
    run_view = {"active": ViewType.ACTIVE_ONLY, "deleted": ViewType.DELETED_ONLY, "all": ViewType.ALL}[view]
    runs: list[RunView] = []
    ids = list(names)
    for i in range(0, len(ids), 100):  # the API takes a bounded list of experiments per call
        chunk = ids[i : i + 100]
        for r in _paged(
            lambda t, c=chunk: client.search_runs(c, run_view_type=run_view, max_results=1000, page_token=t)
        ):
            runs.append(RunView(run_id=r.info.run_id, experiment_id=r.info.experiment_id,
                                experiment_name=names.get(r.info.experiment_id, ""), start_time=r.info.start_time or 0,
                                status=r.info.status, tags=dict(r.data.tags), metrics=dict(r.data.metrics),
                                artifact_uri=r.info.artifact_uri))  # fmt: skip
    return runs


def _prefix(artifact_uri: str | None) -> str | None:
    if artifact_uri and artifact_uri.startswith("mlflow-artifacts:"):
        return artifact_uri.split(":", 1)[1].strip("/")
    return None


def scan_artifacts(artifacts_uri: str | None, runs: list[RunView]) -> dict[str, Any]:
    """Bytes per run prefix, orphaned prefixes (no such run) — one listing of the whole store."""
    if not artifacts_uri:
        return {"scanned": False, "bytes_by_run": {}, "orphans": []}
    per_prefix: dict[str, int] = {}
    run_objects: dict[str, tuple[str, int, int]] = {}
    for obj in store_for(artifacts_uri).list():
        m = _RUN_KEY.match(obj.key)
        if not m:
            continue
        exp_id, run_id = m.groups()
        count, size = run_objects.get(run_id, ("", 0, 0))[1:]
        run_objects[run_id] = (exp_id, count + 1, size + obj.size)
        per_prefix[run_id] = per_prefix.get(run_id, 0) + obj.size
    known = {r.run_id for r in runs}
    orphans = [{"prefix": f"{exp}/{rid}/", "objects": n, "bytes": b}
               for rid, (exp, n, b) in sorted(run_objects.items()) if rid not in known]  # fmt: skip
    return {"scanned": True, "bytes_by_run": per_prefix, "orphans": orphans}


def missing_version_artifacts(client: Any, artifacts_uri: str | None) -> list[dict[str, Any]]:
    """Registered versions whose source has no object in the artifact store."""
    if not artifacts_uri:
        return []
    store = store_for(artifacts_uri)
    out = []
    for mv in _paged(lambda t: client.search_model_versions(max_results=1000, page_token=t)):
        source = mv.source or ""
        prefix = None
        if source.startswith("models:/"):
            try:
                prefix = _prefix(
                    client.get_logged_model(source.split("/", 1)[1].strip("/")).artifact_location
                )
            except Exception:
                prefix = None
        elif source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            try:
                base = _prefix(client.get_run(run_id).info.artifact_uri)
            except Exception:
                base = None
            prefix = f"{base}/{path}".rstrip("/") if base else None
        elif source.startswith("mlflow-artifacts:"):
            prefix = _prefix(source)
        if prefix is None:
            continue
        if (
            next(iter(store.list(prefix + "/")), None) is None
            and next(iter(store.list(prefix)), None) is None
        ):
            out.append({"model": mv.name, "version": mv.version, "source": source})
    return out


# --------------------------------------------------------------------------------------------
# The real run: soft delete, then gc after the grace period


def _collateral(backend_store_uri: str, older_than_ms: int | None) -> dict[str, list[str]]:
    """What `mlflow gc` would purge besides the given runs: deleted experiments and logged models."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from mlflow_ci.serverops.backends import backend_for

    backend = backend_for(backend_store_uri)
    url = getattr(backend, "sqlalchemy_url", backend_store_uri)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            exp_sql = "SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'deleted'"
            lm_sql = "SELECT model_id FROM logged_models WHERE lifecycle_stage = 'deleted'"
            params: dict[str, Any] = {}
            if older_than_ms is not None:
                exp_sql += " AND last_update_time < :t"
                lm_sql += " AND last_updated_timestamp_ms < :t"
                params["t"] = int(time.time() * 1000) - older_than_ms
            exps = [str(r[0]) for r in conn.execute(text(exp_sql), params)]
            models = [str(r[0]) for r in conn.execute(text(lm_sql), params)]
    finally:
        engine.dispose()
    return {"experiments": exps, "logged_models": models}


def run_gc(*, run_ids: list[str], backend_store_uri: str, artifacts_uri: str | None, tracking_uri: str,
           older_than_days: float) -> str:  # fmt: skip
    args = ["mlflow", "gc", "--backend-store-uri", backend_store_uri, "--run-ids", ",".join(run_ids),
            "--tracking-uri", tracking_uri]  # fmt: skip
    if artifacts_uri:
        args += ["--artifacts-destination", artifacts_uri]
    if older_than_days > 0:
        args += ["--older-than", f"{older_than_days:g}d"]
    from mlflow_ci.mlflowio.tracking import client_env

    return proc.run(args, env=client_env(tracking_uri), what="mlflow gc", timeout=3600).output


def retention(*, tracking_uri: str, policy: Retention, backend_store_uri: str | None = None,
              artifacts_uri: str | None = None, dry_run: bool = True, now_ms: int | None = None) -> Report:  # fmt: skip
    """Plan (and unless ``dry_run``, apply) the retention policy; return the report."""
    from mlflow import MlflowClient

    from mlflow_ci.mlflowio.tracking import client_settings, require_reachable

    if not policy.rules:
        raise ConfigError(
            "No retention rules.", hint="Add retention.rules to mlflow-ci.yaml (see docs/server-ops.md)."
        )
    if not dry_run and not backend_store_uri:
        raise ConfigError(
            "A real retention run needs the backend store URI for `mlflow gc`.",
            hint="Pass --backend-store-uri or set server.backend_store_uri.",
        )
    require_reachable(tracking_uri)
    now_ms = now_ms or int(time.time() * 1000)
    report = Report(kind="retention", title=("dry run" if dry_run else "real run") + f" on {tracking_uri}")
    with client_settings(tracking_uri):
        client = MlflowClient(tracking_uri)
        active = list_runs(client, view="active")
        protection = protection_map(client)
        plan = select(active, policy, protection, now_ms=now_ms)
        all_runs = list_runs(client, view="all")
        scan = scan_artifacts(artifacts_uri, all_runs)
        for entry in plan.candidates:
            entry["bytes"] = scan["bytes_by_run"].get(entry["run_id"])
        missing = missing_version_artifacts(client, artifacts_uri)
        report.data.update({"candidates": plan.candidates, "protected": plan.protected,
                            "orphans": scan["orphans"], "missing_version_artifacts": missing,
                            "artifacts_scanned": scan["scanned"], "dry_run": dry_run})  # fmt: skip
        total_bytes = sum(e["bytes"] or 0 for e in plan.candidates)
        report.add(check("runs selected for deletion", True, expected="by retention.rules",
                         found=f"{len(plan.candidates)} runs, {total_bytes} bytes of artifacts"))  # fmt: skip
        report.add(check("protected runs kept", True, expected="versions, aliases, pinned, running never deleted",
                         found=f"{len(plan.protected)} protected candidates kept"))  # fmt: skip
        report.add(check("orphaned artifacts", not scan["orphans"], advisory=True, expected="none",
                         found=f"{len(scan['orphans'])} run prefixes, {sum(o['bytes'] for o in scan['orphans'])} bytes"
                         if scan["scanned"] else "not scanned (no --artifacts-destination)"))  # fmt: skip
        report.add(check("registered versions with missing artifacts", not missing, advisory=True, expected="none",
                         found=", ".join(f"{m['model']} v{m['version']}" for m in missing[:5]) or "none"))  # fmt: skip
        if dry_run:
            report.notes.append("dry run: nothing was deleted")
            return report

        # Phase 1: tag, then soft-delete (tags cannot be set on deleted runs).
        for entry in plan.candidates:
            client.set_tag(entry["run_id"], DELETED_AT_TAG, str(now_ms))
            client.delete_run(entry["run_id"])
        report.data["soft_deleted"] = [e["run_id"] for e in plan.candidates]

        # Phase 2: purge runs whose grace has expired, unless they became protected meanwhile.
        protection = protection_map(client)
        expired, waiting, rescued = [], [], []
        for run in list_runs(client, view="deleted"):
            stamp = run.tags.get(DELETED_AT_TAG)
            if not stamp or not stamp.isdigit():
                continue  # deleted by someone else: not ours to purge
            if run.run_id in protection:
                client.restore_run(run.run_id)
                rescued.append({"run_id": run.run_id, "protected_by": protection[run.run_id]})
            elif grace_expired(int(stamp), policy.grace_days, now_ms):
                expired.append(run.run_id)
            else:
                waiting.append(
                    {"run_id": run.run_id, "purge_after": int(stamp) + int(policy.grace_days * DAY_MS)}
                )
        report.data.update({"awaiting_grace": waiting, "restored": rescued, "purged": []})
        if expired:
            collateral = _collateral(backend_store_uri or "", int(policy.grace_days * DAY_MS) or None)
            if collateral["experiments"] or collateral["logged_models"]:
                report.add(check("mlflow gc", False, expected="purges only the expired runs",
                                 found=f"would also purge deleted experiments {collateral['experiments'][:5]} and "
                                 f"logged models {collateral['logged_models'][:5]}",
                                 detail="mlflow gc purges every deleted experiment and logged model it finds. "
                                 "Restore them (mlflow experiments restore) or purge them deliberately first."))  # fmt: skip
                return report
            run_gc(run_ids=expired, backend_store_uri=backend_store_uri or "", artifacts_uri=artifacts_uri,
                   tracking_uri=tracking_uri, older_than_days=policy.grace_days)  # fmt: skip
            report.data["purged"] = expired
        report.add(check("soft delete, grace, gc", True, expected=f"grace {policy.grace_days:g} days",
                         found=f"{len(plan.candidates)} soft-deleted, {len(waiting)} waiting, "
                         f"{len(expired)} purged, {len(rescued)} restored (became protected)"))  # fmt: skip
    return report


# --------------------------------------------------------------------------------------------
# The command


def retention_command(*, tracking_uri: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                      dry_run: bool, policy_path: Path | None, report_dir: Path | None, as_json: bool) -> int:  # fmt: skip
    from mlflow_ci.serverops.profile import resolve_ops

    ops = resolve_ops(policy_path, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri)
    # Built-in defaults (./mlflow.db, ./mlartifacts) name no real server: use only what was configured.
    backend = ops.backend_store_uri if ops.source_of("server.backend_store_uri") != "default" else None
    artifacts = ops.artifacts_uri if ops.source_of("server.artifacts_destination") != "default" else None
    uri = tracking_uri or ops.server.public_url
    if not uri:
        raise ConfigError("No tracking server to apply retention to.",
                          hint="Pass --tracking-uri (or set MLFLOW_TRACKING_URI or server.public_url).")  # fmt: skip
    report = retention(tracking_uri=uri, policy=ops.retention, backend_store_uri=backend,
                       artifacts_uri=artifacts, dry_run=dry_run)  # fmt: skip
    output.set_output("retention_candidates", str(len(report.data["candidates"])))
    # For people: the report, then one line per run deleted (or that would be) and per run kept.
    lines = [report.to_markdown()]
    for entry in report.data["candidates"]:
        lines.append(f"  {'would delete' if dry_run else 'deleted'} {entry['run_id']} ({entry['experiment']}): "
                     f"{entry['why']}; {entry['bytes'] if entry['bytes'] is not None else '?'} bytes")  # fmt: skip
    for entry in report.data["protected"]:
        lines.append(f"  kept {entry['run_id']} ({entry['experiment']}): {', '.join(entry['protected_by'])}")
    output.emit_report(report, report_dir=report_dir, as_json=as_json, text="\n".join(lines))
    if report.verdict == "fail":
        raise CheckFailed("; ".join(f"{c.name}: {c.found}" for c in report.failures) + ".")
    return 0
