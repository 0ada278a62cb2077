"""Column roles -> model features, and the value coercion training and serving share.

A feature column has one role (``columns.json`` in the train channel gives them; without it a column is
``numeric`` when pandas read it as numbers, else ``categorical``):

* ``numeric``: float; median-imputed (and scaled for the linear families);
* ``categorical``: the value as text (``_as_label``), most-frequent-imputed, one-hot with rare values
  grouped beyond ``MAX_CATEGORIES``;
* ``boolean``: ``true``/``false`` (also yes/no, 1/0, JSON booleans) as 1.0/0.0;
* ``datetime``: ISO 8601 text parsed into year, month, day, day of week, day of year, hour (when the
  training values carry a time of day) and a timestamp in days since 1970 (``DatetimeFeatures``);
* ``text``: TF-IDF of words (1-2 grams) and, for the ``text`` family, character n-grams.

``coerce_column`` is the one conversion of a role's raw values: training (``prepare_features``) and serving
(``serving_frame``) both call it, so a value becomes the same feature in both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from stepml_tabular.errors import TrainingDataError

ROLES = ("numeric", "categorical", "boolean", "datetime", "text")
COLUMNS_FILE = "columns.json"
COLUMNS_FORMAT = 1
# Beyond this many distinct values a categorical column's rare values share one one-hot column, so an
# ID-like column cannot blow the dense matrix HistGradientBoosting needs up to rows x distinct values.
MAX_CATEGORIES = 64
# Gradient boosting sees a text column as its most frequent words' TF-IDF (dense: the trees need it).
BOOSTING_TEXT_FEATURES = 200
# A word must appear in this many rows to count, once there are enough rows to say (fewer: every word).
TEXT_MIN_DF = 2
TEXT_MIN_DF_ROWS = 100
_PLAIN_NUMBERS = frozenset({int, float})
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_PANDAS_2 = int(pd.__version__.split(".")[0]) >= 2
# Datetime part -> pandas accessor (the underscored names exist since pandas 1.1; the others are deprecated).
_ACCESSORS = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}


# --- values ------------------------------------------------------------------------------------------


def _as_label(value: Any) -> Any:
    """A categorical value or class label as str; missing stays NaN (what SimpleImputer looks for)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return np.nan
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return np.nan
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)


def _as_number(value: Any, column: str, row: int) -> float:
    """A numeric feature as float; None, NaN and empty strings are missing (NaN)."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {row}: feature {column!r} must be a number, got {value!r}") from None


def _as_bool(value: Any, column: str, row: int) -> float:
    """A boolean feature as 1.0/0.0; missing is NaN."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            return math.nan
        if value in (0, 1):
            return float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return math.nan
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
    raise ValueError(f"row {row}: feature {column!r} is boolean: expected true/false, got {value!r}")


def coerce_column(values: list[Any], role: str, column: str) -> np.ndarray:
    """A role's raw values as the pipeline takes them: float64 (numeric, boolean) or str/NaN objects."""
    if role == "numeric":
        if set(map(type, values)) <= _PLAIN_NUMBERS:
            # ints and floats only (JSON numbers, a batch's values): what _as_number gives each, in one call
            return np.array(values, dtype="float64")
        return np.array([_as_number(v, column, i) for i, v in enumerate(values)], dtype="float64")
    if role == "boolean":
        return np.array([_as_bool(v, column, i) for i, v in enumerate(values)], dtype="float64")
    if role in ("categorical", "datetime", "text"):
        return np.array([_as_label(v) for v in values], dtype=object)
    raise ValueError(f"feature {column!r} has an unknown role {role!r}; roles: {', '.join(ROLES)}")


