"""``mlflow-ci server config``: deployment files generated from the ``server:`` profile.

* ``nginx.conf``: TLS (certificate paths are placeholders), HTTP→HTTPS redirect, basic auth in
  nginx (htpasswd) *or* the ``Authorization`` header passed through to MLflow's basic-auth app,
  ``client_max_body_size`` and timeouts sized for large models, request streaming (no 4 GB temp
  files), the Host header forwarded so MLflow's ``--allowed-hosts`` check passes, and an
  unauthenticated ``/health`` for load balancers.  With ``replicas: N`` (N > 1) the upstream
  holds N servers with passive health checks, and a request a dying replica did not answer goes
  to the next one, POST and PATCH only when the replica never received them.
* ``mlflow.service``: a hardened systemd unit (own user, read-only system, private /tmp, no new
  privileges, only the state folders writable).  ``mlflow db upgrade`` is *not* in it: schema
  upgrades are an explicit, backed-up step (``mlflow-ci server upgrade``).  With replicas, a
  templated ``mlflow@.service`` (the instance name is the port) and ``mlflow.target``, which
  wants one instance per replica.
* ``compose.yaml``: MLflow (one service per replica) + PostgreSQL + SeaweedFS (S3) + nginx, for a
  single host.
* ``mlflow.env.example``: the environment the unit and compose file read; secrets stay out of
  the generated files.

Rendering is pure (a profile in, text out) so the committed examples in ``docs/deploy/`` are
checked against the generator by a test.  The nginx text is a Jinja2 template shipped with the
package (``templates/``, read through :mod:`importlib.resources`).
"""

from __future__ import annotations

import functools
import shlex
import textwrap
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mlflow_ci.config import Server
from mlflow_ci.core import output
from mlflow_ci.core.fsutil import atomic_write_text
from mlflow_ci.serverops.profile import allowed_hosts, replica_ports, server_args

if TYPE_CHECKING:
    import jinja2

MLFLOW_VERSION = "3.17.2"


def _public_host(server: Server) -> str:
    if server.public_url:
        return urlparse(server.public_url).hostname or "mlflow.example.com"
    return "mlflow.example.com"


# Passive health checks of replicas: after MAX_FAILS failed requests (as proxy_next_upstream
# counts them) within FAIL_TIMEOUT_S a replica gets no requests for FAIL_TIMEOUT_S, then one.
MAX_FAILS = 1
FAIL_TIMEOUT_S = 10
# Tries of one request across replicas (the first included), at most.
NEXT_UPSTREAM_TRIES = 3


def render_nginx(
    server: Server,
    *,
    tls: bool = True,
    listen: str | None = None,
    htpasswd_path: str = "/etc/nginx/mlflow.htpasswd",
    upstreams: Sequence[str] | None = None,
    standalone_prefix: Path | None = None,
    user: str | None = None,
    certificate: tuple[str, str] | None = None,
) -> str:
    """The nginx configuration for a profile (``templates/nginx-site.conf.j2``).

    By default a site file for ``/etc/nginx/conf.d/``.  ``upstreams``: the replicas' ``host:port``
    (by default ``server.host`` on each of :func:`replica_ports`).  ``standalone_prefix`` renders a complete
    ``nginx.conf`` (``templates/nginx-standalone.conf.j2``) whose pid, logs and temp folders live
    under that prefix (used by tests and the restore drill to run a real nginx without touching
    the system's).
    """
    cert, key = certificate or (
        "/etc/nginx/tls/CHANGE-ME-fullchain.pem",
        "/etc/nginx/tls/CHANGE-ME-privkey.pem",
    )
    site = _template(
        "nginx-site.conf.j2"
    ).render(
        site_file=standalone_prefix is None,
        redirect=tls and listen is None,  # HTTP → HTTPS, on the default ports only
        host=_public_host(server),
        upstreams=list(upstreams or [f"{server.host}:{port}" for port in replica_ports(server)]),
        max_fails=MAX_FAILS,
        fail_timeout_s=FAIL_TIMEOUT_S,
        tries=min(NEXT_UPSTREAM_TRIES, len(upstreams or replica_ports(server))),
        listen=listen or ("443 ssl" if tls else "80"),
        tls=tls,
        certificate=cert,
        key=key,
        max_body_size_mb=server.max_body_size_mb,
        timeout_s=server.proxy_timeout_s,
        allowed_hosts=allowed_hosts(server)[:2],
        auth=server.proxy_auth,
        htpasswd_path=htpasswd_path,
    )
    if standalone_prefix is None:
        return site
    return _template("nginx-standalone.conf.j2").render(
        prefix=standalone_prefix,
        user=user,
        # The site inside http { }, one level deeper.
        site="\n".join(("    " + line) if line else "" for line in site.splitlines()),
    )


