"""`mlflow-ci demo` end to end, as `nox -s demo` runs it: every step of the main job passes on the
embedded default server, and the job summary shows each step and each report."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import EXAMPLE, run_cli

STEPS = [
    "PR check: smoke",
    "release: train (run ",
    "release: gate against the champion",
    "release: register",
    "release: serve-check the challenger (mlflow models serve)",
    "release: promote to challenger",
    "release: promote to champion",
    "deploy: the champion serves locally, post-deploy check, stopped",
    "release: audit trail verifies",
]


def test_the_demo_passes_every_step_and_summarises_them(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns", ".mlflow-ci"))
    summary = tmp_path / "summary.md"
    done = run_cli("demo", "--project", str(project), "--workdir", str(tmp_path / "demo"), "--env-manager", "local",
                   cwd=tmp_path, env={"GITHUB_STEP_SUMMARY": str(summary)})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = done.stdout.split("Demo summary:")[1].splitlines()
    for step in STEPS:
        assert any(line.strip().startswith(f"ok  {step}") for line in printed), step
    text = summary.read_text(encoding="utf-8")
    assert "## mlflow-ci demo: passed" in text
    assert text.count("| ✅ ok |") == len(STEPS)
    for report in ("smoke", "gate", "promote", "serve-check", "deploy"):
        assert f"mlflow-ci {report}" in text, report
    for kind in ("smoke", "gate", "serve-check", "deploy"):
        assert (tmp_path / "demo" / "reports" / f"{kind}.html").is_file(), kind
