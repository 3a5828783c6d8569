"""The defaults keep their promises (docs/monitoring.md): data drawn from the reference's own
distribution alarms at or below the false-alarm rate, and shifts of the promised size are caught
at the promised sample sizes, for means, variances and category frequencies."""

from __future__ import annotations

import numpy as np
import pytest
from driftdata import frame
from mlflow_ci.config import Monitoring
from mlflow_ci.monitoring.drift import DRIFT, compare
from mlflow_ci.monitoring.profile import build_profile, profile_batches
from scipy.stats import binomtest

TRIALS = 200
CFG = Monitoring()


def _alarms(result) -> bool:
    """What makes `mlflow-ci drift` exit 1 under the default policy."""
    pred = result.prediction
    return (
        result.dataset_verdict == DRIFT
        or (pred is not None and pred.drifted)
        or any(r.missing_increase or r.unseen_excess for r in result.all)
    )


@pytest.mark.parametrize(("n_ref", "n_cur"), [(2000, 500), (25_000, 20_000)])
def test_same_distribution_alarms_at_most_at_the_false_alarm_rate(n_ref: int, n_cur: int) -> None:
    alarms = flagged = 0
    trials = TRIALS if n_cur < 10_000 else TRIALS // 2
    for seed in range(trials):
        ref = build_profile(frame(n_ref, seed=seed, missing=0.1))
        cur = profile_batches([frame(n_cur, seed=10_000 + seed, missing=0.1)], ref.specs)
        result = compare(ref, cur, CFG)
        alarms += _alarms(result)
        flagged += bool(result.drifted) or bool(result.prediction and result.prediction.drifted)
    # The command's alarm rate is at or below the configured rate ...
    assert alarms <= CFG.false_alarm_rate * trials
    # ... and so is the family-wise rate of any single flagged feature (the correction's promise):
    # the observed count must not be significantly above it.
    assert binomtest(flagged, trials, CFG.false_alarm_rate, alternative="greater").pvalue > 0.01


PROMISES = [
    # (what, feature, reference rows, current rows, frame arguments of the current data)
    ("mean +0.3 sd", "x", 5000, 1000, {"shift": 0.3}),
    ("sd x1.5", "x", 5000, 1000, {"scale": 1.5}),
    ("category 40 % -> 52 %", "city", 5000, 1000, {"share_a": 0.52}),
    ("mean +0.1 sd", "x", 20_000, 20_000, {"shift": 0.1}),
    ("sd x1.15", "x", 20_000, 20_000, {"scale": 1.15}),
    ("category 40 % -> 50 %", "city", 20_000, 20_000, {"share_a": 0.5}),
]


@pytest.mark.parametrize(
    ("what", "feature", "n_ref", "n_cur", "kwargs"), PROMISES, ids=[p[0] for p in PROMISES]
)
def test_promised_shifts_are_caught(what: str, feature: str, n_ref: int, n_cur: int, kwargs: dict) -> None:
    trials, caught, others = 30, 0, 0
    for seed in range(trials):
        ref = build_profile(frame(n_ref, seed=seed))
        cur = profile_batches([frame(n_cur, seed=50_000 + seed, **kwargs)], ref.specs)
        result = compare(ref, cur, CFG)
        caught += feature in result.drifted
        others += len(set(result.drifted) - {feature})
    assert caught >= 0.95 * trials, f"{what}: caught in {caught} of {trials}"
    assert others <= 0.05 * trials


def test_the_regime_follows_the_smaller_sample() -> None:
    ref = build_profile(frame(30_000))
    small = compare(ref, profile_batches([frame(2000, seed=1)], ref.specs), CFG)
    large = compare(ref, profile_batches([frame(25_000, seed=1)], ref.specs), CFG)
    tiny = compare(ref, profile_batches([frame(50, seed=1)], ref.specs), CFG)
    x = {r.name: r for r in small.features}["x"]
    assert (x.regime, x.test, x.threshold) == ("small", "ks", 0.05)
    x = {r.name: r for r in large.features}["x"]
    assert (x.regime, x.test, x.threshold) == ("large", "wasserstein", 0.05)
    assert {r.name: r.test for r in large.features}["city"] == "jensenshannon"
    assert tiny.dataset_verdict == "insufficient data"
    assert all(r.verdict == "insufficient data" for r in tiny.features)


def test_importance_weights_the_data_set_rule() -> None:
    ref = build_profile(frame(5000))
    cur = profile_batches([frame(2000, seed=3, shift=1.0)], ref.specs)
    plain = compare(ref, cur, CFG)
    assert plain.drifted == ["x"]
    assert plain.drift_share == pytest.approx(1 / 5)
    light = Monitoring(dataset={"importance": {"x": 0.1}, "drift_share": 0.2})
    assert compare(ref, cur, light).dataset_verdict == "no drift"
    heavy = Monitoring(dataset={"importance": {"x": 10.0}, "drift_share": 0.5})
    assert compare(ref, cur, heavy).dataset_verdict == "drift"


def test_missing_values_and_unseen_categories_are_checked_separately() -> None:
    ref = build_profile(frame(5000, missing=0.02))
    cur_df = frame(3000, seed=4, missing=0.2)
    cur_df.loc[:299, "city"] = "zz"
    result = compare(ref, profile_batches([cur_df], ref.specs), CFG)
    by = {r.name: r for r in result.all}
    assert by["y"].missing_increase
    assert not by["x"].missing_increase
    assert by["city"].unseen_excess
    assert by["city"].unseen_examples == {"zz": 300}
    assert not any(r.unseen_excess for r in result.all if r.name != "city")
    assert np.isclose(by["city"].unseen_share, 0.1)


def test_current_data_without_predictions_is_only_a_note() -> None:
    ref = build_profile(frame(3000))
    cur_df = frame(1000, seed=8).drop(columns="prediction")
    result = compare(ref, profile_batches([cur_df], ref.specs), CFG, absent={"prediction"})
    assert result.absent == []
    assert result.prediction is not None
    assert result.prediction.verdict == "missing column"
    assert result.dataset_verdict == "no drift"