@functools.cache
def _template(name: str) -> jinja2.Template:
    """A template shipped with the package (``mlflow_ci/serverops/templates/``).

    ``trim_blocks`` and ``lstrip_blocks``: a line holding only ``{% if %}`` (indented or not)
    leaves nothing in the output; ``keep_trailing_newline``: the file's last newline stays.
    """
    import jinja2

    text = (resources.files("mlflow_ci.serverops") / "templates" / name).read_text(encoding="utf-8")
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - an nginx configuration, not HTML: nothing to escape
    )
    return env.from_string(text)


def systemd_unit_name(server: Server) -> str:
    """``mlflow.service`` for one server; the template ``mlflow@.service`` (instance = port) for replicas."""
    return "mlflow.service" if server.replicas == 1 else "mlflow@.service"


def render_systemd(server: Server, *, mlflow_bin: str = "/opt/mlflow/venv/bin/mlflow") -> str:
    """The hardened unit: ``mlflow.service``, or with replicas the template ``mlflow@.service`` whose
    instance name is the port it listens on (``mlflow@5000``, ``mlflow@5001``, ...)."""
    replicated = server.replicas > 1
    writable = []
    if server.backend_store_uri.startswith("sqlite:"):
        db_path = server.backend_store_uri.split("///", 1)[-1]
        writable.append(str(Path(db_path).parent) if db_path.startswith("/") else "/var/lib/mlflow")
    if "://" not in server.artifacts_destination:
        art = server.artifacts_destination
        writable.append(art if art.startswith("/") else "/var/lib/mlflow")
    writable = sorted(set(writable)) or ["/var/lib/mlflow"]
    lines: list[str] = []
    for arg in server_args(server, port="%i" if replicated else None):
        if arg.startswith("--") or not lines:
            lines.append(arg)
        else:
            lines[-1] += " " + shlex.quote(arg)
    args = " \\\n    ".join(lines)
    if replicated:
        ports = replica_ports(server)
        head = f"""# Generated by `mlflow-ci server config` from the server: profile: one of {server.replicas} replicas.
# Install: /etc/systemd/system/mlflow@.service and mlflow.target; secrets in /etc/mlflow/mlflow.env (mode 0600).
# One instance per replica, named by its port (mlflow@{ports[0]} ... mlflow@{ports[-1]}), all on the same database
# and artifact store. On an empty database start one first (it creates the tables), then the rest:
#   systemctl start mlflow@{ports[0]} && systemctl enable --now mlflow.target
# Rolling restart, one at a time (nginx sends requests to the others meanwhile):
#   for p in {" ".join(map(str, ports))}; do systemctl restart mlflow@$p; until curl -fso /dev/null 127.0.0.1:$p/health; do sleep 1; done; done
# The job runner (GenAI scorers, prompt optimization) stays off on every replica: its queue lives in one process.
# Schema upgrades are NOT run here: use `mlflow-ci server upgrade` (it backs up first) with every replica stopped.
[Unit]
Description=MLflow tracking server ({MLFLOW_VERSION}), replica on port %i
After=network-online.target
Wants=network-online.target
PartOf=mlflow.target
"""
        install = "mlflow.target"
    else:
        head = f"""# Generated by `mlflow-ci server config` from the server: profile.
# Install: /etc/systemd/system/mlflow.service; secrets in /etc/mlflow/mlflow.env (mode 0600).
# Schema upgrades are NOT run here: use `mlflow-ci server upgrade` (it backs up first).
[Unit]
Description=MLflow tracking server ({MLFLOW_VERSION})
After=network-online.target
Wants=network-online.target
"""
        install = "multi-user.target"
    return f"""{head}
[Service]
Type=simple
User=mlflow
Group=mlflow
WorkingDirectory=/var/lib/mlflow
EnvironmentFile=/etc/mlflow/mlflow.env
Environment=MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
Environment=MLFLOW_DISABLE_TELEMETRY=true
ExecStart={mlflow_bin} server \\
    {args}
Restart=on-failure
RestartSec=5
TimeoutStopSec=30

# Hardening: the server needs its state folders and the network, nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={" ".join(writable)}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0027

[Install]
WantedBy={install}
"""


