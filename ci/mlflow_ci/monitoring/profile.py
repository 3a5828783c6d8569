"""Reference profiles: what the training data looked like, in one small JSON artifact.

A training script calls :func:`log_profile` inside its run::

    from mlflow_ci.monitoring import log_profile
    log_profile(x_train, predictions=model.predict(x_train), name="training")

and ``mlflow-ci drift models:/<model>@champion current.parquet`` later compares new data with it.

**What a profile holds.** Per numeric feature: bin edges fixed on the reference (its quantiles,
``bins`` of them, so every bin holds about the same share of the reference), the count and the sum
of the values in each bin, the number of values, of missing ones (null, NaN or infinite), min, max,
mean and the sum of squared deviations. Per categorical feature: the ``max_categories`` most
frequent categories with their counts, an ``other`` count for the rest, and the names of the
rarer reference categories (up to :data:`KNOWN_NAMES`) so that values never seen in training can be
told apart from rare ones.

**Mergeable.** The bins and categories (the :class:`FeatureSpec`) are fixed by the reference pass;
after that every count is a sum, so profiles of batches counted with one spec and added give the
same profile as one pass over all rows (counts exactly; sums and moments up to floating-point
rounding, merged with Chan's formula). This is how current data larger than memory is profiled:
chunk by chunk, with the reference's bins, in memory that does not grow with rows.

**Quantiles are histogram-derived.** Exact quantiles do not merge. The quantiles a profile reports
are read off its merged histogram by linear interpolation inside the bin that holds them (min and
max bound the outer bins), so they are accurate to the width of one bin: with 100 quantile bins,
to about one percentile of the reference.

Only numpy is needed at import (pandas or pyarrow data are read when given), so the helper runs in
a lean training environment; MLflow is imported when the profile is logged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

FORMAT = "mlflow-ci.profile/1"
ARTIFACT_DIR = "mlflow-ci/profiles"
DEFAULT_NAME = "training"
DEFAULT_BINS = 100
DEFAULT_MAX_CATEGORIES = 50
# An integer column with at most this many distinct values is a category (class labels, counts).
INTEGER_CATEGORY_LIMIT = 20
# Rarer reference categories remembered by name (not counted) to tell rare from unseen.
KNOWN_NAMES = 1000
# Names of unseen values kept per feature (their counts are exact; the names are the most frequent
# ones met, a bounded summary).
UNSEEN_EXAMPLES = 20
# Values sampled per numeric column to fix the quantile edges when the reference is streamed.
SPEC_SAMPLE = 200_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

Kind = Literal["numeric", "categorical"]
Source = Literal["integer", "float", "bool", "string"]


def artifact_path(name: str) -> str:
    return f"{ARTIFACT_DIR}/{name}.json"


# --- canonical category labels -----------------------------------------------------------------


def label(value: Any) -> str:
    """One spelling per category whatever carried it: ``1``, ``1.0`` and ``np.int64(1)`` are
    ``"1"``; booleans are ``"true"``/``"false"``; strings stay as they are."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --- columns of pandas, pyarrow or numpy, read one way ------------------------------------------


def _is_arrow(col: Any) -> bool:
    return type(col).__module__.startswith("pyarrow")


def column_source(col: Any) -> Source | None:
    """The kind of values a column holds (None: a type drift does not profile, e.g. dates)."""
    if _is_arrow(col):
        import pyarrow as pa

        t = col.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_boolean(t):
            return "bool"
        if pa.types.is_integer(t):
            return "integer"
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            return "float"
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return "string"
        if pa.types.is_null(t):
            return "float"
        return None
    dtype = getattr(col, "dtype", None)
    if dtype is None:
        col = np.asarray(col)
        dtype = col.dtype
    kind = getattr(dtype, "kind", "O")
    if str(dtype) == "category":
        return "string"
    if kind == "b" or str(dtype) == "boolean":
        return "bool"
    if kind in "iu" or str(dtype).startswith(("Int", "UInt")):
        return "integer"
    if kind == "f" or str(dtype).startswith("Float"):
        return "float"
    if kind in "OUS" or str(dtype) in ("string", "str") or "string" in str(dtype).lower():
        return "string"
    return None


