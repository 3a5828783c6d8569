"""The root of ``mlflow-ci.yaml``: one optional field per section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlflow_ci.config.base import NAME_RE, Section
from mlflow_ci.config.checks import Levels, Naming, Smoke, Tags, Train
from mlflow_ci.config.monitoring import Monitoring
from mlflow_ci.config.release import Gates, Registry
from mlflow_ci.config.serverops import Backup, Retention, Server
from mlflow_ci.config.serving import Deploy


class Policy(Section):
    """Root of ``mlflow-ci.yaml``. Sections added by later capabilities are optional."""

    version: Literal[1] = Field(1, description="Policy format version.")
    project: str = Field(..., pattern=NAME_RE, description="Project name, used in names and reports.")
    levels: Levels = Field(
        default_factory=Levels,
        description="How strictly each family of conventions is checked: off, warn or enforce (default).",
    )
    naming: Naming = Field(default_factory=Naming)
    tags: Tags = Field(default_factory=Tags)
    smoke: Smoke = Field(default_factory=Smoke)
    gates: Gates = Field(default_factory=Gates)
    registry: Registry = Field(default_factory=Registry)
    train: Train = Field(default_factory=Train)
    server: Server | None = Field(None, description="Tracking server profile (server ops).")
    backup: Backup | None = Field(None, description="Backups of the tracking server.")
    retention: Retention | None = Field(None, description="Run retention rules.")
    deploy: Deploy = Field(default_factory=Deploy)
    monitoring: Monitoring = Field(
        default_factory=Monitoring,
        description="Drift of new data against the training profile (mlflow-ci drift).",
    )
