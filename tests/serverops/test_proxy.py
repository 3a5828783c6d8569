"""The generated nginx configuration, run for real in front of a real tracking server."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
import requests
import tomllib
import yaml
from conftest import require
from helpers import apr1_hash, htpasswd_line
from mlflow_ci.config import Server
from mlflow_ci.mlflowio.tracking import TrackingServer, free_port
from mlflow_ci.serverops.config_files import render_all, render_nginx
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


def _directives(conf: str) -> list[str]:
    """The configuration's lines without comments, stripped."""
    return [line.split("#", 1)[0].strip() for line in conf.splitlines() if line.split("#", 1)[0].strip()]


def test_replicas_run_n_servers_behind_one_upstream_with_passive_checks_and_idempotent_retries() -> None:
    server = Server(public_url="https://mlflow.corp.example", workers=2, replicas=3, port=5100,
                    backend_store_uri="postgresql+psycopg2://mlflow@db/mlflow", artifacts_destination="s3://bucket/a")  # fmt: skip
    files = render_all(server)
    assert "mlflow.service" not in files
    nginx_conf = _directives(files["nginx.conf"])
    assert [line for line in nginx_conf if line.startswith("server 127.")] == [
        f"server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in (5100, 5101, 5102)
    ]
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in nginx_conf
    assert "proxy_next_upstream_tries 3;" in nginx_conf
    # POST and PATCH are passed on only when the replica never got them: non_idempotent stays off.
    assert not [line for line in nginx_conf if "non_idempotent" in line]
    compose_nginx = _directives(files["nginx-compose.conf"])
    assert [line for line in compose_nginx if line.startswith("server mlflow")] == [
        f"server mlflow-{i}:5000 max_fails=1 fail_timeout=10s;" for i in (1, 2, 3)
    ]

    # systemd: one templated unit, an instance per port, a target that wants them all.
    unit = files["mlflow@.service"]
    assert "    --port %i \\\n" in unit
    assert "--workers 2" in unit
    assert "127.0.0.1:5100,localhost:5101,127.0.0.1:5101,localhost:5102,127.0.0.1:5102" in unit
    assert "Environment=MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in unit
    assert "PartOf=mlflow.target" in unit
    assert unit.endswith("[Install]\nWantedBy=mlflow.target\n")
    assert "Wants=mlflow@5100.service mlflow@5101.service mlflow@5102.service\n" in files["mlflow.target"]

    # compose: three services of one definition, the job runner off on each, nginx after all three.
    compose = yaml.safe_load(files["compose.yaml"])
    replicas = [f"mlflow-{i}" for i in (1, 2, 3)]
    assert [name for name in compose["services"] if name.startswith("mlflow")] == replicas
    for name in replicas:
        service = compose["services"][name]
        assert service["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
        assert "--workers 2" in service["command"]
        assert f"{name}:5000" in service["command"]
    assert compose["services"]["nginx"]["depends_on"] == replicas
    assert "docker compose run --rm mlflow-1 mlflow db upgrade" in files["compose.yaml"]


def test_one_replica_renders_as_before() -> None:
    files = render_all(Server(backend_store_uri="postgresql+psycopg2://mlflow@db/mlflow"))
    assert set(files) >= {"mlflow.service", "nginx.conf", "compose.yaml"}
    assert "mlflow.target" not in files
    assert "server 127.0.0.1:5000;" in _directives(files["nginx.conf"])
    assert "proxy_next_upstream" not in files["nginx.conf"]
    assert "max_fails" not in files["nginx.conf"]
    assert list(yaml.safe_load(files["compose.yaml"])["services"]) == ["postgres", "s3", "mlflow", "nginx"]


def test_replicas_on_sqlite_are_refused_and_on_a_local_folder_allowed(tmp_path: Path) -> None:
    from conftest import run_cli

    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(
        "project: p\nserver:\n  backend_store_uri: sqlite:////var/lib/mlflow/mlflow.db\n  replicas: 2\n"
    )
    refused = run_cli("server", "config", "--policy", str(policy), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2, refused.stderr
    assert "key 'server.replicas' has value 2" in refused.stderr
    assert "several mlflow server processes writing one SQLite file is not safe" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "out").exists()
    # A local artifact folder is shared by every replica on this host (the generated files run them all here).
    policy.write_text("project: p\nserver:\n  backend_store_uri: postgresql+psycopg2://m@db/m\n"
                      "  artifacts_destination: /srv/mlflow/artifacts\n  replicas: 2\n")  # fmt: skip
    written = run_cli("server", "config", "--policy", str(policy), "--out", str(tmp_path / "out"))
    assert written.returncode == 0, written.stderr
    assert "ReadWritePaths=/srv/mlflow/artifacts\n" in (tmp_path / "out" / "mlflow@.service").read_text()
    with pytest.raises(ValueError, match="at most 2 with port 65534"):
        Server(backend_store_uri="postgresql+psycopg2://m@db/m", port=65534, replicas=3)
    with pytest.raises(ValueError, match="less than or equal to 16"):
        Server(backend_store_uri="postgresql+psycopg2://m@db/m", replicas=17)


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    require(binary is not None, "nginx is not installed")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    return self_signed(tmp_path_factory.mktemp("tls"), "mlflow.test")


@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("proxy_auth", ["nginx-basic", "mlflow", "none"])
@pytest.mark.parametrize(
    ("tls", "listen"), [(True, None), (True, "127.0.0.1:8443 ssl"), (False, None), (False, "8080")]
)
def test_the_nginx_template_renders_every_option_and_nginx_accepts_it(
    tmp_path: Path,
    certificate: tuple[str, str],
    proxy_auth: str,
    tls: bool,
    listen: str | None,
    replicas: int,
) -> None:
    # The template (package data) for each of its options, checked by `nginx -t`; the live test
    # below runs one of them for real (and test_replicas.py the replicas).
    binary = _nginx_binary()
    profile = Server(public_url="https://mlflow.test:8443", allowed_hosts=["alias.test"], proxy_auth=proxy_auth,
                     max_body_size_mb=123, proxy_timeout_s=45, replicas=replicas,
                     backend_store_uri="postgresql+psycopg2://mlflow@db/mlflow")  # fmt: skip
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = render_nginx(profile, tls=tls, listen=listen, htpasswd_path=str(prefix / "htpasswd"), standalone_prefix=prefix,
                        certificate=certificate, user="root" if os.geteuid() == 0 else None)  # fmt: skip
    site = render_nginx(
        profile, tls=tls, listen=listen, htpasswd_path=str(prefix / "htpasswd"), certificate=certificate
    )
    for text in (conf, site):
        assert not any(mark in text for mark in ("{{", "}}", "{%", "%}", "{#")), text
        assert text.endswith("}\n")
        assert "\n\n\n" not in text
    assert site.startswith("# Generated by `mlflow-ci server config`")
    assert conf.startswith(f"# Generated by mlflow-ci: a self-contained nginx.conf (prefix {prefix}).")
    assert f"    listen {listen or ('443 ssl' if tls else '80')};" in site
    assert "server_name mlflow.test;" in site
    assert ("return 301 https://$host$request_uri;" in site) == (tls and listen is None)
    assert (f"ssl_certificate     {certificate[0]};" in site) == tls
    assert (f"ssl_certificate_key {certificate[1]};" in site) == tls
    assert "client_max_body_size 123m;" in site
    assert "proxy_read_timeout 45s;" in site
    assert ("proxy_next_upstream_tries 3;" in site) == (replicas == 3)
    assert site.count("    server 127.0.0.1:") == replicas
    assert "--allowed-hosts (mlflow.test, mlflow.test:8443, ...)" in site
    auth = {
        "nginx-basic": f"        auth_basic_user_file {prefix / 'htpasswd'};\n",
        "mlflow": "        proxy_set_header Authorization $http_authorization;\n",
        "none": "        # No authentication: only acceptable on a private network.\n",
    }
    for mode, line in auth.items():
        assert (line in site) == (mode == proxy_auth)
    # The standalone file is the site file inside http { }, indented.
    assert "\n".join(("    " + line) if line else "" for line in site.splitlines()[1:]) + "\n}\n" in conf
    (prefix / "nginx.conf").write_text(conf)
    checked = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                             check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


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


def test_the_templates_are_package_data() -> None:
    # Rendering reads them through importlib.resources: a wheel without them renders nothing.
    from conftest import ROOT

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "mlflow_ci"
    ]
    package = ROOT / "ci" / "mlflow_ci"
    shipped = {path for pattern in globs for path in package.glob(pattern)}
    templates = sorted((package / "serverops" / "templates").iterdir())
    assert templates
    assert set(templates) <= shipped
    for path in templates:
        assert (resources.files("mlflow_ci.serverops") / "templates" / path.name).is_file()


def test_committed_deployment_examples_match_the_generator() -> None:
    from conftest import ROOT
    from mlflow_ci.serverops.profile import load_ops

    folder = ROOT / "docs" / "deploy"
    ops = load_ops(folder / "mlflow-ci.yaml", env={})
    for name, text in render_all(ops.server).items():
        assert (folder / name).read_text() == text, (
            f"docs/deploy/{name} is stale: run mlflow-ci server config"
        )
