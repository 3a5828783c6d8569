"""Predict in a model's own environment (``virtualenv`` or ``uv``), with the interpreter started ahead.

MLflow builds the environment from the model's own requirements, or finds it in its cache under
``MLFLOW_ENV_ROOT`` (:meth:`PyFuncBackend.prepare_env`), and predicts in a new interpreter there,
which imports MLflow, pandas and the model's flavor (scikit-learn, ...) from scratch: seconds
that ``smoke`` spent after the run, with the second core idle while the entry point ran.

Here that interpreter (:mod:`mlflow_ci.checks._predict_worker`) is started while the entry point still
runs, in the environment the last model of the same project (same lock, same env manager) needed,
and it imports what that prediction imported.  Once the model exists MLflow names the environment
it needs; the warm interpreter is used only if it runs in exactly that one (the same activate
command, which names the environment by the hash of the model's requirements).  Otherwise it is
stopped and a new one is started in the right environment, as without a head start.  What each
project's last model needed is remembered in :data:`RECORD` inside the environment cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ci.checks._predict_worker import MARK
from mlflow_ci.core import proc
from mlflow_ci.core.fsutil import atomic_write_json

RECORD = "mlflow-ci-model-envs.json"
MAX_RECORDS = 64
WORKER = Path(__file__).with_name("_predict_worker.py")


class PredictFailed(Exception):
    """The model (or its environment) failed to predict: a check result, not an mlflow-ci error."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message + (f"\n{detail}" if detail else ""))


def env_root() -> Path:
    """MLflow's environment cache, as ``mlflow.environment_variables.MLFLOW_ENV_ROOT`` resolves it.

    Read without importing MLflow: the worker is started before this process pays for that import.
    """
    return Path(os.environ.get("MLFLOW_ENV_ROOT") or Path.home() / ".mlflow" / "envs")


def record_key(*parts: str) -> str:
    """Which earlier model's environment to start ahead: one per project, lock and env manager."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _read_records(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(root: Path, key: str, activate: list[str], imported: list[str]) -> None:
    records = _read_records(root)
    records[key] = {"activate": activate, "preload": imported,
                    "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    newest = sorted(records, key=lambda k: str(records[k].get("updated", "")), reverse=True)[:MAX_RECORDS]
    with contextlib.suppress(OSError):  # a cache that cannot be written costs speed, not correctness
        atomic_write_json(root / RECORD, {k: records[k] for k in newest})


@dataclass
class Worker:
    """One :mod:`mlflow_ci.checks._predict_worker` process in one environment; serves one request."""

    activate: list[str]
    child: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    replies: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, activate: list[str], preload: list[str], env: Mapping[str, str]) -> Worker:
        command = " && ".join([*activate, shlex.join(["exec", "python", str(WORKER), json.dumps(preload)])])
        child = subprocess.Popen(
            ["bash", "-c", command], env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )  # fmt: skip
        worker = cls(list(activate), child)
        threading.Thread(target=worker._pump, name="predict-worker", daemon=True).start()
        return worker

    def _pump(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            if line.startswith(MARK):
                with contextlib.suppress(ValueError):
                    self.replies.put(json.loads(line[len(MARK) :]))
                    continue
            self.output.append(line)
        self.replies.put(None)  # the worker is gone

    def reply(self, deadline: float) -> dict[str, Any] | None:
        try:
            return self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        proc.kill_group(self.child, grace=2.0)


@contextlib.contextmanager
def started_ahead(key: str | None, env_manager: str, env: Mapping[str, str]) -> Iterator[Worker | None]:
    """A worker in the environment the project's last model used, or ``None``; always stopped."""
    worker = None
    if key and env_manager != "local":
        entry = _read_records(env_root()).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("activate"), list):
            worker = Worker.start([str(a) for a in entry["activate"]], list(entry.get("preload") or []), env)
    try:
        yield worker
    finally:
        if worker is not None:
            worker.close()


def predict(local_model: Path, *, env_manager: str, input_path: Path, output_path: Path, env: Mapping[str, str],
            timeout: float, warm: Worker | None = None, key: str | None = None) -> str:  # fmt: skip
    """Predict ``input_path`` into ``output_path`` in the model's own environment.

    Returns how the interpreter was obtained (``"started ahead"`` or ``"started"``); raises
    :class:`PredictFailed` when the environment cannot be built or the model does not predict.
    """
    from mlflow.models.flavor_backend_registry import get_flavor_backend

    deadline = time.monotonic() + timeout
    # No private env root: the environment is built once and cached under MLFLOW_ENV_ROOT.
    backend = get_flavor_backend(str(local_model), env_manager=env_manager, create_env_root_dir=False,
                                 env_root_dir=None)  # fmt: skip
    try:
        with proc.captured_stdio():  # environment builds print through children of ours
            activate = list(backend.prepare_env(str(local_model)).get_activate_command())
    except Exception as exc:
        raise PredictFailed(f"the model's environment could not be built ({type(exc).__name__})",
                            str(exc)[-3000:]) from None  # fmt: skip
    how = "started ahead"
    worker = warm if warm is not None and warm.activate == activate else None
    try:
        ready = worker.reply(deadline) if worker is not None else None
        if not (ready and ready.get("ready")):
            how = "started"
            if worker is not None:
                worker.close()
            worker = Worker.start(activate, [], env)
            ready = worker.reply(deadline)
            if not (ready and ready.get("ready")):
                raise PredictFailed("the model's environment did not start Python with MLflow",
                                    proc.tail("".join(worker.output)))  # fmt: skip
        assert worker.child.stdin is not None
        request = {"model_uri": local_model.as_uri(), "input_path": str(input_path),
                   "output_path": str(output_path), "content_type": "json"}  # fmt: skip
        try:
            worker.child.stdin.write(json.dumps(request) + "\n")
            worker.child.stdin.flush()
        except OSError:
            pass  # it died: its reply is None and its output says why
        answer = worker.reply(deadline)
        if answer is None:
            raise PredictFailed(
                "the prediction did not finish"
                if time.monotonic() >= deadline
                else "the predicting process died",
                proc.tail("".join(worker.output)),
            )
        if not answer.get("ok"):
            raise PredictFailed(str(answer.get("error")), str(answer.get("traceback", "")))
        if key:
            _remember(env_root(), key, activate, [str(m) for m in answer.get("imported", [])])
        return how
    finally:
        if worker is not None and worker is not warm:
            worker.close()
