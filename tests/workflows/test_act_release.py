"""The release self-test, run for real with act on this host against a real tracking server.

`act workflow_dispatch` runs `.github/workflows/self-test-release.yml`: the reusable `release.yml`
twice (train example_project/ with mlflow-ci pip-installed from the checkout, gate, register,
promote to challenger, then to champion and verify the audit trail), then `rollback.yml` with a
reason, then the job that checks the registry (`mlflow-ci expect --alias`) and the audit trail
(`mlflow-ci audit --verify`). The tracking server is a `TrackingServer` started here on loopback,
handed to the workflow as the secret SELF_TEST_TRACKING_URI (act's `-s`); the test then reads the
result through MlflowClient and the CLI, independently of what the workflow said.

What act does not do: `environment:` is not enforced, so the champion and rollback jobs start
without a reviewer's approval (the binding still names the approver: `github-environment:self-test`
is recorded in the audit log). The other differences are those of tests/workflows/test_act.py: ``uses: $/``
is rewritten to ``./``, remote actions are the stand-ins of tests/act/actions/, and
``job.workflow_*`` is empty, which is why the self-test names the mlflow-ci to install (``.``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from actkit import copy_checkout, job_results, log_messages, require_act, run_act
from conftest import ROOT, run_cli
from mlflow import MlflowClient
from mlflow_ci.mlflowio.tracking import TrackingServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = "acme/mlflow-ci"
WORKFLOW = ".github/workflows/self-test-release.yml"
MODEL = "self-test-wine-classifier"
REASON = "self-test: roll back the second release"
POLICY = ROOT / "example_project" / "mlflow-ci.yaml"


def test_release_twice_then_roll_back_under_act(tmp_path: Path) -> None:
    require_act()
    work = copy_checkout(tmp_path / "repo")
    with TrackingServer(tmp_path / "server") as server:
        run = run_act(
            work, tmp_path, event_name="workflow_dispatch", workflow=WORKFLOW,
            event={"inputs": {}, "repository": {"full_name": REPO}},
            secrets={"SELF_TEST_TRACKING_URI": server.url},
            env={"GITHUB_REPOSITORY": REPO},
        )  # fmt: skip
        assert run.returncode == 0, run.explain()
        # Every job of the five ran, in order, and succeeded.
        assert job_results(run.log) == {
            "release-1/release/train, gate, register, promote to challenger": "success",
            "release-1/release/promote to champion (approved)": "success",
            "release-2/release/train, gate, register, promote to challenger": "success",
            "release-2/release/promote to champion (approved)": "success",
            f"rollback/rollback/roll back {MODEL}": "success",
            "self-test-release/check the registry and the audit trail": "success",
        }, run.explain()
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)

        # Two releases made two versions from two training runs, both gated and passed.
        versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
        assert [v.version for v in versions] == ["1", "2"]
        assert versions[0].run_id != versions[1].run_id
        for mv in versions:
            assert mv.tags["mlflow_ci.gate_verdict"] == "pass", mv.tags

        # The rollback put the previous champion back; the second release stays challenger.
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert client.get_model_version_by_alias(MODEL, "challenger").version == "2"
        assert client.get_model_version(MODEL, "1").tags["mlflow_ci.previous_champion"] == "2"

        # The audit trail verifies, from outside the workflow.
        verified = run_cli("audit", MODEL, "--verify", "--tracking-uri", server.url, "--policy", str(POLICY),
                           "--report-dir", str(tmp_path / "audit"), cwd=tmp_path)  # fmt: skip
        assert verified.returncode == 0, verified.stderr

        # ... and holds the two promotions to champion and the rollback, with its reason.
        listed = run_cli("audit", MODEL, "--json", "--tracking-uri", server.url, "--policy", str(POLICY),
                         cwd=tmp_path)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        entries = sorted(json.loads(listed.stdout), key=lambda e: e["seq"])
    champion = [e for e in entries if e["alias"] == "champion" and e["phase"] == "commit"]
    assert [(e["op"], e["from_version"], e["to_version"]) for e in champion] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ], entries
    intents = {e["seq"]: e for e in entries if e["phase"] == "intent"}
    promote_1, promote_2, rollback = (intents[e["ref"]] for e in champion)
    for intent in (promote_1, promote_2):
        # Bound to the environment the self-test names (not enforced under act: see above).
        assert intent["approved_by"] == "github-environment:self-test", intent
        assert re.fullmatch(r"release of [0-9a-f]{40}", intent["why"]), intent
    assert rollback["why"] == REASON, rollback
    assert not [e for e in entries if e["phase"] == "abort"], entries

    # The check job read the versions release.yml passed up and found them in the registry.
    checked = [m for job, m in log_messages(run.log) if "registry as expected" in m]
    assert checked == [f"registry as expected: model '{MODEL}' @champion = v1, @challenger = v2"], checked
    # Each release uploaded its own reports (artifact names are unique within a run): the first
    # gated without a baseline, the second against the first champion, and passed.
    gates = [
        json.loads((run.artifacts / f"mlflow-ci-release-{MODEL}-{n}" / "gate.json").read_text())
        for n in (1, 2)
    ]
    assert [g["verdict"] for g in gates] == ["pass", "pass"]
    assert gates[0]["data"]["baseline"] is None
    assert gates[1]["data"]["baseline"]["version"] == "1"
    assert gates[1]["data"]["baseline"]["alias"] == "champion"
    for n in (1, 2):
        assert (run.artifacts / f"mlflow-ci-champion-{MODEL}-{n}" / "audit.json").is_file()
    assert (
        json.loads((run.artifacts / f"mlflow-ci-rollback-{MODEL}" / "rollback.json").read_text())["verdict"]
        == "pass"
    )
