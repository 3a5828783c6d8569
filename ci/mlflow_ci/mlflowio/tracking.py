"""The tracking-server fixture: a real ``mlflow server`` on a free port, or any existing URI.

``TrackingServer`` is a context manager that starts the server with the embedded default
(SQLite + local artifacts in a work folder), waits for ``/health`` and always tears the whole
process group down.  ``mlflow-ci server up|down`` wraps the same class with a state file so a
shell or a workflow can keep a server across steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mlflow_ci.core import proc
from mlflow_ci.core.errors import ConfigError, InfraError, ServerUnreachable
from mlflow_ci.core.fsutil import atomic_write_json
from mlflow_ci.core.poll import poll
from mlflow_ci.core.redact import redact

STATE_FILE = "server.json"
# Seconds between SIGTERM and SIGKILL for a server `server down` stops.
KILL_GRACE_S = 5.0
DEFAULT_STARTUP_TIMEOUT = 60.0
# MLflow's server retries a database it cannot connect to for about 100 s (10 attempts, doubling
# waits) before it exits.  Its 6th attempt comes about 6 s after the first: by then the database
# is not merely starting, and the server stops with the database's own error.
_DB_RETRY_SIGNATURE = "SQLAlchemy engine could not be created"
DB_ATTEMPTS_BEFORE_GIVING_UP = 6

# The MLflow client retries for minutes by default; a CI tool should say "unreachable" sooner.
# It retries every REST call and artifact transfer, whatever the method (POST included), on
# connection errors and 408, 429, 500, 502, 503, 504: 4 retries about 0, 2, 4 and 8 s apart (plus up
# to 1 s of jitter), long enough for a replica behind nginx to die and its peers to take over,
# short enough to report a server that is down within half a minute. A retried POST whose first
# try was written before the answer got lost is written twice: see docs/server-ops.md "Replicas".
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # Environments built by uv get their bytecode compiled once, at install: with
    # PYTHONDONTWRITEBYTECODE set (as on many CI machines) every run would recompile every import.
    "UV_COMPILE_BYTECODE": "1",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_health(url: str, timeout: float = 3.0, *, retry: bool = True) -> bool:
    """``/health`` answers 200. A reset connection or a 502/503/504 (a replica behind a proxy that
    dies meanwhile) is tried again, briefly (:data:`mlflow_ci.core.http.DEFAULT_RETRY`) unless
    ``retry`` is false: a poll that waits for a server to start retries on its own schedule."""
    # Imported here: a restore imports this module before it starts its read-back server, and the
    # HTTP client (http.client, with email and ssl) would be half of this module's import.
    from mlflow_ci.core import http

    if not url.startswith(("http://", "https://")):
        return False
    try:
        answer = http.request(
            "GET", f"{url.rstrip('/')}/health", timeout=timeout, retry=http.DEFAULT_RETRY if retry else None
        )
        return answer.status == 200
    except http.HttpError:
        return False


def require_reachable(uri: str, *, attempts: int = 3, delay: float = 1.0) -> None:
    """Fail with exit 3 and a clear sentence when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    if poll(lambda: check_health(uri), attempts=attempts, interval=delay, backoff=2.0).ready:
        return
    raise ServerUnreachable(
        f"The tracking server at {uri} did not answer /health after {attempts} attempts.",
        hint="Is MLFLOW_TRACKING_URI (or --tracking-uri) right, and is the server running? "
        "`mlflow-ci server up` starts a local one.",
    )


# Inherited from the caller, these would silently attach a child to someone else's experiment or
# run, or (VIRTUAL_ENV from an activated venv; UV_PYTHON and UV_PROJECT_ENVIRONMENT from nox's uv
# backend) make `uv pip install` put a project's or a model's requirements into the caller's own
# environment instead of the one MLflow just created.
CALLER_CONTEXT = (
    "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
    "VIRTUAL_ENV", "UV_PYTHON", "UV_PROJECT_ENVIRONMENT",
)  # fmt: skip