def prepare_features(
    frame: pd.DataFrame, feature_columns: list[str], kinds: dict[str, str], split: str
) -> pd.DataFrame:
    """The feature columns of a training split in training order, each converted by its role."""
    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{split} split is missing feature column(s) {missing}")
    columns: dict[str, Any] = {}
    for column in feature_columns:
        series = frame[column]
        if kinds[column] == "numeric":
            if series.dtype == np.float64:  # read as floats (NaN is the gap): the same array, no copy
                columns[column] = series.to_numpy()
                continue
            # Vectorised for large splits; the same values as _as_number for what read_csv gives.
            converted = pd.to_numeric(series, errors="coerce")
            bad = converted.isna() & series.notna()
            if bad.any():
                row = bad.to_numpy().nonzero()[0][0]
                raise TrainingDataError(
                    f"{split} split: column {column!r} is numeric in the train split but row {row} "
                    f"holds {series.iloc[row]!r}"
                )
            if converted.dtype == np.float64:  # read as floats: the same array, no copy (NaN is the gap)
                columns[column] = converted.to_numpy()
            else:
                columns[column] = converted.to_numpy(dtype="float64", na_value=np.nan)
            continue
        try:
            columns[column] = coerce_column(series.tolist(), kinds[column], column)
        except ValueError as exc:
            raise TrainingDataError(f"{split} split: {exc}") from exc
    # copy=False: a numeric column read as float64 (stepml_tabular.channels) is used as it is, not copied.
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)), columns=feature_columns, copy=False)


def serving_frame(records: pd.DataFrame, feature_columns: list[str], kinds: dict[str, str]) -> pd.DataFrame:
    """A request's rows as the pipeline takes them (ValueError names the row and feature of a bad value)."""
    columns = {c: coerce_column(records[c].tolist(), kinds[c], c) for c in feature_columns}
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)), columns=feature_columns)


# --- roles -------------------------------------------------------------------------------------------


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype))


def feature_kinds(frame: pd.DataFrame, feature_columns: list[str]) -> dict[str, str]:
    """Roles without ``columns.json``: ``numeric`` for numeric dtypes, ``categorical`` for everything else."""
    return {c: "numeric" if _is_numeric(frame[c]) else "categorical" for c in feature_columns}


def read_columns_file(directory: Path) -> dict[str, Any] | None:
    """``columns.json`` of a channel directory (the roles Preprocess chose), checked; None if absent."""
    path = directory / COLUMNS_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise TrainingDataError(f"{path.name} in {directory} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != COLUMNS_FORMAT:
        raise TrainingDataError(f'{path.name} in {directory}: expected an object with "format": {COLUMNS_FORMAT}')
    roles = document.get("roles")
    if not isinstance(roles, dict) or not roles:
        raise TrainingDataError(f'{path.name} in {directory}: "roles" must be an object of column: role')
    bad = {str(c): r for c, r in roles.items() if r not in ROLES}
    if bad:
        raise TrainingDataError(f"{path.name} in {directory}: unknown role(s) {bad}; roles: {', '.join(ROLES)}")
    return document


def read_csv_by_roles(path: Path, roles: dict[str, str] | None) -> pd.DataFrame:
    """A split's CSV. With roles, non-numeric columns are read as text as written ("007" stays "007", a
    literal "NA" or "None" is a value): only an empty cell is missing, as Preprocess writes them."""
    if not roles:
        return pd.read_csv(path)
    text_columns = {c: str for c, r in roles.items() if r != "numeric"}
    return pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=[""])


# --- transformers (pickled with the model: serving imports this module) ------------------------------


def parse_datetimes(values: Any) -> pd.Series:
    """ISO 8601 text -> naive UTC timestamps; anything else (and missing) -> NaT."""
    texts = pd.Series([v.strip() if isinstance(v, str) and v.strip() else None for v in values], dtype=object)
    # pandas 2 guesses one format from the first value (a date would make every datetime NaT); "ISO8601"
    # takes both. pandas 1.x (the SageMaker image's) parses each ISO value on its own already.
    options: dict[str, Any] = {"format": "ISO8601"} if _PANDAS_2 else {}
    parsed = pd.to_datetime(texts, errors="coerce", utc=True, **options)
    return parsed.dt.tz_convert(None)


