"""Drift of a current profile against the reference profile: per-feature tests, the correction
for many features, the data-set rule, prediction drift, missing values and unseen categories.

Per feature (numeric or categorical, by the reference profile), with ``n`` the smaller of the two
samples' value counts:

* ``n < monitoring.min_rows``: **insufficient data** (never a pass);
* ``n < monitoring.large_sample``: the verdict is the test, Kolmogorov-Smirnov (numeric) or
  chi-squared (categorical), its p-value adjusted for the number of features
  (Benjamini-Hochberg by default): drift when the adjusted p-value is below
  ``false_alarm_rate``;
* ``n >= large_sample``: with this much data any difference is significant, so the verdict is the
  effect size: drift when the Wasserstein distance in reference standard deviations (numeric) or the
  Jensen-Shannon distance (categorical) reaches its threshold and the adjusted test is significant.

Every statistic is computed from the two profiles' counts (:mod:`mlflow_ci.monitoring.stats`), so
the comparison costs the same for a thousand rows as for a billion. This module is pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mlflow_ci.config import Monitoring
from mlflow_ci.monitoring import stats
from mlflow_ci.monitoring.profile import FeatureProfile, Profile

Verdict = Literal["drift", "no drift", "insufficient data", "missing column"]
DRIFT: Verdict = "drift"
NO_DRIFT: Verdict = "no drift"
INSUFFICIENT: Verdict = "insufficient data"
ABSENT: Verdict = "missing column"


def _num(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


@dataclass
class FeatureResult:
    """One feature's verdict with everything that led to it."""

    name: str
    role: Literal["feature", "prediction"]
    kind: str
    verdict: Verdict
    test: str = ""
    statistic: float | None = None
    threshold: float | None = None
    rule: str = ""
    regime: Literal["small", "large", ""] = ""
    p_value: float | None = None
    p_adjusted: float | None = None
    effects: dict[str, float | None] = field(default_factory=dict)
    rows_reference: int = 0
    rows_current: int = 0
    weight: float = 1.0
    missing_reference: float = 0.0
    missing_current: float = 0.0
    missing_p: float | None = None
    missing_p_adjusted: float | None = None
    missing_increase: bool = False
    unseen_share: float | None = None
    unseen_reference_share: float | None = None
    unseen_examples: dict[str, int] = field(default_factory=dict)
    unseen_excess: bool = False
    note: str = ""

    @property
    def drifted(self) -> bool:
        return self.verdict == DRIFT

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("statistic", "threshold", "p_value", "p_adjusted", "missing_p", "missing_p_adjusted"):
            out[key] = _num(out[key])
        out["effects"] = {k: _num(v) for k, v in self.effects.items()}
        return out


@dataclass
class DriftResult:
    features: list[FeatureResult]
    prediction: FeatureResult | None
    drift_share: float
    share_threshold: float
    dataset_verdict: Verdict
    rows_reference: int
    rows_current: int
    settings: dict[str, Any]
    extra_columns: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def insufficient(self) -> list[str]:
        return [f.name for f in self.all if f.verdict == INSUFFICIENT]

    @property
    def absent(self) -> list[str]:
        """Features missing from the current data (a missing prediction column is only a note)."""
        return [f.name for f in self.features if f.verdict == ABSENT]

    @property
    def all(self) -> list[FeatureResult]:
        return self.features + ([self.prediction] if self.prediction else [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": {
                "verdict": self.dataset_verdict,
                "drift_share": self.drift_share,
                "threshold": self.share_threshold,
                "drifted": self.drifted,
                "insufficient": self.insufficient,
                "missing_columns": self.absent,
                "rows_reference": self.rows_reference,
                "rows_current": self.rows_current,
            },
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "missing_values": [f.name for f in self.all if f.missing_increase],
            "unseen_categories": [f.name for f in self.all if f.unseen_excess],
            "extra_columns": self.extra_columns,
            "settings": self.settings,
        }


