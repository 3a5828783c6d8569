"""Quality checks on a logged model beyond its metrics: signature, input example predicts, size on
disk within budget, single-row predict latency (median of several calls) within budget."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.config import ModelChecks
from mlflow_ci.core.errors import InfraError
from mlflow_ci.core.report import Check, check


@dataclass
class LoadedModel:
    uri: str
    path: Path
    pyfunc: Any | None
    load_error: str = ""


def download_and_load(uri: str, dst: Path) -> LoadedModel:
    """Download ``uri`` into ``dst`` and load it with pyfunc in this process."""
    import mlflow

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise InfraError(f"Could not download model {uri}: {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        model = mlflow.pyfunc.load_model(str(local))
        return LoadedModel(uri, local, model)
    except Exception as exc:
        return LoadedModel(uri, local, None, f"{type(exc).__name__}: {str(exc)[:300]}")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_checks(loaded: LoadedModel, cfg: ModelChecks) -> list[tuple[str, Check]]:
    """Return (gate id, check) pairs."""
    from mlflow.models import Model

    out: list[tuple[str, Check]] = []
    adv = cfg.advisory
    meta = Model.load(str(loaded.path))
    if cfg.require_signature:
        sig = meta.signature
        out.append(
            (
                "model:signature",
                check(
                    "model signature",
                    sig is not None,
                    expected="present",
                    found="present" if sig else "missing",
                    advisory=adv,
                    detail="Log the model with signature=infer_signature(X, y).",
                ),
            )
        )
    example = None
    example_error = ""
    try:
        example = meta.load_input_example(str(loaded.path))
    except Exception as exc:
        example_error = f"{type(exc).__name__}: {exc}"
    if cfg.require_input_example:
        ok, found = False, "no input example logged"
        if example_error:
            found = f"input example unreadable ({example_error[:200]})"
        elif example is not None and loaded.pyfunc is None:
            found = f"model does not load ({loaded.load_error})"
        elif example is not None:
            try:
                pred = loaded.pyfunc.predict(example)
                n = len(pred) if hasattr(pred, "__len__") else 1
                ok, found = True, f"predicts ({n} row{'s' if n != 1 else ''})"
            except Exception as exc:
                found = f"predict failed: {type(exc).__name__}: {str(exc)[:200]}"
        out.append(
            (
                "model:input_example",
                check("input example predicts", ok, expected="loads and predicts", found=found, advisory=adv),
            )
        )
    if cfg.max_size_mb is not None:
        size_mb = dir_size(loaded.path) / 1e6
        out.append(
            (
                "model:size",
                check(
                    "model size",
                    size_mb <= cfg.max_size_mb,
                    expected=f"≤ {cfg.max_size_mb:g} MB",
                    found=f"{size_mb:.2f} MB",
                    advisory=adv,
                ),
            )
        )
    if cfg.max_latency_ms is not None:
        ok, found = False, "no input example to time"
        if loaded.pyfunc is not None and example is not None:
            row = example.head(1) if hasattr(example, "head") else example[:1]
            try:
                loaded.pyfunc.predict(row)  # warm-up, not counted
                times = []
                for _ in range(cfg.latency_calls):
                    t0 = time.perf_counter()
                    loaded.pyfunc.predict(row)
                    times.append((time.perf_counter() - t0) * 1000)
                median = statistics.median(times)
                ok, found = median <= cfg.max_latency_ms, f"{median:.2f} ms (median of {cfg.latency_calls})"
            except Exception as exc:
                found = f"predict failed: {type(exc).__name__}"
        out.append(
            (
                "model:latency",
                check(
                    "single-row latency",
                    ok,
                    expected=f"≤ {cfg.max_latency_ms:g} ms",
                    found=found,
                    advisory=adv,
                ),
            )
        )
    return out