class DatetimeFeatures(BaseEstimator, TransformerMixin):
    """Datetime columns -> year, month, day, day of week, day of year, [hour], days since 1970."""

    def fit(self, x: Any, y: Any = None) -> DatetimeFeatures:
        frame = pd.DataFrame(x)
        self.columns_ = [str(c) for c in frame.columns]
        # The hour only when some training value has a time of day: dates alone would give a constant 0.
        self.with_hour_ = []
        for column in frame.columns:
            parsed = parse_datetimes(frame[column].tolist()).dropna()
            self.with_hour_.append(bool(len(parsed)) and bool((parsed != parsed.dt.normalize()).any()))
        self.n_features_in_ = frame.shape[1]
        return self

    def _parts(self, index: int) -> list[str]:
        parts = ["year", "month", "day", "dayofweek", "dayofyear"]
        return parts + (["hour"] if self.with_hour_[index] else []) + ["days"]

    def transform(self, x: Any) -> np.ndarray:
        frame = pd.DataFrame(x)
        blocks = []
        for index in range(frame.shape[1]):
            parsed = parse_datetimes(frame.iloc[:, index].tolist())
            epoch_days = (parsed - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
            for part in self._parts(index):
                values = epoch_days if part == "days" else getattr(parsed.dt, _ACCESSORS.get(part, part))
                blocks.append(values.to_numpy(dtype="float64", na_value=np.nan))
        return np.column_stack(blocks) if blocks else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [f"{c}__{p}" for i, c in enumerate(self.columns_) for p in self._parts(i)]
        return np.asarray(names, dtype=object)


class TextColumn(BaseEstimator, TransformerMixin):
    """One text column -> a 1-D sequence of strings (missing -> ""), what a TF-IDF vectoriser takes."""

    def fit(self, x: Any, y: Any = None) -> TextColumn:
        return self

    def transform(self, x: Any) -> list[str]:
        values = pd.DataFrame(x).iloc[:, 0].tolist()
        return ["" if _as_label(v) is np.nan else str(v) for v in values]


def _words(n_rows: int, max_features: int | None) -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=(1, 2) if max_features is None else (1, 1),
        sublinear_tf=True,
        min_df=TEXT_MIN_DF if n_rows >= TEXT_MIN_DF_ROWS else 1,
        max_features=max_features,
        dtype=np.float64,
    )


def _text_pipeline(family: str, n_rows: int) -> Pipeline:
    if family == "gradient-boosting":
        return Pipeline([("text", TextColumn()), ("tfidf", _words(n_rows, BOOSTING_TEXT_FEATURES))])
    if family == "linear":
        return Pipeline([("text", TextColumn()), ("tfidf", _words(n_rows, None))])
    characters = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 5),
        sublinear_tf=True,
        min_df=TEXT_MIN_DF if n_rows >= TEXT_MIN_DF_ROWS else 1,
        dtype=np.float64,
    )
    union = FeatureUnion([("words", _words(n_rows, None)), ("characters", characters)])
    return Pipeline([("text", TextColumn()), ("tfidf", union)])


def build_preprocessor(kinds: dict[str, str], family: str, n_rows: int) -> ColumnTransformer:
    """The ColumnTransformer of a family: ``gradient-boosting`` (dense, unscaled: what
    HistGradientBoosting takes and the fast path reads), ``linear`` or ``text`` (scaled, sparse)."""
    by_role = {role: [c for c, k in kinds.items() if k == role] for role in ROLES}
    boosting = family == "gradient-boosting"
    transformers: list[tuple[str, Any, Any]] = []
    if by_role["numeric"]:
        numeric: Any = SimpleImputer(strategy="median")
        if not boosting:
            numeric = Pipeline([("impute", numeric), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, by_role["numeric"]))
    if by_role["categorical"]:
        encoder = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                (
                    "onehot",
                    OneHotEncoder(handle_unknown="ignore", sparse_output=not boosting, max_categories=MAX_CATEGORIES),
                ),
            ]
        )
        transformers.append(("categorical", encoder, by_role["categorical"]))
    if by_role["boolean"]:
        transformers.append(("boolean", SimpleImputer(strategy="most_frequent"), by_role["boolean"]))
    if by_role["datetime"]:
        steps: list[tuple[str, Any]] = [("parts", DatetimeFeatures()), ("impute", SimpleImputer(strategy="median"))]
        if not boosting:
            steps.append(("scale", StandardScaler()))
        transformers.append(("datetime", Pipeline(steps), by_role["datetime"]))
    for column in by_role["text"]:
        transformers.append((f"text:{column}", _text_pipeline(family, n_rows), [column]))
    # Dense for HistGradientBoosting, which takes no sparse input; TF-IDF keeps the others sparse.
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0 if boosting else 0.3)
