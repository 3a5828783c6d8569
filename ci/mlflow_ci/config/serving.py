"""The ``deploy`` section: serving images, the serve-check, deploy targets."""

from __future__ import annotations

from pydantic import Field, field_validator

from mlflow_ci.config.base import EnvManager, Section

# The deploy targets serving.targets.TARGETS implements (a test keeps the two equal). A literal
# here, so that reading a policy never imports the serving package.
TARGET_NAMES: tuple[str, ...] = ("local", "docker")

_REPO_RE = r"^[a-z0-9{}][a-z0-9._/{}-]*$"


class ImageSettings(Section):
    """`mlflow-ci build-image`: the serving image built from MLflow's generated Dockerfile."""

    repository: str = Field(
        "{model}",
        pattern=_REPO_RE,
        description="Image repository; {model} is the registered (or logged) model name, lower-cased.",
    )
    registry: str | None = Field(
        None, description="Registry host[:port] prefixed to the repository, e.g. localhost:5000."
    )
    base_image: str | None = Field(
        None, description="Replace MLflow's FROM (default python:<the model's Python>-slim)."
    )
    build_timeout: int = Field(1800, gt=0, le=7200, description="Seconds the image build may take.")


class LoadTest(Section):
    """The bounded load test of `serve-check`: at most ``requests`` and at most ``max_seconds``."""

    requests: int = Field(100, ge=1, le=100_000, description="Requests to send (N).")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once (C).")
    max_seconds: float = Field(30.0, gt=0, le=900, description="Stop sending after this many seconds.")


class Budgets(Section):
    """Latency (milliseconds), throughput and error budgets for the load test; null = not checked."""

    p50_ms: float | None = Field(None, gt=0)
    p95_ms: float | None = Field(500.0, gt=0)
    p99_ms: float | None = Field(1000.0, gt=0)
    min_throughput_rps: float | None = Field(None, gt=0, description="Successful requests per second.")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Share of failed requests (0-1).")


class ServeCheckSettings(Section):
    """`mlflow-ci serve-check` and the post-deploy check of `mlflow-ci deploy`."""

    startup_timeout: float = Field(180.0, gt=0, le=3600, description="Seconds until /ping must answer.")
    request_timeout: float = Field(30.0, gt=0, le=600, description="Seconds per request.")
    batch_rows: int = Field(64, ge=1, le=100_000, description="Rows of the batch compared with in-process.")
    batch_data: str | None = Field(
        None,
        description="CSV or Parquet file for the batch (relative to the policy file); default: rows "
        "drawn within the input example's value ranges.",
    )
    seed: int = Field(0, description="Seed for the synthesized batch.")
    rtol: float = Field(0.0, ge=0, description="Relative tolerance for numbers (0: identical answers).")
    atol: float = Field(0.0, ge=0, description="Absolute tolerance for numbers.")
    reference_env_manager: EnvManager = Field(
        "local", description="Where the reference predictions run: local (this process) or the model's env."
    )
    load: LoadTest = Field(default_factory=LoadTest)
    budgets: Budgets = Field(default_factory=Budgets)


class LocalTarget(Section):
    """Deploy target ``local``: a `mlflow models serve` process on this machine."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port (default: a free one).")
    env_manager: EnvManager = Field("local", description="Environment the model is served from.")
    workers: int = Field(1, ge=1, le=64)


class DockerTarget(Section):
    """Deploy target ``docker``: a container of the serving image through the Docker API."""

    host: str = Field("127.0.0.1", description="Host interface the container port is published on.")
    port: int | None = Field(None, ge=1, le=65535, description="Host port (default: a free one).")
    workers: int | None = Field(
        None, ge=1, le=64, description="MLFLOW_MODELS_WORKERS in the container (default: its CPU count)."
    )


class Deploy(Section):
    """Serving images, the serve check and deployment with automatic rollback."""

    target: str = Field("local", description="Default deploy target (local, docker).")
    image: ImageSettings = Field(default_factory=ImageSettings)
    check: ServeCheckSettings = Field(default_factory=ServeCheckSettings)
    local: LocalTarget = Field(default_factory=LocalTarget)
    docker: DockerTarget = Field(default_factory=DockerTarget)
    rollback_on_failure: bool = Field(
        True,
        description="A failed post-deploy check rolls the alias back and redeploys the previous version.",
    )
    state_dir: str = Field(".mlflow-ci/deploy", description="Where kept deployments are recorded.")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in TARGET_NAMES:
            raise ValueError(f"one of {', '.join(TARGET_NAMES)}")
        return value
