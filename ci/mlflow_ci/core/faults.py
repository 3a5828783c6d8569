"""Named pause points for crash and race tests (and nothing else).

Registry changes call :func:`point` between their steps.  When ``MLFLOW_CI_FAULT_POINT`` names the
point and ``MLFLOW_CI_FAULT_DIR`` is set, the process writes ``<dir>/<point>.<pid>.reached`` and
waits until ``<dir>/<point>.release`` exists, so a test can kill the tracking server, or start a
rival process, at an exact step.  Unset (always, outside tests) a point costs one dict lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINT_ENV = "MLFLOW_CI_FAULT_POINT"
DIR_ENV = "MLFLOW_CI_FAULT_DIR"
MAX_WAIT_S = 120.0


def point(name: str) -> None:
    if os.environ.get(POINT_ENV) != name:
        return
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    base = Path(folder)
    (base / f"{name}.{os.getpid()}.reached").touch()
    release = base / f"{name}.release"
    deadline = time.monotonic() + MAX_WAIT_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
