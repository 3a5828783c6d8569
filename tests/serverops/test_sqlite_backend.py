"""The SQLite backend without SQLAlchemy: its URI reading, its snapshot and its facts.

SQLite is the embedded default, so its backups and restores never import SQLAlchemy: these tests
hold its own parsing to SQLAlchemy's, its snapshot to SQLite's locking rules (a plain copy of
the file under a read transaction; the online backup API in WAL mode), and its facts to what the
SQL shared with the server engines reads through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from mlflow_ci.serverops.backends import (
    SqlaReader,
    SqliteBackend,
    SqliteReader,
    read_sample,
    redact,
    sqlite_database,
)
from sqlalchemy.engine import make_url


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///relative.db",
        "sqlite:////abs/path/mlflow.db",
        "sqlite:////tmp/with%20space.db",
        "sqlite:////tmp/x.db?mode=ro&uri=true",
        "sqlite+pysqlite:////a/b.db",
        "sqlite:///:memory:",
        "sqlite://",
    ],
)
def test_sqlite_database_is_read_as_sqlalchemy_reads_it(uri: str) -> None:
    assert sqlite_database(uri) == make_url(uri).database


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://mlflow:s3cret@db.internal:5432/mlflow",
        "postgresql+psycopg2://u:p%40ss@h/db?sslmode=require",
        "mysql+pymysql://root:pw@127.0.0.1:3306/mlflow",
        "postgresql://u:p@w@h/db",  # an unencoded @ in the password: SQLAlchemy splits at the first
    ],
)
def test_redact_hides_the_password_as_sqlalchemy_does(uri: str) -> None:
    assert redact(uri) == make_url(uri).render_as_string(hide_password=True)
    assert "***" in redact(uri)


@pytest.mark.parametrize(
    "uri", ["postgresql://mlflow@db/mlflow", "sqlite:////tmp/a:b@c.db", "mysql+pymysql://root@h/db"]
)
def test_redact_leaves_a_uri_without_password_as_it_is(uri: str) -> None:
    assert redact(uri) == uri


def _db_with_rows(path: Path, rows: int, *, wal: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # what follows stays in the WAL only
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('abc123')")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    return conn


class _TryWriteWhenTaken(threading.Event):
    """A ``taken`` event that, when set, tries a write from another connection without waiting."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db, self.write_error = db, ""

    def set(self) -> None:
        writer = sqlite3.connect(self.db, timeout=0, isolation_level=None)
        try:
            writer.execute("INSERT INTO items (v) VALUES ('written while the snapshot is taken')")
        except sqlite3.OperationalError as exc:
            self.write_error = str(exc)
        finally:
            writer.close()
        super().set()


def test_snapshot_copies_the_file_while_writers_are_held_off(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    _db_with_rows(db, 100).close()
    taken = _TryWriteWhenTaken(db)
    snap = SqliteBackend(f"sqlite:///{db}").snapshot(tmp_path / "dump.sqlite", taken=taken)
    assert taken.is_set()
    assert "locked" in taken.write_error  # the snapshot's read transaction held the write off
    assert snap.row_counts == {"alembic_version": 1, "items": 100}
    assert snap.schema_revision == "abc123"
    # Released afterwards: writers go on, and the dump does not see them.
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO items (v) VALUES ('after')")
    assert SqliteBackend(f"sqlite:///{tmp_path / 'dump.sqlite'}").row_counts()["items"] == 100


def test_snapshot_of_a_wal_database_holds_what_is_only_in_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    writer = _db_with_rows(db, 50, wal=True)  # kept open: nothing is checkpointed into the file
    try:
        assert (tmp_path / "src.db-wal").stat().st_size > 0
        snap = SqliteBackend(f"sqlite:///{db}").snapshot(tmp_path / "dump.sqlite", taken=threading.Event())
    finally:
        writer.close()
    assert snap.row_counts == {"alembic_version": 1, "items": 50}
    with sqlite3.connect(tmp_path / "dump.sqlite") as conn:
        assert conn.execute("SELECT v FROM items WHERE id = 50").fetchone() == ("row 49",)


def test_sqlite_facts_equal_what_the_shared_sql_reads_through_sqlalchemy(tmp_path: Path) -> None:
    """The sample a restore reads back, and the row counts, read with sqlite3 here and through
    SQLAlchemy (as on PostgreSQL and MySQL) from one MLflow database: the same."""
    import mlflow
    from sqlalchemy import create_engine

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("facts", artifact_location=str(tmp_path / "art"))
    for i in range(4):
        run = client.create_run(exp, run_name=f"r{i}")
        client.log_param(run.info.run_id, "seed", str(i))
        for step in range(3):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1 + i), step=step)
        client.log_metric(run.info.run_id, "nan_metric", float("nan"))
        client.set_terminated(run.info.run_id)
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", "1")

    backend = SqliteBackend(uri)
    ours = backend.read_sample(sample_runs=3)
    engine = create_engine(uri)
    try:
        with engine.connect() as conn:
            tables = [
                r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            theirs = read_sample(SqlaReader(conn), sorted(t for t in tables if not t.startswith("sqlite_")),
                                 sample_runs=3)  # fmt: skip
    finally:
        engine.dispose()
    assert ours == theirs
    assert len(ours["runs"]) == 3
    assert ours["aliases"] == [{"name": "m", "alias": "champion", "version": 1}]
    assert ours["runs"][0]["metrics"]["nan_metric"] == [
        [0, ours["runs"][0]["metrics"]["nan_metric"][0][1], "nan"]
    ]
    counts = backend.row_counts()
    assert counts["runs"] == 4
    assert counts["metrics"] == 4 * 3 + 4
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        reader = SqliteReader(conn)
        assert reader.rows("SELECT COUNT(*) FROM params WHERE key = :k", {"k": "seed"}) == [(4,)]
