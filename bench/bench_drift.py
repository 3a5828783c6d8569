"""`mlflow-ci drift` on 1,000,000 rows (20 numeric and 5 categorical features, 5 numeric ones
shifted by 0.06-0.1 standard deviations) against Evidently's data-drift preset on the same Parquet
files, measured in the same run; then 10,000,000 rows read in chunks from 10 Parquet files, to show
that memory does not grow with rows; then the calibration of the default thresholds on
reference-against-reference splits (docs/monitoring.md).

Targets: ours ≤ 5 s for 1M rows on a 2-core machine; exactly the shifted features found; Evidently
at least 20x slower. Evidently is never a dependency: it lives in a venv of its own
(``BENCH_EVIDENTLY_VENV``, default ``.nox/_evidently``; it needs pandas < 3), created here when
missing. If it cannot be installed, the bench says so and prints ours alone.

Environment: ``BENCH_DRIFT_ROWS`` (1000000), ``BENCH_DRIFT_BIG_FILES`` (10; 0 skips the chunked
run), ``BENCH_DRIFT_DATA`` (where the Parquet files are kept between runs), ``BENCH_DRIFT_CALIBRATE``
(1; 0 skips the calibration), ``BENCH_DRIFT_EVIDENTLY`` (1; 0 skips Evidently).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("BENCH_DRIFT_ROWS", "1000000"))
BIG_FILES = int(os.environ.get("BENCH_DRIFT_BIG_FILES", "10"))
DATA = Path(os.environ.get("BENCH_DRIFT_DATA", str(Path(tempfile.gettempdir()) / "mlflow-ci-bench-drift")))
VENV = Path(os.environ.get("BENCH_EVIDENTLY_VENV", str(ROOT / ".nox" / "_evidently")))
EVIDENTLY = "evidently==0.7.23"
TARGET_SECONDS = 5.0
TARGET_RATIO = 20.0
GENERATOR = "v1"  # bump when the data below changes, so cached files are regenerated

N_NUMERIC, N_CATEGORICAL = 20, 5
# Feature -> shift in standard deviations of that feature's distribution.
SHIFTS = {"n00": 0.10, "n04": 0.09, "n08": 0.08, "n12": 0.07, "n16": 0.06}
CATEGORY_SIZES = (3, 5, 10, 20, 50)


def _numeric(rng: np.random.Generator, i: int, n: int) -> tuple[np.ndarray, float]:
    """Column ``i``: (values, the distribution's standard deviation)."""
    kind = i % 5
    if kind == 0:
        return rng.normal(10.0 * i, 2.0 + i, n), 2.0 + i
    if kind == 1:
        return rng.lognormal(0.0, 0.5, n), float(np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)))
    if kind == 2:
        return rng.uniform(-1.0, 1.0, n), float(2 / np.sqrt(12))
    if kind == 3:
        return rng.exponential(3.0, n), 3.0
    return rng.gamma(4.0, 2.0, n), float(np.sqrt(4.0) * 2.0)


def frame(n: int, seed: int, *, shifted: bool) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i in range(N_NUMERIC):
        name = f"n{i:02d}"
        values, sd = _numeric(rng, i, n)
        if shifted and name in SHIFTS:
            values = values + SHIFTS[name] * sd
        cols[name] = values
    for j, k in enumerate(CATEGORY_SIZES):
        p = 1.0 / np.arange(1, k + 1)
        labels = np.array([f"c{j}_{v}" for v in range(k)])
        cols[f"cat{j}"] = labels[rng.choice(k, n, p=p / p.sum())]
    return pd.DataFrame(cols)


