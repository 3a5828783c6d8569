"""Sections read by the release path: ``gates`` and ``registry`` (promotion rules, aliases)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlflow_ci.config.base import NAME_RE, Section

Direction = Literal["higher", "lower"]


class MetricGate(Section):
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


class Baseline(Section):
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


class ModelChecks(Section):
    """Quality checks on the candidate's model beyond metrics."""

    require_signature: bool = Field(True, description="The logged model must have a signature.")
    require_input_example: bool = Field(True, description="The input example must exist and predict.")
    max_size_mb: float | None = Field(None, gt=0, description="Budget for the model's files (MB).")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Budget for a single-row predict (median over latency_calls)."
    )
    latency_calls: int = Field(11, ge=3, le=1000, description="Calls whose median is the latency.")
    advisory: bool = Field(False, description="true: model checks warn instead of failing.")


class Evaluation(Section):
    """The held-out evaluation set, used by gates with ``confidence``."""

    data: str | None = Field(
        None, description="CSV or Parquet file (relative to the policy file); --eval-data overrides."
    )
    target: str = Field("target", description="Column holding the true label / value.")
    n_resamples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    method: Literal["percentile", "basic", "BCa"] = Field("percentile", description="scipy bootstrap method.")
    seed: int = Field(0, description="Seed of the bootstrap, so verdicts are reproducible.")


class Gates(Section):
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


class Aliases(Section):
    """Alias names of the promotion state machine candidate -> challenger -> champion."""

    candidate: str = Field("candidate", pattern=NAME_RE)
    challenger: str = Field("challenger", pattern=NAME_RE)
    champion: str = Field("champion", pattern=NAME_RE)

    @model_validator(mode="after")
    def _distinct(self) -> Aliases:
        names = [self.candidate, self.challenger, self.champion]
        if len(set(names)) != 3:
            raise ValueError(f"the three alias names must differ, got {names}")
        return self

    def order(self) -> list[str]:
        return [self.candidate, self.challenger, self.champion]


class PromotionRule(Section):
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


class Promotion(Section):
    challenger: PromotionRule = Field(default_factory=PromotionRule)
    champion: PromotionRule = Field(default_factory=_champion_rule)


class Registry(Section):
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
