"""Database engines behind a tracking server: SQLite, PostgreSQL, MySQL/MariaDB.

One small :class:`Backend` protocol and one name → implementation table (:data:`BACKENDS`).
Each engine knows how to take a *consistent* snapshot of the database (dump + the facts the
backup manifest records, read from the same snapshot), restore a dump into an empty database,
and count rows.  Adding an engine means adding one class here and one line to the table.

Consistency, per engine:

* SQLite: the file is copied inside a read transaction, whose SHARED lock keeps every writer
  from changing it until the copy is done (a database in WAL mode is copied page by page by the
  online backup API instead, while writers keep going); facts are then read from the copy.
* PostgreSQL: a ``REPEATABLE READ`` transaction exports its snapshot and ``pg_dump --snapshot``
  dumps exactly that snapshot while the same transaction reads the facts.
* MySQL/MariaDB: ``mysqldump --single-transaction`` takes its own snapshot, which no other
  session can share; a ``REPEATABLE READ`` transaction started ``WITH CONSISTENT SNAPSHOT`` while
  the tables are held still (``LOCK TABLES ... READ`` in another session, lifted as soon as
  mysqldump has begun its transaction) sees the same rows, and reads the row counts, the schema
  revision and the read-back sample (see :meth:`MysqlBackend.snapshot`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import CommandFailed, ConfigError, InfraError
from mlflow_ci.core.redact import redact

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

    def snapshot(
        self, dest: Path, *, sample_runs: int = SAMPLE_RUNS, taken: threading.Event | None = None
    ) -> Snapshot:
        """Dump a consistent snapshot into ``dest`` (a file) and read its facts; set ``taken`` as
        soon as the snapshot's point in time is fixed (what the dump holds no longer changes),
        which may be before the dump is written."""
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


# --------------------------------------------------------------------------------------------
# Facts read through any connection (same SQL on every engine).


class Reader(Protocol):
    """Rows from one open connection: SQL with ``:name`` parameters (SQLite and SQLAlchemy
    both take that style), identifiers quoted with ``quote``."""

    quote: str

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]: ...


@dataclass
class SqlaReader:
    """A SQLAlchemy connection (PostgreSQL, MySQL/MariaDB)."""

    conn: Any

    @property
    def quote(self) -> str:
        return "`" if self.conn.dialect.name in ("mysql", "mariadb") else '"'

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        from sqlalchemy import text

        return list(self.conn.execute(text(sql), dict(params or {})).fetchall())


@dataclass
class SqliteReader:
    """A :mod:`sqlite3` connection: SQLite's facts without importing SQLAlchemy (a third of a
    second of every backup and restore)."""

    conn: sqlite3.Connection
    quote: str = '"'

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return self.conn.execute(sql, dict(params or {})).fetchall()


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


def _in(name: str, values: list[Any]) -> tuple[str, dict[str, Any]]:
    """``IN`` placeholders for ``values``: (``:name_0, :name_1, ...``, their parameters)."""
    params = {f"{name}_{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{k}" for k in params), params


def _count_rows(reader: Reader, tables: list[str]) -> dict[str, int]:
    # Table names come from the database's own catalog, not from users.
    q = reader.quote
    return {t: int(reader.rows(f"SELECT COUNT(*) FROM {q}{t}{q}")[0][0]) for t in tables}  # noqa: S608


def _revision(reader: Reader, tables: list[str]) -> str | None:
    if "alembic_version" not in tables:
        return None
    rows = reader.rows("SELECT version_num FROM alembic_version")
    return ",".join(sorted(str(r[0]) for r in rows)) or None


def _metric_value(value: Any, is_nan: Any) -> float | str:
    if is_nan:
        return "nan"
    return float(value)


def read_sample(reader: Reader, tables: list[str], *, run_ids: list[str] | None = None,
                sample_runs: int = SAMPLE_RUNS) -> dict[str, Any]:  # fmt: skip
    """Registered models, versions, aliases and a few finished runs with params and metric histories.

    This is what a restore later reads back *through a tracking server* and compares field by
    field: ids, timestamps and version numbers must come back unchanged.
    """
    if "runs" not in tables:
        return {}
    key = f"{reader.quote}key{reader.quote}"
    out: dict[str, Any] = {"registered_models": [], "model_versions": [], "aliases": [], "runs": []}
    if "registered_models" in tables:
        for name, created, updated in reader.rows(
            "SELECT name, creation_time, last_updated_time FROM registered_models ORDER BY name"
        ):
            out["registered_models"].append(
                {"name": name, "creation_time": created, "last_updated_time": updated}
            )
        for row in reader.rows(
            "SELECT name, version, creation_time, run_id, source, status FROM model_versions ORDER BY name, version"
        ):
            out["model_versions"].append(dict(zip(("name", "version", "creation_time", "run_id", "source", "status"),
                                                  row, strict=True)))  # fmt: skip
        for name, alias, version in reader.rows(
            "SELECT name, alias, version FROM registered_model_aliases ORDER BY name, alias"
        ):
            out["aliases"].append({"name": name, "alias": alias, "version": int(version)})
    if run_ids is None:
        # Deterministic spread over finished runs: the first N by id (ids are random hex).
        run_ids = [
            r[0]
            for r in reader.rows(
                "SELECT run_uuid FROM runs WHERE status = 'FINISHED' AND end_time IS NOT NULL "
                "ORDER BY run_uuid LIMIT :n",
                {"n": sample_runs},
            )
        ]
    if not run_ids:
        return out
    ids, bound = _in("id", run_ids)
    # Identifiers are fixed column names (quoted per dialect); values are bound parameters.
    params_sql = f"SELECT run_uuid, {key}, value FROM params WHERE run_uuid IN ({ids})"  # noqa: S608
    metrics_sql = (
        f"SELECT run_uuid, {key}, value, timestamp, step, is_nan FROM metrics WHERE run_uuid IN ({ids})"  # noqa: S608
    )
    columns = "run_uuid, experiment_id, name, status, start_time, end_time, lifecycle_stage, artifact_uri"
    runs_sql = f"SELECT {columns} FROM runs WHERE run_uuid IN ({ids}) ORDER BY run_uuid"  # noqa: S608
    params: dict[str, dict[str, str]] = {}
    for run_id, name, value in reader.rows(params_sql, bound):
        params.setdefault(run_id, {})[name] = value
    metrics: dict[str, dict[str, list[list[Any]]]] = {}
    for run_id, name, value, ts, step, is_nan in reader.rows(metrics_sql, bound):
        points = metrics.setdefault(run_id, {}).setdefault(name, [])
        points.append([int(step), int(ts), _metric_value(value, is_nan)])
    for row in reader.rows(runs_sql, bound):
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
    """The embedded default. A copy of the file under a read transaction (or, in WAL mode, the
    online backup API) is a consistent snapshot taken while writers wait at most the copy's time."""

    uri: str
    kind: ClassVar[str] = "sqlite"
    dump_suffix: ClassVar[str] = ".sqlite"

    @property
    def path(self) -> Path:
        database = sqlite_database(self.uri)
        if not database or database == ":memory:":
            raise ConfigError(
                f"SQLite URI {self.uri!r} names no database file; use sqlite:////absolute/path.db."
            )
        return Path(database)

    def check_tools(self) -> str:
        return f"sqlite3 {sqlite3.sqlite_version} (Python online backup API)"

    @contextlib.contextmanager
    def _connect(self, path: Path | None = None, *, read_only: bool = False) -> Iterator[SqliteReader]:
        target = Path(path or self.path).resolve()
        if read_only:
            conn = sqlite3.connect(f"{target.as_uri()}?mode=ro", uri=True, timeout=60)
        else:
            conn = sqlite3.connect(target, timeout=60)
        try:
            yield SqliteReader(conn)
        finally:
            conn.close()

    def tables(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._connect(read_only=True) as reader:
            return _sqlite_tables(reader)

    def snapshot(
        self, dest: Path, *, sample_runs: int = SAMPLE_RUNS, taken: threading.Event | None = None
    ) -> Snapshot:
        if not self.path.is_file():
            raise ConfigError(f"SQLite database {self.path} does not exist: nothing to back up.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect(read_only=True) as src:
                if str(src.rows("PRAGMA journal_mode")[0][0]).lower() == "wal":
                    # The main file alone is not the database: the online backup reads through the WAL.
                    dst = sqlite3.connect(dest)
                    try:
                        with dst:
                            src.conn.backup(dst)
                    finally:
                        dst.close()
                else:
                    # A read transaction holds SQLite's SHARED lock: no writer changes the file until it
                    # ends, so a plain copy of the file is a consistent snapshot (four times faster than
                    # the backup API's page-by-page copy; writers wait as they would for it).
                    src.conn.execute("BEGIN")
                    src.rows("SELECT COUNT(*) FROM sqlite_master")
                    if taken is not None:
                        taken.set()
                    shutil.copyfile(self.path, dest)
                    src.conn.rollback()
            # The facts are read from the copy: exactly what was backed up.
            with self._connect(dest, read_only=True) as reader:
                tables = _sqlite_tables(reader)
                counts = _count_rows(reader, tables)
                revision = _revision(reader, tables)
                sample = read_sample(reader, tables, sample_runs=sample_runs)
        except sqlite3.Error as exc:
            raise InfraError(f"SQLite online backup of {self.path} failed: {exc}.") from exc
        return Snapshot(dest.name, self.check_tools(), revision, counts, sample)

    def restore(self, dump: Path) -> None:
        target = self.path
        if target.exists() and self.tables():
            raise ConfigError(f"SQLite database {target} is not empty.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.restore.tmp")
        shutil.copyfile(dump, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)

    def _read(self, fn: Any) -> Any:
        try:
            with self._connect(read_only=True) as reader:
                return fn(reader, _sqlite_tables(reader))
        except sqlite3.Error as exc:
            raise InfraError(f"Cannot read SQLite database {self.path}: {exc}.") from exc

    def row_counts(self) -> dict[str, int]:
        return self._read(_count_rows)  # type: ignore[no-any-return]

    def schema_revision(self) -> str | None:
        return self._read(_revision)  # type: ignore[no-any-return]

    def read_sample(
        self, run_ids: list[str] | None = None, *, sample_runs: int = SAMPLE_RUNS
    ) -> dict[str, Any]:
        return self._read(  # type: ignore[no-any-return]
            lambda reader, tables: read_sample(reader, tables, run_ids=run_ids, sample_runs=sample_runs)
        )

    def drop_all(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def sqlite_database(uri: str) -> str | None:
    """The database of a ``sqlite[+driver]://`` URI, as SQLAlchemy reads it (``sqlite:///rel.db``,
    ``sqlite:////abs/path.db``, percent-decoded, query dropped; ``None`` for ``sqlite://``)."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest.split("?", 1)[0]
    if "/" not in rest:
        return None
    return unquote(rest.split("/", 1)[1]) or None


def _sqlite_tables(reader: SqliteReader) -> list[str]:
    rows = reader.rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
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
    """The major version in a client's ``--version`` line (``pg_dump (PostgreSQL) 17.2`` → 17)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text) or re.search(r"(\d+)\.\d+", version_text)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# PostgreSQL


class _ServerReads:
    """Row counts, schema revision and the read-back sample, shared by the server engines; each
    engine supplies ``_with_conn(fn)`` (fn gets a :class:`Reader` and the MLflow tables)."""

    def _with_conn(self, fn: Any) -> Any:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def row_counts(self) -> dict[str, int]:
        return self._with_conn(_count_rows)  # type: ignore[no-any-return]

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

    def _require(self, *tools: str) -> None:
        for tool in tools:
            if shutil.which(tool) is None:
                raise ConfigError(
                    f"{tool} is not on PATH: it is needed to back up or restore PostgreSQL.",
                    hint="Install the PostgreSQL client of the server's major version or newer "
                    "(apt-get install postgresql-client-15 for a PostgreSQL 15 server).",
                )

    def check_tools(self) -> str:
        """pg_dump reads servers of its own major version and older ones, never newer ones: a
        client at least as new as the server is accepted (a GitHub-hosted runner's is newer than
        most servers), an older one refused before anything is written."""
        self._require("pg_dump", "pg_restore")
        version = proc.run(["pg_dump", "--version"], env=self._env()).output.strip()
        client, server = _major(version), self._server_major()
        if client is None or client < server:
            raise InfraError(
                f"pg_dump {client if client is not None else '(unknown version)'} ({version}) is older than the "
                f"PostgreSQL {server} server it must dump, so install postgresql-client-{server} or newer "
                f"(apt-get install postgresql-client-{server}, from apt.postgresql.org where the distribution "
                "lacks it) and put its pg_dump first on PATH."
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

    def snapshot(
        self, dest: Path, *, sample_runs: int = SAMPLE_RUNS, taken: threading.Event | None = None
    ) -> Snapshot:
        from sqlalchemy import text

        tool = self.check_tools()
        dest.parent.mkdir(parents=True, exist_ok=True)
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
                snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
                if taken is not None:
                    taken.set()  # the transaction's snapshot is fixed by its first query
                # pg_dump reads the very snapshot this open transaction holds.
                proc.run(
                    ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot_id}",
                     f"--file={dest}", self.conn.database],
                    env=self._env(), what="pg_dump",
                )  # fmt: skip
                tables = _pg_tables(conn, text)
                reader = SqlaReader(conn)
                counts = _count_rows(reader, tables)
                revision = _revision(reader, tables)
                sample = read_sample(reader, tables, sample_runs=sample_runs)
                conn.rollback()
        finally:
            engine.dispose()
        return Snapshot(dest.name, tool, revision, counts, sample)

    def restore(self, dump: Path) -> None:
        """Load the archive with pg_restore, straight into the server when pg_restore is not newer
        than it; a newer pg_restore (needed to read a newer pg_dump's archive) sets session
        parameters an older server does not know (pg_restore 17: ``SET transaction_timeout``,
        which PostgreSQL 15 rejects, failing the whole single-transaction restore), so its script
        goes through psql without them (:func:`stream_script`: the same single read of the archive)."""
        self._require("pg_restore")
        version = proc.run(["pg_restore", "--version"], env=self._env()).output.strip()
        client, server = _major(version), self._server_major()
        if client is not None and client > server:
            self._require("psql")
            output.info(
                f"pg_restore {client} is newer than the PostgreSQL {server} server: its script goes through "
                "psql, without the session settings the server does not know."
            )
            self._restore_through_psql(dump)
            return
        try:
            proc.run(
                ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                 f"--dbname={self.conn.database}", str(dump)],
                env=self._env(), what="pg_restore",
            )  # fmt: skip
        except CommandFailed as exc:
            if "unsupported version" in exc.output_tail:
                raise InfraError(
                    f"{version} cannot read this dump, written by a newer pg_dump (archive format "
                    f"{_archive_format(dump)}), so install the PostgreSQL client that wrote it (the manifest's "
                    "backend.tool) or a newer one and put its pg_restore first on PATH."
                ) from exc
            raise

    def _server_settings(self) -> set[str]:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return {str(r[0]).lower() for r in conn.execute(text("SELECT name FROM pg_settings"))}
        finally:
            engine.dispose()

    def _restore_through_psql(self, dump: Path) -> None:
        known = self._server_settings()
        env = self._env()
        restore_args = [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--file=-",
            str(dump),
        ]
        psql_args = ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--single-transaction",
                     "--file=-", f"--dbname={self.conn.database}"]  # fmt: skip
        with tempfile.TemporaryFile() as restore_log, tempfile.TemporaryFile() as psql_log:
            producer = subprocess.Popen(restore_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=restore_log, env=env, start_new_session=True)  # fmt: skip
            consumer = subprocess.Popen(psql_args, stdin=subprocess.PIPE, stdout=psql_log,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
            assert producer.stdout is not None
            assert consumer.stdin is not None
            try:
                try:
                    stream_script(producer.stdout, consumer.stdin, known)
                except BrokenPipeError:
                    pass  # psql stopped early: its exit code and output say why
                finally:
                    # Closed before waiting: a producer blocked on a full pipe then ends too.
                    with contextlib.suppress(BrokenPipeError):
                        consumer.stdin.close()
                    producer.stdout.close()
                codes = {"pg_restore": producer.wait(), "psql": consumer.wait()}
            except BaseException:
                for child in (producer, consumer):
                    proc.kill_group(child)  # type: ignore[arg-type]
                raise
            for (name, code), log in zip(codes.items(), (restore_log, psql_log), strict=True):
                if code:
                    log.seek(0)
                    text_out = log.read().decode(errors="replace")
                    raise CommandFailed(
                        f"{name} failed with exit code {code} restoring {dump.name} through psql:\n"
                        f"{proc.tail(text_out)}",
                        returncode=code,
                        output_tail=proc.tail(text_out),
                    )

    def _with_conn(self, fn: Any) -> Any:
        from sqlalchemy import text

        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return fn(SqlaReader(conn), _pg_tables(conn, text))
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


_SET_LINE = re.compile(rb"^SET\s+(\w+)\s*(?:=|TO\b)", re.IGNORECASE)
_PREAMBLE = (b"--", b"\\", b"SET ", b"SELECT pg_catalog.set_config", b"BEGIN")


def stream_script(src: Any, dst: Any, known: set[str]) -> list[str]:
    """Copy pg_restore's SQL script from ``src`` to ``dst`` leaving out the preamble's ``SET``
    of parameters not in ``known`` (the target server's ``pg_settings``); the names left out.

    Only the preamble (comments, ``\\restrict``, ``SET``, ``set_config``) is read line by line;
    from the first statement on, the rest is copied in blocks as it comes."""
    dropped: list[str] = []
    for line in iter(src.readline, b""):
        m = _SET_LINE.match(line)
        if m is not None and m.group(1).decode().lower() not in known:
            dropped.append(m.group(1).decode())
            continue
        dst.write(line)
        if line.strip() and not line.startswith(_PREAMBLE):
            break
    shutil.copyfileobj(src, dst, 1 << 20)
    return dropped


def _archive_format(dump: Path) -> str:
    """A custom-format archive's format version (``PGDMP`` and three bytes: 1.16.0 for pg_dump 17)."""
    with open(dump, "rb") as fh:
        head = fh.read(8)
    return ".".join(str(b) for b in head[5:8]) if head.startswith(b"PGDMP") and len(head) == 8 else "unknown"


# --------------------------------------------------------------------------------------------
# MySQL / MariaDB

_DUMPING = (b"Table structure for table", b"CREATE TABLE `")  # written only inside the dump's transaction
FENCE_WAIT_S = 30  # lock_wait_timeout for the fence, and the longest the dump's start is waited for


def _wait_until_dumping(dump: subprocess.Popen[bytes], dest: Path) -> None:
    """Until mysqldump has written a table into ``dest`` (its transaction, and so its snapshot,
    has begun) or has exited.  Its output is buffered: the first block reaches the file after
    the header and the first table, a few KiB in; a dump smaller than that is done first."""
    deadline = time.monotonic() + FENCE_WAIT_S
    while dump.poll() is None:
        with contextlib.suppress(FileNotFoundError), open(dest, "rb") as fh:
            head = fh.read(1 << 16)
            if any(marker in head for marker in _DUMPING):
                return
        if time.monotonic() > deadline:
            raise InfraError(f"mysqldump did not begin dumping within {FENCE_WAIT_S}s.")
        time.sleep(0.002)


@dataclass
class MysqlBackend(_ServerReads):
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

    def snapshot(
        self, dest: Path, *, sample_runs: int = SAMPLE_RUNS, taken: threading.Event | None = None
    ) -> Snapshot:
        """mysqldump's dump, with row counts, revision and sample read in a transaction that sees
        exactly what the dump's own transaction sees.

        mysqldump ``--single-transaction`` takes its snapshot when it starts, in a transaction
        nobody else can join (MySQL has no ``pg_export_snapshot``).  So the two snapshots are
        taken while the database cannot change: a fence session holds ``LOCK TABLES ... READ`` on
        every table (granted once the writes in flight have committed; new writers wait), our
        ``REPEATABLE READ`` transaction starts ``WITH CONSISTENT SNAPSHOT``, mysqldump starts its
        own, and the fence is lifted as soon as mysqldump writes its first table, which it does
        only inside its transaction.  Both snapshots therefore hold the same committed rows, and
        the counts (``COUNT(*)`` in our transaction, while mysqldump reads in its own) describe
        exactly what was dumped.  Writers wait for the fence, not for the dump: about the time
        mysqldump takes to start (13-19 ms here, 25 tables).  The fence needs the LOCK TABLES
        privilege, which the owner of MLflow's database has."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        tool = self.check_tools()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tables = self.tables()
        engine = _engine(self.sqlalchemy_url)
        try:
            with engine.connect() as fence, engine.connect() as conn, tempfile.TemporaryFile() as log:
                self._raise_fence(fence, tables, text)
                conn.execute(text("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                conn.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
                dump = self._start_dump(dest, log)
                try:
                    try:
                        if tables:
                            _wait_until_dumping(dump, dest)
                    finally:
                        fence.execute(text("UNLOCK TABLES"))
                    if taken is not None:
                        taken.set()
                    reader = SqlaReader(conn)
                    counts = _count_rows(reader, tables)
                    revision = _revision(reader, tables)
                    sample = read_sample(reader, tables, sample_runs=sample_runs)
                    conn.rollback()
                    code = dump.wait()
                except BaseException:
                    proc.kill_group(dump)  # type: ignore[arg-type]
                    raise
                if code:
                    log.seek(0)
                    tail = proc.tail(log.read().decode(errors="replace"))
                    raise CommandFailed(f"mysqldump --single-transaction exited with code {code}. Last output:\n{tail}",
                                        returncode=code, output_tail=tail)  # fmt: skip
        except (SQLAlchemyError, OSError) as exc:
            raise InfraError(
                f"MySQL snapshot of {redact(self.uri)} failed: {str(exc).splitlines()[0]}"
            ) from exc
        finally:
            engine.dispose()
        return Snapshot(dest.name, tool, revision, counts, sample)

    def _raise_fence(self, fence: Any, tables: list[str], text: Any) -> None:
        if not tables:
            return
        fence.execute(text(f"SET SESSION lock_wait_timeout = {FENCE_WAIT_S}"))
        try:
            # Table names come from the database's own catalog.
            fence.execute(text("LOCK TABLES " + ", ".join(f"`{t}` READ" for t in tables)))
        except Exception as exc:
            raise InfraError(
                f"Could not hold the tables of {redact(self.uri)} still for the snapshot's start: "
                f"{str(exc).splitlines()[0]}",
                hint=f"A transaction kept them longer than {FENCE_WAIT_S}s, or the user lacks the LOCK TABLES "
                "privilege (GRANT LOCK TABLES ON <database>.* TO <user>).",
            ) from exc

    def _start_dump(self, dest: Path, log: Any) -> subprocess.Popen[bytes]:
        args = [self._tool("mariadb-dump", "mysqldump"), *self._args(), "--single-transaction", "--quick",
                "--routines", "--triggers", "--hex-blob", "--no-tablespaces", "--skip-lock-tables",
                "--default-character-set=utf8mb4", f"--result-file={dest}", self.conn.database]  # fmt: skip
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=self._env(), start_new_session=True)  # fmt: skip

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
                return fn(SqlaReader(conn), tables)
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
