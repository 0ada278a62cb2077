"""The training baseline: per-feature statistics of the data a model was trained on (``baseline.json``).

Preprocess computes it from the train split it writes (the rows the model is fitted on, values read as
training reads them) and stores it beside the splits, at ``processed/<run>/baseline.json``; its URI travels in
``PreprocessResult.baseline_uri`` and the registry record. The pipeline computes it, not the trainer, so a
user's own trainer gets monitoring too. The Monitor function compares new data with it
(:mod:`pipeline_core.stages.drift`).

Per feature, by role:

* numeric: count, missing rate, min/max/mean/std, bin edges (the train data's deciles, duplicates removed:
  a feature with few distinct values gets fewer bins) with the share of values in each bin, and the
  percentiles 0..100 (the Kolmogorov-Smirnov test reads the baseline's distribution from them);
* categorical and boolean: the share of each category among present values, the most frequent
  :data:`MAX_CATEGORIES` kept and the rest pooled in ``other``;
* datetime and text: count and missing rate only (their distributions are not compared: dates move on by
  nature, free text has no categories to count).

The document is deterministic (no timestamps, sorted where order is free), so a retried Preprocess writes
the same bytes and writes nothing new. Pure: pandas and numpy only, no AWS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.models import ColumnProfile, DataProfile, Role

BASELINE_FORMAT = 1
BASELINE_NAME = "baseline.json"
# Deciles: ten bins is the usual choice for the population stability index (fewer hide a shift inside a
# bin, more leave bins with a handful of rows in a window of a few hundred requests).
DEFAULT_BINS = 10
# Categories kept per feature; past this the rest is one "other" bucket (a high-cardinality column would
# otherwise make a baseline of megabytes and bins of a row or two).
MAX_CATEGORIES = 30
# Percentiles 0, 1, ..., 100 of numeric features: the KS statistic read from them is exact to 0.01.
QUANTILE_POINTS = 101

CompareKind = Literal["numeric", "categorical", "none"]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericStats(Frozen):
    """A numeric feature's distribution over its present values."""

    min: float
    max: float
    mean: float
    std: float
    # interior bin edges, increasing: bin 0 is (-inf, edges[0]], bin i is (edges[i-1], edges[i]], the last
    # (edges[-1], +inf); len(proportions) == len(edges) + 1
    edges: list[float]
    proportions: list[float]
    quantiles: list[float]  # percentiles 0..100 (inverted CDF: each is a value of the data)


class CategoricalStats(Frozen):
    """A categorical (or boolean) feature's category shares among its present values."""

    frequencies: dict[str, float]  # the most frequent MAX_CATEGORIES categories -> share
    other: float  # the share of every other category, pooled
    distinct: int  # distinct categories in the training data


class FeatureBaseline(Frozen):
    """One feature: how training read it and its statistics."""

    name: str
    role: Role  # numeric, categorical, boolean, datetime or text
    dtype: Literal["numeric", "categorical", "boolean"]  # how the dataset stores it (ColumnProfile.dtype)
    format: str | None = None  # a datetime feature's strptime format
    count: int  # rows
    missing: int  # rows without a value
    missing_rate: float
    numeric: NumericStats | None = None
    categorical: CategoricalStats | None = None

    @property
    def compare(self) -> CompareKind:
        """How its distribution is compared: on bins, on category shares, or not at all."""
        if self.numeric is not None:
            return "numeric"
        if self.categorical is not None:
            return "categorical"
        return "none"

    @property
    def present(self) -> int:
        return self.count - self.missing

    def column_profile(self) -> ColumnProfile:
        """The profile that reads new values the way training read this feature (column_roles.read_values)."""
        return ColumnProfile(
            name=self.name, dtype=self.dtype, role=self.role, reason="baseline", format=self.format, missing=0
        )


class Baseline(Frozen):
    """``baseline.json``: the schema and per-feature statistics of a model's training data."""

    format: int = BASELINE_FORMAT
    dataset_sha256: str
    target: str
    problem_type: str
    n_rows: int  # rows of the train split
    bins: int
    max_categories: int
    features: list[FeatureBaseline]
    # columns of the training file that are not features (target, identifiers, constants, excluded): a
    # file with them is not a schema violation
    other_columns: list[str] = Field(default_factory=list)

    def feature(self, name: str) -> FeatureBaseline:
        return next(f for f in self.features if f.name == name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


# --------------------------------------------------------------------------- shared value rules


def category_text(values: pd.Series) -> pd.Series:
    """Categories as canonical text, missing as None (object dtype): numbers without a needless ``.0`` (a
    numeric column read as categorical is stored as floats, ``3.0``, while a request may send ``3``),
    booleans as ``true``/``false``, anything else as its text."""
    present = values.notna()
    if pd.api.types.is_bool_dtype(values):
        texts = values[present].map({True: "true", False: "false"})
    elif pd.api.types.is_numeric_dtype(values):

        def text(value: float) -> str:
            return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)

        texts = values[present].astype(float).map(text)
    else:
        texts = values[present].map(str)
    result = pd.Series([None] * len(values), index=values.index, dtype=object)
    result[present] = texts.astype(object)
    return result


