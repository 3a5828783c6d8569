"""Database engines behind a tracking server: SQLite, PostgreSQL, MySQL/MariaDB.

One small :class:`Backend` protocol and one name → implementation table (:data:`BACKENDS`).
Each engine knows how to take a *consistent* snapshot of the database (dump + the facts the
backup manifest records, read from the same snapshot), restore a dump into an empty database,
and count rows.  Adding an engine means adding one class here and one line to the table.

Consistency, per engine:

* SQLite: the online backup API copies the database page by page into a file while writers
  keep going; facts are then read from that file.
* PostgreSQL: a ``REPEATABLE READ`` transaction exports its snapshot and ``pg_dump --snapshot``
  dumps exactly that snapshot while the same transaction reads the facts.
* MySQL/MariaDB: ``mysqldump --single-transaction`` takes its own snapshot; row counts and the
  schema revision are then read from the dump itself, so they describe exactly what was dumped.
  The read-back sample is taken in a consistent-snapshot transaction opened just before the
  dump and is limited to finished runs, which no longer change.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from . import proc
from .errors import ConfigError, InfraError

SAMPLE_RUNS = 25


@dataclass(frozen=True)
class Snapshot:
    """What one consistent snapshot of a database looked like."""

    dump_file: str  # file name inside the backup folder
    tool: str  # e.g. "pg_dump (PostgreSQL) 15.20"
    schema_revision: str | None
    row_counts: dict[str, int]
    sample: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A tracking (or auth) database engine."""

    kind: ClassVar[str]
    dump_suffix: ClassVar[str]
    uri: str

    def check_tools(self) -> str:
        """Raise :class:`ConfigError` when the client tools are missing or mismatched; return their version."""
        ...

    def snapshot(self, dest: Path, *, sample_runs: int = SAMPLE_RUNS) -> Snapshot:
        """Dump a consistent snapshot into ``dest`` (a file) and read its facts."""
        ...

    def restore(self, dump: Path) -> None:
        """Load ``dump`` into this (empty) database."""
        ...

    def tables(self) -> list[str]: ...

    def row_counts(self) -> dict[str, int]: ...

    def schema_revision(self) -> str | None: ...

    def read_sample(
        self, run_ids: list[str] | None = None, *, sample_runs: int = SAMPLE_RUNS
    ) -> dict[str, Any]:
        """The read-back sample (registered models, versions, aliases, some runs) as it is now."""
        ...

    def drop_all(self) -> None:
        """Remove every table (used to clean a half-finished restore)."""
        ...