def selected_features(reference: Profile, cfg: Monitoring) -> tuple[list[str], str | None]:
    """(features to check, prediction column) of the reference profile under the policy."""
    prediction = cfg.prediction.column if cfg.prediction.column in reference.features else None
    if prediction is None and reference.prediction in reference.features:
        prediction = reference.prediction
    names = list(reference.features) if cfg.features is None else list(cfg.features)
    excluded = set(cfg.exclude) | ({prediction} if prediction else set())
    return [n for n in names if n not in excluded], prediction


def _effects(ref: FeatureProfile, cur: FeatureProfile) -> tuple[dict[str, float | None], str]:
    note = ""
    a, b = ref.cells(), cur.cells()
    effects: dict[str, float | None] = {"psi": stats.psi_counts(a, b)}
    if ref.kind == "numeric":
        u, uw = ref.bin_points()
        v, vw = cur.bin_points()
        scale = ref.std
        if not scale > 0:
            scale = 1.0
            note = "constant in the reference: Wasserstein distance in the feature's own units"
        effects["wasserstein"] = stats.wasserstein_points(u, v, uw, vw) / scale
    else:
        effects["jensenshannon"] = stats.jensenshannon_counts(a, b)
    return effects, note


def _test(ref: FeatureProfile, cur: FeatureProfile) -> tuple[str, float, float]:
    if ref.kind == "numeric":
        d, p = stats.ks_2samp_counts(ref.cells(), cur.cells())
        return "ks", d, p
    chi, _, p = stats.chi2_homogeneity(ref.cells(), cur.cells())
    return "chi2", chi, p


def _first_pass(
    name: str,
    role: Literal["feature", "prediction"],
    ref: FeatureProfile,
    cur: FeatureProfile | None,
    cfg: Monitoring,
    weight: float,
) -> FeatureResult:
    res = FeatureResult(name=name, role=role, kind=ref.kind, verdict=NO_DRIFT, weight=weight)
    res.rows_reference = ref.count
    res.missing_reference = ref.missing_share
    if cur is None:
        res.verdict = ABSENT
        res.note = "the current data has no such column"
        return res
    res.rows_current = cur.count
    res.missing_current = cur.missing_share
    res.missing_p = stats.proportion_increase(ref.missing, ref.rows, cur.missing, cur.rows)
    if ref.kind == "categorical" and not ref.spec.known_complete:
        res.note = "the reference has too many categories to remember them all: unseen values not checked"
    elif ref.kind == "categorical":
        res.unseen_share = cur.unseen_share
        res.unseen_reference_share = ref.unseen_share
        res.unseen_examples = dict(cur.unseen_examples.most_common(10))
    n = min(res.rows_reference, res.rows_current)
    if n < cfg.min_rows:
        res.verdict = INSUFFICIENT
        res.note = f"{n} values on the smaller side, fewer than monitoring.min_rows ({cfg.min_rows})"
        return res
    res.effects, res.note = _effects(ref, cur)
    res.test, res.statistic, res.p_value = _test(ref, cur)
    res.effects[res.test] = res.statistic
    res.regime = "large" if n >= cfg.large_sample else "small"
    return res


def _decide(res: FeatureResult, cfg: Monitoring) -> None:
    if res.verdict in (INSUFFICIENT, ABSENT):
        return
    alpha = cfg.false_alarm_rate
    significant = res.p_adjusted is not None and res.p_adjusted < alpha
    if res.regime == "small":
        res.threshold = alpha
        res.rule = f"p_adjusted < {alpha:g}"
        res.verdict = DRIFT if significant else NO_DRIFT
        return
    effect = "wasserstein" if res.kind == "numeric" else "jensenshannon"
    threshold = getattr(cfg.thresholds, effect)
    value = res.effects.get(effect)
    res.test, res.statistic, res.threshold = effect, value, threshold
    res.rule = f"{effect} >= {threshold:g} and p_adjusted < {alpha:g}"
    res.verdict = DRIFT if (value is not None and value >= threshold and significant) else NO_DRIFT


