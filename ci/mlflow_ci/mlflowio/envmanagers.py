"""Environment managers for `mlflow run` / `mlflow models predict`, behind one small interface.

The name → implementation table :data:`ENV_MANAGERS` is the single place to add one.  Each
checks its preconditions up front so that a missing tool is a sentence, not MLflow's
``FileNotFoundError: 'None'``.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import ConfigError, InfraError

_FULL_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# Installing an interpreter (pyenv builds it from source) may take this long.
_INSTALL_TIMEOUT_S = 1800


class EnvManager(Protocol):
    name: str

    def preflight(self) -> None:
        """Raise ConfigError with advice when this manager cannot work here."""

    def python_version(self, project: Path) -> str:
        """The Python version the project will run on."""

    def ensure_python(self, project: Path, env: Mapping[str, str]) -> None:
        """Make sure the interpreter ``python_env.yaml`` asks for can be had, as MLflow will ask
        for it, before anything runs: installed already, or installed now the way MLflow would
        (with progress). Raise InfraError (exit 3) with one sentence when it cannot be had."""


def _declared_python(project: Path) -> str | None:
    import yaml

    env_file = project / "python_env.yaml"
    if not env_file.is_file():
        return None
    try:
        data = yaml.safe_load(env_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{env_file}: cannot be read as YAML ({str(exc).splitlines()[0]}).") from None
    value = data.get("python") if isinstance(data, dict) else None
    return str(value) if value else None


def _reason(text: str) -> str:
    """The line of a tool's output that says why: its first error line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|not found|could not|failed", line, re.IGNORECASE)]
    return (errors or lines or ["no output"])[0 if errors else -1][:300]


def _cannot_have(version: str, manager: str, why: str, how: str) -> InfraError:
    return InfraError(
        f"python_env.yaml asks for Python {version}, which the {manager} env manager cannot get here: {why}.",
        hint=how,
    )


@dataclass(frozen=True)
class Local:
    name: str = "local"

    def preflight(self) -> None:
        return None

    def python_version(self, project: Path) -> str:
        return ".".join(map(str, sys.version_info[:3]))

    def ensure_python(self, project: Path, env: Mapping[str, str]) -> None:
        return None  # the entry point runs on this interpreter; python_env.yaml is not used


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

    def ensure_python(self, project: Path, env: Mapping[str, str]) -> None:
        asked = _declared_python(project)
        if asked is None:
            return
        pyenv = shutil.which("pyenv", path=env.get("PATH")) or "pyenv"
        # As MLflow resolves it: a full version as written, else the newest that pyenv knows.
        version = asked if _FULL_VERSION.match(asked) else self._newest_known(pyenv, asked, env)
        root = proc.run([pyenv, "root"], env=env, check=False, timeout=60)
        if root.returncode == 0 and (Path(root.output.strip()) / "versions" / version / "bin").is_dir():
            return
        installed = proc.run([pyenv, "versions", "--bare"], env=env, check=False, timeout=60).output.split()
        with output.step(f"pyenv install {version} (python_env.yaml asks for it; MLflow would install it)"):
            done = proc.run([pyenv, "install", "--skip-existing", version], env=env, check=False,
                            timeout=_INSTALL_TIMEOUT_S)  # fmt: skip
        if done.returncode != 0:
            raise _cannot_have(
                version, "virtualenv", f"pyenv has not installed it and `pyenv install {version}` failed "
                f"({_reason(done.output)})",
                f"Install it on this machine (`pyenv install {version}`; installed here: "
                f"{', '.join(installed) or 'none'}), ask for an installed version in python_env.yaml, "
                "or run with --env-manager local.",
            )  # fmt: skip

    @staticmethod
    def _newest_known(pyenv: str, prefix: str, env: Mapping[str, str]) -> str:
        listed = proc.run([pyenv, "install", "--list"], env=env, check=False, timeout=120)
        known = [v.strip() for v in listed.output.splitlines() if _FULL_VERSION.match(v.strip())]
        matched = [v for v in known if v.startswith(prefix)]
        if not matched:
            raise _cannot_have(
                prefix, "virtualenv", "pyenv knows no version that starts with it",
                "Write a version pyenv can install (see `pyenv install --list`) in python_env.yaml.",
            )  # fmt: skip
        return max(matched, key=lambda v: tuple(int(p) for p in v.split(".")))


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

    def ensure_python(self, project: Path, env: Mapping[str, str]) -> None:
        asked = _declared_python(project)
        if asked is None:
            return
        uv = shutil.which("uv", path=env.get("PATH")) or "uv"
        found = proc.run([uv, "python", "find", asked], env=env, check=False, timeout=120)
        if found.returncode == 0:
            return
        downloads = env.get("UV_PYTHON_DOWNLOADS", "automatic")
        how = (
            f"Install it (`uv python install {asked}`, or with pyenv, put it on PYENV_VERSION), ask for "
            "an installed version in python_env.yaml, or run with --env-manager local."
        )
        if downloads in ("never", "manual"):
            raise _cannot_have(
                asked, "uv", f"uv finds no such interpreter and downloads are off (UV_PYTHON_DOWNLOADS={downloads}; "
                f"uv says: {_reason(found.output)})", how,
            )  # fmt: skip
        with output.step(f"uv python install {asked} (python_env.yaml asks for it)"):
            done = proc.run(
                [uv, "python", "install", asked], env=env, check=False, timeout=_INSTALL_TIMEOUT_S
            )
        if done.returncode != 0:
            raise _cannot_have(
                asked, "uv", f"uv finds no such interpreter and could not install it ({_reason(done.output)})", how
            )  # fmt: skip


ENV_MANAGERS: dict[str, EnvManager] = {m.name: m for m in (Local(), Virtualenv(), Uv())}


def get(name: str) -> EnvManager:
    try:
        return ENV_MANAGERS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown env manager {name!r}; choose one of: {', '.join(ENV_MANAGERS)}."
        ) from None