def numeric_values(col: Any) -> np.ndarray:
    """float64 values, with null as NaN."""
    if _is_arrow(col):
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(col.type):
            col = (
                col.dictionary_decode()
                if hasattr(col, "dictionary_decode")
                else pc.cast(col, col.type.value_type)
            )
        arr = col if col.type == pa.float64() else pc.cast(col, pa.float64())
        if arr.null_count:
            arr = pc.fill_null(arr, math.nan)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    if hasattr(col, "to_numpy"):
        try:
            return np.asarray(col.to_numpy(dtype=np.float64, na_value=np.nan))
        except TypeError:
            return np.asarray(col.to_numpy(dtype=np.float64))
    return np.asarray(col, dtype=np.float64)


def category_counts(col: Any) -> tuple[Counter[str], int]:
    """(label → count, missing) of a column read as categories."""
    counts: Counter[str] = Counter()
    if _is_arrow(col):
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            # Count the indices, then name them: no hashing of the values.
            missing = int(col.null_count)
            indices = col.indices.drop_null() if missing else col.indices
            tally = np.bincount(
                np.asarray(indices.to_numpy(zero_copy_only=False)), minlength=len(col.dictionary)
            )
            for value, count in zip(col.dictionary.to_pylist(), tally.tolist(), strict=True):
                if count and value is not None:
                    counts[label(value)] += int(count)
            return counts, missing
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_nan(col), None, col)
        missing = int(col.null_count)
        vc = pc.value_counts(col.drop_null() if hasattr(col, "drop_null") else pc.drop_null(col))
        if isinstance(vc, pa.ChunkedArray):
            vc = vc.combine_chunks()
        for value, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            counts[label(value)] += int(count)
        return counts, missing
    if not hasattr(col, "value_counts"):
        import pandas as pd

        col = pd.Series(np.asarray(col))
    missing = int(col.isna().sum())
    for value, count in col.value_counts(dropna=True).items():
        counts[label(value)] += int(count)
    return counts, missing


def iter_columns(batch: Any) -> Iterator[tuple[str, Any]]:
    """(name, column) of a pandas DataFrame, a pyarrow Table/RecordBatch or a mapping of arrays."""
    if hasattr(batch, "column_names") and hasattr(batch, "column"):
        for name in batch.column_names:
            yield str(name), batch.column(name)
        return
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__") and hasattr(batch, "iloc"):
        for name in batch.columns:
            yield str(name), batch[name]
        return
    if isinstance(batch, Mapping):
        for name, col in batch.items():
            yield str(name), col
        return
    raise TypeError(
        f"cannot read columns from a {type(batch).__name__}; give a pandas DataFrame or a pyarrow Table"
    )


def batch_rows(batch: Any) -> int:
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)


class Binner:
    """``np.searchsorted(edges, values, side="right")``, several times faster for many values.

    A binary search per value mispredicts its branches; instead a uniform grid of cells over
    ``[edges[0], edges[-1]]`` answers each value by arithmetic and one table lookup, and only the
    values in cells next to an edge (a few percent) are searched. A cell is trusted only when no
    edge lies within one cell of it, so a rounding error in the cell arithmetic never changes a bin.
    """

    def __init__(self, edges: Sequence[float] | np.ndarray) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        k = self.edges.size
        self.grid = k >= 8 and self.edges[-1] > self.edges[0]
        if not self.grid:
            return
        g = min(256 * k, 1 << 16)
        self.g, self.lo = g, float(self.edges[0])
        self.scale = g / (float(self.edges[-1]) - self.lo)
        at = np.searchsorted(self.edges, self.lo + np.arange(-1, g + 2) / self.scale, side="right")
        self.lut = np.full(g + 2, -1, dtype=np.int64)
        self.lut[0] = 0  # below edges[0]: bin 0
        # Grid cell t (0 .. g-1) is entry t + 1; entry g + 1 (at or above edges[-1]) is searched.
        self.lut[1 : g + 1] = np.where(at[:-3] == at[3:], at[:-3], -1)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if not self.grid or values.size < 4096:
            return np.searchsorted(self.edges, values, side="right")
        cell = values - self.lo
        cell *= self.scale
        np.floor(cell, out=cell)
        np.clip(cell, -1, self.g, out=cell)
        idx = self.lut[cell.astype(np.int64) + 1]
        near = idx < 0
        if near.any():
            idx[near] = np.searchsorted(self.edges, values[near], side="right")
        return idx


