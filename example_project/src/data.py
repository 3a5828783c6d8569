"""Loading the CSV dataset and splitting it deterministically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

TARGET = "target"


def resolve_data_path(data_path: str) -> Path:
    """Resolve ``data_path`` against the working directory.

    ``mlflow run`` starts the entry point with the project directory as working directory, so the
    MLproject default ``data/wine.csv`` finds the shipped file from wherever ``mlflow run`` is called.
    """
    path = Path(data_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data_path {data_path!r} resolves to {path}, which is not a file.")
    return path


def load_dataset(path: Path) -> pd.DataFrame:
    """Read the CSV: numeric feature columns (as float64) plus an integer ``target`` column."""
    df = pd.read_csv(path)
    if TARGET not in df.columns:
        raise ValueError(f"{path}: no {TARGET!r} column; columns are {list(df.columns)}.")
    features = [c for c in df.columns if c != TARGET]
    if not features:
        raise ValueError(f"{path}: no feature columns besides {TARGET!r}.")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise ValueError(f"{path}: non-numeric feature columns {non_numeric}.")
    if df.isna().any().any():
        missing = df.columns[df.isna().any()].tolist()
        raise ValueError(f"{path}: missing values in columns {missing}.")
    # Float features keep the model signature all-double: integer columns in a signature make
    # serving reject inputs that later contain missing values.
    df[features] = df[features].astype("float64")
    df[TARGET] = df[TARGET].astype("int64")
    return df


def stratified_sample(df: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows with the class proportions of ``df``; the same seed gives the same rows."""
    if rows >= len(df):
        return df
    sample, _ = train_test_split(df, train_size=rows, stratify=df[TARGET], random_state=seed)
    return sample.sort_index()


def split(df: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split, so every class appears in the held-out set (ROC AUC needs it)."""
    train, test = train_test_split(df, test_size=test_size, stratify=df[TARGET], random_state=seed)
    return train, test


def features_and_target(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return df.drop(columns=[TARGET]), df[TARGET]
