"""The classifier and its held-out metrics."""

from __future__ import annotations

import math

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

# objective -> what it trains; the run name carries the objective, so it must match the naming
# convention's {objective} pattern ([a-z][a-z0-9-]*).
OBJECTIVES = ("classify",)


def build_model(n_estimators: int, max_depth: int | None, seed: int) -> RandomForestClassifier:
    """A random forest; ``n_jobs=1`` and a fixed ``random_state`` make it reproducible from the seed."""
    return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1)


def evaluate(model: RandomForestClassifier, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Held-out metrics. All must be finite: a NaN would slip through a threshold gate unnoticed."""
    proba = model.predict_proba(x)
    preds = model.classes_[proba.argmax(axis=1)]
    metrics = {
        "accuracy": float(accuracy_score(y, preds)),
        "f1_macro": float(f1_score(y, preds, average="macro")),
        "roc_auc_ovr": float(roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_)),
        "log_loss": float(log_loss(y, proba, labels=model.classes_)),
    }
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"non-finite metrics {bad}; is every class present in the held-out split?")
    return metrics