# --- the spec: bins and categories fixed by the reference --------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """How a feature is counted: numeric with fixed inner bin edges, or categorical with fixed
    categories. Bin ``i`` holds the values ``edges[i-1] <= v < edges[i]`` (the outer bins are open)."""

    kind: Kind
    source: Source
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    known_other: tuple[str, ...] = ()
    known_complete: bool = True

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1 if self.kind == "numeric" else len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "source": self.source}
        if self.kind == "numeric":
            out["edges"] = list(self.edges)
        else:
            out.update(
                categories=list(self.categories),
                known_other=list(self.known_other),
                known_complete=self.known_complete,
            )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            kind=data["kind"],
            source=data.get("source", "float" if data["kind"] == "numeric" else "string"),
            edges=tuple(float(e) for e in data.get("edges", ())),
            categories=tuple(str(c) for c in data.get("categories", ())),
            known_other=tuple(str(c) for c in data.get("known_other", ())),
            known_complete=bool(data.get("known_complete", True)),
        )


def _round_edges(edges: np.ndarray) -> tuple[float, ...]:
    # Seven significant digits keep the JSON small; the counts are made with the rounded edges.
    rounded = np.unique(np.array([float(f"{e:.7g}") for e in edges], dtype=np.float64))
    return tuple(float(e) for e in rounded)


def numeric_spec(values: np.ndarray, *, bins: int = DEFAULT_BINS, source: Source = "float") -> FeatureSpec:
    """Quantile edges of ``values`` (NaN and infinities ignored)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return FeatureSpec(kind="numeric", source=source, edges=())
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.quantile(finite, qs)
    # An edge at the minimum makes an empty first bin: drop it.
    edges = edges[edges > finite.min()]
    return FeatureSpec(kind="numeric", source=source, edges=_round_edges(edges))


def categorical_spec(
    counts: Mapping[str, int], *, max_categories: int = DEFAULT_MAX_CATEGORIES, source: Source = "string"
) -> FeatureSpec:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = tuple(k for k, _ in ranked[:max_categories])
    rest = [k for k, _ in ranked[max_categories:]]
    return FeatureSpec(
        kind="categorical",
        source=source,
        categories=top,
        known_other=tuple(sorted(rest[:KNOWN_NAMES])),
        known_complete=len(rest) <= KNOWN_NAMES,
    )


