"""The generated nginx configuration, run for real in front of a real tracking server."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import requests
from conftest import require
from mlflow_ci.config import Server
from mlflow_ci.mlflowio.tracking import TrackingServer, free_port
from mlflow_ci.serverops.config_files import apr1_hash, htpasswd_line, render_all, render_nginx
from mlflow_ci.serverops.profile import allowed_hosts
from services import nginx, self_signed

pytestmark = pytest.mark.service


def test_apr1_matches_openssl_and_htpasswd() -> None:
    # Reference values from `openssl passwd -apr1 -salt ...`.
    assert apr1_hash("secret", "abcdefgh") == "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"
    assert (
        apr1_hash("a-much-longer-password-over-16-chars", "Zz9./xyz")
        == "$apr1$Zz9./xyz$sOJNA8CxR6MDtyI5MtbWA/"
    )
    assert htpasswd_line("ci", "pw", "saltsalt").startswith("ci:$apr1$saltsalt$")


def test_generated_files_carry_the_profile() -> None:
    server = Server(public_url="https://mlflow.corp.example", max_body_size_mb=8192, proxy_timeout_s=1200, workers=2,
                    backend_store_uri="postgresql+psycopg2://mlflow@db/mlflow", artifacts_destination="s3://bucket/a")  # fmt: skip
    files = render_all(server)
    assert "client_max_body_size 8192m;" in files["nginx.conf"]
    assert "proxy_read_timeout 1200s;" in files["nginx.conf"]
    assert "server_name mlflow.corp.example;" in files["nginx.conf"]
    assert "return 301 https://" in files["nginx.conf"]
    assert "--allowed-hosts mlflow.corp.example,localhost" in files["mlflow.service"]
    assert "db upgrade" not in files["mlflow.service"].split("[Service]")[1].split("# Hardening")[0]
    assert "NoNewPrivileges=yes" in files["mlflow.service"]
    assert "--workers 2" in files["compose.yaml"]
    assert "CHANGE-ME" in files["mlflow.env.example"]


def test_nginx_auth_host_header_and_large_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(), "nginx is not installed")
    require(shutil.which("openssl") is not None, "openssl is not installed")
    mlflow_port, proxy_port = free_port(), free_port()
    profile = Server(
        public_url="https://mlflow.test", port=mlflow_port, max_body_size_mb=40, proxy_timeout_s=120
    )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "htpasswd").write_text(htpasswd_line("ci", "s3cret-pass"))
    cert = self_signed(prefix, "mlflow.test")
    conf = render_nginx(profile, tls=True, listen=f"127.0.0.1:{proxy_port} ssl", htpasswd_path=str(prefix / "htpasswd"),
                        standalone_prefix=prefix, certificate=cert, user="root" if os.geteuid() == 0 else None)  # fmt: skip
    extra = ["--allowed-hosts", ",".join(allowed_hosts(profile))]
    with TrackingServer(tmp_path / "srv", port=mlflow_port, extra_args=extra) as server, \
            nginx(prefix, conf, proxy_port, tls=True) as proxy:  # fmt: skip
        assert proxy is not None
        api = f"{proxy.url}/api/2.0/mlflow/experiments/search?max_results=1"
        public = {"Host": "mlflow.test"}
        assert requests.get(api, headers=public, verify=cert[0], timeout=10).status_code == 401
        assert (
            requests.get(api, headers=public, auth=("ci", "wrong"), verify=cert[0], timeout=10).status_code
            == 401
        )
        ok = requests.get(api, headers=public, auth=("ci", "s3cret-pass"), verify=cert[0], timeout=10)
        assert ok.status_code == 200, ok.text  # nginx accepted the user, MLflow accepted the public Host
        assert (
            requests.get(f"{proxy.url}/health", headers=public, verify=cert[0], timeout=10).status_code == 200
        )

        # A 30 MB model file goes up through the proxy with the MLflow client and comes back intact.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pass")
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", cert[0])
        from mlflow import MlflowClient
        from mlflow_ci.mlflowio.tracking import client_settings

        big = tmp_path / "model.bin"
        big.write_bytes(os.urandom(30 * 1024 * 1024))
        with client_settings(proxy.url):
            client = MlflowClient(proxy.url)
            run = client.create_run(client.create_experiment("proxy"))
            client.log_artifact(run.info.run_id, str(big))
            back = Path(client.download_artifacts(run.info.run_id, "model.bin", str(tmp_path / "dl")))
        assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
        assert (server.workdir / "artifacts").exists()

        # Over the configured limit nginx answers 413 (the doctor warns before users hit this).
        too_big = requests.put(f"{proxy.url}/api/2.0/mlflow-artifacts/artifacts/x/too-big.bin", data=b"0" * (41 << 20),
                               auth=("ci", "s3cret-pass"), headers=public, verify=cert[0], timeout=60)  # fmt: skip
        assert too_big.status_code == 413


def test_committed_deployment_examples_match_the_generator() -> None:
    from conftest import ROOT
    from mlflow_ci.serverops.profile import load_ops

    folder = ROOT / "docs" / "deploy"
    ops = load_ops(folder / "mlflow-ci.yaml", env={})
    for name, text in render_all(ops.server).items():
        assert (folder / name).read_text() == text, (
            f"docs/deploy/{name} is stale: run mlflow-ci server config"
        )
