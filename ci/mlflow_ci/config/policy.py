"""The root of ``mlflow-ci.yaml``: one optional field per section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

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
    watch: list[str] = Field(
        default_factory=list,
        description=(
            "Files outside the project folder that the project depends on (shared code, common "
            "requirements), as globs relative to the repository root: `*` within one folder, `**` "
            "any number of folders; a pattern naming a folder covers everything under it "
            "(`lib/**`, `lib/` and `lib` are the same). `mlflow-ci projects --changed-since` "
            "selects the project when a change touches one of them."
        ),
    )

    @field_validator("watch")
    @classmethod
    def _relative_globs(cls, value: list[str]) -> list[str]:
        out = []
        for pattern in value:
            cleaned = pattern.strip().rstrip("/")
            while cleaned.startswith("./"):
                cleaned = cleaned[2:]
            if not cleaned:
                raise ValueError(f"{pattern!r} is empty; write a path or glob such as lib/**")
            if cleaned.startswith("/") or "\\" in cleaned or re.match(r"^[A-Za-z]:", cleaned):
                raise ValueError(
                    f"{pattern!r} is not relative to the repository root; write it as lib/** "
                    "(forward slashes, no leading /)"
                )
            if ".." in cleaned.split("/") or "." in cleaned.split("/"):
                raise ValueError(f"{pattern!r} has a . or .. folder; write the path from the repository root")
            out.append(cleaned)
        return out