def compare(
    reference: Profile,
    current: Profile,
    cfg: Monitoring,
    *,
    absent: Iterable[str] = (),
    extra_columns: Iterable[str] = (),
) -> DriftResult:
    """Every verdict of ``current`` against ``reference`` (both counted with the reference's spec)."""
    names, prediction = selected_features(reference, cfg)
    unknown = [n for n in names if n not in reference.features]
    absent = set(absent)
    weights = cfg.dataset.importance
    features: list[FeatureResult] = []
    for name in names:
        if name in unknown:
            continue
        cur = None if name in absent else current.features.get(name)
        features.append(
            _first_pass(
                name,
                "feature",
                reference.features[name],
                cur,
                cfg,
                weights.get(name, cfg.dataset.default_weight),
            )
        )
    pred = None
    if prediction is not None:
        cur = None if prediction in absent else current.features.get(prediction)
        pred = _first_pass(prediction, "prediction", reference.features[prediction], cur, cfg, 0.0)
        if pred.verdict == ABSENT:
            pred.note = f"the current data has no {prediction!r} column: prediction drift not checked"

    # One family: every p-value this check computes (each feature's and the prediction's drift
    # test, each missing-value test) is corrected together, so data drawn from the reference's
    # distribution fails the check with probability at most false_alarm_rate.
    checked = [*features, *([pred] if pred else [])]
    present = [r for r in checked if r.verdict != ABSENT]
    family = [(r, "p_value", "p_adjusted") for r in checked if r.p_value is not None]
    family += [(r, "missing_p", "missing_p_adjusted") for r in present if _num(r.missing_p) is not None]
    raw = np.array([getattr(r, attr) for r, attr, _ in family], dtype=np.float64)
    adjusted = stats.adjust(raw, cfg.correction) if family else raw
    for (r, _, out_attr), value in zip(family, adjusted, strict=True):
        setattr(r, out_attr, None if np.isnan(value) else float(value))
    for res in checked:
        _decide(res, cfg)
    for r in present:
        rise = r.missing_current - r.missing_reference
        r.missing_increase = bool(
            rise > 0
            and rise >= cfg.missing.max_increase
            and r.missing_p_adjusted is not None
            and r.missing_p_adjusted < cfg.false_alarm_rate
        )
        if r.kind == "categorical" and r.unseen_share is not None:
            excess = r.unseen_share - (r.unseen_reference_share or 0.0)
            r.unseen_excess = bool(excess > 0 and excess >= cfg.unseen.max_share)

    counted = [f for f in features if f.verdict in (DRIFT, NO_DRIFT)]
    total = sum(f.weight for f in counted)
    share = sum(f.weight for f in counted if f.drifted) / total if total > 0 else 0.0
    if counted and share > 0 and share >= cfg.dataset.drift_share:
        verdict: Verdict = DRIFT
    elif not counted or any(f.verdict in (INSUFFICIENT, ABSENT) for f in features):
        verdict = INSUFFICIENT
    else:
        verdict = NO_DRIFT
    if unknown:
        for name in unknown:
            features.append(
                FeatureResult(
                    name=name,
                    role="feature",
                    kind="?",
                    verdict=ABSENT,
                    note="monitoring.features names it, but the reference profile has no such feature",
                )
            )
        if verdict == NO_DRIFT:
            verdict = INSUFFICIENT
    return DriftResult(
        features=features,
        prediction=pred,
        drift_share=share,
        share_threshold=cfg.dataset.drift_share,
        dataset_verdict=verdict,
        rows_reference=reference.rows,
        rows_current=current.rows,
        settings={
            "false_alarm_rate": cfg.false_alarm_rate,
            "correction": cfg.correction,
            "min_rows": cfg.min_rows,
            "large_sample": cfg.large_sample,
            "thresholds": cfg.thresholds.model_dump(),
            "drift_share": cfg.dataset.drift_share,
        },
        extra_columns=sorted(extra_columns),
    )
