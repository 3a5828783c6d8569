"""``mlflow-ci build-image``: a serving image from MLflow's own generated Dockerfile, built through
the Docker API, tagged with model name, version and git commit, labelled with its lineage, and
optionally pushed.

The Dockerfile is MLflow's, unmodified (``--env-manager local`` semantics: the model's
requirements are pip-installed into the image's Python; ``FROM python:<the model's Python>-slim``).
Lineage goes in as build labels, which the engine appends after the Dockerfile's last step, so
they never invalidate the layer cache, and they are deterministic (no timestamps), so rebuilding
an unchanged model gives the same image id.

Cache keeping (docs/container-engine.md, "Removing an image deletes its build cache"): every build
also moves a spare tag, ``mlflow-ci-build-cache:<base>-mlflow<version>``, to the image it built.
:func:`remove_tags` never removes that tag, so the shared ``apt``/``pip install mlflow`` layers
survive when the model's own tags are removed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow_ci import __version__
from mlflow_ci.config import ImageSettings
from mlflow_ci.core import output
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.output import emit_json
from mlflow_ci.mlflowio.modelref import LocalModel, ModelRef, fetch, resolve

CACHE_REPO = "mlflow-ci-build-cache"
LABEL = "io.mlflow-ci."
OCI = "org.opencontainers.image."
DIGEST_IN_STATUS = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_REPO_BAD = re.compile(r"[^a-z0-9._/-]+")


@dataclass(frozen=True)
class BuiltImage:
    """What a build produced."""

    image_id: str
    repository: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    base_image: str
    cache_tag: str
    build_seconds: float
    steps: int
    cached_steps: int
    model: dict[str, Any]
    digest: str | None = None
    pushed: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """The primary tag, which names this image everywhere (``repo:vN``)."""
        return self.tags[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image"] = self.ref
        return out


# --------------------------------------------------------------------------------------------
# Names


def normalize(ref: str) -> str:
    """``name:tag`` as the engine lists it: ``docker.io/library/name:tag`` for a short name."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if rest else f"docker.io/library/{ref}"


