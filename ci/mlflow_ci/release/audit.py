"""The audit trail: a hash-chained, append-only log of every registry change, on the tracking server.

Storage: one experiment (``registry.audit_experiment``, default ``mlflow-ci-audit``) holds one run
per entry.  An entry is written by a single ``create_run`` whose tags carry the model, a zero-padded
sequence number, the entry body (canonical JSON, including the previous entry's hash) and its
SHA-256.  Entries are never modified: a change is an *intent* entry, then a *commit* or *abort*
entry referring to it, so a crash between the two leaves a visible pending intent that
:func:`reconcile` settles from the registry's actual state.  The newest ``seq:hash`` is also kept
as an experiment tag (the anchor), so editing the last entry is caught too.

Queries never scan the log: the head is ``search_runs(filter=model, order_by=seq DESC,
max_results=1)``; ``mlflow-ci audit`` pages through one model's entries; only ``--verify`` reads
them all, which is what verifying a chain means.

Tamper-evident, not tamper-proof: someone allowed to edit both the runs and the experiment tag can
rewrite history consistently.  The workflows print the head hash in the job log, an outside witness.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.report import Report, check
from mlflow_ci.mlflowio.registry import (
    Connection,
    aliases_or_empty,
    error_code,
    latest_version_number,
    mlflow_errors,
    version_for_run,
    version_label,
)
from mlflow_ci.mlflowio.tags import (
    AUDIT_ANCHOR_PREFIX,
    AUDIT_ENTRY,
    AUDIT_HASH,
    AUDIT_MODEL,
    AUDIT_OP,
    AUDIT_PHASE,
    AUDIT_SEQ,
)
from mlflow_ci.release.lease import Lease, acquire

GENESIS = "0" * 64
SEQ_WIDTH = 10
MAX_WHY = 2000

Phase = Literal["intent", "commit", "abort"]


@dataclass(frozen=True)
class Entry:
    """One audit entry. ``alias`` set means an alias move (``from_version`` → ``to_version``)."""

    seq: int
    model: str
    op: str
    phase: Phase
    who: str
    when: str
    prev_hash: str
    ref: int | None = None
    alias: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    run_id: str | None = None
    why: str = ""
    approved_by: str | None = None
    workflow_run: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()

    @classmethod
    def parse(cls, text: str) -> Entry:
        data = json.loads(text)
        return cls(**data)

    def summary(self) -> str:
        move = ""
        if self.alias:
            move = f" @{self.alias}: {version_label(self.from_version)} → {version_label(self.to_version)}"
        elif self.to_version:
            move = f" version {self.to_version}"
        ref = f" (of #{self.ref})" if self.ref else ""
        return f"#{self.seq} {self.op} {self.phase}{ref}{move}"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Stored:
    """An entry as found on the server, with what is needed to check it."""

    run_id: str
    seq_tag: str
    hash_tag: str
    deleted: bool
    entry: Entry | None
    error: str = ""


class AuditLog:
    """The audit log of every model on one tracking server."""

    def __init__(self, conn: Connection, experiment: str = "mlflow-ci-audit") -> None:
        self.conn = conn
        self.experiment_name = experiment
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._ensure_experiment()
        return self._experiment_id

    def _ensure_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self.conn.client
        with mlflow_errors(self.conn.server, f"opening the audit experiment {self.experiment_name!r}"):
            exp = client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                if exp.lifecycle_stage != "active":
                    raise ConfigError(
                        f"The audit experiment {self.experiment_name!r} on {self.conn.server} is deleted.",
                        hint="Restore it (mlflow experiments restore) so the audit log stays whole.",
                    )
                return str(exp.experiment_id)
            try:
                return str(
                    client.create_experiment(
                        self.experiment_name,
                        tags={"mlflow.note.content": "mlflow-ci audit log. Append-only."},
                    )
                )
            except MlflowException as exc:
                if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(self.experiment_name)
                return str(exp.experiment_id)

    # -- reading ---------------------------------------------------------------------------------

    def _filter(self, model: str) -> str:
        return f"tags.`{AUDIT_MODEL}` = '{model.replace(chr(39), chr(92) + chr(39))}'"

    def head(self, model: str) -> Stored | None:
        """The newest entry of ``model``: one query, whatever the length of the log."""
        from mlflow.entities import ViewType

        with mlflow_errors(self.conn.server, f"reading the audit log head of model {model!r}"):
            runs = self.conn.client.search_runs(
                [self.experiment_id],
                filter_string=self._filter(model),
                run_view_type=ViewType.ALL,
                order_by=[f"tags.`{AUDIT_SEQ}` DESC"],
                max_results=1,
            )
        return _stored(runs[0]) if runs else None

    def iter_entries(
        self, model: str, *, newest_first: bool = False, limit: int | None = None
    ) -> Iterator[Stored]:
        from mlflow.entities import ViewType

        token = None
        seen = 0
        while True:
            with mlflow_errors(self.conn.server, f"reading the audit log of model {model!r}"):
                page = self.conn.client.search_runs(
                    [self.experiment_id],
                    filter_string=self._filter(model),
                    run_view_type=ViewType.ALL,
                    order_by=[f"tags.`{AUDIT_SEQ}` {'DESC' if newest_first else 'ASC'}"],
                    max_results=min(1000, limit - seen) if limit else 1000,
                    page_token=token,
                )
            for run in page:
                yield _stored(run)
                seen += 1
                if limit and seen >= limit:
                    return
            token = page.token
            if not token:
                return

    def models(self) -> list[str]:
        """Models that have an anchor in this log (one call)."""
        with mlflow_errors(self.conn.server, "reading the audit experiment"):
            exp = self.conn.client.get_experiment(self.experiment_id)
        return sorted(
            k[len(AUDIT_ANCHOR_PREFIX) :] for k in (exp.tags or {}) if k.startswith(AUDIT_ANCHOR_PREFIX)
        )

    def anchor(self, model: str) -> str | None:
        with mlflow_errors(self.conn.server, "reading the audit experiment"):
            exp = self.conn.client.get_experiment(self.experiment_id)
        return (exp.tags or {}).get(AUDIT_ANCHOR_PREFIX + model)

    # -- writing (callers hold the model's lease) --------------------------------------------------

    def append(self, model: str, *, op: str, phase: Phase, who: str, **fields: Any) -> Entry:
        head = self.head(model)
        if head is not None and head.entry is None:
            raise InfraError(
                f"The newest audit entry of model {model!r} (run {head.run_id}) cannot be read: "
                f"{head.error}. "
                "Refusing to extend a damaged log.",
                hint="Run `mlflow-ci audit --verify` to see what is wrong.",
            )
        seq = head.entry.seq + 1 if head and head.entry else 1
        prev = head.hash_tag if head else GENESIS
        if fields.get("why"):
            fields["why"] = str(fields["why"])[:MAX_WHY]
        entry = Entry(
            seq=seq, model=model, op=op, phase=phase, who=who, when=now_iso(), prev_hash=prev, **fields
        )
        digest = entry.digest
        tags = {
            AUDIT_MODEL: model,
            AUDIT_SEQ: str(seq).zfill(SEQ_WIDTH),
            AUDIT_ENTRY: entry.canonical(),
            AUDIT_HASH: digest,
            AUDIT_OP: op,
            AUDIT_PHASE: phase,
            "mlflow.runName": f"{model} #{seq} {op} {phase}",
            "mlflow.user": who,
        }
        client = self.conn.client
        with mlflow_errors(self.conn.server, f"appending audit entry #{seq} for model {model!r}"):
            run = client.create_run(self.experiment_id, tags=tags, run_name=tags["mlflow.runName"])
            client.set_experiment_tag(self.experiment_id, AUDIT_ANCHOR_PREFIX + model, f"{seq}:{digest}")
            client.update_run(run.info.run_id, status="FINISHED")  # set_terminated prints a URL on stdout
        return entry

    def pending(self, model: str) -> Entry | None:
        head = self.head(model)
        if head and head.entry and head.entry.phase == "intent":
            return head.entry
        return None


def _stored(run: Any) -> Stored:
    tags = run.data.tags
    entry, error = None, ""
    try:
        entry = Entry.parse(tags.get(AUDIT_ENTRY, ""))
    except (ValueError, TypeError) as exc:
        error = f"entry body is not valid ({type(exc).__name__}: {exc})"
    return Stored(
        run_id=run.info.run_id,
        seq_tag=tags.get(AUDIT_SEQ, ""),
        hash_tag=tags.get(AUDIT_HASH, ""),
        deleted=run.info.lifecycle_stage != "active",
        entry=entry,
        error=error,
    )


# ------------------------------------------------------------------------------------------------
# Reconciling a pending intent with the registry's actual state


def observe(conn: Connection, intent: Entry) -> tuple[Phase, str | None, str]:
    """Did ``intent`` take effect? Returns (commit|abort, version, explanation)."""
    if intent.alias:
        current = aliases_or_empty(conn, intent.model).get(intent.alias)
        if current == intent.to_version:
            return (
                "commit",
                current,
                f"alias {intent.alias!r} points at {version_label(current)}: the change took effect",
            )
        if current == intent.from_version:
            return (
                "abort",
                current,
                f"alias {intent.alias!r} still points at {version_label(current)}: the change did not happen",
            )
        return (
            "abort",
            current,
            (
                f"alias {intent.alias!r} points at {version_label(current)}, neither {version_label(intent.from_version)} nor "
                f"{version_label(intent.to_version)}: moved out of band"
            ),
        )
    if intent.op == "register" and intent.run_id:
        found = version_for_run(conn, intent.model, intent.run_id)
        if found is not None:
            return "commit", str(found.version), f"version {found.version} exists for run {intent.run_id}"
        return "abort", None, f"no version exists for run {intent.run_id}"
    return "abort", None, "unknown operation; recorded as not applied"


@contextlib.contextmanager
def registry_change(conn: Connection, model: str, *, operation: str, actor: Any, registry: Any,
                    wait: float = 0.0) -> Iterator[tuple[Lease, AuditLog]]:  # fmt: skip
    """How every registry change (register, promote, rollback) begins: the model's lease, then,
    under it, the audit log with any intent a killed change left settled.  ``actor`` has ``who``
    and ``workflow_run``; ``registry`` is the policy's ``registry`` section."""
    with acquire(conn, model, operation=operation, actor=actor.who, seconds=registry.lease_seconds,
                 wait=wait) as lease:  # fmt: skip
        log = AuditLog(conn, registry.audit_experiment)
        reconcile(log, model, who=actor.who, workflow_run=actor.workflow_run)
        yield lease, log


