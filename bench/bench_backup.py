"""`mlflow-ci backup` + `mlflow-ci restore` of a 10,000-run server against `mlflow-migration`.

The server is generated in-process (bulk SQL into MLflow's own schema, created by
``SqlAlchemyStore``): N runs with 10 params, 10 metrics x 5 steps, 3 tags and one artifact each,
plus registered models with versions and an alias.  A sample experiment of S runs of the same
shape is exported and re-imported with ``mlflow-migration`` (the maintained fork of
mlflow-export-import) from a real server into an empty one: the baseline, measured in the same
run.  Both are compared per run, for time and for what survives (run ids, start times, params,
metric histories, artifacts).

Goal: backup + restore at least 1,000x faster per run than export + import, with nothing lost.
Both sides are timed as their commands run: ``mlflow-ci backup`` and ``mlflow-ci restore`` each
in a new process, from start to exit (as a user or a workflow runs them), like the baseline's
export and import.  Three ratios are printed, each from its own measured commands: with every
cost counted (backup, then the restore as the command runs it by default, including its read-back through a started
MLflow server: one server start, whose import of MLflow alone costs seconds of CPU here, and a
fixed-size sample, neither of which grows with the number of runs), and backup plus
``restore --no-server-check`` (the manifest checks only: the data path); a third is the cost
each further run adds, every cost counted: the slope between the round trip of this server and
of a smaller one (``BENCH_BACKUP_SMALL_RUNS``, 1,000 + the sample), against the baseline's
average per run (which still carries its own two process starts, a few seconds of its
minutes).  Ours is repeated ``BENCH_BACKUP_REPEATS`` times (5) in new folders, the rounds
spread before, between and after the baseline's export and import (this machine's speed drifts
over minutes), and the median is reported; the baseline, at about 0.3-0.7 s per run, runs once.

Each side is timed warm.  This machine's kernel pages out file cache that nobody touched for
about a minute (DAMON's ``pageout`` scheme, ``kdamond``): a command started after a minute of
the other side's work would first re-read MLflow's modules and the generated server's files
from disk (0.2-0.3 s more for a restore, whose read-back server imports MLflow).  So each group
of our rounds starts with an untimed round trip, and the baseline's export and import each
follow an untimed ``--help`` of the same tool, which imports it and MLflow.

``mlflow-migration`` needs Python >= 3.12: the benchmark builds a venv with pyenv's 3.12 once
(``BENCH_MIGRATION_VENV``, default ``.nox/_mlflow_migration``).  Knobs: ``BENCH_BACKUP_RUNS``
(10000), ``BENCH_BACKUP_SAMPLE`` (200).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow_ci.mlflowio.tracking import TrackingServer, client_settings
from mlflow_ci.serverops.backup import BackupRepo

ROOT = Path(__file__).resolve().parent.parent
N_RUNS = int(os.environ.get("BENCH_BACKUP_RUNS", "10000"))
SAMPLE = int(os.environ.get("BENCH_BACKUP_SAMPLE", "200"))
REPEATS = int(os.environ.get("BENCH_BACKUP_REPEATS", "5"))
SMALL_RUNS = int(os.environ.get("BENCH_BACKUP_SMALL_RUNS", "1000"))
GOAL = 1000.0
MIGRATION_VENV = Path(os.environ.get("BENCH_MIGRATION_VENV", ROOT / ".nox" / "_mlflow_migration"))


# --------------------------------------------------------------------------------------------
# The generated server


def generate(db: Path, artifacts: Path, *, runs: int, sample: int, seed: int = 7) -> dict[str, Any]:
    """MLflow's schema (through SqlAlchemyStore), then runs by bulk SQL, artifacts as files."""
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{db}"
    store = SqlAlchemyStore(uri, "mlflow-artifacts:/")
    main_exp = store.create_experiment("bench_main")
    sample_exp = store.create_experiment("bench_sample")
    rng = random.Random(seed)
    base = 1_750_000_000_000
    run_rows, params, metrics, latest, tags = [], [], [], [], []
    sample_ids = []
    for i in range(runs + sample):
        exp = sample_exp if i >= runs else main_exp
        rid = uuid.UUID(int=rng.getrandbits(128)).hex
        start = base + i * 60_000
        name = f"run_{i}"
        run_rows.append((rid, name, "LOCAL", "bench.py", "", "bench", "FINISHED", start, start + 30_000, "",
                         "active", f"mlflow-artifacts:/{exp}/{rid}/artifacts", int(exp), None))  # fmt: skip
        params.extend((f"p{k}", str(rng.random()), rid) for k in range(10))
        for k in range(10):
            for step in range(5):
                value = rng.random()
                metrics.append((f"m{k}", value, start + step * 1000, rid, step, False))
            latest.append((f"m{k}", value, start + 4000, 4, False, rid))
        tags.extend(
            [
                ("mlflow.runName", name, rid),
                ("mlflow.user", "bench", rid),
                ("mlflow.source.type", "LOCAL", rid),
            ]
        )
        folder = artifacts / exp / rid / "artifacts"
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text(f"run {i} {rng.random()}\n" * 20)
        if exp == sample_exp:
            sample_ids.append(rid)
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                         "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, "
                         "deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", run_rows)  # fmt: skip
        conn.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
        conn.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                         metrics)  # fmt: skip
        conn.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                         "VALUES (?,?,?,?,?,?)", latest)  # fmt: skip
        conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
    conn.close()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for m in range(3):
        name = f"bench_model_{m}"
        client.create_registered_model(name)
        for v in range(2):
            rid = run_rows[m * 2 + v][0]
            client.create_model_version(name, f"mlflow-artifacts:/{main_exp}/{rid}/artifacts", run_id=rid)
        client.set_registered_model_alias(name, "champion", "2")
    return {"uri": uri, "sample_ids": sample_ids, "runs": runs + sample, "metric_rows": len(metrics)}


