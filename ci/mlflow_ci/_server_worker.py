"""Child of :class:`mlflow_ci.tracking.PreparedServer`: MLflow's own server app, imported ahead.

Imports uvicorn and MLflow's server (the seconds of a server start) before its stores exist,
says ``ready``, then waits for one JSON line naming the stores, and serves
``mlflow.server.fastapi_app:app`` with uvicorn exactly as ``mlflow server`` has its own child do,
with the environment ``mlflow server`` would give that child (``mlflow.server._run_server``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import uuid


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    # Importing MLflow's server allocates millions of objects that live as long as the process and
    # form few cycles: the collector, run every 700 allocations, costs about a fifth of the import
    # (measured: 3.5 s instead of 4.3 s of CPU).  Off while importing, then the imported objects
    # are frozen out of every later collection.
    gc.disable()
    # isort: off
    import uvicorn  # first: MLflow's server module installs its security middleware when it sees it
    import mlflow.server
    import mlflow.server.fastapi_app  # the app uvicorn serves: builds it now (reads stores per request)
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
    os.dup2(2, 1)  # from here on the server logs to the log file, never into the unread pipe
    os.environ.update(
        {
            BACKEND_STORE_URI_ENV_VAR: stores["backend_store_uri"],
            REGISTRY_STORE_URI_ENV_VAR: stores["backend_store_uri"],
            ARTIFACT_ROOT_ENV_VAR: resolve_default_artifact_root(True, "", stores["backend_store_uri"]),
            SERVE_ARTIFACTS_ENV_VAR: "true",
            ARTIFACTS_DESTINATION_ENV_VAR: stores["artifacts_destination"],
            _MLFLOW_SGI_NAME.name: "uvicorn",
            _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
            _MLFLOW_IN_JOB_EXECUTOR.name: "false",
        }
    )
    uvicorn.run(
        "mlflow.server.fastapi_app:app",
        host=host,
        port=port,
        workers=1,
        log_config=str(mlflow.server._UVICORN_LOG_CONFIG),
    )


if __name__ == "__main__":
    main()
