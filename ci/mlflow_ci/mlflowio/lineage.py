"""Lineage: where a run or a model version comes from, in one definition.

Who and where (the actor, the CI run, the pull request), which code (the git commit), which data
(the dataset digests), which locked environment (the lock hash) and which interpreter and MLflow.
``mlflow-ci smoke`` records them on its run (:func:`facts`) and ``mlflow-ci register`` on the model
version (``release.register``) through the same functions, so both say the same thing in the same
format and lineage compares across runs and versions.

The lock hash is ``<file>:sha256:<hex>``, naming the file that defines the environment: the SHA-256
of that file, as ``sha256sum`` prints it.  An environment defined by several files (``python_env.yaml``
and the lock file it includes) is ``<file>+<file>:sha256:<hex>``, the paths sorted and the SHA-256
taken over each file's name and content in that order.  Before 2026-12-08 smoke's run tag
(``mlflow_ci.lock_hash``) held the bare hex of the several-files digest, and register's version tag
(``mlflow_ci.lock_file_hash``) the one-file form of the lock file alone: :func:`parse_lock_hash`
reads both formats, and an old value matches a new one covering the same files (an old bare hex
over a single file excepted: that digest included the file's name).

Everything is read from an explicit environment mapping (``GITHUB_*`` in Actions), from the
project folder and from the run, so tests pass their own.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.mlflowio.tags import (
    ENV_MANAGER,
    GIT_COMMIT,
    LOCK_FILE_HASH,
    LOCK_HASH,
    MLFLOW_VERSION,
    PULL_REQUEST,
    PYTHON_VERSION,
)

# Files that define a project's environment: MLflow's own (python_env.yaml and what it includes
# with ``-r``, conda.yaml, requirements.txt) and the lock files of the usual tools.
ENVIRONMENT_FILES = ("python_env.yaml", "conda.yaml", "requirements.txt")
LOCK_FILES = ("uv.lock", "poetry.lock", "requirements.lock", "requirements.txt", "pylock.toml")
NO_LOCK = "none"
UNKNOWN_COMMIT = "unknown"

# -- who and where ----------------------------------------------------------------------------------


def actor(env: Mapping[str, str], given: str | None = None) -> str:
    if given:
        return given
    for key in ("MLFLOW_CI_ACTOR", "GITHUB_ACTOR"):
        if env.get(key):
            return env[key]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def workflow_run_url(env: Mapping[str, str]) -> str | None:
    server, repo, run = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if server and repo and run:
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        return f"{server}/{repo}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")
    return env.get("MLFLOW_CI_WORKFLOW_RUN") or None


def pull_request(
    env: Mapping[str, str], given: str | None = None, run_tags: Mapping[str, str] | None = None
) -> str:
    if given:
        return given
    if env.get("MLFLOW_CI_PULL_REQUEST"):
        return env["MLFLOW_CI_PULL_REQUEST"]
    m = re.match(r"refs/pull/(\d+)/", env.get("GITHUB_REF", ""))
    if m:
        return m.group(1)
    return (run_tags or {}).get(PULL_REQUEST, "")


# -- which code -------------------------------------------------------------------------------------


def head_commit(project: Path) -> str:
    """HEAD of the repository holding ``project`` (``+dirty`` when the project has local changes),
    or ``unknown``: what a run made from this folder now records."""
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
        return UNKNOWN_COMMIT
    return f"{head}+dirty" if dirty else head


def git_commit(env: Mapping[str, str], run_tags: Mapping[str, str]) -> str:
    """The commit a run was made from, as it recorded it: mlflow-ci's own tag (:func:`head_commit`),
    else MLflow's ``mlflow.source.git.commit``, else ``$GITHUB_SHA``."""
    recorded = run_tags.get(GIT_COMMIT, "")
    if recorded and recorded != UNKNOWN_COMMIT:
        return recorded
    return run_tags.get("mlflow.source.git.commit") or env.get("GITHUB_SHA", "")


# -- which data -------------------------------------------------------------------------------------


