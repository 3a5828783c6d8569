"""Who and where: the actor, the CI run, the commit and pull request, the dataset and lock file.

Everything is read from an explicit environment mapping (``GITHUB_*`` in Actions) and from the
run, so tests pass their own.
"""

from __future__ import annotations

import getpass
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_ci.mlflowio.tags import LOCK_HASH, PULL_REQUEST

LOCK_FILES = ("uv.lock", "poetry.lock", "requirements.lock", "requirements.txt", "pylock.toml")


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


def git_commit(env: Mapping[str, str], run_tags: Mapping[str, str]) -> str:
    return run_tags.get("mlflow.source.git.commit") or env.get("GITHUB_SHA", "")


def dataset_digest(run: Any) -> str:
    """Digest(s) of the datasets the run recorded with ``mlflow.log_input``."""
    inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
    digests = sorted(
        {f"{d.dataset.name}:{d.dataset.digest}" for d in inputs if d.dataset and d.dataset.digest}
    )
    return ",".join(digests)


def lock_file_hash(project_dir: Path | None, run_tags: Mapping[str, str]) -> str:
    """``<file>:sha256:<hex>`` of the project's lock file, or the value the run recorded."""
    if project_dir is not None:
        for name in LOCK_FILES:
            path = Path(project_dir) / name
            if path.is_file():
                return f"{name}:sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    return run_tags.get(LOCK_HASH, "")
