"""The policy file ``mlflow-ci.yaml``: schema, loading with line numbers, and resolution.

One file per ML project configures everything.  It is parsed into frozen pydantic models
(unknown keys rejected, the nearest valid key suggested) and every error names the file, the
line, the key path, the bad value and what was expected.

Precedence, lowest first, implemented once in :func:`load_policy`:

1. defaults written in the models below;
2. the policy file;
3. environment variables ``MLFLOW_CI__<SECTION>__<KEY>`` (e.g. ``MLFLOW_CI__SMOKE__ENV_MANAGER=uv``),
   values parsed as YAML scalars;
4. CLI flags, passed in as dotted overrides (``{"smoke.env_manager": "local"}``).

:class:`LoadedPolicy` remembers where each value came from (``sources``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlflow_ci.core.errors import PolicyError

POLICY_FILENAME = "mlflow-ci.yaml"
ENV_PREFIX = "MLFLOW_CI__"

EnvManager = Literal["local", "virtualenv", "uv"]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_PLACEHOLDERS: dict[str, str] = {
    "date": r"\d{4}-?\d{2}-?\d{2}",
    "seed": r"\d+",
    "objective": r"[a-z][a-z0-9-]*",
    "model": r"[A-Za-z0-9-]+",
}


def _check_regexes(value: dict[str, str], what: str) -> dict[str, str]:
    """Every value must compile as a regular expression; the error names the key and the regex."""
    for key, pattern in value.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"{what} {key!r}: {pattern!r} is not a valid regular expression ({exc})"
            ) from None
    return value


class Naming(_Model):
    """Naming conventions. ``{placeholder}`` stands for a pattern; ``{project}`` is the project name."""

    experiment: str = Field("exp_{project}_{date}", description="Template for experiment names.")
    run: str = Field("run_{objective}_{seed}", description="Template for run names.")
    date_format: str = Field("%Y%m%d", description="strftime format used to render {date}.")
    placeholders: dict[str, str] = Field(
        default_factory=dict,
        description="Extra or overriding regular expressions for placeholders.",
    )

    @field_validator("placeholders")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_regexes(value, "placeholder")

    @model_validator(mode="after")
    def _templates_known(self) -> Naming:
        known = {"project", *DEFAULT_PLACEHOLDERS, *self.placeholders}
        for key in ("experiment", "run"):
            for name in re.findall(r"{(\w+)}", getattr(self, key)):
                if name not in known:
                    raise ValueError(
                        f"{key} template uses {{{name}}}, which is not a known placeholder; "
                        f"known: {', '.join(sorted(known))} (add it under naming.placeholders)"
                    )
        return self

    def pattern(self, which: Literal["experiment", "run"], project: str) -> str:
        """The anchored regular expression a name must match."""
        table = {**DEFAULT_PLACEHOLDERS, **self.placeholders, "project": re.escape(project)}
        template = getattr(self, which)
        out, pos = [], 0
        for m in re.finditer(r"{(\w+)}", template):
            out.append(re.escape(template[pos : m.start()]))
            out.append(f"(?:{table[m.group(1)]})")
            pos = m.end()
        out.append(re.escape(template[pos:]))
        return "^" + "".join(out) + "$"

    def render(self, which: Literal["experiment", "run"], project: str, **values: Any) -> str:
        values.setdefault("project", project)
        values.setdefault("date", dt.datetime.now(dt.timezone.utc).strftime(self.date_format))
        try:
            return getattr(self, which).format(**values)
        except KeyError as exc:
            raise PolicyError(
                f"Cannot render the {which} name {getattr(self, which)!r}: no value for {exc}."
            ) from None


class Tags(_Model):
    required: list[str] = Field(
        default_factory=lambda: ["dataset", "env", "purpose", "owner"],
        description="Tags every run must carry (non-empty).",
    )
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Regular expressions that a tag's value must match, e.g. {env: '^(dev|ci|prod)$'}.",
    )

    @field_validator("patterns")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_regexes(value, "tag")


class Smoke(_Model):
    entry_point: str = Field("main", description="MLproject entry point to run.")
    parameters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Parameters passed to the entry point in smoke mode."
    )
    env_manager: EnvManager = Field(
        "virtualenv", description="How `mlflow run` builds the environment: virtualenv, uv or local."
    )
    predict_env_manager: EnvManager | None = Field(
        None, description="Environment for the load-and-predict check; defaults to env_manager."
    )
    timeout: int = Field(900, gt=0, description="Seconds the entry point may take.")
    experiment: str | None = Field(
        None, description="Experiment to log into; default rendered from naming.experiment."
    )
    required_params: list[str] = Field(default_factory=list)
    required_metrics: list[str] = Field(default_factory=list)
    required_artifacts: list[str] = Field(
        default_factory=list, description="Run artifact paths that must exist (files or folders)."
    )
    model_artifact_path: str = Field(
        "model", description="Name the model is logged under (mlflow.<flavor>.log_model(name=...))."
    )
    require_dataset: bool = Field(True, description="A dataset must be recorded with mlflow.log_input.")
    require_signature: bool = True
    require_input_example: bool = True


# ============================================================================================
# gates / registry (issue 3: quality gates, promotion, rollback, audit) -- owned by `gates` branch

Direction = Literal["higher", "lower"]


class MetricGate(_Model):
    """One metric gate. ``threshold`` is an absolute bound (>= for ``higher``, <= for ``lower``);
    the change keys compare with the baseline; ``required: false`` makes the gate advisory."""

    name: str = Field(..., min_length=1, description="Metric name as logged on the run.")
    direction: Direction = Field("higher", description="Which way is better: higher or lower.")
    threshold: float | None = Field(None, description="Absolute bound the candidate must meet.")
    min_absolute_change: float | None = Field(
        None, gt=0, description="The candidate must beat the baseline by at least this much."
    )
    min_relative_change: float | None = Field(
        None, gt=0, le=1, description="... or by this fraction of the baseline's magnitude (0-1)."
    )
    max_regression: float | None = Field(
        None, ge=0, description="Tolerated regression against the baseline (absolute, >= 0)."
    )
    required: bool = Field(True, description="false: the gate is advisory (warns, never blocks).")
    confidence: float | None = Field(
        None,
        gt=0.5,
        lt=1,
        description="Require the bootstrap confidence interval of the paired delta on the evaluation "
        "set to exclude zero (or -max_regression) at this level, e.g. 0.95.",
    )
    eval_metric: str | None = Field(
        None, description="Metric function for the bootstrap (default: name), e.g. accuracy, f1_macro, rmse."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MetricGate:
        changes = self.min_absolute_change is not None or self.min_relative_change is not None
        if changes and self.max_regression is not None:
            raise ValueError(
                f"metric {self.name!r}: give either min_absolute_change/min_relative_change "
                "(must improve) or max_regression (may regress this much), not both"
            )
        if self.threshold is None and not changes and self.max_regression is None:
            raise ValueError(
                f"metric {self.name!r}: set at least one of threshold, min_absolute_change, "
                "min_relative_change or max_regression"
            )
        if self.confidence is not None and not changes and self.max_regression is None:
            raise ValueError(
                f"metric {self.name!r}: confidence needs a baseline comparison "
                "(min_absolute_change, min_relative_change or max_regression)"
            )
        return self


class Baseline(_Model):
    """What the candidate is compared with."""

    source: Literal["alias", "run", "main_branch"] = Field(
        "alias", description="alias: a registry alias; run: a pinned run; main_branch: the newest main run."
    )
    alias: str | None = Field(
        None, description="Alias for source=alias (default: registry.aliases.champion)."
    )
    run_id: str | None = Field(None, description="Pinned run for source=run.")
    branch: str = Field("main", description="Branch for source=main_branch.")
    branch_tag: str = Field("mlflow.source.git.branch", description="Run tag that holds the branch.")
    experiment: str | None = Field(
        None, description="Experiment searched for source=main_branch (default: the candidate's)."
    )

    @model_validator(mode="after")
    def _complete(self) -> Baseline:
        if self.source == "run" and not self.run_id:
            raise ValueError("baseline source 'run' needs run_id")
        return self


class ModelChecks(_Model):
    """Quality checks on the candidate's model beyond metrics."""

    require_signature: bool = Field(True, description="The logged model must have a signature.")
    require_input_example: bool = Field(True, description="The input example must exist and predict.")
    max_size_mb: float | None = Field(None, gt=0, description="Budget for the model's files (MB).")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Budget for a single-row predict (median over latency_calls)."
    )
    latency_calls: int = Field(11, ge=3, le=1000, description="Calls whose median is the latency.")
    advisory: bool = Field(False, description="true: model checks warn instead of failing.")


