"""Environment managers for `mlflow run` / `mlflow models predict`, behind one small interface.

The name → implementation table :data:`ENV_MANAGERS` is the single place to add one.  Each
checks its preconditions up front so that a missing tool is a sentence, not MLflow's
``FileNotFoundError: 'None'``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlflow_ci.core.errors import ConfigError


class EnvManager(Protocol):
    name: str

    def preflight(self) -> None:
        """Raise ConfigError with advice when this manager cannot work here."""

    def python_version(self, project: Path) -> str:
        """The Python version the project will run on."""


def _declared_python(project: Path) -> str | None:
    import yaml

    env_file = project / "python_env.yaml"
    if not env_file.is_file():
        return None
    data = yaml.safe_load(env_file.read_text(encoding="utf-8")) or {}
    value = data.get("python")
    return str(value) if value else None


@dataclass(frozen=True)
class Local:
    name: str = "local"

    def preflight(self) -> None:
        return None

    def python_version(self, project: Path) -> str:
        return ".".join(map(str, sys.version_info[:3]))


@dataclass(frozen=True)
class Virtualenv:
    name: str = "virtualenv"

    def preflight(self) -> None:
        if shutil.which("pyenv") is None:
            raise ConfigError(
                "env manager 'virtualenv' needs pyenv on PATH to provide the project's Python version.",
                hint="Install pyenv (and the Python in python_env.yaml), or use --env-manager uv or local.",
            )

    def python_version(self, project: Path) -> str:
        return _declared_python(project) or Local().python_version(project)


@dataclass(frozen=True)
class Uv:
    name: str = "uv"

    def preflight(self) -> None:
        if shutil.which("uv") is None:
            raise ConfigError(
                "env manager 'uv' needs the `uv` program on PATH.",
                hint="`pip install uv`, or use --env-manager virtualenv or local.",
            )

    def python_version(self, project: Path) -> str:
        return _declared_python(project) or Local().python_version(project)


ENV_MANAGERS: dict[str, EnvManager] = {m.name: m for m in (Local(), Virtualenv(), Uv())}


def get(name: str) -> EnvManager:
    try:
        return ENV_MANAGERS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown env manager {name!r}; choose one of: {', '.join(ENV_MANAGERS)}."
        ) from None
