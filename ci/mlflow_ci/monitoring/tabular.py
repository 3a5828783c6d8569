"""CSV and Parquet data read in chunks with pyarrow datasets, so memory does not grow with rows.

A data argument is a file, a folder (its ``*.parquet``/``*.csv`` files) or a glob; the files are
read one after the other, each as a pyarrow dataset scanned in record batches of at most
``batch_rows`` rows, and only the columns the profile needs. A file that cannot be read is a
``ConfigError`` (exit 2) naming it.

* :func:`profile_files` counts data with fixed specs (the current data, with the reference's bins);
* :func:`reference_from_files` is the two-pass reference: a bounded sample fixes the bins, then the
  counting pass.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ci.core.errors import ConfigError
from mlflow_ci.monitoring.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_NAME,
    FeatureSpec,
    Profile,
    SpecSampler,
)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 262_144
CACHE_BYTES = 256 * 1024 * 1024
READAHEAD = 2
GLOB_CHARS = set("*?[")


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise ConfigError(
        f"{path}: not a CSV or Parquet file by its name (expected {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})."
    )


def expand(args: Sequence[str | Path], *, what: str = "data") -> list[Path]:
    """Files named by ``args`` (files, folders, globs), in order; a ConfigError names a bad one."""
    files: list[Path] = []
    for arg in args:
        text = str(arg)
        if GLOB_CHARS & set(text):
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matched:
                raise ConfigError(f"{text}: no file matches this pattern ({what}).")
            files.extend(matched)
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)
            )
            if not found:
                raise ConfigError(f"{path}: this folder holds no .csv or .parquet file ({what}).")
            files.extend(found)
            continue
        if not path.is_file():
            raise ConfigError(f"{path}: no such file ({what}).")
        files.append(path)
    formats = {file_format(p) for p in files}
    if len(formats) > 1:
        raise ConfigError(f"{files[0]} and the other {what} files mix CSV and Parquet; give one format.")
    return files


def _arrow_types(specs: Mapping[str, FeatureSpec] | None) -> dict[str, Any]:
    import pyarrow as pa

    out: dict[str, Any] = {}
    for name, spec in (specs or {}).items():
        if spec.kind == "numeric" or spec.source in ("integer", "float"):
            out[name] = pa.float64()
        elif spec.source == "bool":
            out[name] = pa.bool_()
        else:
            out[name] = pa.string()
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _dataset(path: Path, specs: Mapping[str, FeatureSpec] | None) -> Any:
    import pyarrow.dataset as ds

    fmt = file_format(path)
    try:
        if fmt == "parquet":
            import pyarrow as pa

            plain = ds.dataset(str(path), format="parquet")
            # Strings decoded as dictionaries: faster to read and to count (categories).
            strings = [
                f.name for f in plain.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            if not strings:
                return plain
            options = ds.ParquetReadOptions(dictionary_columns=strings)
            return ds.dataset(str(path), format=ds.ParquetFileFormat(read_options=options))
        import pyarrow.csv as pacsv

        delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
        csv_format = ds.CsvFileFormat(
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types=_arrow_types(specs), strings_can_be_null=True),
        )
        return ds.dataset(str(path), format=csv_format)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as {fmt.upper()} ({_reason(exc)}).") from None


@dataclass
class Scan:
    """What reading found besides the rows: columns the profile needs that the data lacks, and
    columns the data has that the profile does not know."""

    files: list[Path]
    absent: set[str] = field(default_factory=set)
    extra: set[str] = field(default_factory=set)
    rows: int = 0


def iter_batches(
    files: Sequence[Path],
    *,
    columns: Iterable[str] | None,
    specs: Mapping[str, FeatureSpec] | None = None,
    batch_rows: int = BATCH_ROWS,
    scan: Scan | None = None,
) -> Iterator[tuple[Path, Any]]:
    """(file, record batch) pairs, one batch in memory at a time. ``columns``: the ones wanted
    (None: all); a wanted column absent from a file is recorded in ``scan.absent``."""
    import pyarrow as pa

    wanted = list(columns) if columns is not None else None
    for path in files:
        dataset = _dataset(path, specs)
        names = list(dataset.schema.names)
        if wanted is None:
            use = names
        else:
            use = [c for c in wanted if c in names]
            if scan is not None:
                scan.absent.update(c for c in wanted if c not in names)
                scan.extra.update(c for c in names if c not in wanted)
        try:
            # Little read-ahead: pyarrow's default (16 batches) would hold ~16 chunks in memory.
            for batch in dataset.to_batches(
                columns=use, batch_size=batch_rows, batch_readahead=READAHEAD, fragment_readahead=1
            ):
                if scan is not None:
                    scan.rows += batch.num_rows
                yield path, batch
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise ConfigError(f"{path}: cannot be read ({_reason(exc)}).") from None


def _counted(path: Path, fn: Any, batch: Any) -> None:
    import pyarrow as pa

    try:
        fn(batch)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: a column has values of the wrong type ({_reason(exc)}).") from None


def profile_files(
    files: Sequence[Path],
    specs: Mapping[str, FeatureSpec],
    *,
    name: str = "current",
    prediction: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[Profile, Scan]:
    """Count ``files`` with the reference's ``specs``, chunk by chunk."""
    scan = Scan(files=list(files))
    profile = Profile.empty(specs, name=name, prediction=prediction)
    for path, batch in iter_batches(
        files, columns=list(specs), specs=specs, batch_rows=batch_rows, scan=scan
    ):
        _counted(path, profile.update, batch)
    return profile, scan


def reference_from_files(
    files: Sequence[Path],
    *,
    name: str = DEFAULT_NAME,
    prediction_column: str | None = None,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    categorical: Iterable[str] = (),
    columns: Iterable[str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Profile:
    """The reference profile of data files: a sampling pass fixes bins and categories, a second
    pass counts (both chunked)."""
    sampler = SpecSampler(bins=bins, max_categories=max_categories, categorical=categorical, columns=columns)
    # The batches of the first pass are kept for the second while they fit in CACHE_BYTES (one read
    # of a reference that small); past that the second pass reads the files again.
    cache: list[tuple[Path, Any]] | None = []
    held = 0
    for path, batch in iter_batches(files, columns=columns, batch_rows=batch_rows):
        _counted(path, sampler.update, batch)
        if cache is not None:
            held += batch.nbytes
            if held <= CACHE_BYTES:
                cache.append((path, batch))
            else:
                cache = None
    specs = sampler.specs()
    if not specs:
        raise ConfigError(f"{files[0]}: no column drift can profile (numbers, booleans or strings).")
    prediction = prediction_column if prediction_column in specs else None
    if cache is None:
        profile, _ = profile_files(files, specs, name=name, prediction=prediction, batch_rows=batch_rows)
    else:
        profile = Profile.empty(specs, name=name, prediction=prediction)
        for path, batch in cache:
            _counted(path, profile.update, batch)
    profile.skipped = dict(sampler.skipped)
    return profile
