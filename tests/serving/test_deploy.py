"""serve-check and deploy on the embedded default target (`mlflow models serve`, no engine) against
a real tracking server: a good model answers exactly like itself, a model whose predict raises is
stopped before it becomes champion, and a failing post-deploy check rolls the champion back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from conftest import run_cli
from deployflow import log_raising_run, port_answers, register_and_promote, write_policy
from mlflow_ci.mlflowio.registry import Connection, aliases
from mlflow_ci.mlflowio.tracking import TrackingServer
from mlflow_ci.serving.servecheck import VERDICT_TAG
from modelfactory import log_run


def test_serve_check_of_a_good_model_passes_and_is_recorded(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    url, model = tracking_server.url, f"serve-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path, model)
    assert register_and_promote(url, policy, log_run(url, quality="good")) == [0]

    r = run_cli("serve-check", f"models:/{model}@candidate", "--policy", str(policy), "--tracking-uri", url,
                "--report-dir", str(tmp_path / "r"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["/ping"] == "pass"
    assert verdicts["input example"] == "pass"
    assert next(v for n, v in verdicts.items() if n.startswith("batch (40 rows")) == "pass"
    assert verdicts["malformed JSON"] == "pass"
    assert verdicts["missing column 'petal width (cm)'"] == "pass"
    assert report["data"]["model"]["uri"] == f"models:/{model}/1"  # the alias, resolved
    load = report["data"]["load"]
    assert load["sent"] == load["ok"] == 30
    assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]
    for name in ("serve-check.json", "serve-check.md", "serve-check.html"):
        assert (tmp_path / "r" / name).is_file()
    mv = Connection(url).client.get_model_version(model, "1")
    assert mv.tags[VERDICT_TAG] == "pass"
    assert not port_answers(report["data"]["url"])  # the server it started is gone


def test_a_model_whose_predict_raises_never_becomes_champion(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    url, model = tracking_server.url, f"raise-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path, model, serve_check=True)
    run_id = log_raising_run(url, tmp_path / "code")
    assert register_and_promote(url, policy, run_id, to=("challenger",)) == [0, 0]

    # Refused before any serve-check: the rule asks for a passed one.
    r = run_cli("promote", model, "--to", "champion", "--policy", str(policy), "--tracking-uri", url,
                "--report-dir", str(tmp_path / "r"))  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "never serve-checked" in r.stderr

    r = run_cli("serve-check", f"models:/{model}@challenger", "--policy", str(policy), "--tracking-uri", url,
                "--report-dir", str(tmp_path / "r"), "--json")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["/ping"]["verdict"] == "pass"  # it serves...
    assert checks["input example"]["verdict"] == "fail"  # ...but cannot answer
    assert checks["input example"]["found"].startswith("the model itself fails in-process: ")
    assert "this model cannot predict" in checks["input example"]["found"]
    assert checks["malformed JSON"]["verdict"] == "pass"
    assert checks["error rate"]["verdict"] == "fail"
    assert report["data"]["load"]["ok"] == 0

    r = run_cli("promote", model, "--to", "champion", "--policy", str(policy), "--tracking-uri", url,
                "--report-dir", str(tmp_path / "r"))  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "serve check passed (fail" in r.stderr
    assert "champion" not in aliases(Connection(url), model)


def test_failed_post_deploy_check_rolls_back_and_redeploys_the_previous_champion(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    url, model = tracking_server.url, f"deploy-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path, model)
    assert register_and_promote(url, policy, log_run(url, quality="good"), to=("challenger", "champion")) == [
        0,
        0,
        0,
    ]
    bad = log_raising_run(url, tmp_path / "code")
    assert register_and_promote(url, policy, bad, to=("challenger", "champion")) == [0, 0, 0]
    assert aliases(Connection(url), model)["champion"] == "2"

    r = run_cli("deploy", model, "--target", "local", "--policy", str(policy), "--tracking-uri", url,
                "--report-dir", str(tmp_path / "r"), "--json")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["v2: /ping"] == "pass"
    assert verdicts["v2: input example"] == "fail"
    assert verdicts["rollback @champion"] == "pass"
    assert verdicts["v1 (rollback): input example"] == "pass"
    assert all(v == "pass" for n, v in verdicts.items() if n.startswith("v1 (rollback)"))
    assert report["data"]["failed_version"] == "2"
    assert report["data"]["rolled_back_to"] == "1"
    assert aliases(Connection(url), model)["champion"] == "1"

    # The audit trail has the rollback, with the failing checks as its reason, and verifies.
    r = run_cli("audit", model, "--policy", str(policy), "--tracking-uri", url, "--json", "--limit", "100")
    history = json.loads(r.stdout)
    (rollback,) = [e for e in history if e["op"] == "rollback" and e["phase"] == "intent"]
    assert (rollback["from_version"], rollback["to_version"]) == ("2", "1")
    assert rollback["why"].startswith("post-deploy check of v2 on local failed: v2: input example")
    assert any(e["op"] == "rollback" and e["phase"] == "commit" for e in history)
    r = run_cli("audit", model, "--verify", "--policy", str(policy), "--tracking-uri", url)
    assert r.returncode == 0, r.stdout + r.stderr

    # v1 is kept serving (recorded), and answers until undeploy stops it.
    served = report["data"]["url"]
    assert port_answers(served)
    mv2 = Connection(url).client.get_model_version(model, "2")
    assert mv2.tags[VERDICT_TAG] == "fail"
    r = run_cli("undeploy", model, "--policy", str(policy))
    assert r.returncode == 0, r.stderr
    assert not port_answers(served)
    r = run_cli("undeploy", model, "--policy", str(policy))
    assert r.returncode == 2  # nothing left to stop


def test_deploy_without_a_champion_is_a_failed_check(tracking_server: TrackingServer, tmp_path: Path) -> None:
    url, model = tracking_server.url, f"empty-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path, model)
    assert register_and_promote(url, policy, log_run(url, quality="good")) == [0]
    r = run_cli(
        "deploy", model, "--policy", str(policy), "--tracking-uri", url, "--report-dir", str(tmp_path / "r")
    )
    assert r.returncode == 1
    assert "no version at @champion" in r.stderr


@pytest.mark.parametrize("target", ["http://127.0.0.1:9/", "models:/nothing/1"])
def test_serve_check_usage_errors(tracking_server: TrackingServer, tmp_path: Path, target: str) -> None:
    policy = write_policy(tmp_path, "nothing")
    r = run_cli("serve-check", target, "--policy", str(policy), "--tracking-uri", tracking_server.url)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
