"""The tag names are stored on tracking servers: pin every one, so a refactoring cannot rename one
and orphan the tags written before it."""

from __future__ import annotations

from mlflow_ci.mlflowio import tags

PINNED = {
    "GIT_COMMIT": "mlflow_ci.git_commit",
    "LOCK_HASH": "mlflow_ci.lock_hash",
    "PYTHON_VERSION": "mlflow_ci.python_version",
    "MLFLOW_VERSION": "mlflow_ci.mlflow_version",
    "ENV_MANAGER": "mlflow_ci.env_manager",
    "GATE_VERDICT": "mlflow_ci.gate.verdict",
    "GATE_DIGEST": "mlflow_ci.gate.digest",
    "GATE_BASELINE": "mlflow_ci.gate.baseline",
    "GATE_PASSED": "mlflow_ci.gate.passed",
    "RUN_ID": "mlflow_ci.run_id",
    "PULL_REQUEST": "mlflow_ci.pull_request",
    "WORKFLOW_RUN": "mlflow_ci.workflow_run",
    "DATASET_DIGEST": "mlflow_ci.dataset_digest",
    "LOCK_FILE_HASH": "mlflow_ci.lock_file_hash",
    "VERSION_GATE_VERDICT": "mlflow_ci.gate_verdict",
    "VERSION_GATE_DIGEST": "mlflow_ci.gate_digest",
    "VERDICT_TAG": "mlflow_ci.serve_check.verdict",
    "SUBJECT_TAG": "mlflow_ci.serve_check.subject",
    "AT_TAG": "mlflow_ci.serve_check.at",
    "FAILURES_TAG": "mlflow_ci.serve_check.failures",
    "AUDIT_MODEL": "mlflow_ci.audit.model",
    "AUDIT_SEQ": "mlflow_ci.audit.seq",
    "AUDIT_ENTRY": "mlflow_ci.audit.entry",
    "AUDIT_HASH": "mlflow_ci.audit.hash",
    "AUDIT_OP": "mlflow_ci.audit.op",
    "AUDIT_PHASE": "mlflow_ci.audit.phase",
    "AUDIT_ANCHOR_PREFIX": "mlflow_ci.audit.head.",
    "LEASE_OWNER": "mlflow_ci.lease.owner",
    "LEASE_OPERATION": "mlflow_ci.lease.operation",
    "LEASE_ACTOR": "mlflow_ci.lease.actor",
    "LEASE_HOST": "mlflow_ci.lease.host",
    "LEASE_SECONDS": "mlflow_ci.lease.seconds",
    "LEASE_BROKEN_BY": "mlflow_ci.lease.broken_by",
}


def test_every_tag_name_keeps_its_string() -> None:
    names = {k: v for k, v in vars(tags).items() if k.isupper() and k != "TAG_PREFIX"}
    assert names == PINNED


def test_per_alias_tag_names() -> None:
    assert tags.previous_tag("champion") == "mlflow_ci.previous_champion"
    assert tags.approved_by_tag("champion") == "mlflow_ci.approved_by.champion"
    assert tags.approved_at_tag("challenger") == "mlflow_ci.approved_at.challenger"


def test_every_name_has_the_prefix() -> None:
    assert all(value.startswith(tags.TAG_PREFIX) for value in PINNED.values())
