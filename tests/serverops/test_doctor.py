"""server doctor finds each failure signature on real servers and stores; server upgrade backs up first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from mlflow_ci.config import Server
from mlflow_ci.mlflowio.tracking import TrackingServer, free_port
from mlflow_ci.serverops.backup import BackupRepo
from mlflow_ci.serverops.doctor import doctor, doctor_command, head_revision
from mlflow_ci.serverops.profile import allowed_hosts

pytestmark = pytest.mark.service


def _by_name(report) -> dict:  # type: ignore[no-untyped-def]
    return {c.name: c for c in report.checks}


def _old_schema_db(path: Path) -> str:
    """A real MLflow database one migration behind this MLflow's head (MLflow's own path, stopped early)."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
    from sqlalchemy import create_engine

    uri = f"sqlite:///{path}"
    engine = create_engine(uri)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(uri)
    previous = ScriptDirectory.from_config(config).get_revision(head_revision()).down_revision
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, str(previous))
    engine.dispose()
    return uri


def test_host_header_rejected_behind_a_proxy_is_found_and_explained(tmp_path: Path) -> None:
    port = free_port()
    profile = Server(public_url="https://mlflow.example.org", port=port,
                     backend_store_uri=f"sqlite:///{tmp_path / 'srv' / 'mlflow.db'}",
                     artifacts_destination=str(tmp_path / "srv" / "artifacts"))  # fmt: skip
    with TrackingServer(tmp_path / "srv", port=port) as server:  # started without --allowed-hosts
        report = doctor(server=profile, server_url=server.url)
    finding = _by_name(report)["public Host header accepted"]
    assert finding.verdict == "fail"
    assert "--allowed-hosts mlflow.example.org" in finding.detail
    with TrackingServer(
        tmp_path / "srv", port=port, extra_args=["--allowed-hosts", ",".join(allowed_hosts(profile))]
    ) as s:
        fixed = doctor(server=profile, server_url=s.url)
    assert _by_name(fixed)["public Host header accepted"].verdict == "pass"
    assert _by_name(fixed)["server health"].verdict == "pass"


def test_body_size_auth_and_unreachable_store_findings(tmp_path: Path) -> None:
    art = tmp_path / "art"
    (art / "1" / ("a" * 32) / "artifacts").mkdir(parents=True)
    (art / "1" / ("a" * 32) / "artifacts" / "model.bin").write_bytes(b"0" * (3 * 1024 * 1024))
    profile = Server(backend_store_uri=f"sqlite:///{tmp_path / 'x.db'}", artifacts_destination=str(art),
                     max_body_size_mb=2, proxy_auth="mlflow", workers=4)  # fmt: skip
    found = _by_name(doctor(server=profile, env={}))
    assert found["proxy body-size limit"].verdict == "fail"
    assert "max_body_size_mb: 4" in found["proxy body-size limit"].detail
    assert found["auth configuration"].verdict == "fail"
    assert "app_name: basic-auth" in found["auth configuration"].detail
    assert found["workers"].verdict == "warn"
    assert found["database schema"].verdict == "pass"  # empty: created at first start

    s3 = Server(artifacts_destination="s3://bucket/x", s3_endpoint_url="http://127.0.0.1:9",
                backend_store_uri=f"sqlite:///{tmp_path / 'x.db'}")  # fmt: skip
    unreachable = _by_name(doctor(server=s3, env={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}))
    assert unreachable["artifact store reachable"].verdict == "fail"
    assert "MLFLOW_S3_ENDPOINT_URL" in unreachable["artifact store reachable"].detail


def test_a_report_goes_to_the_job_summary_and_stderr_and_to_files_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # How every server-ops report ends (output.emit_report): stdout carries JSON only, with --json;
    # people read the Markdown on stderr; no step outputs; the exit code is the command's.
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.chdir(tmp_path)
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(yaml.safe_dump({"project": "p", "server": {
        "backend_store_uri": f"sqlite:///{tmp_path / 'x.db'}", "artifacts_destination": str(tmp_path / "art"),
        "proxy_auth": "mlflow"}}))  # fmt: skip
    (tmp_path / "art").mkdir()
    args = {"tracking_uri": None, "backend_store_uri": None, "artifacts_uri": None, "model_size_mb": None,
            "policy_path": policy}  # fmt: skip

    assert doctor_command(**args, report_dir=None, as_json=False) == 1  # the auth configuration fails
    out, err = capsys.readouterr()
    assert out == ""
    markdown = summary.read_text()
    assert markdown.startswith("### ❌ mlflow-ci doctor:")
    assert err == markdown.rstrip("\n") + "\n\n"  # the report, then print's own newline
    assert not outputs.exists()
    assert not list(tmp_path.rglob("doctor.*"))  # no --report-dir: no report files

    assert doctor_command(**args, report_dir=tmp_path / "rep", as_json=True) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out)["verdict"] == "fail"
    assert json.loads((tmp_path / "rep" / "doctor.json").read_text())["checks"] == json.loads(out)["checks"]
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["doctor.html", "doctor.json", "doctor.md"]
    assert summary.read_text().count("### ❌ mlflow-ci doctor:") == 2


def test_out_of_date_schema_is_found_then_upgraded_after_a_backup(tmp_path: Path) -> None:
    uri = _old_schema_db(tmp_path / "old.db")
    (tmp_path / "art").mkdir()
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(yaml.safe_dump({"project": "p", "server": {"backend_store_uri": uri,
                                      "artifacts_destination": str(tmp_path / "art")},
                                      "backup": {"destination": str(tmp_path / "bk")}}))  # fmt: skip
    before = run_cli("server", "doctor", "--policy", str(policy), "--json")
    assert before.returncode == 1, before.stderr
    schema = next(c for c in json.loads(before.stdout)["checks"] if c["name"] == "database schema")
    assert "out of date" in schema["found"]
    assert "mlflow-ci server upgrade" in schema["detail"]

    dry = run_cli("server", "upgrade", "--policy", str(policy), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "bk").exists()
    done = run_cli("server", "upgrade", "--policy", str(policy), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["after"] == head_revision() != result["before"]
    # The backup taken first holds the old revision: the upgrade can be undone by a restore.
    manifest = BackupRepo.open(str(tmp_path / "bk")).manifest(result["backup"])
    assert manifest["backend"]["schema_revision"] == result["before"]
    after = run_cli("server", "doctor", "--policy", str(policy), "--json")
    assert after.returncode == 0, after.stdout


def test_server_up_from_a_profile_accepts_the_public_host(tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(yaml.safe_dump({"project": "p", "server": {
        "backend_store_uri": f"sqlite:///{tmp_path / 'm.db'}", "artifacts_destination": str(tmp_path / "art"),
        "public_url": "https://mlflow.example.org", "port": port, "health_timeout_s": 90}}))  # fmt: skip
    up = run_cli("server", "up", "--policy", str(policy), "--workdir", str(tmp_path / "w"), "--json")
    assert up.returncode == 0, up.stderr
    try:
        url = json.loads(up.stdout)["url"]
        assert url.endswith(f":{port}")
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Host": "mlflow.example.org"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        assert run_cli("server", "down", "--workdir", str(tmp_path / "w")).returncode == 0
