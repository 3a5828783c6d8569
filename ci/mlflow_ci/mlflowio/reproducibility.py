"""Facts that make a run reproducible: code version, locked environment, interpreter, MLflow."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from mlflow_ci.mlflowio.tags import ENV_MANAGER, GIT_COMMIT, LOCK_HASH, MLFLOW_VERSION, PYTHON_VERSION


def git_commit(project: Path) -> str:
    """HEAD of the repository holding ``project`` (``+dirty`` when it has local changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(project), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(project), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def environment_files(project: Path) -> list[Path]:
    """The files that define the project's environment: python_env.yaml and what it includes."""
    files: list[Path] = []
    for name in ("python_env.yaml", "conda.yaml", "requirements.txt"):
        path = project / name
        if path.is_file():
            files.append(path)
    env_file = project / "python_env.yaml"
    if env_file.is_file():
        for match in re.finditer(r"-r\s+(\S+)", env_file.read_text(encoding="utf-8")):
            included = project / match.group(1)
            if included.is_file() and included not in files:
                files.append(included)
    return files


def lock_hash(project: Path) -> str:
    """sha256 over the environment files (name and content), or ``none``."""
    files = environment_files(project)
    if not files:
        return "none"
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def facts(project: Path, *, python_version: str, env_manager: str) -> dict[str, str]:
    import mlflow

    return {
        GIT_COMMIT: git_commit(project),
        LOCK_HASH: lock_hash(project),
        PYTHON_VERSION: python_version,
        MLFLOW_VERSION: mlflow.__version__,
        ENV_MANAGER: env_manager,
    }