# --------------------------------------------------------------------------------------------
# Fidelity: what a user sees for the sample runs, through a server


def view(url: str, experiment: str, *, histories: int = 20) -> dict[str, tuple[Any, ...]]:
    """run name → (run id, start, end, params, metric-history sizes for the first runs, artifacts)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    with client_settings(url):
        client = MlflowClient(url)
        exp = client.get_experiment_by_name(experiment)
        out = {}
        runs = []
        token = None
        while True:
            page = client.search_runs(
                [exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        for n, run in enumerate(sorted(runs, key=lambda r: r.info.run_name)):
            hist = ()
            if n < histories:
                hist = tuple(sorted((k, tuple((m.step, m.timestamp, m.value) for m in client.get_metric_history(
                    run.info.run_id, k))) for k in run.data.metrics))  # fmt: skip
            arts = (
                tuple(sorted(a.path for a in client.list_artifacts(run.info.run_id))) if n < histories else ()
            )
            out[run.info.run_name] = (run.info.run_id, run.info.start_time, run.info.end_time,
                                      tuple(sorted(run.data.params.items())), hist, arts)  # fmt: skip
    return out


def fidelity(source: dict[str, tuple[Any, ...]], copy: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    names = sorted(source)
    checked = [n for n in names if source[n][4]]

    def share(pred: Any, pool: list[str]) -> str:
        ok = sum(1 for n in pool if n in copy and pred(source[n], copy[n]))
        return f"{ok}/{len(pool)}"

    return {
        "runs present": share(lambda a, b: True, names),
        "run ids kept": share(lambda a, b: a[0] == b[0], names),
        "start/end times kept": share(lambda a, b: a[1:3] == b[1:3], names),
        "params kept": share(lambda a, b: a[3] == b[3], names),
        "metric histories kept": share(lambda a, b: a[4] == b[4], checked),
        "artifacts kept": share(lambda a, b: a[5] == b[5], checked),
    }


# --------------------------------------------------------------------------------------------
# The baseline: mlflow-migration export + import


def migration_bin() -> Path | None:
    """The venv's bin folder with mlflow-migration, built once with Python >= 3.12 (pyenv)."""
    bin_dir = MIGRATION_VENV / "bin"
    if (bin_dir / "mlflow-migration-export-experiment").exists():
        return bin_dir
    python = None
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    # pyenv's installed interpreters first: its `python3.12` shim is on PATH even when that
    # version is not selected, and then fails with exit 127.
    candidates = [str(v / "bin" / "python") for v in sorted(pyenv_root.glob("versions/3.1[23]*"))]
    candidates += [found for name in ("python3.12", "python3.13") if (found := shutil.which(name))]
    for candidate in candidates:
        if _runs_python_312(candidate):
            python = candidate
            break
    if python is None:
        return None
    subprocess.run([python, "-m", "venv", str(MIGRATION_VENV)], check=True)
    done = subprocess.run([str(bin_dir / "pip"), "install", "-q", "mlflow-migration", "mlflow==3.17.2"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        print(f"mlflow-migration could not be installed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return bin_dir


def _runs_python_312(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                              capture_output=True, timeout=30, check=False)  # fmt: skip
    except OSError:
        return False
    return done.returncode == 0


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(argv)}\n{done.stdout[-2000:]}"
                         f"\n{done.stderr[-3000:]}")  # fmt: skip
    return time.perf_counter() - start


def _warm_up(argv: list[str], env: dict[str, str]) -> None:
    """Run ``argv`` untimed (the baseline's ``--help`` imports the tool and MLflow)."""
    subprocess.run(argv, env=env, capture_output=True, check=False)


# --------------------------------------------------------------------------------------------


CLI = [sys.executable, "-m", "mlflow_ci"]


def _cli(*args: str) -> float:
    """One ``mlflow-ci`` command in a new process, as a user or a workflow runs it: seconds."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    return _timed([*CLI, *args], env)


def ours_round_trip(work: Path, uri: str, artifacts: Path, *, data_path: bool = True) -> dict[str, Any]:
    """``mlflow-ci backup`` into a new repository, then ``mlflow-ci restore`` into new empty
    stores as the command runs by default (checked against the manifest, then read back through
    a server whose process imports MLflow while the stores are filled) and, with ``data_path``,
    again with ``--no-server-check`` (the manifest checks only: the data path, which grows with
    the runs).  Each is the CLI in its own process, timed from start to exit; exit 0 means every
    check passed."""
    t_backup = _cli("backup", "--backend-store-uri", uri, "--artifacts-destination", str(artifacts),
                    "--to", str(work / "repo"))  # fmt: skip
    manifest = BackupRepo.open(str(work / "repo")).manifest()
    timed = {}
    for mode, flags in (("restore", []), ("restore_data", ["--no-server-check"]))[: 2 if data_path else 1]:
        timed[mode] = _cli("restore", "--from", str(work / "repo"), "--backend-store-uri",
                           f"sqlite:///{work / mode}.db", "--artifacts-destination", str(work / f"{mode}-art"),
                           *flags)  # fmt: skip
    out = {
        "backup": t_backup,
        "restore": timed["restore"],
        "all": t_backup + timed["restore"],
        "manifest": manifest,
    }
    if data_path:
        out.update(restore_data=timed["restore_data"], data_path=t_backup + timed["restore_data"])
    return out


def _schedule(repeats: int) -> tuple[int, int, int]:
    """Our rounds before the baseline's export, between its export and import, and after it."""
    between = 1 if repeats >= 3 else 0
    before = (repeats - between + 1) // 2
    return before, between, repeats - before - between


def main() -> dict[str, object]:
    results: dict[str, object] = {"runs": N_RUNS + SAMPLE, "sample": SAMPLE}
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        gen = generate(work / "src.db", work / "src-art", runs=N_RUNS, sample=SAMPLE)
        # On disk before anything is timed, as a server's stores are: otherwise the first rounds
        # (and the baseline) would also wait for the writeback of what was just generated.
        os.sync()
        print(
            f"generated {gen['runs']} runs ({gen['metric_rows']} metric rows) in {time.perf_counter() - t0:.1f}s"
        )
        # Ours, REPEATS times in new folders, around the baseline (before its export, between
        # export and import, after): this machine's speed drifts over minutes, and the median of
        # rounds that bracket the baseline is compared with it, not rounds taken before it only.
        rounds: list[dict[str, Any]] = []

        def our_rounds(count: int, when: str) -> None:
            if count:  # an untimed warm-up round first (see the module's docstring)
                ours_round_trip(
                    work / f"warm-up-{len(rounds)}", gen["uri"], work / "src-art", data_path=False
                )
            for _ in range(count):
                r = ours_round_trip(work / f"ours-{len(rounds)}", gen["uri"], work / "src-art")
                rounds.append(r)
                print(f"round {len(rounds)} ({when}): backup {r['backup']:.2f}s, restore {r['restore']:.2f}s, "
                      f"restore --no-server-check {r['restore_data']:.2f}s", flush=True)  # fmt: skip

        before, between, after = _schedule(REPEATS)
        our_rounds(before, "before the baseline")
        bin_dir = migration_bin()
        first = work / "ours-0"
        with TrackingServer(work / "src-server", backend_store_uri=gen["uri"],
                            artifacts_destination=str(work / "src-art")) as src:  # fmt: skip
            source_view = view(src.url, "bench_sample")
            with TrackingServer(work / "dst-server", backend_store_uri=f"sqlite:///{first / 'restore.db'}",
                                artifacts_destination=str(first / "restore-art")) as restored:  # fmt: skip
                ours = fidelity(source_view, view(restored.url, "bench_sample"))
            if bin_dir is not None:
                env = {**os.environ, "MLFLOW_TRACKING_URI": src.url, "MLFLOW_DISABLE_TELEMETRY": "true"}
                env.pop("PYTHONPATH", None)
                _warm_up([str(bin_dir / "mlflow-migration-export-experiment"), "--help"], env)
                t_export = _timed([str(bin_dir / "mlflow-migration-export-experiment"), "--experiment",
                                   "bench_sample", "--output-dir", str(work / "export")], env)  # fmt: skip
        if bin_dir is not None:
            our_rounds(between, "between the baseline's export and import")
            with TrackingServer(work / "imp-server") as target:
                env["MLFLOW_TRACKING_URI"] = target.url
                _warm_up([str(bin_dir / "mlflow-migration-import-experiment"), "--help"], env)
                t_import = _timed([str(bin_dir / "mlflow-migration-import-experiment"), "--experiment-name",
                                   "bench_sample", "--input-dir", str(work / "export")], env)  # fmt: skip
                theirs = fidelity(source_view, view(target.url, "bench_sample"))
            our_rounds(after, "after the baseline")
        else:
            our_rounds(between + after, "no baseline")
        median = sorted(rounds, key=lambda r: r["all"])[len(rounds) // 2]
        t_backup, t_restore, t_restore_data, manifest = (
            median["backup"],
            median["restore"],
            median["restore_data"],
            median["manifest"],
        )
        t_incremental = _cli("backup", "--backend-store-uri", gen["uri"], "--artifacts-destination",
                             str(work / "src-art"), "--to", str(first / "repo"))  # fmt: skip
        # The same round trip (every cost counted) on a smaller generated server: the slope
        # between the two sizes is the cost each further run adds, fixed costs (the read-back
        # server's start, its fixed-size sample) cancelled by measurement, not subtracted.
        small = generate(work / "small.db", work / "small-art", runs=SMALL_RUNS, sample=SAMPLE)
        os.sync()
        small_all = statistics.median(
            ours_round_trip(work / f"small-{i}", small["uri"], work / "small-art", data_path=False)["all"]
            for i in range(REPEATS)
        )
        slope = (median["all"] - small_all) / (gen["runs"] - small["runs"])
        print(f"{small['runs']} runs: backup + restore {small_all:.2f}s (median of {REPEATS})", flush=True)
        # The read-back through a started server is a fixed cost (one server start, a fixed-size
        # sample of runs, models and aliases) that does not grow with the number of runs; the
        # data path (backup, database restore, artifact copy, manifest checks) is what does.
        ours_per_run = median["all"] / gen["runs"]
        marginal = statistics.median(r["data_path"] for r in rounds) / gen["runs"]
        results.update(backup_s=round(t_backup, 2), restore_s=round(t_restore, 2),
                       rounds_all_s=[round(r["all"], 2) for r in rounds],
                       incremental_backup_s=round(t_incremental, 2), ours_per_run_ms=round(ours_per_run * 1000, 4),
                       ours_per_run_data_path_ms=round(marginal * 1000, 4), restore_no_server_check_s=round(t_restore_data, 2),
                       artifacts=manifest["artifacts"]["count"], fidelity_ours=ours)  # fmt: skip
        if bin_dir is None:
            print("mlflow-migration is not available (needs Python >= 3.12): no baseline", file=sys.stderr)
            results["baseline"] = "unavailable"
            return results
        base_per_run = (t_export + t_import) / SAMPLE
        ratio = base_per_run / ours_per_run
        ratio_marginal = base_per_run / marginal
        ratio_slope = base_per_run / slope if slope > 0 else float("inf")
        results.update(export_s=round(t_export, 2), import_s=round(t_import, 2),
                       baseline_per_run_ms=round(base_per_run * 1000, 2), ratio=round(ratio, 1),
                       ratio_marginal=round(ratio_marginal, 1), ratio_slope=round(ratio_slope, 1),
                       small_runs=small["runs"], small_all_s=round(small_all, 2),
                       ours_per_run_slope_ms=round(slope * 1000, 4), fidelity_mlflow_migration=theirs)  # fmt: skip

    print()
    print(f"{'':34} {'mlflow-ci backup+restore':>26} {'mlflow-migration':>18}")
    print(f"{'runs':34} {N_RUNS + SAMPLE:>26} {SAMPLE:>18}")
    print(f"{'seconds (backup / export)':34} {t_backup:>26.2f} {t_export:>18.2f}")
    print(f"{'seconds (restore+checks / import)':34} {t_restore:>26.2f} {t_import:>18.2f}")
    print(f"{'seconds (restore --no-server-check)':34} {t_restore_data:>26.2f} {'':>18}")
    print(f"{'ms per run (all costs)':34} {ours_per_run * 1000:>26.4f} {base_per_run * 1000:>18.2f}")
    print(f"{'ms per run (no server check)':34} {marginal * 1000:>26.4f} {'':>18}")
    print(f"{'ms per added run (slope, all costs)':34} {slope * 1000:>26.4f} {'':>18}")
    for key in ours:
        print(f"{key + ' (sample)':34} {ours[key]:>26} {theirs[key]:>18}")
    print(f"\nratio per run, mlflow-migration / mlflow-ci: {ratio:,.0f}x with every cost counted, "
          f"{ratio_marginal:,.0f}x with restore --no-server-check, {ratio_slope:,.0f}x per added run "
          f"(slope {small['runs']} → {gen['runs']} runs, every cost counted) (goal >= {GOAL:,.0f}x)"
          f"; incremental re-backup of all {N_RUNS + SAMPLE} runs: {t_incremental:.2f}s")  # fmt: skip
    lossless = all(v.split("/")[0] == v.split("/")[1] for v in ours.values())
    results["goal_met_all_costs"] = ratio >= GOAL and lossless
    results["goal_met_marginal"] = ratio_marginal >= GOAL and lossless
    results["goal_met_slope"] = ratio_slope >= GOAL and lossless
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(main())
