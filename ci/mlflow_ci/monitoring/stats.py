"""The statistics of drift, computed from binned counts so that memory never grows with rows.

Every function takes the counts of a reference and of a current sample over the same bins (the
reference's quantile bins for a numeric feature, its categories for a categorical one) and
returns the statistic as scipy's reference implementation would on the raw values:

* :func:`ks_2samp_counts` — the two-sample Kolmogorov-Smirnov statistic and its asymptotic
  p-value (``scipy.stats.ks_2samp(method="asymp")``; above an effective size of 10,000, its
  limit, Kolmogorov's distribution). Over bins the supremum is taken at the bin
  edges, so the statistic is the exact one when every distinct value has a bin of its own and
  otherwise a lower bound that misses at most the mass of one bin (a conservative test).
* :func:`chi2_homogeneity` — Pearson's chi-squared test that both samples share one categorical
  distribution (``scipy.stats.chi2_contingency(correction=False)`` on the 2 x K table), with
  cells whose expected count is below 5 pooled first (Cochran's rule).
* :func:`wasserstein_points` — the first Wasserstein distance between two weighted point sets
  (``scipy.stats.wasserstein_distance`` with weights); a binned distribution is the point set of
  its bin means weighted by its counts, exact again when each value has its own bin.
* :func:`jensenshannon_counts` — the Jensen-Shannon distance in base 2, in [0, 1]
  (``scipy.spatial.distance.jensenshannon(base=2)``).
* :func:`psi_counts` — the population stability index (informational: it needs a floor for
  empty bins, so it is reported, never used for a verdict).
* :func:`adjust` — Benjamini-Hochberg or Holm adjusted p-values for many features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Correction = Literal["benjamini-hochberg", "holm", "none"]

MIN_EXPECTED = 5.0
# Above this effective sample size the KS p-value uses Kolmogorov's limiting distribution.
KS_LIMIT_N = 10_000
PSI_FLOOR = 1e-4


def _counts(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError("counts must be one-dimensional")
    if (arr < 0).any():
        raise ValueError("counts must not be negative")
    return arr


def ks_2samp_counts(
    ref: Sequence[float] | np.ndarray, cur: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """(D, p) of the two-sample KS test from counts over the same ordered bins."""
    from scipy.stats import kstwo, kstwobign

    a, b = _counts(ref), _counts(cur)
    n1, n2 = float(a.sum()), float(b.sum())
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    diffs = np.cumsum(a) / n1 - np.cumsum(b) / n2
    d = float(max(np.clip(-diffs.min(), 0, 1), diffs.max()))
    m, n = sorted([n1, n2], reverse=True)
    en = m * n / (m + n)
    if en > KS_LIMIT_N:
        # kstwo's exact sf costs ~10 ms per call at this size; its limit (Kolmogorov's
        # distribution of sqrt(n) D) differs from it by less than 1e-3 here.
        p = float(kstwobign.sf(d * math.sqrt(np.round(en))))
    else:
        p = float(kstwo.sf(d, np.round(en)))
    return d, float(np.clip(p, 0.0, 1.0))


def pool_small_cells(table: np.ndarray, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """Merge the columns of a 2 x K table whose expected count is below ``min_expected`` into one
    pooled column (and that column into the smallest other while it is still too small)."""
    table = table[:, table.sum(axis=0) > 0]
    total = table.sum()
    if table.shape[1] < 2 or total == 0:
        return table

    def expected_min(t: np.ndarray) -> np.ndarray:
        return (np.outer(t.sum(axis=1), t.sum(axis=0)) / total).min(axis=0)

    small = expected_min(table) < min_expected
    if small.sum() >= 1 and table.shape[1] > 2:
        pooled = table[:, small].sum(axis=1, keepdims=True)
        table = np.hstack([table[:, ~small], pooled]) if (~small).any() else pooled
    while table.shape[1] > 2 and expected_min(table)[-1] < min_expected:
        rest = table[:, :-1]
        smallest = int(np.argmin(rest.sum(axis=0)))
        merged = rest[:, smallest : smallest + 1] + table[:, -1:]
        table = np.hstack([np.delete(rest, smallest, axis=1), merged])
    return table


def chi2_homogeneity(
    ref: Sequence[float] | np.ndarray,
    cur: Sequence[float] | np.ndarray,
    *,
    min_expected: float = MIN_EXPECTED,
) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p) of Pearson's chi-squared test of homogeneity."""
    from scipy.stats import chi2

    a, b = _counts(ref), _counts(cur)
    if a.shape != b.shape:
        raise ValueError("both samples need counts over the same categories")
    if a.sum() == 0 or b.sum() == 0:
        return math.nan, 0, math.nan
    table = pool_small_cells(np.vstack([a, b]), min_expected)
    if table.shape[1] < 2:
        return 0.0, 0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return stat, dof, float(chi2.sf(stat, dof))