def render_systemd_target(server: Server) -> str:
    """``mlflow.target``: wants one ``mlflow@<port>.service`` per replica; start, stop and restart them as one."""
    instances = " ".join(f"mlflow@{port}.service" for port in replica_ports(server))
    return f"""# Generated by `mlflow-ci server config` from the server: profile: the {server.replicas} MLflow replicas as one.
# Install: /etc/systemd/system/mlflow.target beside mlflow@.service; then `systemctl enable --now mlflow.target`.
# Stopping or restarting the target stops or restarts every replica at once: restart one at a time instead.
[Unit]
Description=MLflow tracking server, {server.replicas} replicas
Wants={instances}
After=network-online.target

[Install]
WantedBy=multi-user.target
"""


def compose_services(server: Server) -> list[str]:
    """The compose file's MLflow services: ``mlflow``, or ``mlflow-1`` ... ``mlflow-N`` with replicas."""
    return ["mlflow"] if server.replicas == 1 else [f"mlflow-{i}" for i in range(1, server.replicas + 1)]


def render_compose(server: Server) -> str:
    host = _public_host(server)
    names = compose_services(server)
    hosts = ",".join(dict.fromkeys([*allowed_hosts(server), *names, *(f"{name}:5000" for name in names)]))
    app = f"\n  --app-name {server.app_name}" if server.app_name else ""
    # One MLflow service definition (keys at the left margin); every replica runs it.
    mlflow = f"""build:
  context: .
  dockerfile_inline: |
    FROM python:3.11-slim
    RUN pip install --no-cache-dir mlflow=={MLFLOW_VERSION} psycopg2-binary boto3 Flask-WTF
    USER 1000:1000
restart: unless-stopped
depends_on:
  postgres: {{condition: service_healthy}}
  s3: {{condition: service_started}}
environment:
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false"
  MLFLOW_DISABLE_TELEMETRY: "true"
  MLFLOW_S3_ENDPOINT_URL: http://s3:8333
  AWS_ACCESS_KEY_ID: ${{AWS_ACCESS_KEY_ID:?set in .env}}
  AWS_SECRET_ACCESS_KEY: ${{AWS_SECRET_ACCESS_KEY:?set in .env}}
  BACKEND: postgresql+psycopg2://mlflow:${{POSTGRES_PASSWORD}}@postgres:5432/mlflow
command: >
  mlflow server
  --backend-store-uri postgresql+psycopg2://mlflow:${{POSTGRES_PASSWORD}}@postgres:5432/mlflow
  --artifacts-destination s3://mlflow-artifacts
  --serve-artifacts
  --host 0.0.0.0 --port 5000
  --workers {server.workers}
  --allowed-hosts {hosts}{app}
expose: ["5000"]
healthcheck:
  test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health')"]
  interval: 15s
  retries: 5
"""
    if server.replicas == 1:
        anchor = ""
        services = "  mlflow:\n" + textwrap.indent(mlflow, "    ")
        title = f"MLflow {MLFLOW_VERSION}"
    else:
        anchor = (
            f"\n# The {server.replicas} MLflow replicas run this one definition (stateless: one database, one artifact"
            "\n# store); the job runner is off on each, its queue would live in one process.\n"
            f"x-mlflow: &mlflow\n  image: mlflow-ci/mlflow:{MLFLOW_VERSION}\n" + textwrap.indent(mlflow, "  ")
        )
        services = "".join(f"  {name}: *mlflow\n" for name in names)
        title = f"{server.replicas} MLflow {MLFLOW_VERSION} replicas"
    first = names[0]
    depends = "[" + ", ".join(names) + "]"
    return f"""# Generated by `mlflow-ci server config` from the server: profile.
# One host: {title} + PostgreSQL 15 + SeaweedFS (S3) + nginx (TLS, auth, large bodies).
# Secrets come from .env (see mlflow.env.example) and seaweedfs-s3.json (see its .example); certificates
# from ./tls; users from ./mlflow.htpasswd (`htpasswd -B -c mlflow.htpasswd USER`).
# Schema upgrades are explicit: `docker compose run --rm {first} mlflow db upgrade "$$BACKEND"` after a backup.
name: mlflow
{anchor}
services:
  postgres:
    image: postgres:15
    restart: unless-stopped
    environment:
      POSTGRES_USER: mlflow
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}
      POSTGRES_DB: mlflow
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U mlflow -d mlflow"]
      interval: 10s
      retries: 5

  s3:
    image: chrislusf/seaweedfs:latest
    restart: unless-stopped
    command: server -dir=/data -s3 -s3.config=/etc/seaweedfs/s3.json -ip.bind=0.0.0.0
    volumes:
      - s3data:/data
      - ./seaweedfs-s3.json:/etc/seaweedfs/s3.json:ro

{services}
  nginx:
    image: nginx:1.27
    restart: unless-stopped
    depends_on: {depends}
    ports: ["80:80", "443:443"]
    volumes:
      - ./nginx-compose.conf:/etc/nginx/conf.d/default.conf:ro
      - ./mlflow.htpasswd:/etc/nginx/mlflow.htpasswd:ro
      - ./tls:/etc/nginx/tls:ro

volumes:
  pgdata: {{}}
  s3data: {{}}

# Public URL: {server.public_url or f"https://{host}"}
"""