def reconcile(log: AuditLog, model: str, *, who: str, workflow_run: str | None = None) -> Entry | None:
    """Settle a pending intent of ``model`` (caller holds the lease). Returns the entry appended."""
    intent = log.pending(model)
    if intent is None:
        return None
    phase, version, why = observe(log.conn, intent)
    return log.append(
        model,
        op=intent.op,
        phase=phase,
        who=who,
        ref=intent.seq,
        alias=intent.alias,
        from_version=intent.from_version,
        to_version=version if intent.op == "register" else intent.to_version,
        run_id=intent.run_id,
        why=f"reconciled: {why}",
        workflow_run=workflow_run,
        details={"reconciled": True},
    )


# ------------------------------------------------------------------------------------------------
# Verification


@dataclass
class Replay:
    """The registry state the log implies, and what is wrong with the log."""

    aliases: dict[str, str | None] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    pending: Entry | None = None
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS


def replay(stored: list[Stored]) -> Replay:
    """Check the chain (hashes, order, gaps, deletions) and replay committed changes."""
    out = Replay()
    prev_hash = GENESIS
    expected = 1
    intents: dict[int, Entry] = {}
    for item in stored:
        out.entries += 1
        label = f"entry in run {item.run_id}"
        if item.entry is None:
            out.problems.append(f"{label}: {item.error}")
            prev_hash = item.hash_tag
            expected += 1
            continue
        e = item.entry
        label = f"entry #{e.seq} (run {item.run_id})"
        if item.deleted:
            out.problems.append(f"{label} was deleted (runs of the audit log must stay active)")
        if item.seq_tag != str(e.seq).zfill(SEQ_WIDTH):
            out.problems.append(f"{label}: its seq tag {item.seq_tag!r} does not match its body")
        if e.seq != expected:
            what = "missing" if e.seq > expected else "repeated"
            out.problems.append(f"{label}: expected #{expected}; entries are {what} (chain broken)")
        if e.digest != item.hash_tag:
            out.problems.append(f"{label}: its content does not match its hash (edited after it was written)")
        if e.prev_hash != prev_hash:
            out.problems.append(f"{label}: it does not link to the entry before it (chain broken)")
        prev_hash = item.hash_tag
        expected = e.seq + 1
        if e.phase == "intent":
            intents[e.seq] = e
            out.pending = e
            continue
        out.pending = None
        intent = intents.pop(e.ref or -1, None)
        if intent is None:
            out.problems.append(f"{label}: {e.phase} refers to #{e.ref}, which is not an open intent")
            continue
        if e.phase == "commit":
            if intent.alias:
                out.aliases[intent.alias] = intent.to_version
            if e.to_version:
                out.versions.add(str(e.to_version))
    for seq in intents:
        if out.pending is None or seq != out.pending.seq:
            out.problems.append(
                f"entry #{seq}: intent never committed or aborted, and later entries followed it"
            )
    out.head_seq = expected - 1
    out.head_hash = prev_hash
    return out