def wasserstein_points(
    u_values: Sequence[float] | np.ndarray,
    v_values: Sequence[float] | np.ndarray,
    u_weights: Sequence[float] | np.ndarray | None = None,
    v_weights: Sequence[float] | np.ndarray | None = None,
) -> float:
    """First Wasserstein distance between two weighted point sets: the area between their CDFs."""
    u = np.asarray(u_values, dtype=np.float64)
    v = np.asarray(v_values, dtype=np.float64)
    uw = np.ones_like(u) if u_weights is None else _counts(u_weights)
    vw = np.ones_like(v) if v_weights is None else _counts(v_weights)
    if uw.sum() == 0 or vw.sum() == 0:
        return math.nan
    u_order, v_order = np.argsort(u), np.argsort(v)
    u, uw, v, vw = u[u_order], uw[u_order], v[v_order], vw[v_order]
    support = np.sort(np.concatenate([u, v]))
    gaps = np.diff(support)
    u_cum = np.concatenate([[0.0], np.cumsum(uw)])
    v_cum = np.concatenate([[0.0], np.cumsum(vw)])
    u_cdf = u_cum[np.searchsorted(u, support[:-1], side="right")] / u_cum[-1]
    v_cdf = v_cum[np.searchsorted(v, support[:-1], side="right")] / v_cum[-1]
    return float(np.sum(np.abs(u_cdf - v_cdf) * gaps))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts


def jensenshannon_counts(ref: Sequence[float] | np.ndarray, cur: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the two count vectors' distributions."""
    a, b = _counts(ref), _counts(cur)
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    p, q = _shares(a), _shares(b)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(math.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def psi_counts(
    ref: Sequence[float] | np.ndarray, cur: Sequence[float] | np.ndarray, floor: float = PSI_FLOOR
) -> float:
    """Population stability index, with shares floored at ``floor`` (empty bins)."""
    a, b = _counts(ref), _counts(cur)
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    p, q = np.maximum(_shares(a), floor), np.maximum(_shares(b), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def adjust(pvalues: Sequence[float] | np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    n = q.size
    if n == 0 or method == "none":
        out[ok] = q
        return out
    order = np.argsort(q, kind="mergesort")
    ranked = q[order]
    if method == "benjamini-hochberg":
        scaled = ranked * n / np.arange(1, n + 1)
        adj = np.minimum.accumulate(scaled[::-1])[::-1]
    elif method == "holm":
        scaled = ranked * (n - np.arange(n))
        adj = np.maximum.accumulate(scaled)
    else:
        raise ValueError(f"unknown correction {method!r}")
    result = np.empty(n)
    result[order] = np.minimum(adj, 1.0)
    out[ok] = result
    return out


def proportion_increase(x_ref: int, n_ref: int, x_cur: int, n_cur: int) -> float:
    """One-sided p-value that the current share ``x_cur/n_cur`` exceeds the reference's
    (two-proportion z-test with the pooled share); NaN when there is nothing to test (no missing
    value on either side, or nothing but)."""
    from scipy.stats import norm

    if n_ref == 0 or n_cur == 0:
        return math.nan
    p1, p2 = x_ref / n_ref, x_cur / n_cur
    pooled = (x_ref + x_cur) / (n_ref + n_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    if se == 0:
        return math.nan
    return float(norm.sf((p2 - p1) / se))