class SpecSampler:
    """The reference pass: a uniform sample of each numeric column (bottom-k by a random key per
    row, so memory stays bounded however many rows stream by) and exact category counts; then
    :meth:`specs` fixes the bins and categories.

    Kinds: booleans and strings are categorical; an integer column with at most
    :data:`INTEGER_CATEGORY_LIMIT` distinct values is categorical (class labels, small counts);
    other numbers are numeric. ``categorical`` and ``numeric`` name exceptions."""

    def __init__(
        self,
        *,
        bins: int = DEFAULT_BINS,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        categorical: Iterable[str] = (),
        numeric: Iterable[str] = (),
        columns: Iterable[str] | None = None,
        sample: int = SPEC_SAMPLE,
        seed: int = 0,
    ) -> None:
        self.bins = bins
        self.max_categories = max_categories
        self.categorical = set(categorical)
        self.numeric = set(numeric)
        self.columns = set(columns) if columns is not None else None
        self.sample = sample
        self.rng = np.random.default_rng(seed)
        self.sources: dict[str, Source] = {}
        self.skipped: dict[str, str] = {}
        self.keys = np.empty(0)
        self.values: dict[str, np.ndarray] = {}
        self.cats: dict[str, Counter[str]] = {}
        # Integer columns that may still be categories (None once they have too many values).
        self.small_ints: dict[str, Counter[str] | None] = {}

    def _kind(self, name: str, source: Source) -> Kind:
        if name in self.categorical:
            return "categorical"
        if source in ("bool", "string"):
            if name in self.numeric:
                raise ValueError(f"column {name!r} holds {source} values and cannot be profiled as numeric")
            return "categorical"
        if source == "integer" and name not in self.numeric and self.small_ints.get(name) is not None:
            return "categorical"
        return "numeric"

    def update(self, batch: Any) -> None:
        n = batch_rows(batch)
        keys = self.rng.random(n)
        sampled: dict[str, np.ndarray] = {}
        for name, col in iter_columns(batch):
            if self.columns is not None and name not in self.columns:
                continue
            source = self.sources.get(name) or column_source(col)
            if source is None:
                kind = getattr(col, "type", getattr(col, "dtype", "?"))
                self.skipped[name] = f"unsupported type {kind}"
                continue
            self.sources[name] = source
            if name in self.categorical or source in ("bool", "string"):
                counts, _ = category_counts(col)
                merged = self.cats.setdefault(name, Counter())
                merged.update(counts)
                if len(merged) > 4 * KNOWN_NAMES:
                    # A high-cardinality column: keep the most frequent names (bounded memory).
                    self.cats[name] = Counter(dict(merged.most_common(2 * KNOWN_NAMES)))
                continue
            values = numeric_values(col)
            sampled[name] = values
            if source == "integer" and name not in self.numeric:
                small = self.small_ints.setdefault(name, Counter())
                if small is not None:
                    uniq, cnt = np.unique(values[np.isfinite(values)], return_counts=True)
                    if uniq.size > INTEGER_CATEGORY_LIMIT:
                        self.small_ints[name] = None
                    else:
                        small.update({label(u): int(c) for u, c in zip(uniq, cnt, strict=True)})
                        if len(small) > INTEGER_CATEGORY_LIMIT:
                            self.small_ints[name] = None
        all_keys = np.concatenate([self.keys, keys])
        keep = None
        if all_keys.size > self.sample:
            keep = np.argpartition(all_keys, self.sample)[: self.sample]
            all_keys = all_keys[keep]
        for name, vals in sampled.items():
            old = self.values.get(name, np.full(self.keys.size, np.nan))
            merged_vals = np.concatenate([old, vals])
            self.values[name] = merged_vals[keep] if keep is not None else merged_vals
        self.keys = all_keys

    def specs(self) -> dict[str, FeatureSpec]:
        out: dict[str, FeatureSpec] = {}
        for name, source in self.sources.items():
            if self._kind(name, source) == "numeric":
                out[name] = numeric_spec(self.values.get(name, np.empty(0)), bins=self.bins, source=source)
                continue
            counts = self.cats.get(name)
            if counts is None:
                counts = self.small_ints.get(name) or Counter()
            out[name] = categorical_spec(counts, max_categories=self.max_categories, source=source)
        return out


# --- per-feature counts ------------------------------------------------------------------------