def dataset_digest(run: Any) -> str:
    """Digest(s) of the datasets the run recorded with ``mlflow.log_input``."""
    inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
    digests = sorted(
        {f"{d.dataset.name}:{d.dataset.digest}" for d in inputs if d.dataset and d.dataset.digest}
    )
    return ",".join(digests)


# -- which environment ------------------------------------------------------------------------------


def environment_files(project: Path) -> list[Path]:
    """The files that define the project's environment, in path order: python_env.yaml and the
    files it includes, conda.yaml, requirements.txt and the lock files present."""
    project = Path(project)
    files = {project / name for name in (*ENVIRONMENT_FILES, *LOCK_FILES) if (project / name).is_file()}
    env_file = project / "python_env.yaml"
    if env_file.is_file():
        for match in re.finditer(r"-r\s+(\S+)", env_file.read_text(encoding="utf-8")):
            included = project / match.group(1)
            if included.is_file():
                files.add(included)
    return sorted(files)


@dataclass(frozen=True)
class LockHash:
    """A parsed lock hash. ``files`` is empty for a value in the old, bare-hex format."""

    files: tuple[str, ...]
    sha256: str

    def __str__(self) -> str:
        return f"{'+'.join(self.files)}:sha256:{self.sha256}" if self.files else self.sha256

    def matches(self, other: LockHash) -> bool:
        """Same environment: the same digest, of the same files when both name them."""
        if self.sha256 != other.sha256:
            return False
        return not (self.files and other.files) or self.files == other.files


_HEX = re.compile(r"^[0-9a-f]{64}$")


def _digest(files: list[Path]) -> str:
    if len(files) == 1:
        return hashlib.sha256(files[0].read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def lock_hash(project: Path) -> str:
    """``<file>[+<file>...]:sha256:<hex>`` of the project's environment files, or ``none``."""
    files = environment_files(project)
    if not files:
        return NO_LOCK
    names = tuple(Path(os.path.relpath(p, project)).as_posix() for p in files)
    return str(LockHash(names, _digest(files)))


def parse_lock_hash(value: str | None) -> LockHash | None:
    """Read a lock hash in either format (``<files>:sha256:<hex>``, or the old bare hex); None when
    there is none or the value is not a lock hash."""
    value = (value or "").strip()
    files, sep, digest = value.rpartition(":sha256:")
    if not sep:
        files, digest = "", value
    digest = digest.lower()
    if not _HEX.match(digest) or (sep and not files):
        return None
    return LockHash(tuple(files.split("+")) if files else (), digest)


def read_lock_hash(tags: Mapping[str, str]) -> LockHash | None:
    """The lock hash a model version (``mlflow_ci.lock_file_hash``) or a run (``mlflow_ci.lock_hash``)
    recorded, in either format."""
    for name in (LOCK_FILE_HASH, LOCK_HASH):
        found = parse_lock_hash(tags.get(name))
        if found is not None:
            return found
    return None


def same_lock(a: str | None, b: str | None) -> bool:
    """Do two recorded lock hashes (either format) name the same environment?"""
    left, right = parse_lock_hash(a), parse_lock_hash(b)
    return left is not None and right is not None and left.matches(right)


def lock_file_hash(project_dir: Path | None, run_tags: Mapping[str, str]) -> str:
    """The lock hash a model version records: of ``project_dir``'s environment files, else the one
    the run recorded (kept as it was written, old format included)."""
    if project_dir is not None:
        computed = lock_hash(project_dir)
        if computed != NO_LOCK:
            return computed
    recorded = read_lock_hash(run_tags)
    return str(recorded) if recorded is not None else run_tags.get(LOCK_HASH, "")


# -- the run's facts --------------------------------------------------------------------------------


def facts(project: Path, *, python_version: str, env_manager: str) -> dict[str, str]:
    """The run tags that make a run of ``project`` reproducible: code, locked environment,
    interpreter, MLflow and env manager."""
    import mlflow

    return {
        GIT_COMMIT: head_commit(project),
        LOCK_HASH: lock_hash(project),
        PYTHON_VERSION: python_version,
        MLFLOW_VERSION: mlflow.__version__,
        ENV_MANAGER: env_manager,
    }