class Evaluation(_Model):
    """The held-out evaluation set, used by gates with ``confidence``."""

    data: str | None = Field(
        None, description="CSV or Parquet file (relative to the policy file); --eval-data overrides."
    )
    target: str = Field("target", description="Column holding the true label / value.")
    n_resamples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    method: Literal["percentile", "basic", "BCa"] = Field("percentile", description="scipy bootstrap method.")
    seed: int = Field(0, description="Seed of the bootstrap, so verdicts are reproducible.")


class Gates(_Model):
    """Quality gates between a candidate run and the baseline. Blocking by default."""

    blocking: bool = Field(True, description="false: a failed gate is reported but exits 0.")
    baseline: Baseline = Field(default_factory=Baseline)
    metrics: list[MetricGate] = Field(default_factory=list)
    model: ModelChecks = Field(default_factory=ModelChecks)
    evaluation: Evaluation = Field(default_factory=Evaluation)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[MetricGate]) -> list[MetricGate]:
        seen = [m.name for m in value]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise ValueError(f"metric gates must be unique; repeated: {', '.join(dup)}")
        return value


class Aliases(_Model):
    """Alias names of the promotion state machine candidate -> challenger -> champion."""

    candidate: str = Field("candidate", pattern=_NAME_RE)
    challenger: str = Field("challenger", pattern=_NAME_RE)
    champion: str = Field("champion", pattern=_NAME_RE)

    @model_validator(mode="after")
    def _distinct(self) -> Aliases:
        names = [self.candidate, self.challenger, self.champion]
        if len(set(names)) != 3:
            raise ValueError(f"the three alias names must differ, got {names}")
        return self

    def order(self) -> list[str]:
        return [self.candidate, self.challenger, self.champion]


