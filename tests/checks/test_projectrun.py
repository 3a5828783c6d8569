"""Running a project in this process (MLflow's local project backend): output, timeouts, leftovers.

The entry point is a child that mlflow-ci cannot hand pipes to and that does not lead its own
process group, so its output is taken from this process's own descriptors and a timeout must
stop its whole tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import mlflow
from conftest import make_project, run_cli
from mlflow_ci.core import proc
from mlflow_ci.mlflowio.tracking import TrackingServer
from test_smoke import smoke_json, verdicts


def _alive(pid: int) -> bool:
    """Running, not a zombie (orphans may wait for a reaper that never comes in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and _alive(int(entry)):
                found.append(int(entry))
    return found


def test_captured_stdio_takes_childrens_output_and_gives_the_descriptors_back(capfd) -> None:
    with proc.captured_stdio(stream=False) as lines:
        child = subprocess.Popen(
            ["bash", "-c", "echo to-stdout; echo to-stderr >&2; read x || echo no-stdin"]
        )
        child.wait(timeout=30)
    assert sorted(lines) == ["no-stdin\n", "to-stderr\n", "to-stdout\n"]
    print("after the block")
    assert "after the block" in capfd.readouterr().out


def test_captured_stdio_streams_to_stderr_with_a_prefix(capfd) -> None:
    with proc.captured_stdio(stream=True, prefix="  | "):
        subprocess.run(["echo", "hello"], check=True)
    captured = capfd.readouterr()
    assert "  | hello" in captured.err
    assert "hello" not in captured.out  # stdout stays clean for --json


def test_kill_tree_stops_every_descendant() -> None:
    child = subprocess.Popen(["bash", "-c", "sleep 301 & sleep 302 & wait"])
    deadline = time.monotonic() + 10
    while len(proc.descendants(child.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    below = proc.descendants(child.pid)
    assert len(below) == 2
    proc.kill_tree(child, grace=2)
    assert child.poll() is not None
    assert not [pid for pid in below if _alive(pid)]


def test_timeout_stops_the_entry_point_and_its_children(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    marker = f"{os.getpid() % 1000 + 100}.5"
    body = (
        "import subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        "print('started the helper', flush=True)\n"
        "time.sleep(600)\n"
    )
    project = make_project(tmp_path / "p", body, policy="  timeout: 6\n")
    result, report = smoke_json(project, tracking_server.url)
    assert result.returncode == 1, result.stderr
    assert verdicts(report)["entry point"] == "fail"
    assert "timed out after 6s" in next(c["found"] for c in report["checks"] if c["name"] == "entry point")
    assert "started the helper" in report["output_tail"]
    assert not _processes_with(f"sleep {marker}")
    run = mlflow.MlflowClient(tracking_server.url).get_run(report["run_id"])
    assert run.info.status == "FAILED"


def test_project_mlflow_refuses_is_a_failed_check_not_a_crash(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    """MLflow's backend raises for a missing entry point: reported like a failing entry point."""
    project = make_project(tmp_path / "p", "pass\n", policy="  entry_point: nope\n")
    result, report = smoke_json(project, tracking_server.url)
    assert result.returncode == 1, result.stderr
    assert verdicts(report)["entry point"] == "fail"
    assert "nope" in report["output_tail"]
    assert "internal error" not in result.stderr


def test_train_prints_only_the_run_id_on_stdout(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "print('noise from the entry point')\n")
    (project / "mlflow-ci.yaml").write_text(
        "project: tiny\ntrain:\n  env_manager: local\n  parameters: {seed: 4}\n", encoding="utf-8"
    )
    result = run_cli("train", str(project), "--tracking-uri", tracking_server.url)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    assert len(run_id) == 32
    assert "noise" not in result.stdout
    assert "noise from the entry point" in result.stderr
    run = mlflow.MlflowClient(tracking_server.url).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.backend"] == "local"


def test_train_json_is_one_document_on_stdout(tracking_server: TrackingServer, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "print('noise from the entry point')\n")
    (project / "mlflow-ci.yaml").write_text(
        "project: tiny\ntrain:\n  env_manager: local\n  experiment: tiny-train\n", encoding="utf-8"
    )
    result = run_cli("train", str(project), "--tracking-uri", tracking_server.url, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"run_id", "experiment", "elapsed_s"}
    assert len(out["run_id"]) == 32
    assert out["experiment"] == "tiny-train"


def test_local_runs_the_entry_point_with_mlflow_cis_own_interpreter(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    """`local` means the environment mlflow-ci runs in: `python` in the MLproject command is this
    interpreter (the tiny project imports mlflow) even when its venv is not on PATH."""
    import sys

    project = make_project(tmp_path / "p", "pass\n")
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    result, report = smoke_json(project, tracking_server.url, env={"PATH": path})
    assert report is not None, result.stderr
    assert verdicts(report)["entry point"] == "pass", report.get("output_tail")
