"""Object stores on loopback for tests: SeaweedFS (S3) and Azurite (Azure Blob).

Each starts on free 127.0.0.1 ports in a folder of its own, waits until it answers and is torn
down with its whole process group.  Idempotent by design: an endpoint already given in the
environment (``MLFLOW_CI_S3_ENDPOINT_URL`` / ``MLFLOW_CI_AZURE_CONNECTION_STRING``) is reused
instead of starting another.  A missing binary yields ``None`` so the caller can ``require`` it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci.core import proc
from mlflow_ci.mlflowio.tracking import free_port

S3_KEY, S3_SECRET = "mlflowci", "mlflowci-secret"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class S3Service:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name="us-east-1")  # fmt: skip

    def bucket(self, name: str) -> str:
        client = self.client()
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket=name)
        return name


@dataclass(frozen=True)
class AzureService:
    blob_endpoint: str

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def container(self, name: str) -> str:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.connection_string)
        with contextlib.suppress(Exception):
            service.create_container(name)
        return f"wasbs://{name}@{AZURITE_ACCOUNT}.blob.core.windows.net"


def _wait(check, what: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {child.returncode}:\n{proc.tail(log.read_text(errors='replace'))}"
            )
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.3)
    raise RuntimeError(
        f"{what} did not answer within {timeout:.0f}s:\n{proc.tail(log.read_text(errors='replace'))}"
    )


def _start(
    args: list[str], workdir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / "service.log"
    with log.open("ab") as fh:
        child = subprocess.Popen(args, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env or proc.base_env())  # fmt: skip
    return child, log


@contextlib.contextmanager
def seaweedfs(workdir: Path) -> Iterator[S3Service | None]:
    """A real SeaweedFS (``weed server -s3``) on loopback, or the one named by MLFLOW_CI_S3_ENDPOINT_URL."""
    given = os.environ.get("MLFLOW_CI_S3_ENDPOINT_URL")
    if given:
        yield S3Service(given)
        return
    weed = shutil.which("weed")
    if weed is None:
        yield None
        return
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "mlflowci", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))  # fmt: skip
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                                            "s3", "s3.grpc")}  # fmt: skip
    (workdir / "data").mkdir(exist_ok=True)
    args = [
        weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=32", "-volume.max=0",
    ]  # fmt: skip
    child, log = _start(args, workdir)
    service = S3Service(f"http://127.0.0.1:{ports['s3']}")
    try:
        _wait(
            lambda: service.client().list_buckets() is not None and service.bucket("probe"),
            "SeaweedFS",
            child,
            log,
        )
        yield service
    finally:
        proc.kill_group(child)  # type: ignore[arg-type]


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[AzureService | None]:
    """A real Azurite blob service on loopback, or the one named by MLFLOW_CI_AZURE_BLOB_ENDPOINT."""
    given = os.environ.get("MLFLOW_CI_AZURE_BLOB_ENDPOINT")
    if given:
        yield AzureService(given)
        return
    binary = shutil.which("azurite-blob") or shutil.which("azurite")
    if binary is None:
        yield None
        return
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir / "data"),
            "--silent", "--skipApiVersionCheck", "--loose"]  # fmt: skip
    if binary.endswith("/azurite"):
        args += ["--queuePort", str(free_port()), "--tablePort", str(free_port()), "--queueHost", "127.0.0.1",
                 "--tableHost", "127.0.0.1"]  # fmt: skip
    child, log = _start(args, workdir)
    service = AzureService(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")

    def ready() -> bool:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(service.connection_string).get_service_properties()
        return True

    try:
        _wait(ready, "Azurite", child, log)
        yield service
    finally:
        proc.kill_group(child)  # type: ignore[arg-type]


@dataclass(frozen=True)
class NginxService:
    url: str
    prefix: Path


@contextlib.contextmanager
def nginx(prefix: Path, conf_text: str, port: int, *, tls: bool) -> Iterator[NginxService | None]:
    """A real nginx running ``conf_text`` (a standalone nginx.conf) with its files under ``prefix``."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        yield None
        return
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    proc.run([binary, "-t", "-p", str(prefix), "-c", str(conf)])  # a broken config fails loudly here
    child, log = _start([binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"], prefix)
    import socket

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        _wait(ready, "nginx", child, log, timeout=20)
        yield NginxService(f"{'https' if tls else 'http'}://127.0.0.1:{port}", prefix)
    finally:
        proc.kill_group(child)  # type: ignore[arg-type]


def self_signed(folder: Path, host: str) -> tuple[str, str]:
    """A throwaway certificate for ``host`` (openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    proc.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}",
              "-addext", f"subjectAltName=DNS:{host},IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)])  # fmt: skip
    return str(cert), str(key)