def verify(
    log: AuditLog,
    model: str,
    *,
    managed_aliases: list[str],
    reconcile_with: str | None = None,
    workflow_run: str | None = None,
) -> Report:
    """Check ``model``'s chain and compare it with the registry. ``reconcile_with`` (an actor)
    settles a pending intent first, under the model's lease."""
    from mlflow_ci.core.errors import ConcurrentChange

    report = Report(kind="audit", title=f"audit log of model {model!r}", tracking_uri=log.conn.server)
    if reconcile_with and log.pending(model) is not None:
        try:
            with acquire(log.conn, model, operation="audit reconcile", actor=reconcile_with, wait=10):
                settled = reconcile(log, model, who=reconcile_with, workflow_run=workflow_run)
            if settled is not None:
                report.notes.append(f"Settled a pending change: {settled.summary()} — {settled.why}.")
        except ConcurrentChange as exc:
            report.notes.append(f"A change is in progress, not reconciled: {exc}")
    stored = list(log.iter_entries(model))
    state = replay(stored)
    report.data["entries"] = state.entries
    report.data["head"] = {"seq": state.head_seq, "hash": state.head_hash}
    report.add(
        check(
            "hash chain",
            not state.problems,
            expected="every entry links to the one before and matches its hash",
            found=f"{state.entries} entries intact" if not state.problems else "; ".join(state.problems),
        )
    )
    anchor = log.anchor(model)
    if state.entries:
        want = f"{state.head_seq}:{state.head_hash}"
        report.add(
            check(
                "head anchor",
                anchor == want,
                expected=want,
                found=anchor or "(missing)",
                detail="The experiment tag naming the newest entry disagrees with the log: "
                "the last entry was "
                "edited or removed, or the anchor itself was changed.",
            )
        )
    if state.pending is not None:
        report.add(
            check(
                "pending change",
                False,
                expected="no half-finished change",
                found=state.pending.summary(),
                advisory=True,
                detail="Run `mlflow-ci audit --verify` without --no-reconcile once the change's "
                "process is gone.",
            )
        )
    actual = aliases_or_empty(log.conn, model)
    names = sorted(set(managed_aliases) | set(state.aliases))
    for alias in names:
        logged = state.aliases.get(alias)
        found = actual.get(alias)
        report.add(
            check(
                f"alias {alias}",
                logged == found,
                expected=f"{version_label(logged)} (audit log)",
                found=f"{version_label(found)} (registry)",
                detail=f"Alias {alias!r} of model {model!r} was moved out of band (no audit entry says so)."
                if logged != found
                else "",
            )
        )
    for alias in sorted(set(actual) - set(names)):
        report.notes.append(f"Alias {alias!r} → v{actual[alias]} is not managed by mlflow-ci (not checked).")
    newest = latest_version_number(log.conn, model)
    if newest is not None:
        known = max((int(v) for v in state.versions), default=0)
        report.add(
            check(
                "versions",
                newest <= known,
                expected=f"newest version registered through mlflow-ci (v{known})" if known else "none",
                found=f"newest version v{newest}",
                advisory=True,
                detail="Versions newer than the log's were registered out of band.",
            )
        )
    return report


