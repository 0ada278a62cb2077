"""The data to monitor, read feature by feature the way training read it, against a baseline's schema.

Two sources give one frame of raw values: a dataset file (read by :func:`pipeline_core.stages.dataset_file.
load_table`, as Ingest/ValidateData read datasets: missing-value tokens, stripped text) or the rows the
prediction log kept (:func:`rows_frame`, the JSON values of the requests). Each baseline feature is then read
with its training role (:func:`pipeline_core.stages.column_roles.read_values`: separators, "None"/"NA",
booleans, date formats), numbers as floats and categories as canonical text
(:func:`pipeline_core.stages.baseline.category_text`), so values compare with the baseline's like for like.
A value the role cannot take (text in a numeric feature, an unreadable date, a boolean that is none of the
true/false spellings) is a type error, counted apart from the missing values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline_core.stages.baseline import Baseline, FeatureBaseline, category_text
from pipeline_core.stages.column_roles import FALSE_TOKENS, TRUE_TOKENS, read_values, soft_missing
from pipeline_core.stages.dataset_file import normalize, snippet
from pipeline_core.stages.drift import MAX_LISTED, FeatureValues


@dataclass
class MonitoredData:
    """The data as the drift checks take it: its rows, each feature's values, and the schema findings."""

    rows: int
    features: dict[str, FeatureValues] = field(default_factory=dict)
    missing_columns: list[str] = field(default_factory=list)  # features the data lacks
    unseen_columns: list[str] = field(default_factory=list)  # columns that are neither features nor known


def rows_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Logged request rows (JSON objects) as a frame of raw values, missing-value tokens read as missing."""
    frame = pd.DataFrame.from_records(list(rows)) if rows else pd.DataFrame()
    return normalize(frame)


def _examples(raw: pd.Series, wrong: pd.Series) -> list[str]:
    return [snippet(value) for value in pd.unique(raw[wrong].astype(str))[:MAX_LISTED]]


def read_feature(feature: FeatureBaseline, raw: pd.Series) -> FeatureValues:
    """One feature's values from its raw column (as :func:`normalize` left it)."""
    rows = len(raw)
    read = read_values(raw.to_frame(feature.name), [feature.column_profile()])[feature.name]
    # "None"/"NA" are missing where they cannot be a value (every typed role but text categories)
    typed = feature.dtype != "categorical" or feature.role == "datetime"
    soft = soft_missing(raw) if typed else pd.Series(False, index=raw.index)
    present_before = raw.notna() & ~soft
    # what the role could not read: present but not a finite number, an unreadable date, a bad boolean
    if feature.dtype == "numeric":
        numbers = pd.to_numeric(read, errors="coerce").astype(float)
        finite = pd.Series(np.isfinite(numbers.to_numpy()), index=numbers.index)
        wrong = read.notna() & ~finite
        ok = read.notna() & ~wrong
        values: np.ndarray | pd.Series = (
            numbers[ok].to_numpy(dtype=float) if feature.role == "numeric" else category_text(numbers[ok])
        )
    elif feature.dtype == "boolean":
        if pd.api.types.is_bool_dtype(raw):
            wrong = pd.Series(False, index=raw.index)
        else:
            lowered = raw.astype(str).str.lower()
            wrong = present_before & ~lowered.isin(TRUE_TOKENS | FALSE_TOKENS)
        ok = read.notna() & present_before & ~wrong
        values = category_text(read[ok])
    else:
        wrong = present_before & read.isna() if feature.role == "datetime" else pd.Series(False, index=raw.index)
        ok = read.notna() & ~wrong
        values = category_text(read[ok]) if feature.role in ("categorical", "boolean") else read[ok]
    type_errors = int(wrong.sum())
    return FeatureValues(
        name=feature.name,
        rows=rows,
        values=values,
        missing=int(rows - int(ok.sum()) - type_errors),
        type_errors=type_errors,
        type_error_examples=_examples(raw, wrong) if type_errors else [],
    )


def monitored_data(frame: pd.DataFrame, baseline: Baseline) -> MonitoredData:
    """Every baseline feature's values in ``frame`` and the columns it lacks or has beyond the baseline's."""
    data = MonitoredData(rows=len(frame))
    names = set(baseline.feature_names)
    known = names | set(baseline.other_columns)
    data.unseen_columns = sorted(str(c) for c in frame.columns if c not in known)
    for feature in baseline.features:
        if feature.name not in frame.columns:
            data.missing_columns.append(feature.name)
            data.features[feature.name] = FeatureValues(name=feature.name, rows=len(frame), column_present=False)
        else:
            data.features[feature.name] = read_feature(feature, frame[feature.name])
    return data
