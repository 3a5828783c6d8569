"""PostgreSQL client versions: a pg_dump older than the server is refused, a newer one dumps and
its dump restores into the older server.

Only the version string is faked: a wrapper named pg_dump (or pg_restore) first on PATH answers
``--version`` with another version and runs the real program for everything else, so every dump
and restore here is real.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import require, run_cli
from fixtures import *  # noqa: F403
from mlflow_ci.serverops.backends import stream_script

pytestmark = pytest.mark.service


def _claiming(folder: Path, tool: str, version: str) -> None:
    real = shutil.which(tool)
    require(real is not None, f"{tool} is not on PATH (apt-get install postgresql-client)")
    wrapper = folder / tool
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{tool} (PostgreSQL) {version}"; exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)


def _env(folder: Path) -> dict[str, str]:
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def _fill(uri: str) -> None:
    """A small database with an alembic revision, a sequence and rows, on the server directly."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        with conn, conn.cursor() as cur:  # one transaction, committed on leaving
            cur.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            cur.execute("INSERT INTO alembic_version VALUES ('rev_pg_versions')")
            cur.execute("CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL)")
            cur.executemany("INSERT INTO notes (body) VALUES (%s)", [(f"note {i}",) for i in range(40)])
    finally:
        conn.close()


def _server_major(uri: str) -> int:
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        return conn.server_version // 10000
    finally:
        conn.close()


def test_an_older_pg_dump_is_refused_with_both_versions(pg_factory, tmp_path: Path) -> None:
    source = pg_factory()
    server = _server_major(source)
    _claiming(tmp_path, "pg_dump", f"{server - 1}.9")
    done = run_cli("backup", "--backend-store-uri", source, "--artifacts-destination", str(tmp_path / "art"),
                   "--to", str(tmp_path / "bk"), env=_env(tmp_path))  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert (
        f"pg_dump {server - 1} (pg_dump (PostgreSQL) {server - 1}.9) is older than the PostgreSQL {server} server"
        in done.stderr
    )
    assert f"postgresql-client-{server} or newer" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bk" / "backups").exists()


def test_a_newer_client_dumps_and_restores_into_the_older_server(pg_factory, tmp_path: Path) -> None:
    source, target = pg_factory(), pg_factory()
    server = _server_major(source)
    newer = f"{server + 2}.1"
    for tool in ("pg_dump", "pg_restore"):
        _claiming(tmp_path, tool, newer)
    _fill(source)
    (tmp_path / "art").mkdir()
    backup = run_cli("backup", "--backend-store-uri", source, "--artifacts-destination", str(tmp_path / "art"),
                     "--to", str(tmp_path / "bk"), "--json", env=_env(tmp_path))  # fmt: skip
    assert backup.returncode == 0, backup.stderr
    summary = json.loads(backup.stdout)
    assert summary["rows"] == 41
    assert summary["schema_revision"] == "rev_pg_versions"
    restored = run_cli("restore", "--from", str(tmp_path / "bk"), "--backend-store-uri", target,
                       "--artifacts-destination", str(tmp_path / "r-art"), "--no-server-check", "--json",
                       env=_env(tmp_path))  # fmt: skip
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert f"pg_restore {server + 2} is newer than the PostgreSQL {server} server" in restored.stderr
    report = json.loads(restored.stdout)
    assert report["verdict"] == "pass"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["row counts"]["verdict"] == "pass"
    # The restored sequence goes on where the source's stopped (the dump's setval ran).
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(target)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO notes (body) VALUES ('next') RETURNING id")
            assert cur.fetchone() == (41,)
    finally:
        conn.close()


def test_the_script_loses_only_settings_the_server_lacks() -> None:
    script = (
        b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n"
        b"SET statement_timeout = 0;\nSET transaction_timeout = 0;\nSET lock_timeout = 0;\n"
        b"SELECT pg_catalog.set_config('search_path', '', false);\n\n"
        b"CREATE TABLE public.t (id integer);\nSET transaction_timeout = 0;\n"
        + b"COPY public.t (id) FROM stdin;\n"
        + b"1\n" * 5000
        + b"\\.\n"
    )
    out = io.BytesIO()
    dropped = stream_script(io.BufferedReader(io.BytesIO(script)), out, {"statement_timeout", "lock_timeout"})
    assert dropped == ["transaction_timeout"]
    # Only the preamble is filtered: everything from the first statement on passes unchanged.
    assert out.getvalue() == script.replace(b"SET transaction_timeout = 0;\n", b"", 1)
