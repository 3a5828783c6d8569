"""CSV/Parquet read in chunks: the same profile as one pass, whatever the chunking or the files;
unreadable input is a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from driftdata import frame
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.monitoring.profile import build_profile, profile_batches
from mlflow_ci.monitoring.tabular import expand, profile_files, reference_from_files
from test_profile import _same


@pytest.fixture
def data(tmp_path: Path) -> tuple[object, object, Path]:
    ref_df = frame(4000, seed=1, missing=0.05)
    cur_df = frame(3000, seed=2, shift=0.2, missing=0.1)
    cur_df.to_parquet(tmp_path / "current.parquet")
    cur_df.to_csv(tmp_path / "current.csv", index=False)
    for i in range(3):
        cur_df.iloc[i * 1000 : (i + 1) * 1000].to_parquet(tmp_path / f"part-{i}.parquet")
    return build_profile(ref_df), cur_df, tmp_path


def test_chunked_reading_equals_whole(data: tuple) -> None:
    ref, cur_df, tmp = data
    whole = profile_batches([cur_df], ref.specs)
    for batch_rows in (1000, 1_000_000):
        chunked, scan = profile_files([tmp / "current.parquet"], ref.specs, batch_rows=batch_rows)
        _same(whole, chunked)
        assert scan.rows == 3000
        assert not scan.absent
    parts, _ = profile_files(expand([str(tmp / "part-*.parquet")]), ref.specs, batch_rows=1000)
    _same(whole, parts)
    from_csv, _ = profile_files([tmp / "current.csv"], ref.specs, batch_rows=1000)
    _same(whole, from_csv)


def test_reference_from_files_equals_in_memory_counts(data: tuple) -> None:
    _, cur_df, tmp = data
    streamed = reference_from_files([tmp / "current.parquet"], batch_rows=1000)
    in_memory = profile_batches([cur_df], streamed.specs)
    _same(in_memory, streamed)
    assert streamed.features["prediction"].kind == "categorical"


def test_absent_and_extra_columns_are_reported(data: tuple) -> None:
    ref, cur_df, tmp = data
    cur_df.drop(columns=["city"]).assign(new=1).to_parquet(tmp / "fewer.parquet")
    _, scan = profile_files([tmp / "fewer.parquet"], ref.specs)
    assert scan.absent == {"city"}
    assert scan.extra == {"new"}


def test_bad_inputs_name_the_file(tmp_path: Path, data: tuple) -> None:
    ref = data[0]
    with pytest.raises(ConfigError, match=r"nothing\.parquet: no such file"):
        expand([str(tmp_path / "nothing.parquet")])
    with pytest.raises(ConfigError, match=r"none-\*\.csv: no file matches"):
        expand([str(tmp_path / "none-*.csv")])
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"notes\.txt: not a CSV or Parquet file"):
        expand([str(tmp_path / "notes.txt")])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError, match=r"broken\.parquet: cannot be read"):
        profile_files([tmp_path / "broken.parquet"], ref.specs)
    (tmp_path / "words.csv").write_text("x,y\nhello,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"words\.csv: cannot be read"):
        profile_files([tmp_path / "words.csv"], ref.specs)
