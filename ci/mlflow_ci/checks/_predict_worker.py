"""Runs INSIDE a model's environment, which holds MLflow but not mlflow-ci: standard library and
MLflow only.  Started by :mod:`mlflow_ci.checks.modelenv` before the model exists: it imports what a
prediction needs, says it is ready, then takes one request on stdin and predicts exactly as
MLflow's own ``mlflow.pyfunc._mlflow_pyfunc_backend_predict`` does (``scoring_server._predict``).

Protocol: one JSON line in; replies are stdout lines starting with :data:`MARK` (anything else
on stdout or stderr is the model's own output, kept for the report).
"""

import importlib
import json
import sys
import traceback

MARK = "@@mlflow-ci-worker@@ "


def reply(**fields):
    sys.stdout.write(MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    preload = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
    from mlflow.pyfunc.scoring_server import _predict

    base = set(sys.modules)
    for name in preload:  # what the last prediction in this environment imported
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - a module that no longer imports is loaded (or not) by the model itself
            continue
    reply(ready=True)
    line = sys.stdin.readline()
    if not line:
        return
    request = json.loads(line)
    try:
        _predict(
            model_uri=request["model_uri"],
            input_path=request["input_path"],
            output_path=request["output_path"],
            content_type=request["content_type"],
        )
    except BaseException as exc:  # the model's failure is the check's result
        reply(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
        return
    reply(ok=True, imported=sorted(set(sys.modules) - base))


if __name__ == "__main__":
    main()
