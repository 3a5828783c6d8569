"""Shared fixtures: real tracking servers and per-test databases on the machine's services.

A test that needs a service (PostgreSQL, MariaDB, S3, nginx, a container engine) asks for it
through :func:`require`; on a laptop without it the test skips with the reason, and under
``MLFLOW_CI_REQUIRE_SERVICES=1`` (set by CI) the same condition fails the test instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_ci.mlflowio.tracking import TrackingServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
REQUIRE_SERVICES = os.environ.get("MLFLOW_CI_REQUIRE_SERVICES") == "1"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def require(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when a needed service is missing."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"MLFLOW_CI_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a subprocess, as a user or a workflow would."""
    full_env = dict(os.environ)
    full_env.pop("GITHUB_STEP_SUMMARY", None)
    full_env.pop("GITHUB_OUTPUT", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mlflow_ci", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """One embedded server (SQLite + local artifacts) shared by the session's tests."""
    with TrackingServer(tmp_path_factory.mktemp("tracking")) as server:
        yield server


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[TrackingServer]:
    """A server of this test's own, for tests that change or kill it."""
    with TrackingServer(tmp_path / "server") as server:
        yield server


# --- per-test databases on the machine's PostgreSQL and MariaDB --------------------------------


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    require(port_open("127.0.0.1", 5432), "no PostgreSQL server on 127.0.0.1:5432")
    import psycopg2

    name = f"mlflowci_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def mysql_uri() -> Iterator[str]:
    """A new, empty MariaDB database for this test, dropped afterwards."""
    require(port_open("127.0.0.1", 3306), "no MariaDB/MySQL server on 127.0.0.1:3306")
    import pymysql

    name = f"mlflowci_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


# --- tiny generated MLflow Projects for failure modes ------------------------------------------

TINY_MLPROJECT = """name: tiny
entry_points:
  main:
    parameters:
      seed: {type: int, default: 1}
    command: "python train.py {seed}"
"""

TINY_HEADER = """import math, os, sys
import mlflow
seed = int(sys.argv[1])
mlflow.set_tag("mlflow.runName", f"run_classify_{seed}")
for tag in ("dataset", "env", "purpose", "owner"):
    mlflow.set_tag(tag, "tiny")
mlflow.log_param("seed", seed)
"""


def make_project(folder: Path, body: str, policy: str = "") -> Path:
    """A minimal MLflow Project whose train.py runs ``body`` inside the run (local env only)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLproject").write_text(TINY_MLPROJECT, encoding="utf-8")
    (folder / "train.py").write_text(TINY_HEADER + body, encoding="utf-8")
    (folder / "mlflow-ci.yaml").write_text(
        "project: tiny\nsmoke:\n  env_manager: local\n  parameters: {seed: 3}\n  require_dataset: false\n"
        + policy,
        encoding="utf-8",
    )
    return folder