class PromotionRule(_Model):
    """What a promotion to one alias requires."""

    require_gates: Literal["all", "none"] | list[str] = Field(
        "all", description="'all' (overall gate verdict pass), 'none', or gate ids such as metric:accuracy."
    )
    approval: bool = Field(False, description="An approver must be named (--approved-by).")
    fresh_baseline: bool = Field(
        True, description="Refuse when the gate compared against a version that no longer holds this alias."
    )
    # deploy branch (issue 4): a passed `mlflow-ci serve-check` recorded on the version.
    require_serve_check: bool = Field(
        False,
        description="The version must carry a passed `mlflow-ci serve-check` verdict "
        "(tag mlflow_ci.serve_check.verdict = pass).",
    )


def _champion_rule() -> PromotionRule:
    return PromotionRule(approval=True)


class Promotion(_Model):
    challenger: PromotionRule = Field(default_factory=PromotionRule)
    champion: PromotionRule = Field(default_factory=_champion_rule)


class Registry(_Model):
    """The registered model, its aliases, promotion rules, the lease and the audit log."""

    model_name: str | None = Field(None, description="Registered model name (default: the project name).")
    model_artifact_path: str = Field("model", description="Name the run's model was logged under.")
    aliases: Aliases = Field(default_factory=Aliases)
    promotion: Promotion = Field(default_factory=Promotion)
    audit_experiment: str = Field(
        "mlflow-ci-audit", min_length=1, description="Experiment holding the audit log."
    )
    lease_seconds: int = Field(
        300, ge=30, le=3600, description="Lifetime of the registry lease; a crashed holder blocks this long."
    )


