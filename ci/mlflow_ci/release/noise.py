"""Noise control: does an improvement hold with confidence?

Both models predict the same evaluation rows; a paired bootstrap (``scipy.stats.bootstrap`` with
``paired=True``) resamples rows and gives a confidence interval of the metric delta, signed so
that positive means better.  A gate then requires the interval's lower end to exceed zero (an
improvement) or ``-max_regression`` (no worse than tolerated), so it does not flap on noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p))


def _per_class(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.unique(np.concatenate([y, p]))
    tp = np.array([np.sum((p == c) & (y == c)) for c in labels], dtype=float)
    fp = np.array([np.sum((p == c) & (y != c)) for c in labels], dtype=float)
    fn = np.array([np.sum((p != c) & (y == c)) for c in labels], dtype=float)
    return tp, fp, fn


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _precision_macro(y: np.ndarray, p: np.ndarray) -> float:
    tp, fp, _ = _per_class(y, p)
    return float(np.mean(_safe_div(tp, tp + fp)))


def _recall_macro(y: np.ndarray, p: np.ndarray) -> float:
    tp, _, fn = _per_class(y, p)
    return float(np.mean(_safe_div(tp, tp + fn)))


def _f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    tp, fp, fn = _per_class(y, p)
    return float(np.mean(_safe_div(2 * tp, 2 * tp + fp + fn)))


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y.astype(float) - p.astype(float)) ** 2)))


def _mse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((y.astype(float) - p.astype(float)) ** 2))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y.astype(float) - p.astype(float))))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    y = y.astype(float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - p.astype(float)) ** 2)) / ss_tot if ss_tot > 0 else 0.0


METRICS: dict[str, MetricFn] = {
    "accuracy": _accuracy,
    "accuracy_score": _accuracy,
    "f1_macro": _f1_macro,
    "precision_macro": _precision_macro,
    "recall_macro": _recall_macro,
    "rmse": _rmse,
    "root_mean_squared_error": _rmse,
    "mse": _mse,
    "mean_squared_error": _mse,
    "mae": _mae,
    "mean_absolute_error": _mae,
    "r2": _r2,
    "r2_score": _r2,
}


@dataclass(frozen=True)
class Interval:
    metric: str
    delta: float  # observed improvement (positive = better)
    low: float
    high: float
    level: float
    rows: int


def paired_delta_interval(
    metric: str,
    y: np.ndarray,
    pred_candidate: np.ndarray,
    pred_baseline: np.ndarray,
    *,
    higher_is_better: bool,
    level: float,
    n_resamples: int = 1000,
    method: str = "percentile",
    seed: int = 0,
) -> Interval:
    """Bootstrap CI of the improvement ``sign * (metric(candidate) - metric(baseline))``."""
    from scipy.stats import bootstrap

    fn = METRICS[metric]
    sign = 1.0 if higher_is_better else -1.0
    y, pc, pb = (np.asarray(a).ravel() for a in (y, pred_candidate, pred_baseline))

    def stat(yy: np.ndarray, cc: np.ndarray, bb: np.ndarray) -> float:
        return sign * (fn(yy, cc) - fn(yy, bb))

    res = bootstrap(
        (y, pc, pb),
        stat,
        paired=True,
        vectorized=False,
        confidence_level=level,
        n_resamples=n_resamples,
        method=method,  # type: ignore[arg-type]
        random_state=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):  # degenerate: every resample gives the same delta
        low = high = stat(y, pc, pb)
    return Interval(metric, stat(y, pc, pb), low, high, level, len(y))