def prepare() -> dict[str, Path]:
    """Parquet files: reference (ROWS), current (ROWS, shifted), big/ (BIG_FILES x ROWS, shifted)."""
    marker = DATA / f"ready-{GENERATOR}-{ROWS}-{BIG_FILES}"
    paths = {
        "reference": DATA / "reference.parquet",
        "current": DATA / "current.parquet",
        "big": DATA / "big",
    }
    if marker.exists():
        return paths
    shutil.rmtree(DATA, ignore_errors=True)
    paths["big"].mkdir(parents=True)
    start = time.perf_counter()
    frame(ROWS, 1, shifted=False).to_parquet(paths["reference"], row_group_size=ROWS // 4 or 1)
    frame(ROWS, 2, shifted=True).to_parquet(paths["current"], row_group_size=ROWS // 4 or 1)
    for i in range(BIG_FILES):
        frame(ROWS, 100 + i, shifted=True).to_parquet(
            paths["big"] / f"part-{i:02d}.parquet", row_group_size=ROWS // 4 or 1
        )
    marker.touch()
    print(f"generated the Parquet data in {time.perf_counter() - start:.0f}s under {DATA}", flush=True)
    return paths


def _run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600
) -> tuple[dict[str, Any], float]:
    """Run a child; (its ``RESULT {json}`` line, its peak RSS in MB, from wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                raise SystemExit(f"timed out: {' '.join(argv)}")
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line[len("RESULT ") :] for line in out.read().splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"{argv[0]} exited {child.returncode} without a result:\n{err.read()[-3000:]}")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024


OURS = textwrap.dedent(
    """
    import json, sys, time, tempfile
    from pathlib import Path
    from mlflow_ci.monitoring.command import drift_command  # imports before the clock starts
    import pyarrow.dataset, scipy.stats, mlflow_ci.monitoring.report  # noqa
    ref, cur = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        code = drift_command(reference=ref, current=cur, policy_path=None, tracking_uri=None,
                             report_dir=Path(tmp), as_json=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        report = json.loads((Path(tmp) / "drift.json").read_text())
    print("RESULT " + json.dumps({"seconds": seconds, "cpu_seconds": cpu, "exit": code, "drifted": report["data"]["dataset"]["drifted"],
                      "rows": report["data"]["current"]["rows"]}))
    """
)

EVIDENTLY_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset
    imported = time.perf_counter() - t0
    start, cpu = time.perf_counter(), time.process_time()
    ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
    read = time.perf_counter() - start
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    result = snapshot.dict()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    drifted = []
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        value, threshold, method = m["value"], cfg["threshold"], str(cfg.get("method", ""))
        hit = value < threshold if "p_value" in method else value >= threshold
        if hit:
            drifted.append(cfg["column"])
    methods = sorted({str(m.get("config", {}).get("method")) for m in result["metrics"] if m.get("config", {}).get("method")})
    print("RESULT " + json.dumps({"seconds": seconds, "cpu_seconds": cpu, "read_seconds": read, "import_seconds": imported,
                      "drifted": sorted(drifted), "methods": methods}))
    """
)


def evidently_python() -> tuple[Path | None, str]:
    """The venv's interpreter, creating the venv when missing; (None, why) when impossible."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import evidently, pyarrow, pandas; assert pandas.__version__ < '3'"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python, "reused"
    uv = shutil.which("uv")
    if uv is None:
        return None, "uv is not on PATH"
    print(f"installing {EVIDENTLY} into {VENV} (its own venv, never a dependency) ...", flush=True)
    steps = [
        [
            uv,
            "venv",
            "--allow-existing",
            "--python",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            str(VENV),
        ],
        [uv, "pip", "install", "--python", str(python), EVIDENTLY, "pandas<3", "pyarrow"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return (
                None,
                f"`{' '.join(step[:3])}` failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}",
            )
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        return None, "evidently installed but does not import"
    return python, "installed"


def calibrate(trials: int = 200, n: int = 20_000) -> dict[str, Any]:
    """Reference-against-reference splits at the large-sample boundary: the null distribution of
    each effect size (its 99.9th percentile must stay below the default threshold), and the
    per-feature false-alarm rate of the small-sample tests at several sizes."""
    import pandas as pd
    from mlflow_ci.config import Monitoring
    from mlflow_ci.monitoring.drift import compare
    from mlflow_ci.monitoring.profile import build_profile, profile_batches

    cfg = Monitoring()

    def sample(rng: np.random.Generator, size: int) -> Any:
        cols = {}
        for i in range(5):
            cols[f"n{i}"] = _numeric(rng, i, size)[0]
        cols["poisson"] = rng.poisson(30, size)
        for k in (2, 5, 20, 50):
            p = 1.0 / np.arange(1, k + 1)
            cols[f"k{k}"] = rng.choice(k, size, p=p / p.sum()).astype(str)
        return pd.DataFrame(cols)

    effects: dict[str, list[float]] = {}
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        ref = build_profile(sample(rng, n))
        cur = profile_batches([sample(rng, n)], ref.specs)
        for res in compare(ref, cur, cfg).features:
            effect = "wasserstein" if res.kind == "numeric" else "jensenshannon"
            effects.setdefault(f"{res.name} ({effect})", []).append(res.effects[effect] or 0.0)
    table = {name: float(np.percentile(vals, 99.9)) for name, vals in effects.items()}
    rates = {}
    for n_ref, n_cur in ((1000, 200), (5000, 1000), (20_000, 10_000)):
        flagged = tested = 0
        for seed in range(trials):
            rng = np.random.default_rng(10_000 + seed)
            ref = build_profile(sample(rng, n_ref))
            result = compare(
                ref,
                profile_batches([sample(rng, n_cur)], ref.specs),
                cfg.model_copy(update={"correction": "none"}),
            )
            flagged += sum(r.drifted for r in result.features)
            tested += len(result.features)
        rates[f"{n_ref}/{n_cur}"] = flagged / tested
    return {"effect_p999_at_boundary": table, "per_feature_false_alarm_rate": rates, "trials": trials, "n": n}


def main() -> dict[str, Any]:
    paths = prepare()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "ci") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results: dict[str, Any] = {"rows": ROWS, "shifted": sorted(SHIFTS)}

    print(f"ours: {ROWS:,} rows, reference and current from Parquet ...", flush=True)
    ours, ours_rss = _run([sys.executable, "-c", OURS, str(paths["reference"]), str(paths["current"])], env)
    results["ours"] = {**ours, "peak_rss_mb": ours_rss}
    if BIG_FILES:
        print(f"ours: {BIG_FILES * ROWS:,} rows in {BIG_FILES} Parquet files, read in chunks ...", flush=True)
        big, big_rss = _run(
            [sys.executable, "-c", OURS, str(paths["reference"]), str(paths["big"] / "*.parquet")], env
        )
        results["ours_big"] = {**big, "peak_rss_mb": big_rss}

    python, how = (
        (None, "BENCH_DRIFT_EVIDENTLY=0")
        if os.environ.get("BENCH_DRIFT_EVIDENTLY") == "0"
        else evidently_python()
    )
    if python is None:
        print(f"Evidently could not be installed here ({how}): ours alone.", flush=True)
        results["evidently"] = {"skipped": how}
    else:
        print(f"Evidently ({how} venv {VENV}): DataDriftPreset on the same {ROWS:,} rows ...", flush=True)
        ev, ev_rss = _run(
            [str(python), "-c", EVIDENTLY_RUNNER, str(paths["reference"]), str(paths["current"])]
        )
        results["evidently"] = {**ev, "peak_rss_mb": ev_rss}

    shifted = sorted(SHIFTS)
    rows = [("mlflow-ci drift", ROWS, results["ours"])]
    if "ours_big" in results:
        rows.append((f"mlflow-ci drift, {BIG_FILES} files chunked", BIG_FILES * ROWS, results["ours_big"]))
    if "seconds" in results["evidently"]:
        rows.append(("Evidently 0.7.23 DataDriftPreset", ROWS, results["evidently"]))
    print()
    print("| tool | rows | wall s | CPU s | peak RSS MB | drifted found | exactly the shifted? |")
    print("|---|---:|---:|---:|---:|---|---|")
    for label, n, r in rows:
        exact = "yes" if sorted(r["drifted"]) == shifted else "no"
        print(
            f"| {label} | {n:,} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {', '.join(r['drifted']) or '-'} | {exact} |"
        )
    print(f"\nshifted: {', '.join(f'{k} +{v} sd' for k, v in SHIFTS.items())}")
    ok_time = results["ours"]["seconds"] <= TARGET_SECONDS
    load = os.getloadavg()[0]
    print(
        f"ours {results['ours']['seconds']:.2f}s for {ROWS:,} rows: {'meets' if ok_time else 'misses'} the "
        f"{TARGET_SECONDS:g}s goal (load average {load:.1f} on {os.cpu_count()} cores: wall time grows with it)"
    )
    if "seconds" in results["evidently"]:
        ratio = results["evidently"]["seconds"] / results["ours"]["seconds"]
        cpu_ratio = results["evidently"]["cpu_seconds"] / results["ours"]["cpu_seconds"]
        results["ratio"], results["cpu_ratio"] = ratio, cpu_ratio
        ev = results["evidently"]
        print(
            f"Evidently {ev['seconds']:.1f}s (of which reading {ev['read_seconds']:.1f}s; import {ev['import_seconds']:.1f}s "
            f"not counted; methods {', '.join(ev['methods'])})"
        )
        print(
            f"ratio Evidently / ours: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU "
            f"({'meets' if min(ratio, cpu_ratio) >= TARGET_RATIO else 'misses'} the {TARGET_RATIO:g}x goal)"
        )
    if "ours_big" in results:
        growth = results["ours_big"]["peak_rss_mb"] / results["ours"]["peak_rss_mb"]
        print(
            f"peak memory {results['ours']['peak_rss_mb']:.0f} MB for {ROWS:,} rows, "
            f"{results['ours_big']['peak_rss_mb']:.0f} MB for {BIG_FILES * ROWS:,} (x{growth:.2f})"
        )

    if os.environ.get("BENCH_DRIFT_CALIBRATE", "1") != "0":
        print("\ncalibration: reference-against-reference splits ...", flush=True)
        cal = calibrate()
        results["calibration"] = cal
        print(
            f"99.9th percentile of each effect size, {cal['trials']} splits of {cal['n']:,} against {cal['n']:,} rows "
            "(the large-sample boundary); defaults: wasserstein 0.05, jensenshannon 0.05"
        )
        for name, value in cal["effect_p999_at_boundary"].items():
            print(f"  {name}: {value:.4f}")
        print("per-feature false-alarm rate of the tests, no correction (must be ≤ 0.05):")
        for size, rate in cal["per_feature_false_alarm_rate"].items():
            print(f"  reference/current {size}: {rate:.3f}")
    return results