def render_env_example(server: Server) -> str:
    return f"""# Environment for mlflow.service (/etc/mlflow/mlflow.env, mode 0600) or compose (.env).
# Generated by `mlflow-ci server config`; fill in, never commit the filled-in copy.
POSTGRES_PASSWORD=CHANGE-ME
AWS_ACCESS_KEY_ID=CHANGE-ME
AWS_SECRET_ACCESS_KEY=CHANGE-ME
{"MLFLOW_S3_ENDPOINT_URL=" + server.s3_endpoint_url if server.s3_endpoint_url else "# MLFLOW_S3_ENDPOINT_URL=http://s3:8333   # S3-compatible stores only"}
# MLflow basic-auth app (server.app_name: basic-auth):
# MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini
# MLFLOW_FLASK_SERVER_SECRET_KEY=CHANGE-ME
"""


def render_seaweedfs_config() -> str:
    """S3 identities for the compose file's SeaweedFS (the bucket is created on first upload)."""
    return """{
  "identities": [
    {
      "name": "mlflow",
      "credentials": [{"accessKey": "CHANGE-ME (= AWS_ACCESS_KEY_ID)", "secretKey": "CHANGE-ME (= AWS_SECRET_ACCESS_KEY)"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
"""


def render_all(server: Server) -> dict[str, str]:
    compose_site = server.model_copy(update={"host": "mlflow", "port": 5000})
    files = {
        "nginx.conf": render_nginx(server),
        "nginx-compose.conf": render_nginx(
            compose_site, upstreams=[f"{name}:5000" for name in compose_services(server)]
        ),
        systemd_unit_name(server): render_systemd(server),
    }
    if server.replicas > 1:
        files["mlflow.target"] = render_systemd_target(server)
    return {
        **files,
        "compose.yaml": render_compose(server),
        "mlflow.env.example": render_env_example(server),
        "seaweedfs-s3.json.example": render_seaweedfs_config(),
    }


def config_command(*, out: Path, policy_path: Path | None, as_json: bool) -> int:
    from mlflow_ci.serverops.profile import load_ops

    ops = load_ops(policy_path)
    written = {}
    for name, text in render_all(ops.server).items():
        written[name] = str(atomic_write_text(Path(out) / name, text))
    output.emit({"written": written}, as_json=as_json, text=f"wrote {', '.join(sorted(written))} to {out}")
    return 0
