"""Reference profiles: kinds, bins fixed by the reference pass, mergeable counts, JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from driftdata import frame
from mlflow_ci.config import Monitoring
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.monitoring import profile as prof
from mlflow_ci.monitoring.profile import Profile, build_profile, profile_batches


def _same(a: Profile, b: Profile) -> None:
    assert a.rows == b.rows
    assert set(a.features) == set(b.features)
    for name, fa in a.features.items():
        fb = b.features[name]
        assert (fa.counts == fb.counts).all(), name
        assert (fa.rows, fa.missing, fa.other, fa.unseen) == (fb.rows, fb.missing, fb.other, fb.unseen), name
        if fa.kind == "numeric":
            assert np.allclose(fa.sums, fb.sums, rtol=1e-9, atol=1e-9), name
            assert (fa.min, fa.max) == (fb.min, fb.max), name
            assert fa.mean == pytest.approx(fb.mean, rel=1e-9, abs=1e-12), name
            assert fa.m2 == pytest.approx(fb.m2, rel=1e-9), name
            assert fa.quantiles() == pytest.approx(fb.quantiles(), rel=1e-9), name


def test_kinds_and_contents() -> None:
    df = frame(5000, missing=0.1)
    p = build_profile(df.drop(columns="prediction"), predictions=df["prediction"])
    kinds = {n: f.kind for n, f in p.features.items()}
    assert kinds == {
        "x": "numeric",
        "y": "numeric",
        "count": "numeric",  # an integer with more than 20 values
        "city": "categorical",
        "flag": "categorical",
        "prediction": "categorical",  # class labels: an integer with few values
    }
    assert p.prediction == "prediction"
    x = p.features["x"]
    assert x.count == 5000
    assert x.missing == 0
    assert len(x.spec.edges) == 99
    # Quantile bins: each holds about 1 % of the reference.
    assert x.counts.max() / x.count < 0.012
    assert x.mean == pytest.approx(df["x"].mean())
    assert x.std == pytest.approx(df["x"].std())
    q = x.quantiles()
    exact = np.quantile(df["x"], [0.05, 0.5, 0.95])
    assert [q["0.05"], q["0.5"], q["0.95"]] == pytest.approx(exact, abs=0.05)
    y = p.features["y"]
    assert y.missing == int(df["y"].isna().sum())
    assert y.count + y.missing == 5000
    assert p.features["city"].spec.categories[0] == "a"
    assert set(p.features["flag"].spec.categories) == {"true", "false"}
    assert p.features["prediction"].spec.categories == tuple(
        str(v) for v in df["prediction"].value_counts().index
    )


def test_top_categories_other_and_unseen() -> None:
    values = [f"k{i:03d}" for i in range(80) for _ in range(80 - i)]
    ref = build_profile({"c": pd.Series(values)}, max_categories=10)
    spec = ref.features["c"].spec
    assert len(spec.categories) == 10
    assert spec.categories[0] == "k000"
    assert len(spec.known_other) == 70
    assert spec.known_complete
    assert ref.features["c"].other == sum(80 - i for i in range(10, 80))
    cur = profile_batches([{"c": pd.Series(["k000", "k050", "new", "new", "newer"])}], ref.specs)
    c = cur.features["c"]
    assert list(c.cells()) == [1] + [0] * 9 + [4]
    assert c.unseen == 3
    assert dict(c.unseen_examples) == {"new": 2, "newer": 1}


def test_labels_are_one_spelling() -> None:
    assert [prof.label(v) for v in (1, 1.0, np.int64(1), np.float32(1.0), True, "1", 2.5)] == [
        "1",
        "1",
        "1",
        "1",
        "true",
        "1",
        "2.5",
    ]
    # The same integer category read from pandas and from Arrow (as floats, as CSV gives them).
    ref = build_profile({"k": pd.Series([0, 1, 2, 1] * 50)})
    cur = profile_batches([pa.table({"k": pa.array([0.0, 1.0, 2.0, None])})], ref.specs)
    assert cur.features["k"].unseen == 0
    assert cur.features["k"].missing == 1


@pytest.mark.parametrize("chunk", [7, 37, 1000])
def test_merged_batches_equal_one_pass(chunk: int) -> None:
    ref_df = frame(3000, seed=1, missing=0.05)
    ref = build_profile(ref_df)
    cur_df = frame(2500, seed=2, shift=0.3, missing=0.2)
    whole = profile_batches([cur_df], ref.specs)
    parts = [profile_batches([cur_df.iloc[i : i + chunk]], ref.specs) for i in range(0, len(cur_df), chunk)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + part
    _same(whole, merged)
    # The same through pyarrow record batches.
    table = pa.Table.from_pandas(cur_df, preserve_index=False)
    _same(whole, profile_batches(table.to_batches(max_chunksize=chunk), ref.specs))


def test_profiles_with_other_bins_do_not_merge() -> None:
    a = build_profile({"x": np.arange(100.0)})
    b = build_profile({"x": np.arange(100.0) * 2})
    with pytest.raises(ValueError, match="different bins"):
        a.merge(b)


def test_json_round_trip_is_small_and_exact() -> None:
    p = build_profile(frame(20_000, missing=0.1))
    text = p.to_json()
    assert len(text) < 20_000
    back = Profile.from_dict(json.loads(text))
    _same(p, back)
    with pytest.raises(ValueError, match="not an mlflow-ci profile"):
        Profile.from_dict({"format": "something else"})


def test_streamed_reference_fixes_bins_from_a_bounded_sample() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=300_000)
    sampler = prof.SpecSampler(sample=20_000)
    for i in range(0, x.size, 50_000):
        sampler.update({"x": x[i : i + 50_000]})
    assert sampler.values["x"].size == 20_000
    edges = np.asarray(sampler.specs()["x"].edges)
    # Edges from the sample sit near the true quantiles of all rows.
    true = np.quantile(x, np.linspace(0, 1, 101)[1:-1])
    assert np.abs(edges - true).max() < 0.1


def test_policy_defaults_match_the_profile_helper() -> None:
    cfg = Monitoring()
    assert (cfg.bins, cfg.max_categories, cfg.profile) == (
        prof.DEFAULT_BINS,
        prof.DEFAULT_MAX_CATEGORIES,
        prof.DEFAULT_NAME,
    )


def test_log_profile_needs_an_active_run() -> None:
    with pytest.raises(ConfigError, match="active MLflow run"):
        prof.log_profile(frame(10))


@pytest.mark.parametrize("data", ["normal", "lognormal", "integers", "huge", "cauchy"])
def test_binner_equals_searchsorted(data: str) -> None:
    rng = np.random.default_rng(11)
    draw = {
        "normal": lambda n: rng.normal(size=n),
        "lognormal": lambda n: rng.lognormal(size=n),
        "integers": lambda n: rng.integers(0, 50, n).astype(float),
        "huge": lambda n: rng.exponential(size=n) * 1e12,
        "cauchy": rng.standard_cauchy,
    }[data]
    edges = np.asarray(prof.numeric_spec(draw(20_000)).edges)
    # Values on, just beside and between the edges, and far outside them.
    values = np.concatenate(
        [draw(50_000), edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), [-1e300, 1e300]]
    )
    assert (prof.Binner(edges)(values) == np.searchsorted(edges, values, side="right")).all()