def redact(uri: str) -> str:
    """The URI with any password hidden, for logs and manifests."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", uri)


# --------------------------------------------------------------------------------------------
# Facts read through any SQLAlchemy connection (same SQL on every engine).


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


def _count_rows(conn: Any, tables: list[str], quote: str) -> dict[str, int]:
    from sqlalchemy import text

    # Table names come from the database's own catalog, not from users.
    sql = "SELECT COUNT(*) FROM {q}{t}{q}"
    return {t: int(conn.execute(text(sql.format(q=quote, t=t))).scalar()) for t in tables}


def _revision(conn: Any, tables: list[str]) -> str | None:
    from sqlalchemy import text

    if "alembic_version" not in tables:
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    return ",".join(sorted(str(r[0]) for r in rows)) or None


def _metric_value(value: Any, is_nan: Any) -> float | str:
    if is_nan:
        return "nan"
    return float(value)


def read_sample(conn: Any, tables: list[str], *, run_ids: list[str] | None = None,
                sample_runs: int = SAMPLE_RUNS) -> dict[str, Any]:  # fmt: skip
    """Registered models, versions, aliases and a few finished runs with params and metric histories.

    This is what a restore later reads back *through a tracking server* and compares field by
    field: ids, timestamps and version numbers must come back unchanged.
    """
    from sqlalchemy import bindparam, text

    if "runs" not in tables:
        return {}
    q = "`" if conn.dialect.name in ("mysql", "mariadb") else '"'
    key = f"{q}key{q}"
    out: dict[str, Any] = {"registered_models": [], "model_versions": [], "aliases": [], "runs": []}
    if "registered_models" in tables:
        for name, created, updated in conn.execute(
            text("SELECT name, creation_time, last_updated_time FROM registered_models ORDER BY name")
        ):
            out["registered_models"].append(
                {"name": name, "creation_time": created, "last_updated_time": updated}
            )
        for row in conn.execute(
            text(
                "SELECT name, version, creation_time, run_id, source, status FROM model_versions "
                "ORDER BY name, version"
            )
        ):
            out["model_versions"].append(dict(zip(("name", "version", "creation_time", "run_id", "source", "status"),
                                                  row, strict=True)))  # fmt: skip
        for name, alias, version in conn.execute(
            text("SELECT name, alias, version FROM registered_model_aliases ORDER BY name, alias")
        ):
            out["aliases"].append({"name": name, "alias": alias, "version": int(version)})
    if run_ids is None:
        # Deterministic spread over finished runs: the first N by id (ids are random hex).
        run_ids = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT run_uuid FROM runs WHERE status = 'FINISHED' AND end_time IS NOT NULL "
                    "ORDER BY run_uuid LIMIT :n"
                ),
                {"n": sample_runs},
            )
        ]
    if not run_ids:
        return out
    runs_q = text(
        "SELECT run_uuid, experiment_id, name, status, start_time, end_time, lifecycle_stage, artifact_uri "
        "FROM runs WHERE run_uuid IN :ids ORDER BY run_uuid"
    ).bindparams(bindparam("ids", expanding=True))
    # Identifiers are fixed column names (quoted per dialect); values are bound parameters.
    params_q = text(f"SELECT run_uuid, {key}, value FROM params WHERE run_uuid IN :ids").bindparams(  # noqa: S608
        bindparam("ids", expanding=True)
    )
    metrics_q = text(
        f"SELECT run_uuid, {key}, value, timestamp, step, is_nan FROM metrics WHERE run_uuid IN :ids"  # noqa: S608
    ).bindparams(bindparam("ids", expanding=True))
    params: dict[str, dict[str, str]] = {}
    for run_id, key, value in conn.execute(params_q, {"ids": run_ids}):
        params.setdefault(run_id, {})[key] = value
    metrics: dict[str, dict[str, list[list[Any]]]] = {}
    for run_id, key, value, ts, step, is_nan in conn.execute(metrics_q, {"ids": run_ids}):
        metrics.setdefault(run_id, {}).setdefault(key, []).append(
            [int(step), int(ts), _metric_value(value, is_nan)]
        )
    for row in conn.execute(runs_q, {"ids": run_ids}):
        run_id = row[0]
        out["runs"].append({
            "run_id": run_id,
            "experiment_id": str(row[1]),
            "name": row[2],
            "status": row[3],
            "start_time": row[4],
            "end_time": row[5],
            "lifecycle_stage": row[6],
            "artifact_uri": row[7],
            "params": params.get(run_id, {}),
            "metrics": {k: sorted(v, key=lambda m: (m[0], m[1], str(m[2]))) for k, v in metrics.get(run_id, {}).items()},
        })  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# SQLite


@dataclass
class SqliteBackend:
    """The embedded default. The online backup API gives a consistent copy without stopping writers."""

    uri: str
    kind: ClassVar[str] = "sqlite"
    dump_suffix: ClassVar[str] = ".sqlite"

    @property
    def path(self) -> Path:
        from sqlalchemy.engine import make_url

        database = make_url(self.uri).database
        if not database or database == ":memory:":
            raise ConfigError(
                f"SQLite URI {self.uri!r} names no database file; use sqlite:////absolute/path.db."
            )
        return Path(database)

    def check_tools(self) -> str:
        return f"sqlite3 {sqlite3.sqlite_version} (Python online backup API)"

    @contextlib.contextmanager
    def _connect(self, path: Path | None = None) -> Iterator[sqlite3.Connection]:
        target = path or self.path
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True) if path else sqlite3.connect(target)
        try:
            yield conn
        finally:
            conn.close()

    def tables(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            return _sqlite_tables(conn)

    def snapshot(self, dest: Path, *, sample_runs: int = SAMPLE_RUNS) -> Snapshot:
        if not self.path.is_file():
            raise ConfigError(f"SQLite database {self.path} does not exist: nothing to back up.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
            dst = sqlite3.connect(dest)
            try:
                with dst:
                    src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.Error as exc:
            raise InfraError(f"SQLite online backup of {self.path} failed: {exc}.") from exc
        engine = _engine(f"sqlite:///{dest}")
        try:
            with engine.connect() as conn:
                tables = _sqlite_tables(conn.connection.driver_connection)
                counts = _count_rows(conn, tables, '"')
                revision = _revision(conn, tables)
                sample = read_sample(conn, tables, sample_runs=sample_runs)
        finally:
            engine.dispose()
        return Snapshot(dest.name, self.check_tools(), revision, counts, sample)

    def restore(self, dump: Path) -> None:
        target = self.path
        if target.exists() and self.tables():
            raise ConfigError(f"SQLite database {target} is not empty.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.restore.tmp")
        shutil.copyfile(dump, tmp)
        with open(tmp, "rb") as fh:
            import os

            os.fsync(fh.fileno())
        tmp.replace(target)

    def row_counts(self) -> dict[str, int]:
        engine = _engine(self.uri)
        try:
            with engine.connect() as conn:
                return _count_rows(conn, self.tables(), '"')
        finally:
            engine.dispose()

    def schema_revision(self) -> str | None:
        engine = _engine(self.uri)
        try:
            with engine.connect() as conn:
                return _revision(conn, self.tables())
        finally:
            engine.dispose()

    def read_sample(
        self, run_ids: list[str] | None = None, *, sample_runs: int = SAMPLE_RUNS
    ) -> dict[str, Any]:
        engine = _engine(self.uri)
        try:
            with engine.connect() as conn:
                return read_sample(conn, self.tables(), run_ids=run_ids, sample_runs=sample_runs)
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _sqlite_tables(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


# --------------------------------------------------------------------------------------------
# Server engines: connection facts shared by PostgreSQL and MySQL.


@dataclass(frozen=True)
class _Conn:
    host: str
    port: int
    user: str
    password: str | None
    database: str


def _parse(uri: str, default_port: int, default_user: str) -> _Conn:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.database:
        raise ConfigError(f"Backend URI {redact(uri)!r} names no database.")
    return _Conn(
        host=url.host or "127.0.0.1",
        port=int(url.port or default_port),
        user=url.username or default_user,
        password=url.password,
        database=url.database,
    )


def _major(version_text: str) -> int | None:
    m = re.search(r"(\d+)\.\d+", version_text)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# PostgreSQL


class _ServerReads:
    """Row counts, schema revision and the read-back sample, shared by the server engines; each
    engine supplies ``_with_conn(fn)`` (fn gets a connection and the MLflow tables) and ``QUOTE``."""

    QUOTE: ClassVar[str] = '"'

    def _with_conn(self, fn: Any) -> Any:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def row_counts(self) -> dict[str, int]:
        return self._with_conn(lambda conn, tables: _count_rows(conn, tables, self.QUOTE))  # type: ignore[no-any-return]

    def schema_revision(self) -> str | None:
        return self._with_conn(_revision)  # type: ignore[no-any-return]

    def read_sample(
        self, run_ids: list[str] | None = None, *, sample_runs: int = SAMPLE_RUNS
    ) -> dict[str, Any]:
        return self._with_conn(  # type: ignore[no-any-return]
            lambda conn, tables: read_sample(conn, tables, run_ids=run_ids, sample_runs=sample_runs)
        )


@dataclass
class PostgresBackend(_ServerReads):
    uri: str
    kind: ClassVar[str] = "postgresql"
    dump_suffix: ClassVar[str] = ".pgdump"

    @property
    def conn(self) -> _Conn:
        return _parse(self.uri, 5432, "postgres")

    @property
    def sqlalchemy_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.uri).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)

    def _env(self) -> dict[str, str]:
        c = self.conn
        env = proc.base_env(
            {"PGHOST": c.host, "PGPORT": str(c.port), "PGUSER": c.user, "PGDATABASE": c.database}
        )
        if c.password:
            env["PGPASSWORD"] = c.password
        return env

    def _server_major(self) -> int:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SHOW server_version_num")).scalar()) // 10000
        except Exception as exc:
            raise InfraError(f"Cannot connect to PostgreSQL at {redact(self.uri)}: {exc}".strip()) from exc
        finally:
            engine.dispose()

    def check_tools(self) -> str:
        for tool in ("pg_dump", "pg_restore"):
            if shutil.which(tool) is None:
                raise ConfigError(
                    f"{tool} is not on PATH: it is needed to back up or restore PostgreSQL.",
                    hint="Install the PostgreSQL client of the server's major version (apt-get install postgresql-client-15).",
                )
        version = proc.run(["pg_dump", "--version"], env=self._env()).output.strip()
        client, server = _major(version), self._server_major()
        if client != server:
            raise ConfigError(
                f"pg_dump major version {client} does not match the PostgreSQL server's {server} ({version}).",
                hint=f"Install postgresql-client-{server} and put its pg_dump first on PATH; a dump taken by "
                "a mismatched client may not restore.",
            )
        return version

    def tables(self) -> list[str]:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return _pg_tables(conn, text)
        except Exception as exc:
            raise InfraError(f"Cannot read tables of {redact(self.uri)}: {exc}") from exc
        finally:
            engine.dispose()

    def snapshot(self, dest: Path, *, sample_runs: int = SAMPLE_RUNS) -> Snapshot:
        from sqlalchemy import text

        tool = self.check_tools()
        dest.parent.mkdir(parents=True, exist_ok=True)
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
                snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
                # pg_dump reads the very snapshot this open transaction holds.
                proc.run(
                    ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot_id}",
                     f"--file={dest}", self.conn.database],
                    env=self._env(), what="pg_dump",
                )  # fmt: skip
                tables = _pg_tables(conn, text)
                counts = _count_rows(conn, tables, '"')
                revision = _revision(conn, tables)
                sample = read_sample(conn, tables, sample_runs=sample_runs)
                conn.rollback()
        finally:
            engine.dispose()
        return Snapshot(dest.name, tool, revision, counts, sample)

    def restore(self, dump: Path) -> None:
        self.check_tools()
        proc.run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
             f"--dbname={self.conn.database}", str(dump)],
            env=self._env(), what="pg_restore",
        )  # fmt: skip

    def _with_conn(self, fn: Any) -> Any:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return fn(conn, _pg_tables(conn, text))
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        finally:
            engine.dispose()


def _pg_tables(conn: Any, text: Any) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        )
    ).fetchall()
    return [r[0] for r in rows]


# --------------------------------------------------------------------------------------------
# MySQL / MariaDB

_INSERT_RE = re.compile(r"^INSERT INTO `([^`]+)` VALUES\s", re.MULTILINE)
_TUPLE_TOKENS = re.compile(r"'(?:[^'\\]|\\.)*'|[()]", re.DOTALL)


def count_dump_rows(dump_text: str) -> dict[str, int]:
    """Rows per table in a mysqldump file: top-level ``( ... )`` groups of each INSERT statement."""
    counts: dict[str, int] = {}
    for m in _INSERT_RE.finditer(dump_text):
        table = m.group(1)
        end = dump_text.find(";\n", m.end())
        depth = rows = 0
        for tok in _TUPLE_TOKENS.finditer(dump_text, m.end(), end if end != -1 else len(dump_text)):
            t = tok.group(0)
            if t == "(":
                if depth == 0:
                    rows += 1
                depth += 1
            elif t == ")":
                depth -= 1
        counts[table] = counts.get(table, 0) + rows
    return counts


_CREATE_RE = re.compile(r"^CREATE TABLE `([^`]+)`", re.MULTILINE)
_ALEMBIC_RE = re.compile(r"^INSERT INTO `alembic_version` VALUES\s*\('([^']+)'\)", re.MULTILINE)


@dataclass
class MysqlBackend(_ServerReads):
    QUOTE: ClassVar[str] = "`"

    uri: str
    kind: ClassVar[str] = "mysql"
    dump_suffix: ClassVar[str] = ".sql"

    @property
    def conn(self) -> _Conn:
        return _parse(self.uri, 3306, "root")

    @property
    def sqlalchemy_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.uri).set(drivername="mysql+pymysql").render_as_string(hide_password=False)

    def _tool(self, *names: str) -> str:
        for name in names:
            if shutil.which(name):
                return name
        raise ConfigError(
            f"None of {', '.join(names)} is on PATH: it is needed to back up or restore MySQL/MariaDB.",
            hint="Install the client (apt-get install mariadb-client, or mysql-client for MySQL servers).",
        )

    def _args(self) -> list[str]:
        c = self.conn
        return [f"--host={c.host}", f"--port={c.port}", f"--user={c.user}", "--protocol=TCP"]

    def _env(self) -> dict[str, str]:
        env = proc.base_env()
        if self.conn.password:
            env["MYSQL_PWD"] = self.conn.password
        return env

    def check_tools(self) -> str:
        dump = self._tool("mariadb-dump", "mysqldump")
        self._tool("mariadb", "mysql")
        return proc.run([dump, "--version"], env=self._env()).output.strip()

    def tables(self) -> list[str]:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                        "AND table_type = 'BASE TABLE' ORDER BY table_name"
                    )
                ).fetchall()
                return [r[0] for r in rows]
        except Exception as exc:
            raise InfraError(f"Cannot read tables of {redact(self.uri)}: {exc}") from exc
        finally:
            engine.dispose()

    def snapshot(self, dest: Path, *, sample_runs: int = SAMPLE_RUNS) -> Snapshot:
        from sqlalchemy import text

        tool = self.check_tools()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tables = self.tables()
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                conn.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
                sample = read_sample(conn, tables, sample_runs=sample_runs)
                conn.rollback()
        finally:
            engine.dispose()
        proc.run(
            [self._tool("mariadb-dump", "mysqldump"), *self._args(), "--single-transaction", "--quick",
             "--routines", "--triggers", "--hex-blob", "--no-tablespaces", "--skip-lock-tables",
             "--default-character-set=utf8mb4", f"--result-file={dest}", self.conn.database],
            env=self._env(), what="mysqldump --single-transaction",
        )  # fmt: skip
        text_dump = dest.read_text(encoding="utf-8", errors="replace")
        counts = dict.fromkeys(_CREATE_RE.findall(text_dump), 0)
        counts.update(count_dump_rows(text_dump))
        m = _ALEMBIC_RE.search(text_dump)
        return Snapshot(dest.name, tool, m.group(1) if m else None, dict(sorted(counts.items())), sample)

    def restore(self, dump: Path) -> None:
        client = self._tool("mariadb", "mysql")
        proc.run(
            [client, *self._args(), f"--database={self.conn.database}", "--default-character-set=utf8mb4",
             f"--execute=source {dump}"],
            env=self._env(), what="mysql restore",
        )  # fmt: skip

    def _with_conn(self, fn: Any) -> Any:
        tables = self.tables()
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return fn(conn, tables)
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        from sqlalchemy import text

        tables = self.tables()
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                for t in tables:
                    conn.execute(text(f"DROP TABLE IF EXISTS `{t}`"))
        finally:
            engine.dispose()


# --------------------------------------------------------------------------------------------
# The table

BACKENDS: Mapping[str, type[SqliteBackend] | type[PostgresBackend] | type[MysqlBackend]] = {
    "sqlite": SqliteBackend,
    "postgresql": PostgresBackend,
    "mysql": MysqlBackend,
}


def backend_kind(uri: str) -> str:
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    aliases = {"postgres": "postgresql", "mariadb": "mysql"}
    scheme = aliases.get(scheme, scheme)
    if scheme not in BACKENDS:
        raise ConfigError(
            f"Backend store URI {redact(uri)!r} is not a database mlflow-ci can back up.",
            hint="Use sqlite:////path/mlflow.db, postgresql+psycopg2://user@host/db or mysql+pymysql://user@host/db "
            "(file-based ./mlruns stores are deprecated by MLflow; migrate them to a database first).",
        )
    return scheme


def backend_for(uri: str) -> Backend:
    """The :class:`Backend` for a SQLAlchemy URI (``sqlite:``, ``postgresql[+driver]:``, ``mysql[+driver]:``)."""
    return BACKENDS[backend_kind(uri)](uri)