def client_env(tracking_uri: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = proc.base_env(CLIENT_ENV)
    for name in CALLER_CONTEXT:
        env.pop(name, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    if extra:
        env.update(extra)
    return env


@contextlib.contextmanager
def client_settings(tracking_uri: str) -> Iterator[None]:
    """Scope the in-process MLflow client to ``tracking_uri`` with bounded retries."""
    saved = {k: os.environ.get(k) for k in (*CLIENT_ENV, *CALLER_CONTEXT, "MLFLOW_TRACKING_URI")}
    for name in CALLER_CONTEXT:
        os.environ.pop(name, None)
    os.environ.update(CLIENT_ENV)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    import mlflow
    from mlflow.exceptions import MlflowException

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    except MlflowException as exc:
        # A request that failed because the server is gone is an infrastructure error, not a bug.
        if tracking_uri.startswith(("http://", "https://")) and not check_health(tracking_uri):
            raise ServerUnreachable(
                f"The tracking server at {tracking_uri} stopped answering ({exc.message.splitlines()[0][:200]}).",
                hint="Check the server's log and that it is still running.",
            ) from None
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if previous is not None:
            mlflow.set_tracking_uri(previous)


@dataclass
class TrackingServer:
    """A real ``mlflow server`` process.

    ``backend_store_uri`` / ``artifacts_destination`` default to SQLite and a folder inside
    ``workdir``.  ``extra_args`` lets server profiles add flags (``--app-name``, ...).
    """

    workdir: Path
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    workers: int = 1
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    _proc: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)  # where this start's lines begin
    # Seconds between SIGTERM and SIGKILL when stopped.
    stop_grace: ClassVar[float] = 5.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def backend_uri(self) -> str:
        """The backend store the server uses (SQLite in its folder when none is given)."""
        return self.backend_store_uri or f"sqlite:///{self.workdir / 'mlflow.db'}"

    def command(self) -> list[str]:
        backend = self.backend_uri
        artifacts = self.artifacts_destination or str(self.workdir / "artifacts")
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            artifacts,
            "--serve-artifacts",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.extra_args,
        ]

    def _spawn(self, *, pipes: bool = False) -> None:
        """Start :meth:`command` in its own session, its output appended to the log (``pipes``:
        its stdin and stdout are pipes to this process, only stderr goes to the log)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        env = proc.base_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env})
        # The log is appended to: an earlier start's lines are not this one's.
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("a", encoding="utf-8")
        try:
            if pipes:
                streams: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": log}
            else:
                streams = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT}
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env, text=True,
                                          start_new_session=True, **streams)  # fmt: skip
        finally:
            log.close()

    def start(self) -> TrackingServer:
        self._spawn()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        next_log_check = 0.0

        def exited_or_stuck(_: bool) -> None:
            nonlocal next_log_check
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise InfraError(
                    f"mlflow server exited with code {self._proc.returncode} before it became healthy. "
                    f"Last lines of {self.log_path}:\n{proc.tail(self._read_log(), 20)}",
                    hint="Check the backend store URI and that the port is free.",
                )
            if time.monotonic() >= next_log_check:
                next_log_check = time.monotonic() + 0.5
                self._fail_if_database_unreachable()

        healthy = poll(lambda: check_health(self.url, timeout=1.0, retry=False), timeout=self.startup_timeout,
                       interval=0.05, give_up=exited_or_stuck, pause=self._pause)  # fmt: skip
        if not healthy.ready:
            raise InfraError(
                f"mlflow server at {self.url} did not answer /health within {self.startup_timeout:.0f}s. "
                f"Last lines of {self.log_path}:\n{proc.tail(self._read_log(), 20)}",
            )

    def _pause(self, seconds: float) -> None:
        """Between two /health attempts."""
        time.sleep(seconds)

    def _fail_if_database_unreachable(self) -> None:
        """MLflow is still retrying a database it could not connect to (its log says so each
        time): after :data:`DB_ATTEMPTS_BEFORE_GIVING_UP` attempts, stop with the database's error
        instead of waiting out MLflow's retries or the startup timeout."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_start)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return
        attempts = text.count(_DB_RETRY_SIGNATURE)
        if attempts < DB_ATTEMPTS_BEFORE_GIVING_UP:
            return
        error = []  # the exception's lines, up to MLflow's "Operation will be retried"
        for line in text[text.rindex(_DB_RETRY_SIGNATURE) :].splitlines()[1:]:
            if line.startswith("Operation will be retried"):
                break
            if not line.startswith("(Background on this error"):
                error.append(line.strip())
        raise InfraError(
            f"mlflow server cannot reach its database {redact(self.backend_uri)}: "
            f"{attempts} attempts failed, the last with: {' '.join(error)}",
            hint="Check that the database is running and reachable from this host, and the user, password "
            "and database name in the backend store URI.",
        )

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None:
            proc.kill_group(self._proc, grace=self.stop_grace)  # type: ignore[arg-type]
            self._proc = None

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PreparedServer(TrackingServer):
    """MLflow's server app in a process started before its stores are filled (a restore's read-back).

    :meth:`prepare` starts a process that imports MLflow's server, which is most of a server
    start, while the caller is still writing the database and the artifacts; :meth:`start` then
    hands it the stores and waits until the process says ``serving`` on its pipe and answers
    ``/health``.  The process serves MLflow's Flask app (``mlflow.server:app``, the REST API and
    the artifact proxy) on Werkzeug's threaded server, a copy per core forked after the import,
    with the environment ``mlflow server --gunicorn-opts`` gives it
    (:mod:`mlflow_ci.mlflowio._server_worker`).  Loopback only, no auth app: for checks, not for serving
    a team.
    """

    # A check server holds nothing to flush (it only read): on SIGTERM it kills and reaps the
    # serving copies it forked and exits within milliseconds (MLflow's own graceful shutdown cost
    # a restore 0.2 s); the grace is for a process too busy to answer the signal.
    stop_grace: ClassVar[float] = 5.0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow_ci.mlflowio._server_worker", self.host, str(self.port)]

    def prepare(self) -> PreparedServer:
        self._spawn(pipes=True)
        return self

    def start(self) -> PreparedServer:
        if self._proc is None:
            self.prepare()
        assert self._proc is not None
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        try:
            ready = _read_line(self._proc.stdout, self.startup_timeout)
            if ready.strip() != "ready":
                raise InfraError(
                    f"The MLflow server process for {self.backend_store_uri} did not get ready "
                    f"(exit code {self._proc.poll()}). Last lines of {self.log_path}:\n"
                    f"{proc.tail(self._read_log(), 20)}"
                )
            stores = {"backend_store_uri": self.backend_store_uri or f"sqlite:///{self.workdir / 'mlflow.db'}",
                      "artifacts_destination": self.artifacts_destination or str(self.workdir / "artifacts")}  # fmt: skip
            self._proc.stdin.write(json.dumps(stores) + "\n")
            self._proc.stdin.flush()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _pause(self, seconds: float) -> None:
        """Until the process says ``serving`` (its socket listens: the next /health attempt is
        answered; polling alone waits up to 50 ms more), at most ``seconds``.  Once the pipe has
        ended (after ``serving``, or the process exited) a plain wait."""
        import selectors

        assert self._proc is not None
        stream = self._proc.stdout
        assert stream is not None
        if stream.closed:
            time.sleep(seconds)
            return
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            if not selector.select(seconds):
                return
        if not stream.readline():
            stream.close()

    def __enter__(self) -> PreparedServer:
        return self.prepare()