# ------------------------------------------------------------------------------------------------
# `mlflow-ci audit`


def audit_command(
    *,
    model: str | None,
    verify_chain: bool = False,
    reconcile_pending: bool = True,
    limit: int = 50,
    policy_path: Any = None,
    tracking_uri: str | None = None,
    report_dir: Any = None,
    as_json: bool = False,
    env: Any = None,
) -> int:
    """History (newest first), or with ``verify_chain`` the verdict: 0 intact, 1 broken or out of band."""
    import os
    from pathlib import Path

    from mlflow_ci.config import load_command_policy
    from mlflow_ci.core import output
    from mlflow_ci.mlflowio import lineage
    from mlflow_ci.mlflowio.registry import connect

    env = os.environ if env is None else env
    policy = load_command_policy(policy_path, project_default=model or "mlflow-ci").policy
    conn = connect(tracking_uri)
    log = AuditLog(conn, policy.registry.audit_experiment)
    names = [model or policy.registry.model_name or policy.project]
    if model is None and policy.registry.model_name is None and verify_chain:
        names = log.models() or names
    if not verify_chain:
        rows = list(log.iter_entries(names[0], newest_first=True, limit=limit))
        if as_json:
            output.emit_json(
                [
                    {"run_id": s.run_id, "hash": s.hash_tag, **(asdict(s.entry) if s.entry else {})}
                    for s in rows
                ]
            )
            return 0
        for s in rows:
            e = s.entry
            if e is None:
                print(f"?? run {s.run_id}: {s.error}")
                continue
            extra = "".join(
                f" | {k}: {v}"
                for k, v in (("why", e.why), ("approved by", e.approved_by), ("workflow", e.workflow_run))
                if v
            )
            print(f"{e.when}  {e.summary():<48} by {e.who}{extra}")
        if not rows:
            output.info(f"no audit entries for model {names[0]!r} in experiment {log.experiment_name!r}.")
        return 0
    actor = lineage.actor(env)
    failed = False
    reports = []
    for name in names:
        report = verify(
            log,
            name,
            managed_aliases=policy.registry.aliases.order(),
            reconcile_with=actor if reconcile_pending else None,
            workflow_run=lineage.workflow_run_url(env),
        )
        reports.append(report)
        folder = Path(report_dir) if report_dir else Path("reports") / "mlflow-ci"
        code = output.finish(report, report_dir=folder, as_json=False, echo=False)
        failed = failed or code != 0
        if not as_json:
            output.info(report.to_markdown())
        head = report.data.get("head", {})
        output.info(f"audit head of {name!r}: #{head.get('seq')} {head.get('hash')}")
    if as_json:
        output.emit_json([r.to_dict() for r in reports])
    return 1 if failed else 0