@dataclass
class FeatureProfile:
    """The counts of one feature under its spec. ``rows`` counts every row, ``missing`` the null,
    NaN or infinite ones; the rest are in ``counts`` (and ``other`` for categories outside the spec)."""

    name: str
    spec: FeatureSpec
    rows: int = 0
    missing: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    min: float = math.inf
    max: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0
    other: int = 0
    unseen: int = 0
    unseen_examples: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._binner: Binner | None = None
        if self.counts.size == 0 and self.spec.n_bins:
            self.counts = np.zeros(self.spec.n_bins, dtype=np.int64)
        if self.spec.kind == "numeric" and self.sums.size == 0:
            self.sums = np.zeros(self.spec.n_bins)

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def count(self) -> int:
        """Values present (not missing)."""
        return int(self.counts.sum()) + self.other

    @property
    def std(self) -> float:
        n = self.count
        return math.sqrt(self.m2 / (n - 1)) if n > 1 else 0.0

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def unseen_share(self) -> float:
        return self.unseen / self.count if self.count else 0.0

    def cells(self) -> np.ndarray:
        """Counts per test cell: the bins, or the categories plus one cell for the rest."""
        if self.kind == "numeric":
            return self.counts
        return np.append(self.counts, self.other)

    # -- counting --------------------------------------------------------------------------------

    def add_column(self, col: Any) -> None:
        if self.kind == "numeric":
            self._add_numeric(numeric_values(col))
        else:
            counts, missing = category_counts(col)
            self._add_categories(counts, missing)

    def _add_numeric(self, values: np.ndarray) -> None:
        self.rows += int(values.size)
        ok = np.isfinite(values)
        finite = values if ok.all() else values[ok]
        self.missing += int(values.size - finite.size)
        if finite.size == 0:
            return
        if self._binner is None:
            self._binner = Binner(self.spec.edges)
        idx = self._binner(finite)
        self.counts += np.bincount(idx, minlength=self.spec.n_bins).astype(np.int64)
        self.sums += np.bincount(idx, weights=finite, minlength=self.spec.n_bins)
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))
        n_b = finite.size
        mean_b = float(finite.mean())
        dev = finite - mean_b
        m2_b = float(np.dot(dev, dev))
        self._merge_moments(n_b, mean_b, m2_b, self.count - n_b)

    def _merge_moments(self, n_b: int, mean_b: float, m2_b: float, n_a: int) -> None:
        # Chan et al.'s parallel update: exact merging of mean and sum of squared deviations.
        n = n_a + n_b
        if n == 0:
            return
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n

    def _add_categories(self, counts: Mapping[str, int], missing: int) -> None:
        index = {c: i for i, c in enumerate(self.spec.categories)}
        known = set(self.spec.known_other)
        present = int(sum(counts.values()))
        self.rows += present + missing
        self.missing += missing
        for key, count in counts.items():
            i = index.get(key)
            if i is not None:
                self.counts[i] += count
                continue
            self.other += count
            if key not in known:
                self.unseen += count
                self.unseen_examples[key] += count
        if len(self.unseen_examples) > 10 * UNSEEN_EXAMPLES:
            self.unseen_examples = Counter(dict(self.unseen_examples.most_common(UNSEEN_EXAMPLES)))

    def merge(self, other: FeatureProfile) -> FeatureProfile:
        """The profile of both samples (same spec required)."""
        if other.spec != self.spec:
            raise ValueError(f"feature {self.name!r}: profiles made with different bins cannot be merged")
        out = FeatureProfile(name=self.name, spec=self.spec)
        out.rows = self.rows + other.rows
        out.missing = self.missing + other.missing
        out.counts = self.counts + other.counts
        out.other = self.other + other.other
        out.unseen = self.unseen + other.unseen
        out.unseen_examples = self.unseen_examples + other.unseen_examples
        if self.kind == "numeric":
            out.sums = self.sums + other.sums
            out.min, out.max = min(self.min, other.min), max(self.max, other.max)
            out.mean, out.m2 = self.mean, self.m2
            out._merge_moments(other.count, other.mean, other.m2, self.count)
        return out

    # -- what people read ------------------------------------------------------------------------

    def bin_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of each numeric bin; the outer bins end at min and max."""
        edges = np.asarray(self.spec.edges, dtype=np.float64)
        lo_end = self.min if math.isfinite(self.min) else (edges[0] if edges.size else 0.0)
        hi_end = self.max if math.isfinite(self.max) else (edges[-1] if edges.size else 0.0)
        lower = np.concatenate([[min(lo_end, edges[0] if edges.size else lo_end)], edges])
        upper = np.concatenate([edges, [max(hi_end, edges[-1] if edges.size else hi_end)]])
        return lower, upper

    def bin_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean of each non-empty bin, its count): the point set the Wasserstein distance uses."""
        mask = self.counts > 0
        return self.sums[mask] / self.counts[mask], self.counts[mask].astype(np.float64)

    def quantiles(self, qs: Sequence[float] = QUANTILES) -> dict[str, float]:
        """Histogram-derived quantiles: linear inside the bin that holds each one."""
        n = int(self.counts.sum())
        if self.kind != "numeric" or n == 0:
            return {}
        lower, upper = self.bin_bounds()
        cum = np.concatenate([[0], np.cumsum(self.counts)]) / n
        out = {}
        for q in qs:
            i = int(np.clip(np.searchsorted(cum, q, side="left") - 1, 0, self.counts.size - 1))
            while self.counts[i] == 0 and i + 1 < self.counts.size:
                i += 1
            inside = (q - cum[i]) / (cum[i + 1] - cum[i]) if cum[i + 1] > cum[i] else 0.0
            out[f"{q:g}"] = float(lower[i] + float(np.clip(inside, 0, 1)) * (upper[i] - lower[i]))
        return out

    def shares(self) -> dict[str, float]:
        total = self.count
        if self.kind != "categorical" or not total:
            return {}
        out = {c: int(n) / total for c, n in zip(self.spec.categories, self.counts, strict=True)}
        if self.other:
            out["(other)"] = self.other / total
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.spec.to_dict(), "rows": self.rows, "missing": self.missing}
        out["counts"] = [int(c) for c in self.counts]
        if self.kind == "numeric":
            out["sums"] = [float(f"{s:.10g}") for s in self.sums]
            finite = math.isfinite(self.min)
            out.update(
                min=self.min if finite else None,
                max=self.max if finite else None,
                mean=self.mean,
                m2=self.m2,
                std=self.std,
                quantiles=self.quantiles(),
            )
        else:
            out.update(
                other=self.other,
                unseen=self.unseen,
                unseen_examples=dict(self.unseen_examples.most_common(UNSEEN_EXAMPLES)),
            )
        return out

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> FeatureProfile:
        spec = FeatureSpec.from_dict(data)
        fp = cls(name=name, spec=spec, rows=int(data.get("rows", 0)), missing=int(data.get("missing", 0)))
        counts = np.asarray(data.get("counts", []), dtype=np.int64)
        if counts.size != spec.n_bins:
            raise ValueError(f"feature {name!r}: {counts.size} counts for {spec.n_bins} bins")
        fp.counts = counts
        if spec.kind == "numeric":
            sums = np.asarray(data.get("sums", [0.0] * spec.n_bins), dtype=np.float64)
            if sums.size != spec.n_bins:
                raise ValueError(f"feature {name!r}: {sums.size} sums for {spec.n_bins} bins")
            fp.sums = sums
            fp.min = float(data["min"]) if data.get("min") is not None else math.inf
            fp.max = float(data["max"]) if data.get("max") is not None else -math.inf
            fp.mean = float(data.get("mean", 0.0))
            fp.m2 = float(data.get("m2", 0.0))
        else:
            fp.other = int(data.get("other", 0))
            fp.unseen = int(data.get("unseen", 0))
            fp.unseen_examples = Counter(
                {str(k): int(v) for k, v in (data.get("unseen_examples") or {}).items()}
            )
        return fp


