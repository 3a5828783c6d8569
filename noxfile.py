"""The task runner. CI calls these sessions, so a local run is the same as a CI run.

nox -s demo     the main job on the embedded default server (no services needed)
nox -s tests    the test suite
nox -s lint     ruff, format check, import contracts (import-linter), workflow linters
nox -s smoke    mlflow-ci smoke on the example project (args after -- go to the CLI)
nox -s bench    benchmarks, each compared with a baseline in the same run
nox -s lock     regenerate ci/constraints.txt (mlflow-ci's dependencies, locked with uv)
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
EXAMPLE = ROOT / "example_project"
# Every install of mlflow-ci (sessions, workflows) takes its dependencies at these versions.
CONSTRAINTS = ROOT / "ci" / "constraints.txt"

# Offline: never download interpreters.
os.environ.setdefault("NOX_DOWNLOAD_PYTHON", "never")
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# uv installs without bytecode, and with PYTHONDONTWRITEBYTECODE (set on many CI machines, this
# one included) Python never caches it either: every `import mlflow` in a session's venv then
# compiles ~2,000 modules again (9 s instead of 3 s, in every server, CLI and test child process).
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec, "--constraint", str(CONSTRAINTS))
    # Bytecode for mlflow-ci's own modules, as an installed package has it: the install is
    # editable, and under PYTHONDONTWRITEBYTECODE every CLI process would compile them again.
    session.run("python", "-m", "compileall", "-q", str(ROOT / "ci" / "mlflow_ci"))


def _env() -> dict[str, str | None]:
    """Environment shared by sessions: a persistent cache for project environments.

    nox's uv backend exports UV_PYTHON and UV_PROJECT_ENVIRONMENT pointing at the session's venv;
    inherited by `mlflow run --env-manager uv`, they make `uv pip install` fill the session's venv
    instead of the project's env (None removes a variable for the command).
    """
    return {
        "MLFLOW_ENV_ROOT": os.environ.get("MLFLOW_ENV_ROOT", str(ROOT / ".nox" / "_mlflow_envs")),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "UV_PYTHON": None,
        "UV_PROJECT_ENVIRONMENT": None,
    }


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (services are used when present; see tests/conftest.py)."""
    _install(session, "test", "lint")
    session.run("pytest", *(session.posargs or ["tests"]), env=_env())


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), the import contracts and the workflow linters."""
    _install(session, "lint")
    session.run("ruff", "check", "ci", "tests", "bench", "noxfile.py", "example_project")
    session.run("ruff", "format", "--check", "ci", "tests", "bench", "noxfile.py", "example_project")
    # The architecture: the direction of imports between the packages, and no cycles.
    session.run("lint-imports", "--no-cache")
    session.run("python", "-m", "mlflow_ci.workflow_lint", env=_env())


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """`mlflow-ci smoke` on the example project (or on the args given after --)."""
    _install(session, "test")
    args = session.posargs or [str(EXAMPLE)]
    session.run("mlflow-ci", "smoke", *args, env=_env())


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on the embedded default: start a server, smoke the example project, report."""
    _install(session, "test")
    session.run("mlflow-ci", "demo", *session.posargs, env=_env())


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks in bench/: each prints its ratio against a baseline measured in the same run."""
    _install(session, "test")
    session.run("python", "-m", "bench", *session.posargs, env=_env())


@nox.session(python=False, default=False)
def lock(session: nox.Session) -> None:
    """Lock mlflow-ci's dependencies (every extra) into ci/constraints.txt with uv; its header
    records a hash of pyproject.toml's dependency lists, which a test compares."""
    import hashlib
    import json

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {k: project.get(k) for k in ("requires-python", "dependencies", "optional-dependencies")}
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
    extras = [arg for extra in project.get("optional-dependencies", {}) for arg in ("--extra", extra)]
    session.run("uv", "pip", "compile", "pyproject.toml", *extras, "--python-version", PYTHON,
                "--python-platform", "x86_64-unknown-linux-gnu", "--no-header", "--quiet",
                "-o", str(CONSTRAINTS), external=True)  # fmt: skip
    body = CONSTRAINTS.read_text(encoding="utf-8")
    CONSTRAINTS.write_text(
        "# mlflow-ci's dependencies, locked: `nox -s lock` writes this file (uv pip compile, Python "
        f"{PYTHON}, Linux x86_64).\n# pyproject-sha256: {digest}\n" + body,
        encoding="utf-8",
    )
