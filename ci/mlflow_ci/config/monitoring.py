"""The ``monitoring:`` section: how ``mlflow-ci drift`` compares new data with the reference.

The defaults and how they were calibrated (reference-against-reference splits) are in
docs/monitoring.md; ``bench/bench_drift.py`` reproduces the calibration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlflow_ci.config.base import NAME_RE, Section

Correction = Literal["benjamini-hochberg", "holm", "none"]


class EffectThresholds(Section):
    """Large samples: a feature drifts when its effect size reaches its threshold (and its test,
    corrected for many features, is significant)."""

    wasserstein: float = Field(
        0.05,
        gt=0,
        description="Numeric features: Wasserstein distance in reference standard deviations "
        "(0.05: the distribution moved by 5 % of a standard deviation on average).",
    )
    jensenshannon: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Categorical features: Jensen-Shannon distance, base 2, in [0, 1].",
    )


class DatasetRule(Section):
    """When the data set as a whole counts as drifted."""

    drift_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Drift when the (weighted) share of drifted features reaches this (0-1].",
    )
    importance: dict[str, float] = Field(
        default_factory=dict,
        description="Feature weights for the share (e.g. the model's feature importances); unlisted "
        "features weigh default_weight.",
    )
    default_weight: float = Field(1.0, ge=0, description="Weight of a feature not listed in importance.")

    @field_validator("importance")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if v < 0)
        if bad:
            raise ValueError(f"importance weights must be >= 0; negative: {', '.join(bad)}")
        return value


class PredictionDrift(Section):
    """The model's output, tested like a feature and reported on its own."""

    column: str = Field("prediction", min_length=1, description="Column holding the model's predictions.")
    blocking: bool = Field(True, description="false: prediction drift warns instead of failing.")


class MissingValues(Section):
    """A feature's share of missing values (null, NaN, infinite) rising, checked apart from drift."""

    max_increase: float = Field(
        0.05, ge=0, le=1, description="Tolerated rise of the missing share over the reference's (absolute)."
    )
    blocking: bool = Field(True, description="false: a rise warns instead of failing.")


class UnseenCategories(Section):
    """Categorical values never met in the reference, checked apart from drift."""

    max_share: float = Field(
        0.01, ge=0, le=1, description="Tolerated share of a feature's current values unseen in the reference."
    )
    blocking: bool = Field(True, description="false: unseen categories warn instead of failing.")


class Monitoring(Section):
    """``mlflow-ci drift``: per-feature tests by type and sample size, a correction for many
    features, a data-set rule, prediction drift, missing values and unseen categories."""

    profile: str = Field(
        "training", pattern=NAME_RE, description="Name of the reference profile logged with log_profile."
    )
    experiment: str = Field(
        "monitoring_{project}",
        min_length=1,
        description="Experiment that gets one run per check ({project}, {model} are filled in).",
    )
    false_alarm_rate: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Significance level of the tests after the correction for many features: the "
        "chance that data from the reference's distribution is called drifted.",
    )
    correction: Correction = Field(
        "benjamini-hochberg", description="Multiple-testing correction: benjamini-hochberg, holm or none."
    )
    min_rows: int = Field(
        100, ge=10, description="Fewer values than this in a feature (either side): insufficient data."
    )
    large_sample: int = Field(
        20_000,
        ge=100,
        description="From this many values on both sides, a feature's verdict is its effect size "
        "(thresholds); below, its Kolmogorov-Smirnov / chi-squared test.",
    )
    thresholds: EffectThresholds = Field(default_factory=EffectThresholds)
    dataset: DatasetRule = Field(default_factory=DatasetRule)
    prediction: PredictionDrift = Field(default_factory=PredictionDrift)
    missing: MissingValues = Field(default_factory=MissingValues)
    unseen: UnseenCategories = Field(default_factory=UnseenCategories)
    features: list[str] | None = Field(
        None, description="Check only these features (default: every feature of the reference profile)."
    )
    exclude: list[str] = Field(default_factory=list, description="Features never checked (ids, timestamps).")
    categorical: list[str] = Field(
        default_factory=list,
        description="Data-file references: treat these columns as categorical (integers with at most "
        "20 values, booleans and strings already are).",
    )
    bins: int = Field(
        100, ge=5, le=1000, description="Data-file references: quantile bins per numeric feature."
    )
    max_categories: int = Field(
        50, ge=2, le=1000, description="Data-file references: categories kept by name (the rest is 'other')."
    )
    batch_rows: int = Field(
        262_144,
        ge=1000,
        description="Rows read per chunk: memory does not grow with the data, only with this.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> Monitoring:
        if self.min_rows >= self.large_sample:
            raise ValueError(f"min_rows ({self.min_rows}) must be below large_sample ({self.large_sample})")
        return self
