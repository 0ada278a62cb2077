"""Training's memory on large splits: the same values as the plain pandas/scikit-learn calls, fewer copies.

Each helper stands in for one call train.py and ``estimators`` made and returns what it returned, value for
value, so the model and metrics are the same; what changes is how many copies of the table are alive at
once (docs/data-scale.md, "The trainer's copies of the table"):

* ``rows``: the rows of a fold; a contiguous range (the train split, the validation split) is a slice, not
  the copy fancy indexing makes.
* ``concat_rows``: train+validation as one frame built column by column, each source column freed once it
  is copied, instead of ``pd.concat`` holding both inputs and the output.
* ``labels_of``: class labels made once per distinct value (``_as_label``) and shared by every row, instead
  of one new ``str`` object (~60 bytes) a row.
* ``predict_blocks``: a pipeline's predictions on many rows, made block by block, so the pipeline's
  transformed matrix (dense float64 for gradient boosting: 8 bytes x one-hot width a row) exists for one
  block at a time. Each row's prediction depends on that row alone.
* ``fit_transform_dense`` / ``transform_dense``: gradient boosting's ColumnTransformer fitted and its
  matrix written block by block into one array, instead of ``fit_transform`` holding its transformers'
  outputs and their stacked copy at once (the trainer's peak before).

Python 3.9 and the SageMaker image's pandas 1.1 / scikit-learn 1.2 must run this (``train.py``'s contract).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from stepml_tabular.columns import _as_label

# Rows a block of ``predict_blocks`` and ``transform_dense``: at 77 dense float64 columns a block is ~5 MB (and
# the ColumnTransformer holds it twice while it stacks it), small beside the table, and ~1,000 calls at 8M rows.
BLOCK_ROWS = 8_192


def rows(frame: pd.DataFrame, index: np.ndarray) -> pd.DataFrame:
    """``frame.iloc[index]``; a slice (no copy of the table) when ``index`` is a contiguous ascending range."""
    if len(index) and index[0] >= 0 and index[-1] - index[0] + 1 == len(index) and np.all(np.diff(index) == 1):
        return frame.iloc[int(index[0]) : int(index[-1]) + 1]
    return frame.iloc[index]


def concat_rows(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """``pd.concat([first, second], ignore_index=True)`` of two frames with the same columns, built one column
    at a time; both inputs are emptied (their columns deleted as they are copied), so a caller that holds no
    other reference frees them column by column instead of holding them beside the whole result."""
    if list(first.columns) != list(second.columns) or first.columns.has_duplicates:
        return pd.concat([first, second], ignore_index=True)
    names = list(first.columns)
    if any(first[name].dtype != second[name].dtype for name in names):
        return pd.concat([first, second], ignore_index=True)  # what pd.concat would cast: it decides
    columns: dict[Any, pd.Series] = {}
    for name in names:
        a, b = first[name], second[name]
        if isinstance(a.dtype, np.dtype) and a.dtype.kind in "fiub":
            columns[name] = pd.Series(np.concatenate([a.to_numpy(), b.to_numpy()]), name=name, copy=False)
        else:  # object or pandas' own (string) dtype: pandas keeps it as it is
            columns[name] = pd.concat([a, b], ignore_index=True)
        del a, b
        del first[name], second[name]
    return pd.DataFrame(columns, columns=names, copy=False)


def labels_of(series: pd.Series) -> np.ndarray:
    """``np.array([_as_label(v) for v in series.tolist()], dtype=object)``: for a numeric or boolean column,
    each distinct value is converted once and its ``str`` shared by its rows."""
    if series.dtype.kind not in "fiub":
        return np.array([_as_label(v) for v in series.tolist()], dtype=object)
    codes, uniques = pd.factorize(series)  # missing -> -1 (pandas 1.1 to 3)
    labels = np.array([*(_as_label(v) for v in uniques.tolist()), np.nan], dtype=object)
    result: np.ndarray = labels.take(np.where(codes < 0, len(uniques), codes))
    return result


def predict_blocks(predict: Any, x: pd.DataFrame, block: int = BLOCK_ROWS) -> np.ndarray:
    """``predict(x)`` (a pipeline's ``predict`` or ``predict_proba``) over blocks of ``block`` rows."""
    if len(x) <= block:
        return np.asarray(predict(x))
    parts = [np.asarray(predict(x.iloc[start : start + block])) for start in range(0, len(x), block)]
    return np.concatenate(parts)


# --- the dense ColumnTransformer of gradient boosting, without its stacking copy ------------------------


def _covering_rows(x: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """Rows holding every category of each categorical column and a value of each numeric column (where it
    has one): a ColumnTransformer fitted on them has the output columns the whole frame gives it."""
    chosen = [np.array([0], dtype=np.intp)]
    for column, role in kinds.items():
        values = x[column].reset_index(drop=True)  # labels are positions, whatever x's index
        present = values.notna().to_numpy()
        if role == "numeric":
            chosen.append(np.flatnonzero(present)[:1])
        else:  # the first row of each value
            chosen.append(values[present].drop_duplicates().index.to_numpy(dtype=np.intp))
    result: np.ndarray = np.unique(np.concatenate(chosen))
    return result


def fit_transform_dense(
    preprocess: Any, x: pd.DataFrame, y: np.ndarray, kinds: dict[str, str], block: int = BLOCK_ROWS
) -> np.ndarray:
    """``preprocess.fit_transform(x, y)`` for gradient boosting's ColumnTransformer (dense, numeric and
    categorical features): the same fitted transformers and the same float64 matrix, without the copy.

    ``fit_transform`` stacks its transformers' outputs (the imputed numbers and the dense one-hot columns)
    into the result while holding them: two copies of the matrix at once, ~1,300 bytes a row at 20 numeric
    and 57 one-hot columns, the trainer's peak. Here the ColumnTransformer is fitted on the few rows that
    give it its output columns, each transformer is then refitted on every row (its statistics: medians,
    categories and their counts), and the matrix is written block by block into one array. If a
    transformer's output width then differs from the one fitted (it cannot for these roles), the plain
    ``fit_transform`` is used.
    """
    if (
        len(x) <= block
        or getattr(preprocess, "sparse_threshold", None) != 0.0
        or not set(kinds.values()) <= {"numeric", "categorical"}
    ):
        return np.asarray(preprocess.fit_transform(x, y))
    sample = _covering_rows(x, kinds)
    preprocess.fit(x.iloc[sample], y[sample])
    for name, transformer, columns in preprocess.transformers_:
        if isinstance(transformer, str):  # "drop" / "passthrough" (the remainder): nothing learned
            continue
        transformer.fit(x[columns], y)
        width = preprocess.output_indices_[name]
        if np.asarray(transformer.transform(x[columns].iloc[:1])).shape[1] != width.stop - width.start:
            return np.asarray(preprocess.fit_transform(x, y))
    return transform_dense(preprocess, x, block)


def transform_dense(preprocess: Any, x: pd.DataFrame, block: int = BLOCK_ROWS) -> np.ndarray:
    """``preprocess.transform(x)`` of a dense ColumnTransformer, written block by block into one array."""
    if len(x) <= block:
        return np.asarray(preprocess.transform(x))
    width = max((s.stop for s in preprocess.output_indices_.values()), default=0)
    result = np.empty((len(x), width), dtype=np.float64)
    for start in range(0, len(x), block):
        part = np.asarray(preprocess.transform(x.iloc[start : start + block]))
        if part.shape[1] != width or part.dtype != np.float64:
            return np.asarray(preprocess.transform(x))  # not what this was written for: the plain call
        result[start : start + len(part)] = part
    return result
