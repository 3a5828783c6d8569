"""Data for the monitoring tests: small seeded frames with numeric, integer, categorical and
boolean columns, and a prediction column."""

from __future__ import annotations

import numpy as np
import pandas as pd


def frame(
    n: int,
    *,
    seed: int = 0,
    shift: float = 0.0,
    scale: float = 1.0,
    share_a: float = 0.4,
    missing: float = 0.0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rest = (1 - share_a) / 3
    df = pd.DataFrame(
        {
            "x": rng.normal(shift, scale, n),
            "y": rng.lognormal(size=n),
            "count": rng.poisson(30, n),
            "city": rng.choice(["a", "b", "c", "d"], n, p=[share_a, rest, rest, rest]),
            "flag": rng.random(n) < 0.3,
            "prediction": rng.integers(0, 3, n),
        }
    )
    if missing:
        df.loc[rng.random(n) < missing, "y"] = np.nan
    return df
