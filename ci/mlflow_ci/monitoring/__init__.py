"""Monitoring: reference profiles logged at training time and drift of new data against them.

:mod:`~mlflow_ci.monitoring.profile` (the helper training code calls: numpy only at import),
:mod:`~mlflow_ci.monitoring.stats` (the statistics, from binned counts),
:mod:`~mlflow_ci.monitoring.tabular` (CSV/Parquet read in chunks with pyarrow datasets),
:mod:`~mlflow_ci.monitoring.drift` (per-feature tests, corrections, the data-set rule),
:mod:`~mlflow_ci.monitoring.reference` (a model URI, a run or a file turned into a profile),
:mod:`~mlflow_ci.monitoring.report` (the report, its plots, the MLflow run) and
:mod:`~mlflow_ci.monitoring.command` (``mlflow-ci drift``).
"""

from mlflow_ci.monitoring.profile import Profile, build_profile, log_profile

__all__ = ["Profile", "build_profile", "log_profile"]
