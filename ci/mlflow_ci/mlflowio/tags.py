"""The names of the tags mlflow-ci writes on runs and model versions, in one place.

Every capability reads and writes them through these names, so that one package can read what
another recorded (promotion reads the serve-check's verdict) without importing it.
"""

from __future__ import annotations

TAG_PREFIX = "mlflow_ci."

# serving.servecheck records its verdict on the model version it checked.
VERDICT_TAG = "mlflow_ci.serve_check.verdict"
SUBJECT_TAG = "mlflow_ci.serve_check.subject"
AT_TAG = "mlflow_ci.serve_check.at"
FAILURES_TAG = "mlflow_ci.serve_check.failures"
