"""`mlflow-ci smoke` against a bare `mlflow run` of the same entry point, same env manager.

Both talk to the same already-running tracking server, with the environment cache warmed first,
and are measured interleaved (bare, smoke, bare, smoke, ...) so drift in machine load hits both.
Target: smoke / bare ≤ 1.3 with a warm environment cache.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow_ci.config import load_policy
from mlflow_ci.mlflowio.tracking import TrackingServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
REPEATS = int(os.environ.get("BENCH_SMOKE_REPEATS", "3"))
TARGET = 1.3


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=EXAMPLE, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"benchmark command failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}"
        )
    return elapsed


def main() -> dict[str, object]:
    policy = load_policy(EXAMPLE / "mlflow-ci.yaml").policy
    managers = os.environ.get("BENCH_SMOKE_ENV_MANAGERS", f"local,{policy.smoke.env_manager}").split(",")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, TrackingServer(Path(tmp) / "server") as server:
        env = dict(os.environ, MLFLOW_TRACKING_URI=server.url, MLFLOW_DISABLE_TELEMETRY="true")
        for manager in dict.fromkeys(managers):
            params = [a for k, v in policy.smoke.parameters.items() for a in ("-P", f"{k}={v}")]
            bare = [sys.executable, "-m", "mlflow", "run", str(EXAMPLE), "-e", policy.smoke.entry_point,
                    "--env-manager", manager, "--experiment-name", "bench-bare", *params]  # fmt: skip
            smoke = [sys.executable, "-m", "mlflow_ci", "smoke", str(EXAMPLE), "--env-manager", manager,
                     "--tracking-uri", server.url, "--report-dir", str(Path(tmp) / "reports")]  # fmt: skip
            print(f"[{manager}] warming the environment cache ...", flush=True)
            _timed(smoke, env)
            bare_times, smoke_times = [], []
            for i in range(REPEATS):
                bare_times.append(_timed(bare, env))
                smoke_times.append(_timed(smoke, env))
                print(
                    f"[{manager}] round {i + 1}: bare {bare_times[-1]:.1f}s, smoke {smoke_times[-1]:.1f}s",
                    flush=True,
                )
            ratio = statistics.median(smoke_times) / statistics.median(bare_times)
            verdict = "meets" if ratio <= TARGET else "misses"
            print(f"[{manager}] median bare mlflow run {statistics.median(bare_times):.1f}s, "
                  f"mlflow-ci smoke {statistics.median(smoke_times):.1f}s, ratio {ratio:.2f} "
                  f"({verdict} the {TARGET} target)", flush=True)  # fmt: skip
            results[manager] = {
                "bare_s": bare_times,
                "smoke_s": smoke_times,
                "ratio": ratio,
                "target": TARGET,
            }
    return results
