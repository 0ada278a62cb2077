"""training/stepml_tabular/lean.py: the trainer's copies of the table, and the same model without them.

Each helper is compared with the call it stands in for (the values must be the same, so the model is), and
the trainer's peak memory per row is bounded on generated data shaped as issue 14's (20 numeric and 3
categorical columns of 5, 12 and 40 levels, a binary label): scikit-learn's ``ColumnTransformer.fit_transform``
held its transformers' outputs and their stacked copy at once, ~1,300 bytes a row of gradient boosting's
dense float64 matrix (77 columns), on top of the frame and its copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stepml_tabular import lean
from stepml_tabular.columns import _as_label, build_preprocessor

from tests.unit.synthetic_tabular import LEVELS, synthetic

ROOT = Path(__file__).resolve().parents[2]


def kinds_of(frame: pd.DataFrame) -> dict[str, str]:
    return {c: "numeric" if c.startswith("x") else "categorical" for c in frame.columns if c != "label"}


def fitted_state(preprocess: Any) -> list[Any]:
    """What a fitted gradient-boosting ColumnTransformer learned, as comparable values."""
    numeric = preprocess.named_transformers_["numeric"]
    categorical = preprocess.named_transformers_["categorical"]
    encoder = categorical.named_steps["onehot"]
    return [
        preprocess.output_indices_,
        preprocess.sparse_output_,
        list(preprocess.feature_names_in_),
        numeric.statistics_.tolist(),
        categorical.named_steps["impute"].statistics_.tolist(),
        [c.tolist() for c in encoder.categories_],
        [None if c is None else c.tolist() for c in encoder.infrequent_categories_],
        list(preprocess.get_feature_names_out()),
    ]


@pytest.mark.parametrize("levels", [LEVELS, {"cat0": 3, "id": 90}])  # 90 levels: grouped beyond max_categories
def test_fit_transform_dense_is_fit_transform(levels: dict[str, int]) -> None:
    frame = synthetic(3_000, levels=levels)
    frame.loc[:, "x05"] = np.nan  # a column without a value: the imputer drops it in both
    x, y = frame.drop(columns="label"), frame["label"].to_numpy()
    kinds = kinds_of(frame)

    plain = build_preprocessor(kinds, "gradient-boosting", len(x))
    expected = plain.fit_transform(x, y)
    lean_one = build_preprocessor(kinds, "gradient-boosting", len(x))
    with pytest.warns(UserWarning, match="x05"):  # SimpleImputer's "Skipping features without any observed values"
        got = lean.fit_transform_dense(lean_one, x, y, kinds, block=700)

    assert got.dtype == expected.dtype and got.shape == expected.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    assert repr(fitted_state(lean_one)) == repr(fitted_state(plain))  # repr: NaN equals NaN
    np.testing.assert_array_equal(
        lean.transform_dense(lean_one, x.iloc[::-1], block=700), plain.transform(x.iloc[::-1])
    )


def test_helpers_give_what_the_calls_they_replace_give() -> None:
    frame = synthetic(500).drop(columns="label")
    first, second = frame.iloc[:300].reset_index(drop=True), frame.iloc[300:].reset_index(drop=True)
    expected = pd.concat([first, second], ignore_index=True)
    pd.testing.assert_frame_equal(lean.concat_rows(first.copy(), second.copy()), expected)

    pd.testing.assert_frame_equal(lean.rows(frame, np.arange(100, 250)), frame.iloc[100:250])
    picked = np.array([5, 1, 9])
    pd.testing.assert_frame_equal(lean.rows(frame, picked), frame.iloc[picked])

    for values in ([1, 0, 1, 1], [1.0, np.nan, 2.5, 1.0], [True, False, True], ["a", np.nan, "007"]):
        series = pd.Series(values)
        expected_labels = np.array([_as_label(v) for v in series.tolist()], dtype=object)
        assert lean.labels_of(series).tolist() == pytest.approx(expected_labels.tolist(), nan_ok=True)

    x = frame.fillna(0)
    np.testing.assert_array_equal(lean.predict_blocks(lambda part: part.to_numpy() * 2, x, block=64), x.to_numpy() * 2)


# Run in a fresh interpreter: the data is made, the peak reset (VmHWM, /proc/self/clear_refs), then
# train_splits runs; the figure is the peak over the resident memory before it, per row of the three splits.
_PEAK = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import numpy as np, pandas as pd
from training import train
from tests.unit.synthetic_tabular import LEVELS, NUMERIC, synthetic

def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

frame = synthetic(110_000)
rows = len(frame)
splits = {"train": frame.iloc[:80_000], "validation": frame.iloc[80_000:100_000], "test": frame.iloc[100_000:]}
splits = {name: part.reset_index(drop=True) for name, part in splits.items()}
del frame
roles = {**{f"x{i:02d}": "numeric" for i in range(NUMERIC)}, **dict.fromkeys(LEVELS, "categorical")}
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
before = status("VmRSS:")
outcome = train.train_splits(splits, target="label", problem_type="binary_classification", params={"max_iter": "1"},
                             algorithm="gradient-boosting", roles=roles)
print(json.dumps({"per_row": (status("VmHWM:") - before) / rows, "accuracy": outcome.metrics["test"]["accuracy"]}))
"""


def trainer_peak(root: Path) -> dict[str, float]:
    """``_PEAK``'s figures for the trainer under ``root`` (``root/training``): bytes a row, test accuracy."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(root / "training"), str(root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        # One OpenMP thread: the fit's per-thread buffers (a fixed cost) do not then grow with the machine's cores.
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_the_trainer_holds_the_table_about_once() -> None:
    """Peak resident bytes per row over ``train_splits`` (gradient boosting, one iteration, so the fit's own
    work is small), 110k rows: the feature frames, the dense float64 matrix (77 columns, 616 bytes a row of
    train+validation), the bins and the fit's buffers, not the matrix twice. Measured 1,197 bytes a row after
    this change and 1,754 before it (the stacked copy of the matrix, the fold copies, the predictions' whole
    matrix); at 1M rows the gap is wider (docs/data-scale.md)."""
    figures = trainer_peak(ROOT)
    assert figures["accuracy"] > 0.6
    assert figures["per_row"] < 1_450, f"{figures['per_row']:.0f} bytes a row at the peak"
