"""The policy file, ``mlflow-ci.yaml``: one module per section, the root model, and the loader
(line numbers, precedence, the published JSON Schema). Imports only :mod:`mlflow_ci.core`.

Everything a capability needs is importable from here: ``from mlflow_ci.config import Policy``.
"""

from mlflow_ci.config.base import ENV_PREFIX, POLICY_FILENAME, EnvManager, Section
from mlflow_ci.config.checks import (
    DEFAULT_PLACEHOLDERS,
    FAMILIES,
    LEVELS,
    Family,
    Level,
    Levels,
    Naming,
    Smoke,
    Tags,
    Train,
)
from mlflow_ci.config.loader import (
    LoadedPolicy,
    env_overrides,
    find_policy,
    json_schema,
    load_command_policy,
    load_policy,
)
from mlflow_ci.config.monitoring import (
    DatasetRule,
    EffectThresholds,
    MissingValues,
    Monitoring,
    PredictionDrift,
    UnseenCategories,
)
from mlflow_ci.config.policy import Policy
from mlflow_ci.config.release import (
    Aliases,
    Baseline,
    Direction,
    Evaluation,
    Gates,
    MetricGate,
    ModelChecks,
    Promotion,
    PromotionRule,
    Registry,
)
from mlflow_ci.config.serverops import Backup, KeepBest, Retention, RetentionRule, Server
from mlflow_ci.config.serving import (
    TARGET_NAMES,
    Budgets,
    Deploy,
    DockerTarget,
    ImageSettings,
    LoadTest,
    LocalTarget,
    ServeCheckSettings,
)

__all__ = [
    "DEFAULT_PLACEHOLDERS",
    "ENV_PREFIX",
    "FAMILIES",
    "LEVELS",
    "POLICY_FILENAME",
    "TARGET_NAMES",
    "Aliases",
    "Backup",
    "Baseline",
    "Budgets",
    "DatasetRule",
    "Deploy",
    "Direction",
    "DockerTarget",
    "EffectThresholds",
    "EnvManager",
    "Evaluation",
    "Family",
    "Gates",
    "ImageSettings",
    "KeepBest",
    "Level",
    "Levels",
    "LoadTest",
    "LoadedPolicy",
    "LocalTarget",
    "MetricGate",
    "MissingValues",
    "ModelChecks",
    "Monitoring",
    "Naming",
    "Policy",
    "PredictionDrift",
    "Promotion",
    "PromotionRule",
    "Registry",
    "Retention",
    "RetentionRule",
    "Section",
    "ServeCheckSettings",
    "Server",
    "Smoke",
    "Tags",
    "Train",
    "UnseenCategories",
    "env_overrides",
    "find_policy",
    "json_schema",
    "load_command_policy",
    "load_policy",
]
