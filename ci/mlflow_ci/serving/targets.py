"""Deploy targets behind one small interface; :data:`TARGETS` is the single place to add one.

A target starts a model so that it answers MLflow's scoring protocol (``/ping``,
``/invocations``) at a URL, and stops it again, also from another process (a kept deployment is
stopped by ``mlflow-ci undeploy`` from the :class:`Deployment` record alone).

- ``local``: ``mlflow models serve`` as a child process (the embedded default: no engine, the
  model's env from MLflow's cache under ``MLFLOW_ENV_ROOT``, or this Python with ``local``).
- ``docker``: the serving image (:mod:`mlflow_ci.serving.images`) run as a container through the Docker API.

Kubernetes manifests or SageMaker would be further classes with the same four methods; see
CONTRIBUTING.md ("Adding ... a deploy target").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlflow_ci.config import Deploy
from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.poll import poll
from mlflow_ci.mlflowio.modelref import LocalModel, ModelRef
from mlflow_ci.mlflowio.tracking import free_port

CONTAINER_PORT = "8080/tcp"


@dataclass(frozen=True)
class Deployment:
    """A started model: where it answers and how to stop it (JSON-serializable)."""

    target: str
    url: str
    subject: str
    handle: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    started: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        return cls(**data)


class DeployTarget(Protocol):
    name: str

    def preflight(self) -> None:
        """Raise ConfigError/InfraError with advice when this target cannot work here."""

    def start(
        self, ref: ModelRef, local: LocalModel, *, settings: Deploy, workdir: Path, name: str
    ) -> Deployment:
        """Start serving; return at once (readiness is the caller's check). ``workdir`` outlives
        the deployment when it is kept; ``name`` is stable per model and alias."""

    def alive(self, deployment: Deployment) -> bool:
        """False once the process or container has exited."""

    def logs(self, deployment: Deployment, lines: int = 40) -> str:
        """The last lines of its output, for reports."""

    def stop(self, deployment: Deployment) -> None:
        """Stop and remove what ``start`` started; idempotent."""


# --------------------------------------------------------------------------------------------
# local: `mlflow models serve`


@dataclass(frozen=True)
class LocalServe:
    name: str = "local"

    def preflight(self) -> None:
        return None

    def command(self, model_path: Path, settings: Deploy, port: int) -> list[str]:
        s = settings.local
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_path), "-h", s.host,
                "-p", str(port), "-w", str(s.workers), "--env-manager", s.env_manager]  # fmt: skip

    def start(
        self, ref: ModelRef, local: LocalModel, *, settings: Deploy, workdir: Path, name: str
    ) -> Deployment:
        from mlflow_ci.mlflowio.envmanagers import get as env_manager

        env_manager(settings.local.env_manager).preflight()
        workdir.mkdir(parents=True, exist_ok=True)
        port = settings.local.port or free_port(settings.local.host)
        log_path = workdir / "serve.log"
        # `mlflow models serve --env-manager local` execs `uvicorn` from PATH: this Python's.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = proc.base_env({"PATH": path})
        argv = self.command(local.path, settings, port)
        output.info(f"$ {' '.join(argv)}")
        with log_path.open("a", encoding="utf-8") as log:
            child = subprocess.Popen(
                argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        host = "127.0.0.1" if settings.local.host in ("0.0.0.0", "") else settings.local.host
        return Deployment(
            target=self.name,
            url=f"http://{host}:{port}",
            subject=f"mlflow models serve ({settings.local.env_manager}) of {ref.label}",
            handle={"pid": child.pid, "log": str(log_path), "name": name},
            model=ref.to_dict(),
        )

    def alive(self, deployment: Deployment) -> bool:
        pid = int(deployment.handle["pid"])
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def logs(self, deployment: Deployment, lines: int = 40) -> str:
        try:
            text = Path(deployment.handle["log"]).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return proc.tail(text, lines)

    def stop(self, deployment: Deployment) -> None:
        proc.stop_group(int(deployment.handle["pid"]), grace=10.0)


# --------------------------------------------------------------------------------------------
# docker: the serving image as a container


@dataclass(frozen=True)
class DockerContainer:
    name: str = "docker"

    def preflight(self) -> None:
        from mlflow_ci.serving.engine import engine_client

        engine_client()

    def start(
        self, ref: ModelRef, local: LocalModel, *, settings: Deploy, workdir: Path, name: str
    ) -> Deployment:
        from mlflow_ci.serving.engine import engine_client
        from mlflow_ci.serving.images import build_image, normalize

        client = engine_client(timeout=settings.image.build_timeout)
        before = {t for i in client.images.list() for t in i.tags}
        built = build_image(ref, settings=settings.image, client=client, workdir=workdir / "image")
        started = self.run_image(built.ref, settings=settings, name=name, model=ref.to_dict(), client=client)
        # Tags this build added, so a throwaway start (serve-check of a model URI) can remove them.
        new_tags = [t for t in built.tags if normalize(t) not in before]
        return Deployment(**{**started.to_dict(), "handle": {**started.handle, "new_tags": new_tags}})

    def run_image(
        self,
        image: str,
        *,
        settings: Deploy,
        name: str,
        model: dict[str, Any] | None = None,
        client: Any = None,
    ) -> Deployment:
        """Run ``image`` with its port 8080 published on ``deploy.docker.host``; replaces a
        container of the same name (a redeploy)."""
        import docker

        from mlflow_ci.serving.engine import engine_client

        client = client or engine_client()
        s = settings.docker
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
        environment = {"MLFLOW_MODELS_WORKERS": str(s.workers)} if s.workers else {}
        try:
            container = client.containers.run(
                image, detach=True, name=name, environment=environment,
                ports={CONTAINER_PORT: (s.host, s.port) if s.port else (s.host, None)},
                labels={"io.mlflow-ci.role": "serving", "io.mlflow-ci.image": image},
            )  # fmt: skip
        except docker.errors.ImageNotFound:
            raise ConfigError(f"Image {image!r} is not in the engine's storage.") from None
        except docker.errors.APIError as exc:
            raise InfraError(
                f"The engine could not start a container of {image}: {exc.explanation or exc}"
            ) from None

        def published() -> str | None:
            container.reload()
            bound = (container.ports or {}).get(CONTAINER_PORT) or []
            return bound[0]["HostPort"] if bound and bound[0].get("HostPort") else None

        port = poll(published, attempts=50, interval=0.1).value
        if port is None:
            container.remove(force=True)
            raise InfraError(f"The engine published no host port for {image}'s {CONTAINER_PORT}.")
        host = "127.0.0.1" if s.host in ("0.0.0.0", "") else s.host
        return Deployment(
            target=self.name,
            url=f"http://{host}:{port}",
            subject=f"container {container.short_id} of {image}",
            handle={"container_id": container.id, "name": name, "image": image,
                    "image_id": container.image.id if container.image else ""},
            model=model or {},
        )  # fmt: skip

    def _container(self, deployment: Deployment) -> Any:
        import docker

        from mlflow_ci.serving.engine import engine_client

        try:
            return engine_client().containers.get(deployment.handle["container_id"])
        except docker.errors.NotFound:
            return None

    def alive(self, deployment: Deployment) -> bool:
        container = self._container(deployment)
        return container is not None and container.status in ("created", "running")

    def logs(self, deployment: Deployment, lines: int = 40) -> str:
        container = self._container(deployment)
        if container is None:
            return ""
        return container.logs(tail=lines).decode("utf-8", errors="replace")

    def stop(self, deployment: Deployment) -> None:
        import docker
        import requests

        try:
            container = self._container(deployment)
            if container is not None:
                container.remove(force=True)
        except (InfraError, docker.errors.DockerException, requests.RequestException) as exc:
            # The engine went away under us (a restarted podman service): say what is left.
            name = deployment.handle.get("name") or deployment.handle.get("container_id")
            output.warning(
                f"could not remove container {name} ({type(exc).__name__}: {str(exc)[:200]}); "
                f"remove it with `podman rm -f {name}` (or `docker rm -f {name}`)."
            )


TARGETS: dict[str, DeployTarget] = {t.name: t for t in (LocalServe(), DockerContainer())}


def get(name: str) -> DeployTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"Unknown deploy target {name!r}; choose one of: {', '.join(TARGETS)}.") from None