# --- a whole profile ---------------------------------------------------------------------------


@dataclass
class Profile:
    """Every feature's counts, plus which column holds the model's predictions (if any)."""

    features: dict[str, FeatureProfile]
    name: str = DEFAULT_NAME
    prediction: str | None = None
    rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def specs(self) -> dict[str, FeatureSpec]:
        return {n: f.spec for n, f in self.features.items()}

    def update(self, batch: Any) -> None:
        """Count one batch (pandas DataFrame, pyarrow Table/RecordBatch, mapping of arrays)."""
        self.rows += batch_rows(batch)
        for name, col in iter_columns(batch):
            fp = self.features.get(name)
            if fp is not None:
                fp.add_column(col)

    def merge(self, other: Profile) -> Profile:
        if set(self.features) != set(other.features):
            raise ValueError("profiles of different features cannot be merged")
        return Profile(
            features={n: f.merge(other.features[n]) for n, f in self.features.items()},
            name=self.name,
            prediction=self.prediction,
            rows=self.rows + other.rows,
            skipped={**self.skipped, **other.skipped},
        )

    __add__ = merge

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "created": self.created,
            "rows": self.rows,
            "prediction": self.prediction,
            "features": {n: f.to_dict() for n, f in self.features.items()},
            "skipped": dict(self.skipped),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"not an mlflow-ci profile (format {found!r}, expected {FORMAT!r})")
        return cls(
            features={n: FeatureProfile.from_dict(n, f) for n, f in data["features"].items()},
            name=str(data.get("name", DEFAULT_NAME)),
            prediction=data.get("prediction"),
            rows=int(data.get("rows", 0)),
            skipped=dict(data.get("skipped") or {}),
            created=str(data.get("created", "")),
        )

    @classmethod
    def empty(
        cls,
        specs: Mapping[str, FeatureSpec],
        *,
        name: str = DEFAULT_NAME,
        prediction: str | None = None,
        skipped: Mapping[str, str] | None = None,
    ) -> Profile:
        return cls(
            features={n: FeatureProfile(name=n, spec=s) for n, s in specs.items()},
            name=name,
            prediction=prediction,
            skipped=dict(skipped or {}),
        )


