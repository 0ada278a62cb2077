"""Generated tabular data shaped as issue 14's (``benchmarks/scale_data.py``), small, for training tests.

Kept apart from the tests so a fresh interpreter can import it with another tree's trainer first on the path
(``test_training_memory``'s peak measurement).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NUMERIC = 20
LEVELS = {"cat0": 5, "cat1": 12, "cat2": 40}


def synthetic(rows: int, seed: int = 3, levels: dict[str, int] | None = None) -> pd.DataFrame:
    """Numbers with 1 % gaps, categories with gaps, a learnable 0/1 label (integers, as read)."""
    rng = np.random.default_rng(seed)
    numbers = np.round(rng.normal(scale=10, size=(rows, NUMERIC)), 3)
    numbers[rng.random((rows, NUMERIC)) < 0.01] = np.nan
    frame = pd.DataFrame(numbers, columns=[f"x{i:02d}" for i in range(NUMERIC)])
    for name, count in (levels or LEVELS).items():
        codes = rng.integers(0, count, rows)
        values = np.array([f"{name}_{i:03d}" for i in range(count)], dtype=object)[codes]
        values[rng.random(rows) < 0.01] = np.nan
        frame[name] = pd.Series(values, dtype=object)
    frame["label"] = (np.nan_to_num(numbers[:, 0]) + np.nan_to_num(numbers[:, 1]) + rng.logistic(size=rows) > 0).astype(
        np.int64
    )
    return frame
