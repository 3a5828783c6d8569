"""The container engine: a Docker API client that answers, or one clear error.

``DOCKER_HOST`` wins when set (any Docker API: Docker itself, or podman's service).  Without it
the client talks to the socket that ``.ci/setup-engine.sh`` serves podman's Docker API on, so
neither tests nor CI need ``DOCKER_HOST`` in their environment (and tools such as act, which
must not use podman, keep working).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import docker
import requests

from mlflow_ci.core.errors import InfraError

DEFAULT_DOCKER_HOST = "unix:///run/mlflow-ci/podman.sock"
PING_TIMEOUT_S = 5.0
SETUP_HINT = "Start podman's Docker API with `sudo bash .ci/setup-engine.sh`, or set DOCKER_HOST."


class EngineUnavailable(InfraError):
    """No container engine answered."""


def engine_url(env: Mapping[str, str] | None = None) -> str:
    """``DOCKER_HOST`` from ``env`` (default: ``os.environ``), else :data:`DEFAULT_DOCKER_HOST`."""
    env = os.environ if env is None else env
    return env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def engine_client(
    env: Mapping[str, str] | None = None,
    *,
    ping_timeout: float = PING_TIMEOUT_S,
    timeout: float = 600.0,
) -> docker.DockerClient:
    """A ``docker.DockerClient`` whose engine answered ``/_ping`` within ``ping_timeout`` seconds.

    ``timeout`` then applies to each later request; image builds stream for minutes and a silent
    ``pip install`` step must not trip it.  ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` in ``env``
    are honoured as by ``docker.from_env``.
    """
    env = dict(os.environ if env is None else env)
    url = engine_url(env)
    env["DOCKER_HOST"] = url
    try:
        client = docker.from_env(environment=env, timeout=ping_timeout)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as err:
        raise EngineUnavailable(
            f"No container engine answered at {url} within {ping_timeout:g} s ({_short(err)}).",
            hint=SETUP_HINT,
        ) from err
    client.api.timeout = timeout
    return client


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:200] if text else type(err).__name__