def profile_batches(
    batches: Iterable[Any],
    specs: Mapping[str, FeatureSpec],
    *,
    name: str = DEFAULT_NAME,
    prediction: str | None = None,
) -> Profile:
    """Count ``batches`` with fixed ``specs``, one batch in memory at a time."""
    profile = Profile.empty(specs, name=name, prediction=prediction)
    for batch in batches:
        profile.update(batch)
    return profile


def _with_predictions(features: Any, predictions: Any, column: str) -> Any:
    if predictions is None:
        return features
    preds = predictions
    if hasattr(preds, "to_numpy") and not _is_arrow(preds):
        preds = preds.to_numpy()
    if not _is_arrow(preds):
        preds = np.asarray(preds)
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim != 1:
            raise ValueError(
                "predictions must be one column (the predicted class or value, or one class's probability); "
                f"got shape {preds.shape}"
            )
    if len(preds) != batch_rows(features):
        raise ValueError(f"{len(preds)} predictions for {batch_rows(features)} rows of features")
    if hasattr(features, "assign"):
        if column in features.columns:
            raise ValueError(f"the features already have a column named {column!r}; pass prediction_column=")
        return features.assign(**{column: preds})
    if hasattr(features, "append_column"):
        import pyarrow as pa

        if column in features.column_names:
            raise ValueError(f"the features already have a column named {column!r}; pass prediction_column=")
        return features.append_column(column, pa.array(preds))
    return {**dict(iter_columns(features)), column: preds}


def build_profile(
    features: Any,
    predictions: Any = None,
    *,
    name: str = DEFAULT_NAME,
    prediction_column: str = "prediction",
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> Profile:
    """The profile of an in-memory table (its own reference pass, then one counting pass)."""
    data = _with_predictions(features, predictions, prediction_column)
    sampler = SpecSampler(bins=bins, max_categories=max_categories, categorical=categorical, numeric=numeric)
    sampler.update(data)
    profile = profile_batches(
        [data],
        sampler.specs(),
        name=name,
        prediction=prediction_column if predictions is not None else None,
    )
    profile.skipped = dict(sampler.skipped)
    return profile


def log_profile(
    features: Any,
    predictions: Any = None,
    *,
    name: str = DEFAULT_NAME,
    prediction_column: str = "prediction",
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> str:
    """Log the profile of ``features`` (and ``predictions``) to the active MLflow run as one JSON
    artifact, ``mlflow-ci/profiles/<name>.json``; return that artifact path.

    ``features``: a pandas DataFrame or a pyarrow Table. ``predictions``: one value per row (class,
    value or one probability), profiled as the column ``prediction_column``. Integer columns with at
    most 20 distinct values, booleans and strings are categorical; name others in ``categorical``.
    """
    import mlflow

    if mlflow.active_run() is None:
        from mlflow_ci.core.errors import ConfigError

        raise ConfigError(
            "log_profile needs an active MLflow run: call it inside `with mlflow.start_run():` "
            "(or in an entry point started by `mlflow run`)."
        )
    profile = build_profile(
        features,
        predictions,
        name=name,
        prediction_column=prediction_column,
        bins=bins,
        max_categories=max_categories,
        categorical=categorical,
        numeric=numeric,
    )
    path = artifact_path(name)
    mlflow.log_text(profile.to_json(), path)
    return path