class Train(_Model):
    """`mlflow-ci train`: run the project with its full parameters (not smoke)."""

    entry_point: str = Field("main", description="MLproject entry point.")
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    env_manager: EnvManager = Field("virtualenv")
    timeout: int = Field(3600, gt=0, description="Seconds the run may take.")
    experiment: str | None = Field(None, description="Experiment (default rendered from naming.experiment).")


# ============================================================================================


# ============================================================================================
# Server operations (issue 5): `server:`, `backup:` and `retention:` sections.
# Read by mlflow_ci.serverops.profile (resolution), backup, restore, retention, server_doctor,
# server_config.  Everything below this line up to the matching END marker belongs to them.


class Server(_Model):
    """How the tracking server is (or will be) deployed: the profile every server-ops command reads."""

    backend_store_uri: str = Field(
        "sqlite:///mlflow.db",
        description="Database: sqlite:///path.db, postgresql+psycopg2://user@host/db or mysql+pymysql://user@host/db.",
    )
    artifacts_destination: str = Field(
        "./mlartifacts",
        description="Artifact root: a local path, s3://bucket/prefix, wasbs://container@account.blob.core.windows.net/"
        "prefix or gs://bucket/prefix.",
    )
    serve_artifacts: bool = Field(
        True, description="Proxy artifact traffic through the server (--serve-artifacts)."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MLFLOW_S3_ENDPOINT_URL).")
    public_url: str | None = Field(
        None,
        description="URL users reach the server at (behind the proxy); --allowed-hosts is derived from it.",
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Extra Host header values to accept.")
    host: str = Field("127.0.0.1", description="Interface mlflow server binds to (the proxy talks to it).")
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Uvicorn/gunicorn workers.")
    app_name: Literal["basic-auth"] | None = Field(None, description="MLflow app plugin, e.g. basic-auth.")
    auth_db_uri: str | None = Field(
        None, description="The basic-auth users database (backed up with the rest when set)."
    )
    proxy_auth: Literal["nginx-basic", "mlflow", "none"] = Field(
        "nginx-basic",
        description="Who authenticates: nginx basic auth (htpasswd), MLflow's basic-auth app (nginx passes "
        "Authorization through), or nobody (a private network only).",
    )
    max_body_size_mb: int = Field(
        4096,
        ge=1,
        description="Largest request nginx accepts, in MiB; size it above your largest model artifact.",
    )
    proxy_timeout_s: int = Field(
        900, ge=1, description="nginx read/send timeout for long uploads and downloads."
    )
    health_timeout_s: float = Field(60, gt=0, description="Seconds to wait for /health after start.")


class Backup(_Model):
    destination: str | None = Field(
        None, description="Backup repository: a local folder or s3://bucket/prefix (or wasbs://...)."
    )
    keep: int = Field(
        7, ge=1, description="Complete backups to keep; older ones and their unshared objects go."
    )
    include_auth: bool = Field(True, description="Back up server.auth_db_uri too when it is set.")
    sample_runs: int = Field(
        25, ge=0, description="Runs recorded in the manifest and read back after a restore."
    )


class KeepBest(_Model):
    metric: str = Field(..., description="Metric (latest value) that ranks runs.")
    k: int = Field(..., ge=1, description="How many of the best runs to keep.")
    mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better.")


class RetentionRule(_Model):
    experiments: list[str] = Field(
        default_factory=lambda: ["*"], description="Experiment names (glob patterns) the rule applies to."
    )
    older_than_days: float | None = Field(
        None, gt=0, description="Only runs that started longer ago than this."
    )
    keep_last: int | None = Field(None, ge=0, description="Always keep the newest N runs per experiment.")
    keep_best: KeepBest | None = Field(
        None, description="Always keep the best K runs per experiment by a metric."
    )

    @model_validator(mode="after")
    def _bounded(self) -> RetentionRule:
        if self.older_than_days is None and self.keep_last is None:
            raise ValueError(
                "a retention rule needs older_than_days or keep_last (otherwise it would delete every run)"
            )
        return self


class Retention(_Model):
    rules: list[RetentionRule] = Field(
        default_factory=list, description="Rules; a run is deleted if any rule says so."
    )
    grace_days: float = Field(
        7,
        ge=0,
        description="Days between soft delete and `mlflow gc` (the deletion time is kept on the run).",
    )
    protect_tag: str = Field(
        "pinned", description="Runs with this tag set to a true value are never deleted."
    )


# ============================================================================================ END server ops
# deploy (issue 4: serving images, serve-check, deploy targets, rollback) -- owned by `deploy` branch

# The deploy targets serving.targets.TARGETS implements (a test keeps the two equal). A literal
# here, so that reading a policy never imports the serving package.
TARGET_NAMES: tuple[str, ...] = ("local", "docker")

_REPO_RE = r"^[a-z0-9{}][a-z0-9._/{}-]*$"


class ImageSettings(_Model):
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


class LoadTest(_Model):
    """The bounded load test of `serve-check`: at most ``requests`` and at most ``max_seconds``."""

    requests: int = Field(100, ge=1, le=100_000, description="Requests to send (N).")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once (C).")
    max_seconds: float = Field(30.0, gt=0, le=900, description="Stop sending after this many seconds.")


class Budgets(_Model):
    """Latency (milliseconds), throughput and error budgets for the load test; null = not checked."""

    p50_ms: float | None = Field(None, gt=0)
    p95_ms: float | None = Field(500.0, gt=0)
    p99_ms: float | None = Field(1000.0, gt=0)
    min_throughput_rps: float | None = Field(None, gt=0, description="Successful requests per second.")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Share of failed requests (0-1).")


class ServeCheckSettings(_Model):
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


class LocalTarget(_Model):
    """Deploy target ``local``: a `mlflow models serve` process on this machine."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port (default: a free one).")
    env_manager: EnvManager = Field("local", description="Environment the model is served from.")
    workers: int = Field(1, ge=1, le=64)


class DockerTarget(_Model):
    """Deploy target ``docker``: a container of the serving image through the Docker API."""

    host: str = Field("127.0.0.1", description="Host interface the container port is published on.")
    port: int | None = Field(None, ge=1, le=65535, description="Host port (default: a free one).")
    workers: int | None = Field(
        None, ge=1, le=64, description="MLFLOW_MODELS_WORKERS in the container (default: its CPU count)."
    )


class Deploy(_Model):
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


# ============================================================================================


class Policy(_Model):
    """Root of ``mlflow-ci.yaml``. Sections added by later capabilities are optional."""

    version: Literal[1] = Field(1, description="Policy format version.")
    project: str = Field(..., pattern=_NAME_RE, description="Project name, used in names and reports.")
    naming: Naming = Field(default_factory=Naming)
    tags: Tags = Field(default_factory=Tags)
    smoke: Smoke = Field(default_factory=Smoke)
    gates: Gates = Field(default_factory=Gates)
    registry: Registry = Field(default_factory=Registry)
    train: Train = Field(default_factory=Train)
    server: Server | None = Field(None, description="Tracking server profile (server ops).")
    backup: Backup | None = Field(None, description="Backups of the tracking server.")
    retention: Retention | None = Field(None, description="Run retention rules.")
    deploy: Deploy = Field(default_factory=Deploy)


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path | None
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, dotted: str) -> str:
        """Where a value came from: ``default``, ``<file>:<line>``, ``env VAR`` or ``flag``."""
        if dotted in self.sources:
            return self.sources[dotted]
        # A whole mapping given by an override supplies its children too; a section written in
        # the file does not supply the keys it leaves out (those keep their defaults).
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            origin = self.sources.get(".".join(parts[:i]))
            if origin and origin.startswith(("env ", "flag")):
                return origin
        return "default"


def find_policy(project_dir: Path | str) -> Path | None:
    candidate = Path(project_dir) / POLICY_FILENAME
    return candidate if candidate.is_file() else None


def _compose(text: str, path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML and record the 1-based line of every key path."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}" if mark else "?"
        raise PolicyError(
            f"{path}:{line}: not valid YAML: {exc.problem or exc}"
            + (f" ({exc.context})" if exc.context else "")
            + ". Fix the syntax (indentation, quotes, a missing colon) and try again."
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}.") from None
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*prefix, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                key = (*prefix, str(i))
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    if node is not None:
        walk(node, ())
    return data, lines


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The field names valid at ``loc`` (used to suggest the nearest key)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    exc: ValidationError, path: Path | str, lines: dict[tuple[str, ...], int], origins: dict[str, str]
) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        where = None
        origin = origins.get(dotted)
        if origin:
            where = origin
        else:
            for i in range(len(loc), -1, -1):
                if loc[:i] in lines:
                    where = f"{path}:{lines[loc[:i]]}"
                    break
        where = where or f"{path}"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(Policy, loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
            expected = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{where}: unknown key {dotted!r}; {expected}valid keys here: {', '.join(allowed) or '(none)'}."
            )
        elif kind == "missing":
            problems.append(f"{where}: required key {dotted!r} is missing.")
        else:
            value = err.get("input")
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "a mapping"
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(f"{where}: key {dotted!r} has value {shown}; expected: {msg}.")
    return "\n".join(problems)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


def env_overrides(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``MLFLOW_CI__SMOKE__ENV_MANAGER=uv`` → ``{"smoke.env_manager": ("uv", "env MLFLOW_CI__...")}``."""
    out: dict[str, tuple[Any, str]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or not raw:
            continue
        dotted = ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[dotted] = (value, f"env {name}")
    return out


def load_policy(
    path: Path | str | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    project_default: str | None = None,
) -> LoadedPolicy:
    """Load, override and validate a policy. ``path=None`` means defaults only (then
    ``project_default`` supplies the project name)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    shown_path: Path | str = "(defaults)"
    if path is not None:
        path = Path(path)
        shown_path = path
        if not path.is_file():
            raise PolicyError(
                f"{path}: policy file not found.",
                hint=f"Create {POLICY_FILENAME} in the project (see the README's policy reference).",
            )
        raw, lines = _compose(path.read_text(encoding="utf-8"), path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise PolicyError(
                f"{path}:1: the policy must be a mapping of keys (project:, smoke:, ...), not {type(raw).__name__}."
            )
        data = raw
    if "project" not in data and project_default:
        data["project"] = project_default
    origins: dict[str, str] = {}
    sources: dict[str, str] = {".".join(k): f"{shown_path}:{v}" for k, v in lines.items()}
    for dotted, (value, origin) in env_overrides(env).items():
        _set_dotted(data, dotted, value)
        origins[dotted] = origin
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, dotted, value)
        origins[dotted] = f"flag ({dotted})"
    sources.update(origins)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(
            f"{shown_path} is not a valid mlflow-ci policy:\n{_format_errors(exc, shown_path, lines, origins)}"
        ) from None
    return LoadedPolicy(policy=policy, path=path if isinstance(path, Path) else None, sources=sources)


def load_command_policy(
    policy_path: Path | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    project_default: str = "mlflow-ci",
) -> LoadedPolicy:
    """The policy for a registry command: ``--policy``, else ``./mlflow-ci.yaml``, else defaults."""
    if policy_path is None and Path(POLICY_FILENAME).is_file():
        policy_path = Path(POLICY_FILENAME)
    return load_policy(policy_path, overrides=overrides, project_default=project_default)


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://mlflow-ci.dev/schema/mlflow-ci.schema.json"
    schema["title"] = "mlflow-ci policy (mlflow-ci.yaml)"
    return schema
