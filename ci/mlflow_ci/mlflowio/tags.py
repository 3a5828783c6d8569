"""The names of the tags mlflow-ci writes on runs, model versions, registered models and
experiments, in one place.

Every capability reads and writes them through these names, so that one package can read what
another recorded (promotion reads the serve-check's verdict) without importing it.  The strings
are stored on tracking servers: changing one orphans every tag written before.
"""

from __future__ import annotations

TAG_PREFIX = "mlflow_ci."

# -- runs: what `mlflow-ci smoke` records (mlflowio.lineage.facts) ---------------------------------
GIT_COMMIT = "mlflow_ci.git_commit"
LOCK_HASH = "mlflow_ci.lock_hash"
PYTHON_VERSION = "mlflow_ci.python_version"
MLFLOW_VERSION = "mlflow_ci.mlflow_version"
ENV_MANAGER = "mlflow_ci.env_manager"

# -- runs: the gate's verdict (release.gates) ------------------------------------------------------
GATE_VERDICT = "mlflow_ci.gate.verdict"
GATE_DIGEST = "mlflow_ci.gate.digest"
GATE_BASELINE = "mlflow_ci.gate.baseline"
GATE_PASSED = "mlflow_ci.gate.passed"

# -- model versions: lineage written by `mlflow-ci register` (release.register) --------------------
# GIT_COMMIT above is also a version tag, with the same value as on the run.
RUN_ID = "mlflow_ci.run_id"
PULL_REQUEST = "mlflow_ci.pull_request"
WORKFLOW_RUN = "mlflow_ci.workflow_run"
DATASET_DIGEST = "mlflow_ci.dataset_digest"
LOCK_FILE_HASH = "mlflow_ci.lock_file_hash"
VERSION_GATE_VERDICT = "mlflow_ci.gate_verdict"
VERSION_GATE_DIGEST = "mlflow_ci.gate_digest"


# -- model versions: alias moves (release.promotion) -----------------------------------------------
def previous_tag(alias: str) -> str:
    """Version tag naming the version that held ``alias`` before this one.

    For ``champion`` it is ``mlflow_ci.previous_champion``.
    """
    return f"mlflow_ci.previous_{alias}"


def approved_by_tag(alias: str) -> str:
    """Version tag naming who approved the move of ``alias`` to this version."""
    return f"mlflow_ci.approved_by.{alias}"


def approved_at_tag(alias: str) -> str:
    """Version tag saying when the move of ``alias`` to this version was approved."""
    return f"mlflow_ci.approved_at.{alias}"


# -- model versions: serving.servecheck records its verdict on the version it checked --------------
VERDICT_TAG = "mlflow_ci.serve_check.verdict"
SUBJECT_TAG = "mlflow_ci.serve_check.subject"
AT_TAG = "mlflow_ci.serve_check.at"
FAILURES_TAG = "mlflow_ci.serve_check.failures"

# -- runs of the audit experiment, and its head anchor (release.audit) -----------------------------
AUDIT_MODEL = "mlflow_ci.audit.model"
AUDIT_SEQ = "mlflow_ci.audit.seq"
AUDIT_ENTRY = "mlflow_ci.audit.entry"
AUDIT_HASH = "mlflow_ci.audit.hash"
AUDIT_OP = "mlflow_ci.audit.op"
AUDIT_PHASE = "mlflow_ci.audit.phase"
AUDIT_ANCHOR_PREFIX = "mlflow_ci.audit.head."  # experiment tag: + model name

# -- the registered model that is a model's lease (release.lease) ----------------------------------
LEASE_OWNER = "mlflow_ci.lease.owner"
LEASE_OPERATION = "mlflow_ci.lease.operation"
LEASE_ACTOR = "mlflow_ci.lease.actor"
LEASE_HOST = "mlflow_ci.lease.host"
LEASE_SECONDS = "mlflow_ci.lease.seconds"
LEASE_BROKEN_BY = "mlflow_ci.lease.broken_by"