def split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); a port in the registry part is not a tag."""
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, tag = last.split(":", 1)
        return (f"{head}/{name}" if head else name), tag
    return ref, "latest"


def repository(settings: ImageSettings, model_name: str, registry: str | None = None) -> str:
    """The image repository for a model: ``[registry/]`` + ``settings.repository`` with ``{model}``."""
    name = _REPO_BAD.sub("-", model_name.lower()).strip("-._/") or "model"
    repo = settings.repository.replace("{model}", name)
    if "{" in repo or "}" in repo:
        raise ConfigError(
            f"deploy.image.repository {settings.repository!r}: only the {{model}} placeholder is known."
        )
    host = registry if registry is not None else settings.registry
    return f"{host.rstrip('/')}/{repo}" if host else repo


def tag_names(ref: ModelRef, extra: Iterable[str] = ()) -> list[str]:
    """Tags for a model: its version (``v3``) or id, then ``git-<commit>``, then ``extra``."""
    if ref.version:
        tags = [f"v{ref.version}"]
    elif ref.model_id:
        tags = [ref.model_id]
    elif ref.run_id:
        tags = [f"run-{ref.run_id[:12]}"]
    else:
        tags = ["latest"]
    if ref.git_commit:
        tags.append(f"git-{ref.git_commit[:12]}")
    tags += list(extra)
    out = []
    for tag in tags:
        clean = _TAG_BAD.sub("-", tag)[:128].lstrip(".-") or "latest"
        if clean not in out:
            out.append(clean)
    return out


def labels(ref: ModelRef, local: LocalModel, *, base_image: str, env: Mapping[str, str]) -> dict[str, str]:
    """OCI labels plus ``io.mlflow-ci.*`` lineage; empty values left out, no timestamps."""
    source = ""
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
        source = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}"
    values = {
        f"{OCI}title": ref.name,
        f"{OCI}version": ref.version or ref.model_id or (ref.run_id or ""),
        f"{OCI}revision": ref.git_commit,
        f"{OCI}source": source,
        f"{OCI}description": f"MLflow model {ref.label}, served by MLflow {local.mlflow_version}",
        f"{OCI}base.name": base_image,
        f"{LABEL}model.uri": ref.uri,
        f"{LABEL}model.requested-uri": ref.requested,
        f"{LABEL}model.name": ref.name,
        f"{LABEL}model.version": ref.version or "",
        f"{LABEL}model.id": ref.model_id or "",
        f"{LABEL}run-id": ref.run_id or "",
        f"{LABEL}git-commit": ref.git_commit,
        f"{LABEL}mlflow-version": local.mlflow_version,
        f"{LABEL}python-version": local.python_version or "",
        f"{LABEL}tracking-uri": _without_credentials(ref.tracking_uri or ""),
        f"{LABEL}tool-version": __version__,
    }
    return {k: v for k, v in values.items() if v}


def _without_credentials(uri: str) -> str:
    if not uri:
        return ""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def cache_tag(base_image: str, mlflow_version: str) -> str:
    name = _TAG_BAD.sub(
        "-", f"{base_image.rsplit('/', maxsplit=1)[-1].replace(':', '-')}-mlflow{mlflow_version}"
    )
    return f"{CACHE_REPO}:{name[:128]}"


# --------------------------------------------------------------------------------------------
# Build


def generate_context(local: LocalModel, ctx: Path, *, base_image: str | None = None) -> str:
    """Write MLflow's Dockerfile and the model into ``ctx``; return the ``FROM`` image.

    This is what ``mlflow models generate-dockerfile --env-manager local`` does, through the
    same backend call, so that ``base_image`` (the Python API's ``build_docker(base_image=)``)
    is available too.
    """
    from mlflow.models.flavor_backend_registry import get_flavor_backend

    with output.stdout_to_stderr():
        backend = get_flavor_backend(str(local.path), docker_build=True, env_manager="local")
        if backend is None or not backend.can_build_image():
            raise ConfigError(f"MLflow cannot build a serving image for the model in {local.path}.")
        backend.generate_dockerfile(model_uri=str(local.path), output_dir=str(ctx), base_image=base_image)
    text = (ctx / "Dockerfile").read_text(encoding="utf-8")
    m = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    if not m:
        raise InfraError(f"MLflow's generated Dockerfile in {ctx} has no FROM line.")
    return m.group(1)


def build(
    client: Any,
    ctx: Path,
    *,
    tag: str,
    labels: Mapping[str, str],
    nocache: bool = False,
    timeout: float = 1800,
) -> tuple[str, float, int, int]:
    """Build ``ctx`` as ``tag``; stream progress; return (image id, seconds, steps, cached steps).

    ``pull`` stays off: nothing can be pulled on machines without registry access, and a
    ``FROM`` that is missing locally is pulled by Docker anyway.
    """
    import docker

    start = time.monotonic()
    recent: deque[str] = deque(maxlen=40)
    image_id, steps, cached = "", 0, 0
    try:
        stream = client.api.build(
            path=str(ctx), tag=tag, labels=dict(labels), rm=True, nocache=nocache, decode=True
        )
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                raise InfraError(
                    f"The image build failed: {message.strip()[:500]}. Last build output:\n"
                    + "".join(recent),
                    hint="A failed `pip install` of the model's requirements needs the package index; "
                    "a missing FROM image needs `.ci/setup-engine.sh` (or deploy.image.base_image).",
                )
            text = chunk.get("stream", "")
            if text:
                recent.append(text)
                if re.match(r"(STEP|Step) \d+/\d+", text):
                    steps += 1
                if "Using cache" in text or "---> Using cache" in text:
                    cached += 1
                output.info("    " + text.rstrip("\n"))
            aux = chunk.get("aux") or {}
            if aux.get("ID"):
                image_id = str(aux["ID"])
            if time.monotonic() - start > timeout:
                raise InfraError(f"The image build did not finish within {timeout:.0f} s and was abandoned.")
    except docker.errors.APIError as exc:
        raise InfraError(f"The container engine refused the build: {exc.explanation or exc}") from None
    except docker.errors.DockerException as exc:
        raise InfraError(f"The image build failed: {exc}") from None
    if not image_id:
        image_id = client.images.get(tag).id
    return image_id, time.monotonic() - start, steps, cached


def build_image(
    ref: ModelRef,
    *,
    settings: ImageSettings,
    client: Any,
    workdir: Path,
    registry: str | None = None,
    extra_tags: Iterable[str] = (),
    nocache: bool = False,
    env: Mapping[str, str] | None = None,
) -> BuiltImage:
    """Fetch the model, generate MLflow's Dockerfile, build, tag, move the cache tag."""
    env = os.environ if env is None else env
    local = fetch(ref, workdir / "download")
    ctx = workdir / "context"
    base = generate_context(local, ctx, base_image=settings.base_image)
    base_present = _exists(client, base)
    if not base_present:
        output.warning(
            f"the base image {base} is not in the engine's storage; the build will try to pull it "
            "(which fails on machines without registry access: run `.ci/setup-engine.sh` or set "
            "deploy.image.base_image)."
        )
    repo = repository(settings, ref.name, registry)
    tags = [f"{repo}:{t}" for t in tag_names(ref, extra_tags)]
    lab = labels(ref, local, base_image=base, env=env)
    with output.step(f"build image {tags[0]} (FROM {base}{', no cache' if nocache else ''})"):
        image_id, seconds, steps, cached = build(
            client, ctx, tag=tags[0], labels=lab, nocache=nocache, timeout=settings.build_timeout
        )
    for full in [*tags[1:], cache_tag(base, local.mlflow_version)]:
        name, tag = split_ref(full)
        client.api.tag(image_id, name, tag, force=True)
    output.info(
        f"built {image_id[:19]} in {seconds:.1f} s ({cached} of {steps} steps from cache); tags: {', '.join(tags)}"
    )
    return BuiltImage(
        image_id=image_id,
        repository=repo,
        tags=tuple(tags),
        labels=lab,
        base_image=base,
        cache_tag=cache_tag(base, local.mlflow_version),
        build_seconds=round(seconds, 2),
        steps=steps,
        cached_steps=cached,
        model=ref.to_dict(),
    )


def _exists(client: Any, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


# --------------------------------------------------------------------------------------------
# Push


def registry_auth(env: Mapping[str, str]) -> dict[str, str] | None:
    """Credentials from ``MLFLOW_CI_REGISTRY_USER`` / ``MLFLOW_CI_REGISTRY_PASSWORD`` (none: anonymous)."""
    user, password = env.get("MLFLOW_CI_REGISTRY_USER"), env.get("MLFLOW_CI_REGISTRY_PASSWORD")
    if user and password:
        return {"username": user, "password": password}
    if user or password:
        raise ConfigError("Set both MLFLOW_CI_REGISTRY_USER and MLFLOW_CI_REGISTRY_PASSWORD, or neither.")
    return None


def push(client: Any, ref: str, *, auth: dict[str, str] | None = None) -> str:
    """Push ``repo:tag``; return the manifest digest the registry stored.

    Docker reports it in an ``aux`` event; podman only in a status line
    (``v1: digest: sha256:... size: 1566``), so both are read.
    """
    import docker

    name, tag = split_ref(ref)
    digest = None
    try:
        for event in client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in event or "errorDetail" in event:
                message = event.get("error") or event.get("errorDetail", {}).get("message", "")
                raise InfraError(
                    f"Pushing {ref} failed: {message.strip()[:500]}",
                    hint="Is the registry reachable (and listed as insecure if it speaks plain HTTP), and are "
                    "MLFLOW_CI_REGISTRY_USER/PASSWORD right?",
                )
            aux = event.get("aux") or {}
            found = DIGEST_IN_STATUS.search(str(event.get("status", "")))
            digest = aux.get("Digest") or (found.group(1) if found else digest)
    except docker.errors.APIError as exc:
        raise InfraError(f"Pushing {ref} failed: {exc.explanation or exc}") from None
    if not digest:
        raise InfraError(f"The engine pushed {ref} but reported no digest.")
    return str(digest)


def remove_tags(client: Any, refs: Iterable[str]) -> list[str]:
    """Remove these names (never a ``mlflow-ci-build-cache`` tag, so the layer cache survives)."""
    import docker

    removed = []
    for ref in refs:
        if split_ref(normalize(ref))[0].endswith("/" + CACHE_REPO):
            continue
        try:
            client.images.remove(ref)
            removed.append(ref)
        except docker.errors.NotFound:
            continue
    return removed


# --------------------------------------------------------------------------------------------
# `mlflow-ci build-image MODEL_URI`


def build_image_command(
    *,
    model_uri: str,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    registry: str | None = None,
    push_image: bool = False,
    extra_tags: tuple[str, ...] = (),
    nocache: bool = False,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    from mlflow_ci.config import load_command_policy
    from mlflow_ci.serving.engine import engine_client

    env = os.environ if env is None else env
    policy = load_command_policy(policy_path).policy
    settings = policy.deploy.image
    registry = registry or env.get("MLFLOW_CI_REGISTRY") or settings.registry
    if push_image and not registry:
        raise ConfigError(
            "--push needs a registry: pass --registry HOST[:PORT], set MLFLOW_CI_REGISTRY or deploy.image.registry."
        )
    auth = registry_auth(env) if push_image else None
    ref = resolve(model_uri, tracking_uri=tracking_uri, env=env)
    client = engine_client(env, timeout=settings.build_timeout)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-image-") as tmp:
        built = build_image(
            ref, settings=settings, client=client, workdir=Path(tmp), registry=registry,
            extra_tags=extra_tags, nocache=nocache, env=env,
        )  # fmt: skip
    if push_image:
        pushed, digest = [], None
        with output.step(f"push {', '.join(built.tags)}"):
            for ref_name in built.tags:
                digest = push(client, ref_name, auth=auth)
                pushed.append(f"{split_ref(ref_name)[0]}@{digest}")
                output.info(f"pushed {ref_name} ({digest})")
        built = dataclasses.replace(built, digest=digest, pushed=tuple(pushed))
    output.set_output("image", built.ref)
    output.set_output("image_id", built.image_id)
    output.set_output("digest", built.digest or "")
    output.set_output("tags", ",".join(built.tags))
    output.write_step_summary(_summary(built))
    if as_json:
        emit_json(built.to_dict())
    else:
        output.info(
            f"image {built.ref}\n  id      {built.image_id}\n  tags    {', '.join(built.tags)}\n"
            f"  digest  {built.digest or '(not pushed)'}\n  model   {ref.uri} (run {ref.run_id or '-'})"
        )
    return 0


def _summary(built: BuiltImage) -> str:
    rows = [
        ("image", built.ref),
        ("id", built.image_id),
        ("digest", built.digest or "not pushed"),
        ("model", str(built.model.get("uri"))),
        ("build", f"{built.build_seconds:.1f} s, {built.cached_steps}/{built.steps} steps cached"),
        ("built", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    lines = ["### 🐳 mlflow-ci build-image", "", "| | |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in rows]
    return "\n".join(lines) + "\n"
