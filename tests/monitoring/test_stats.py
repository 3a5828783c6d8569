"""Each statistic, computed from binned counts, agrees with scipy's reference implementation on
the same data: exactly when every distinct value has a bin of its own, within the documented
bound on quantile bins."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow_ci.monitoring import stats
from mlflow_ci.monitoring.profile import build_profile, profile_batches
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon


def _exact_bins(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Counts and sums of ``a`` and ``b`` over bins that each hold one distinct value."""
    edges = np.unique(np.concatenate([a, b]))
    out = []
    for x in (a, b):
        idx = np.searchsorted(edges, x, side="right")
        out.append(np.bincount(idx, minlength=edges.size + 1))
        out.append(np.bincount(idx, weights=x, minlength=edges.size + 1))
    return tuple(out)


@pytest.mark.parametrize("seed", range(5))
def test_ks_matches_scipy_on_distinct_value_bins(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=400).round(2)  # ties included
    b = rng.normal(0.2, 1.2, size=250).round(2)
    ca, _, cb, _ = _exact_bins(a, b)
    d, p = stats.ks_2samp_counts(ca, cb)
    ref = sps.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


def test_ks_on_quantile_bins_is_a_lower_bound_within_one_bin() -> None:
    rng = np.random.default_rng(7)
    ref_df = {"x": rng.normal(size=20_000)}
    cur = rng.normal(0.1, 1.0, size=3000)
    ref = build_profile(ref_df)
    cur_p = profile_batches([{"x": cur}], ref.specs)
    d, _ = stats.ks_2samp_counts(ref.features["x"].cells(), cur_p.features["x"].cells())
    exact = sps.ks_2samp(ref_df["x"], cur).statistic
    largest_bin = max(ref.features["x"].counts) / ref.features["x"].count
    assert d <= exact + 1e-12
    assert exact - d <= largest_bin + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_chi2_matches_chi2_contingency(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.multinomial(900, [0.4, 0.3, 0.2, 0.1])
    b = rng.multinomial(300, [0.35, 0.3, 0.2, 0.15])
    stat, dof, p = stats.chi2_homogeneity(a, b)
    ref = sps.chi2_contingency(np.vstack([a, b]), correction=False)
    assert stat == pytest.approx(ref.statistic, rel=1e-12)
    assert dof == ref.dof
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_chi2_pools_cells_with_small_expected_counts() -> None:
    a = np.array([500, 300, 150, 2, 1])
    b = np.array([100, 60, 30, 0, 1])
    stat, dof, p = stats.chi2_homogeneity(a, b)
    # The two rare cells are pooled; their pool (expected 0.7 in the current row) is still below 5,
    # so it joins the smallest remaining column.
    pooled = np.array([[500, 300, 153], [100, 60, 31]])
    ref = sps.chi2_contingency(pooled, correction=False)
    assert (stat, dof) == (pytest.approx(ref.statistic), ref.dof)
    assert p == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, 600).astype(float)
    b = rng.integers(3, 45, 300).astype(float)
    ca, sa, cb, sb = _exact_bins(a, b)
    ma, mb = ca > 0, cb > 0
    w = stats.wasserstein_points(sa[ma] / ca[ma], sb[mb] / cb[mb], ca[ma], cb[mb])
    assert w == pytest.approx(sps.wasserstein_distance(a, b), rel=1e-12)
    x, y = rng.normal(size=700), rng.lognormal(size=500)
    assert stats.wasserstein_points(x, y) == pytest.approx(sps.wasserstein_distance(x, y), rel=1e-12)


def test_wasserstein_on_quantile_bins_is_close_to_scipy() -> None:
    rng = np.random.default_rng(3)
    ref_x, cur_x = rng.normal(size=50_000), rng.normal(0.08, 1.1, size=50_000)
    ref = build_profile({"x": ref_x})
    cur = profile_batches([{"x": cur_x}], ref.specs)
    u, uw = ref.features["x"].bin_points()
    v, vw = cur.features["x"].bin_points()
    exact = sps.wasserstein_distance(ref_x, cur_x)
    assert stats.wasserstein_points(u, v, uw, vw) == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("seed", range(5))
def test_jensenshannon_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.multinomial(1000, [0.5, 0.2, 0.2, 0.1, 0.0])
    b = rng.multinomial(400, [0.3, 0.3, 0.2, 0.1, 0.1])
    ref = jensenshannon(a / a.sum(), b / b.sum(), base=2)
    assert stats.jensenshannon_counts(a, b) == pytest.approx(ref, rel=1e-12)


def test_benjamini_hochberg_and_holm() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(30) ** 3
    assert np.allclose(stats.adjust(p, "benjamini-hochberg"), sps.false_discovery_control(p, method="bh"))
    order = np.argsort(p)
    holm = np.minimum(np.maximum.accumulate(p[order] * (30 - np.arange(30))), 1)
    expected = np.empty(30)
    expected[order] = holm
    assert np.allclose(stats.adjust(p, "holm"), expected)
    with_nan = stats.adjust(np.array([0.01, np.nan, 0.02]), "benjamini-hochberg")
    assert np.isnan(with_nan[1])
    assert np.allclose(with_nan[[0, 2]], [0.02, 0.02])


def test_psi_and_missing_share_test() -> None:
    assert stats.psi_counts([50, 50], [50, 50]) == 0
    assert stats.psi_counts([90, 10], [50, 50]) > 0.25
    assert stats.proportion_increase(10, 1000, 100, 1000) < 1e-10
    assert stats.proportion_increase(100, 1000, 10, 1000) > 0.99
    assert np.isnan(stats.proportion_increase(0, 1000, 0, 500))
