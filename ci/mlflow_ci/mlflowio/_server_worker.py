"""Child of :class:`mlflow_ci.mlflowio.tracking.PreparedServer`: MLflow's own server app, imported ahead.

Imports MLflow's server (the seconds of a server start) before its stores exist, says
``ready``, then waits for one JSON line naming the stores and serves MLflow's Flask app
(``mlflow.server:app``, the app ``mlflow server --gunicorn-opts ...`` serves) with the
environment ``mlflow server`` gives its server process (``mlflow.server._run_server``).

The Flask app is the whole REST API and the artifact proxy; what ``mlflow server`` puts in front
of it by default (FastAPI under uvicorn, for the gateway, the assistant and trace ingestion) is
neither read by a restore's checks nor imported here (half a second of every restore).  It is
served by Werkzeug's threaded WSGI server in this process and in copies forked after the import,
one per core (:func:`_serve`).  SIGTERM stops them all in milliseconds with nothing left behind
(gunicorn, tried first, took half a second to stop its workers cleanly, and a master killed
outright leaves them to init, which does not always reap them).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import uuid
from typing import Any

MAX_PROCESSES = 4  # serving processes at most (a read-back makes a few dozen requests)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    # Importing MLflow's server allocates millions of objects that live as long as the process and
    # form few cycles: the collector, run every 700 allocations, costs about a fifth of the import
    # (measured: 3.5 s instead of 4.3 s of CPU).  Off while importing, then the imported objects
    # are frozen out of every later collection.
    gc.disable()
    # As `mlflow server --serve-artifacts` has it before its server imports the app, which then
    # installs MLflow's security middleware (Host header and CORS checks) as in any MLflow server.
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    # isort: off
    import mlflow.server
    import mlflow.server.handlers
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store

    # isort: on
    from mlflow.environment_variables import _MLFLOW_IN_JOB_EXECUTOR, _MLFLOW_SERVER_BOOT_ID, _MLFLOW_SGI_NAME
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    gc.freeze()
    gc.enable()
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return  # released without a start: nothing to serve
    stores = json.loads(line)
    notify = os.dup(1)  # the pipe: "serving" once the socket listens (see _serve)
    os.dup2(2, 1)  # from here on the server logs to the log file, never into the unread pipe
    os.environ.update(
        {
            BACKEND_STORE_URI_ENV_VAR: stores["backend_store_uri"],
            REGISTRY_STORE_URI_ENV_VAR: stores["backend_store_uri"],
            ARTIFACT_ROOT_ENV_VAR: resolve_default_artifact_root(True, "", stores["backend_store_uri"]),
            SERVE_ARTIFACTS_ENV_VAR: "true",
            ARTIFACTS_DESTINATION_ENV_VAR: stores["artifacts_destination"],
            _MLFLOW_SGI_NAME.name: "werkzeug",
            _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
            _MLFLOW_IN_JOB_EXECUTOR.name: "false",
        }
    )
    _open_stores()
    _serve(mlflow.server.app, host, port, notify)


def _open_stores() -> None:
    """Open the tracking and registry stores once, before any copy is forked, so that every
    serving process reads the stores this one checked: MLflow opening a store on a database that
    lacks tables creates them, and a copy opening its own later could change what is read back.
    Their pooled connections are closed first (a connection is never shared across a fork).  A
    store that fails to open here fails the read that needs it, with MLflow's message, as before."""
    from mlflow.server import handlers

    try:
        stores = [handlers._get_tracking_store(), handlers._get_model_registry_store()]
    except Exception as exc:  # reported by the reads, which open the stores again
        print(f"the stores did not open ahead of the reads: {exc}", file=sys.stderr, flush=True)
        return
    for store in stores:
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()


def _serve(app: Any, host: str, port: int, notify: int) -> None:
    """``app`` on Werkzeug's threaded server (HTTP/1.1 keep-alive, no log line per request), in
    this process and in a forked copy per further core, all accepting on one socket: a
    read-back's first requests each open the stores and compile their queries, and those run on
    every core.  SIGTERM ends the copies and reaps them before this process exits.  ``notify``
    (the parent's pipe) gets ``serving`` once the socket listens."""
    import logging
    import signal

    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # one connection per client thread, not one per request

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True, request_handler=Handler)  # bound and listening
    # Connections wait in the listen queue from here: the parent reads back without polling /health.
    os.write(notify, b"serving\n")
    os.close(notify)
    copies: list[int] = []

    def stop(*_: Any) -> None:
        for pid in copies:
            os.kill(pid, signal.SIGKILL)
        for pid in copies:
            os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)  # before the first fork: no copy is ever left unreaped
    for _ in range(_processes() - 1):
        pid = os.fork()  # before any store is opened: each process opens its own
        if pid == 0:
            copies.clear()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            server.serve_forever()
            os._exit(0)
        copies.append(pid)
    server.serve_forever()


def _processes() -> int:
    """Serving processes: one per core this process may run on, at most ``MAX_PROCESSES``; one
    where processes cannot be forked."""
    if not hasattr(os, "fork"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_PROCESSES))


if __name__ == "__main__":
    main()
