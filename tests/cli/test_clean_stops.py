"""SIGTERM and SIGHUP stop a command as Ctrl-C does: it stops what it started (the embedded tracking
server, the entry point, the prediction worker, a deployment being checked), exits 128 + the
signal's number, and leaves no process behind. Each command runs with a marker in its
environment; afterwards no process on the machine may carry it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import EXAMPLE
from deployflow import register_and_promote, write_policy
from mlflow_ci.mlflowio.tracking import TrackingServer
from modelfactory import log_run

MARK = "MLFLOW_CI_TEST_SIGNAL_MARK"


def processes_with(marker: str) -> list[str]:
    """Every live process whose environment carries ``marker`` (zombies have none)."""
    needle = f"{MARK}={marker}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{pid}: {cmdline}")
        except OSError:
            continue
    return found


def stop_at(args: list[str], shows: str, sig: signal.Signals, *, cwd: Path) -> tuple[int, str, list[str]]:
    """Run the CLI, send ``sig`` once a line of its stderr contains ``shows``, and
    return its exit code, its stderr and the processes of its own still alive once it exited."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARK: marker, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.pop("GITHUB_OUTPUT", None)
    child = subprocess.Popen([sys.executable, "-m", "mlflow_ci", *args], cwd=cwd, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line)
            if shows in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not reached.wait(timeout=600):
            pytest.fail(f"never reached {shows!r}:\n{''.join(lines)[-3000:]}")
        child.send_signal(sig)
        code = child.wait(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    reader.join(timeout=10)
    # What the command stopped is reaped before it exits; a process reparented to init while it
    # dies still shows for a moment.
    left = processes_with(marker)
    for _ in range(50):
        if not left:
            break
        time.sleep(0.2)
        left = processes_with(marker)
    return code, "".join(lines), left


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("reports", "mlruns"))
    return copy


@pytest.mark.parametrize(
    ("shows", "sig"),
    [
        ("tracking server: starting", signal.SIGTERM),  # the embedded server is starting
        ("tracking server: starting", signal.SIGHUP),
        ("==> mlflow run", signal.SIGTERM),  # the entry point is being submitted
        ("=== Running command", signal.SIGTERM),  # the entry point runs
        ("==> load and predict", signal.SIGHUP),  # the prediction
    ],
)
def test_a_stopped_smoke_leaves_no_process(
    project: Path, tmp_path: Path, shows: str, sig: signal.Signals
) -> None:
    code, stderr, left = stop_at(
        ["smoke", str(project), "--env-manager", "local", "--report-dir", str(tmp_path / "r")], shows, sig,
        cwd=tmp_path,
    )  # fmt: skip
    assert left == [], stderr[-3000:]
    assert code == 128 + sig, stderr[-3000:]
    assert f"stopped by {sig.name}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("shows", "sig"),
    [
        ("==> wait for", signal.SIGTERM),  # the deployment is starting
        ("==> compare answers", signal.SIGTERM),  # the post-deploy check runs
        ("==> malformed requests", signal.SIGHUP),
    ],
)
def test_a_stopped_deploy_leaves_no_process_and_no_record(
    tracking_server: TrackingServer, tmp_path: Path, shows: str, sig: signal.Signals
) -> None:
    url, model = tracking_server.url, f"sig-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    assert register_and_promote(url, policy, log_run(url, quality="good"), to=("challenger", "champion")) == [
        0,
        0,
        0,
    ]
    code, stderr, left = stop_at(
        ["deploy", model, "--target", "local", "--policy", str(policy), "--tracking-uri", url,
         "--report-dir", str(tmp_path / "r")], shows, sig, cwd=tmp_path,
    )  # fmt: skip
    assert left == [], stderr[-3000:]
    assert code == 128 + sig, stderr[-3000:]
    assert not (tmp_path / "p" / "deployments" / model / "local.json").exists(), (
        "nothing recorded as deployed"
    )