def _read_line(stream: Any, timeout: float) -> str:
    """One line from a child's pipe, or ``""`` after ``timeout`` seconds or at EOF."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return str(stream.readline())


# --------------------------------------------------------------------------------------------
# `mlflow-ci server up|down`: a detached server remembered in a state file.


def up(
    workdir: Path,
    *,
    port: int | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> dict[str, object]:
    """Start a detached server (``extra_args``/``env``/``workers``: a server profile's, see server_profile)."""
    workdir = Path(workdir).resolve()
    state_path = workdir / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if check_health(str(state["url"])):
            return dict(state, reused=True)
        proc.stop_group(int(state["pid"]), grace=KILL_GRACE_S)
    server = TrackingServer(
        workdir,
        port=port,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        workers=workers,
        extra_args=tuple(extra_args),
        env=dict(env or {}),
        startup_timeout=startup_timeout,
    )
    server.start()
    state = {"url": server.url, "pid": server.pid, "workdir": str(workdir), "log": str(server.log_path)}
    atomic_write_json(state_path, state)
    # Detach: the server lives on after this process; `down` ends it.
    server._proc = None
    return dict(state, reused=False)


def down(workdir: Path) -> dict[str, object]:
    state_path = Path(workdir).resolve() / STATE_FILE
    if not state_path.exists():
        raise ConfigError(
            f"No server state in {state_path}: nothing to stop (was `mlflow-ci server up` run there?)."
        )
    state = json.loads(state_path.read_text())
    stopped = proc.stop_group(int(state["pid"]), grace=KILL_GRACE_S)
    state_path.unlink()
    return dict(state, stopped=stopped)


@contextlib.contextmanager
def tracking(uri: str | None, workdir: Path) -> Iterator[str]:
    """Yield a tracking URI: ``uri`` when given (checked reachable), else a fresh local server."""
    if uri:
        if uri.startswith(("sqlite:", "file:", "postgresql", "mysql")) or "://" not in uri:
            # Direct stores work for the in-process client; `mlflow run` children need HTTP.
            raise ConfigError(
                f"Tracking URI {uri!r} is not an HTTP server.",
                hint="mlflow-ci talks to tracking servers over HTTP (project environments may hold only "
                "mlflow-skinny); leave --tracking-uri empty to get an embedded server.",
            )
        require_reachable(uri)
        yield uri
        return
    with TrackingServer(workdir) as server:
        yield server.url
