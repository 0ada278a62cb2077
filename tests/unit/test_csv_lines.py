"""csv_lines writes the bytes DataFrame.to_csv writes (the split files' bytes stay the same)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pipeline_core.stages.csv_lines import csv_lines, float_texts


def _to_csv(rows: pd.DataFrame) -> bytes:
    return rows.to_csv(index=False, header=False, lineterminator="\n").encode("utf-8")


def _floats(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.standard_normal(n) * 10.0 ** rng.integers(-8, 20, n),  # every notation numpy uses
            np.round(rng.standard_normal(n) * 30, 3),  # the usual: a few decimals
            rng.integers(-(10**6), 10**6, n).astype(float),  # whole numbers: "3.0"
            rng.integers(-(2**53), 2**53, n).astype(float),  # whole, 16 digits
            np.frombuffer(rng.bytes(8 * n), dtype=np.float64),  # any bit pattern (NaN, inf, subnormals)
            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-4, 1e15, 1e16, 9.999999999999999e14, 5e-324, 0.1, 1 / 3],
        ]
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_float_texts_are_numpys(seed: int) -> None:
    values = _floats(20000, seed)
    expected = values.astype(str).astype(object)
    expected[np.isnan(values)] = None
    assert float_texts(values).to_pylist() == expected.tolist()


def test_lines_of_floats_and_texts_are_to_csvs() -> None:
    values = _floats(2000, 3)
    rng = np.random.default_rng(4)
    rows = pd.DataFrame(
        {
            "x": values,
            "y": values[::-1].copy(),
            "cat": pd.Series(rng.choice(["a", "grp_01", "é", " b ", ""], len(values))).where(
                rng.random(len(values)) > 0.1
            ),
            "label": np.array(["yes", "no"], dtype=object)[rng.integers(0, 2, len(values))],
        }
    )
    rows["cat"] = rows["cat"].astype("str")
    body, starts = csv_lines(rows)
    assert body == _to_csv(rows)
    assert starts.tolist() == [0, *np.cumsum([len(_to_csv(rows.iloc[i : i + 1])) for i in range(len(rows) - 1)])]


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["a,b", "c", None], dtype=object),  # quoted
        pd.Series(['say "hi"', "c", "d"]),
        pd.Series(["two\nlines", "c", "d"]),
        pd.Series([True, False, None], dtype=object),  # not text: to_csv writes it
        pd.Series([True, False, True]),
        pd.Series([1, 2, 3]),
        pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02", None])),
    ],
)
def test_other_columns_take_to_csv(column: pd.Series) -> None:
    rows = pd.DataFrame({"x": [1.5, np.nan, 3.0], "other": column})
    body, starts = csv_lines(rows)
    assert body == _to_csv(rows)
    assert len(starts) == 3 and starts[0] == 0


def test_empty_and_one_column_frames() -> None:
    assert csv_lines(pd.DataFrame({"x": [], "y": []}))[0] == b""
    one = pd.DataFrame({"x": [1.0, np.nan, 2.5]})
    assert csv_lines(one)[0] == _to_csv(one)