def bin_counts(edges: Sequence[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin of ``edges`` (right-closed: x in (edges[i-1], edges[i]])."""
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    return np.bincount(index, minlength=len(edges) + 1).astype(float)


def category_counts(frequencies: Iterable[str], values: pd.Series) -> tuple[dict[str, float], float]:
    """Counts of ``values`` (present, canonical text) per kept category, and of all other categories."""
    kept = list(frequencies)
    counts = values.value_counts()
    found = {name: float(counts.get(name, 0)) for name in kept}
    return found, float(counts.sum()) - sum(found.values())


# --------------------------------------------------------------------------- statistics


def numeric_stats(values: np.ndarray, bins: int = DEFAULT_BINS) -> NumericStats | None:
    """The statistics of finite ``values``; None when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    cuts = np.arange(1, bins) / bins  # (exact tenths: linspace's 0.30000000000000004 would pick the next value)
    edges = np.unique(np.quantile(values, cuts, method="inverted_cdf"))
    proportions = bin_counts(edges, values) / values.size
    quantiles = np.quantile(values, np.linspace(0, 1, QUANTILE_POINTS), method="inverted_cdf")
    return NumericStats(
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        edges=[float(e) for e in edges],
        proportions=[float(p) for p in proportions],
        quantiles=[float(q) for q in quantiles],
    )


def categorical_stats(values: pd.Series, max_categories: int = MAX_CATEGORIES) -> CategoricalStats | None:
    """Category shares of the present ``values`` (canonical text); None when there are none."""
    counts = values.dropna().value_counts()
    return categorical_stats_from_counts({str(k): int(v) for k, v in counts.items()}, max_categories)


def categorical_stats_from_counts(
    counts: Mapping[str, int], max_categories: int = MAX_CATEGORIES
) -> CategoricalStats | None:
    """:func:`categorical_stats` from each category's row count (summed over chunks by the streaming
    Preprocess); None when there are none."""
    counts = {name: count for name, count in counts.items() if count}
    if not counts:
        return None
    # most frequent first, ties by name: the same data always keeps the same categories
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[:max_categories]
    total = float(sum(counts.values()))
    frequencies = {name: float(count) / total for name, count in kept}
    return CategoricalStats(
        frequencies=frequencies,
        other=max(0.0, 1.0 - sum(frequencies.values())) if len(ranked) > len(kept) else 0.0,
        distinct=len(ranked),
    )


def compare_kind(role: str) -> CompareKind:
    """How a feature of ``role`` is compared."""
    if role == "numeric":
        return "numeric"
    if role in ("categorical", "boolean"):
        return "categorical"
    return "none"


def feature_baseline(
    column: ColumnProfile, values: pd.Series, bins: int = DEFAULT_BINS, max_categories: int = MAX_CATEGORIES
) -> FeatureBaseline:
    """One feature's baseline from its values as training reads them (floats for numeric, text otherwise)."""
    kind = compare_kind(column.role)
    numeric = categorical = None
    if kind == "numeric":
        numeric = numeric_stats(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), bins)
    elif kind == "categorical":
        categorical = categorical_stats(category_text(values), max_categories)
    return feature_of(column, len(values), int(values.isna().sum()), numeric, categorical)


def feature_of(
    column: ColumnProfile,
    count: int,
    missing: int,
    numeric: NumericStats | None,
    categorical: CategoricalStats | None,
) -> FeatureBaseline:
    """One feature's baseline from its statistics (however they were gathered: whole, or chunk by chunk)."""
    return FeatureBaseline(
        name=column.name,
        role=column.role,
        dtype=column.dtype,
        format=column.format,
        count=count,
        missing=missing,
        missing_rate=missing / count if count else 0.0,
        numeric=numeric,
        categorical=categorical,
    )


def build_baseline(
    train: pd.DataFrame,
    profile: DataProfile,
    dataset_sha256: str,
    bins: int = DEFAULT_BINS,
    max_categories: int = MAX_CATEGORIES,
) -> Baseline:
    """The baseline of the train split ``train`` (Preprocess's cleaned frame: features, then the target)."""
    by_name = {c.name: c for c in profile.columns}
    features = [feature_baseline(by_name[name], train[name], bins, max_categories) for name in profile.feature_columns]
    return baseline_of(features, profile, dataset_sha256, len(train), bins, max_categories)


def baseline_of(
    features: list[FeatureBaseline],
    profile: DataProfile,
    dataset_sha256: str,
    n_rows: int,
    bins: int = DEFAULT_BINS,
    max_categories: int = MAX_CATEGORIES,
) -> Baseline:
    """The baseline document of ``n_rows`` train rows from its features' baselines."""
    others = sorted(c.name for c in profile.columns if c.name not in set(profile.feature_columns))
    return Baseline(
        dataset_sha256=dataset_sha256,
        target=profile.target,
        problem_type=profile.problem_type,
        n_rows=n_rows,
        bins=bins,
        max_categories=max_categories,
        features=features,
        other_columns=others,
    )


def baseline_document(baseline: Baseline) -> bytes:
    """``baseline.json``'s bytes (stable for equal baselines)."""
    return (json.dumps(baseline.model_dump(mode="json"), indent=1, allow_nan=False) + "\n").encode("utf-8")


def read_baseline(data: bytes) -> Baseline:
    """A ``baseline.json`` document; ValueError for one of an unknown format."""
    document = json.loads(data)
    found = document.get("format") if isinstance(document, dict) else None
    if found != BASELINE_FORMAT:
        raise ValueError(f"not a stepml baseline of format {BASELINE_FORMAT} (its format: {found!r})")
    return Baseline.model_validate(document)
