"""SageMaker scikit-learn serving functions for the models ``train.py`` writes (every built-in algorithm).

The scikit-learn serving container imports this module and calls, per request,
``model_fn(model_dir)`` once, then ``input_fn`` -> ``predict_fn`` -> ``output_fn``.

Requests:

* ``application/json``: ``{"instances": [{"feature": value, ...}, ...]}`` or a bare list of such objects.
  A record must carry every feature column (``null`` is a missing value and is imputed like in training);
  extra fields are ignored.
* ``text/csv``: a header row naming the columns is required (the model looks columns up by name, so a
  headerless CSV could silently mis-assign them), then one row per instance; an empty cell is missing.
* ``application/jsonlines``: one JSON object of feature: value per line (what SageMaker Batch Transform sends
  with ``SplitType=Line``: a ``MultiRecord`` mini-batch is several lines; blank lines are skipped). Each line
  names its own columns, so no header is needed, and the values keep their JSON types as in a JSON request.

Responses: ``application/json`` ``{"predictions": [...]}`` (class labels as strings for classification,
floats for regression), ``text/csv`` with one prediction per line, or ``application/jsonlines`` with one
``{"prediction": ...}`` line per instance, in order (Batch Transform's ``AssembleWith=Line`` then writes one
output line per input line).

Each feature's values are converted by its role exactly as in training (``stepml_tabular.columns``), then
the saved pipeline predicts. ``predict_records(bundle, records)`` is what the local endpoint stand-in calls
(and ``predict_fn``, so the SageMaker container takes it too): for a gradient-boosting or linear model of
numeric and categorical features it takes the fast path (``stepml_tabular.fast_path``), which checks itself
against the pipeline when the model loads, so predictions are the pipeline's (a linear regression's within
1e-9 relative: the pipeline may multiply a sparse matrix, which sums in another order).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

# stepml_tabular lives beside this file: the container and `python train.py` put this folder on sys.path,
# an import as ``training.inference`` (tests) does not. The pickled model refers to stepml_tabular by that
# top-level name, so it must import as such everywhere.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from stepml_tabular.columns import serving_frame  # noqa: E402
from stepml_tabular.fast_path import (  # noqa: E402
    FOREST_MAX_ROWS,
    OPENMP_KEY,
    Plan,
    build_plan,
    openmp_controller,
    plan_rows,
    threads,
)

JSON = "application/json"
CSV = "text/csv"
JSON_LINES = "application/jsonlines"
# Other names clients use for JSON Lines; SageMaker's own examples use application/jsonlines.
_JSON_LINES_ALIASES = frozenset({JSON_LINES, "application/jsonl", "application/x-jsonlines", "application/json-lines"})
SUPPORTED_CONTENT_TYPES = (JSON, CSV, JSON_LINES)
# json.dumps's own string encoder (C): what it writes for a str with ensure_ascii, without the call's overhead.
_encode_str = json.encoder.encode_basestring_ascii
# Key under which predict_records caches its plan in the bundle dict model_fn returns.
_PLAN_KEY = "_fast_plan"
_ABSENT_ATTR = "stepml_absent_fields"


# --- model_fn ----------------------------------------------------------------------------------------


def model_fn(model_dir: str) -> dict[str, Any]:
    """Load the bundle ``train.py`` saved as ``model.joblib``."""
    path = os.path.join(model_dir, "model.joblib")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model.joblib in {model_dir}: {sorted(os.listdir(model_dir))}")
    bundle = joblib.load(path)
    required = ("pipeline", "feature_columns", "feature_kinds", "problem_type", "class_labels")
    if not isinstance(bundle, dict) or any(k not in bundle for k in required):
        raise ValueError(f"{path} is not a stepml model bundle (expected a dict with keys {list(required)})")
    trained_with = bundle.get("sklearn_version")
    if trained_with and trained_with != sklearn.__version__:
        # Pickled scikit-learn models are only guaranteed to load in the version that saved them.
        warnings.warn(
            f"model trained with scikit-learn {trained_with}, serving with {sklearn.__version__}",
            stacklevel=2,
        )
    bundle[OPENMP_KEY] = openmp_controller()
    bundle[_PLAN_KEY] = build_plan(bundle)
    return bundle


# --- input_fn / output_fn ----------------------------------------------------------------------------


def _media_type(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return JSON_LINES if media in _JSON_LINES_ALIASES else media


def _text(body: str | bytes | bytearray) -> str:
    if isinstance(body, (bytes, bytearray)):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"request body is not UTF-8 text: {exc}") from exc
    return body


def _records_frame(records: list[Any]) -> pd.DataFrame:
    """A frame from JSON records; fields some records lack are noted so predict_fn can name the row."""
    first = records[0] if records else None
    keys = tuple(first) if type(first) is dict else ()
    if keys and all(type(record) is dict and tuple(record) == keys for record in records):
        # Every record has the same fields in the same order (a batch transform's lines always do): the columns
        # are the records' values transposed, and nothing is absent. Lengths are equal by the check above (no
        # strict=, which Python 3.9 lacks).
        transposed = zip(*(tuple(record.values()) for record in records))  # noqa: B905
        series = {c: pd.Series(list(v), dtype=object) for c, v in zip(keys, transposed)}  # noqa: B905
        frame = pd.DataFrame(series, columns=list(keys))
        frame.attrs[_ABSENT_ATTR] = {}
        return frame
    columns: dict[str, None] = {}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"instance {index} must be a JSON object of feature: value, got {record!r:.100}")
        columns.update(dict.fromkeys(record))
    absent: dict[str, list[int]] = {}
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for index, record in enumerate(records):
        for column in columns:
            if column in record:
                data[column].append(record[column])
            else:
                data[column].append(None)
                absent.setdefault(column, []).append(index)
    frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in data.items()}, columns=list(columns))
    frame.attrs[_ABSENT_ATTR] = absent
    return frame


def _json_lines(text: str) -> list[Any]:
    """The records of a JSON Lines body, one object per non-blank line (errors name the line, 1-based).

    Each line is parsed on its own: joining them into one JSON array would be faster, but a line holding two
    values next to one split over two lines would parse into as many records, silently shifted."""
    loads = json.loads
    try:
        records = [loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                if line.strip():
                    loads(line)
            except ValueError as exc:
                raise ValueError(f"line {number} of the application/jsonlines body is not valid JSON: {exc}") from exc
        raise
    if not records:
        raise ValueError("the application/jsonlines body has no records")
    return records


def _json_value(value: Any) -> str:
    """``json.dumps(value)``, quicker for what predictions are (a label, a finite float)."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


def input_fn(request_body: str | bytes, content_type: str) -> pd.DataFrame:
    """Deserialize a request into a DataFrame (JSON records, JSON Lines, or CSV with a header row)."""
    media = _media_type(content_type)
    if media not in SUPPORTED_CONTENT_TYPES:
        raise ValueError(f"unsupported content type {content_type!r}; use one of {list(SUPPORTED_CONTENT_TYPES)}")
    text = _text(request_body)
    if not text.strip():
        raise ValueError("request body is empty")
    if media == CSV:
        # dtype=object keeps cells as written ("007" stays "007"); predict_fn converts per feature kind.
        try:
            return pd.read_csv(io.StringIO(text), dtype=object)
        except ValueError as exc:
            raise ValueError(f"cannot parse the text/csv body (a header row is required): {exc}") from exc
    if media == JSON_LINES:
        return _records_frame(_json_lines(text))
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc
    if isinstance(payload, Mapping):
        if "instances" not in payload:
            raise ValueError(f'JSON body must be {{"instances": [...]}} or a list; got keys {sorted(payload)}')
        payload = payload["instances"]
    if not isinstance(payload, list):
        raise ValueError(f"instances must be a list of objects, got {type(payload).__name__}")
    if not payload:
        raise ValueError("instances is empty: nothing to predict")
    return _records_frame(payload)


def output_fn(prediction: list[Any], accept: str | None) -> tuple[str, str]:
    """Serialize predictions: ``application/json`` (default), ``text/csv`` (one per line) or
    ``application/jsonlines`` (one ``{"prediction": ...}`` object per line, every line ended by a newline)."""
    media = _media_type(accept)
    if media in ("", "*/*", JSON, "application/*"):
        return json.dumps({"predictions": list(prediction)}), JSON
    if media == CSV:
        return "".join(f"{p}\n" for p in prediction), CSV
    if media == JSON_LINES:
        # the same text json.dumps({"prediction": p}) gives, a line each
        return "".join(['{"prediction": ' + _json_value(p) + "}\n" for p in prediction]), JSON_LINES
    raise ValueError(f"unsupported accept type {accept!r}; use one of {list(SUPPORTED_CONTENT_TYPES)}")


# --- predict_fn --------------------------------------------------------------------------------------


def _check_columns(data: pd.DataFrame, bundle: dict[str, Any]) -> None:
    """Every feature column is in the frame, and every JSON record carried it (named by row if not)."""
    features: list[str] = bundle["feature_columns"]
    missing = [c for c in features if c not in data.columns]
    if missing:
        raise ValueError(
            f"row 0: missing feature column(s) {missing} (every row needs all of {features}; extra columns are ignored)"
        )
    absent: dict[str, list[int]] = data.attrs.get(_ABSENT_ATTR) or {}
    lacking = {c: absent[c] for c in features if absent.get(c)}
    if lacking:
        first = min(rows[0] for rows in lacking.values())
        names = [c for c, rows in lacking.items() if first in rows]
        raise ValueError(f"row {first}: missing feature column(s) {names} (every row needs all of {features})")


def _prepare_frame(data: pd.DataFrame, bundle: dict[str, Any]) -> pd.DataFrame:
    """Check every feature column is there, then convert each by its role as in training."""
    _check_columns(data, bundle)
    return serving_frame(data, bundle["feature_columns"], bundle["feature_kinds"])


def _to_list(predictions: np.ndarray, bundle: dict[str, Any]) -> list[Any]:
    if bundle["problem_type"] == "regression":
        return [float(p) for p in predictions]
    return [str(p) for p in predictions]


def predict_fn(data: pd.DataFrame | Sequence[Mapping[str, Any]], model: dict[str, Any]) -> list[Any]:
    """Predict for every row: class labels (str) or values (float), in input order."""
    if isinstance(data, (list, tuple)):
        return predict_records(model, data)
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"predict_fn expects a DataFrame or a list of records, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("no rows to predict")
    if _PLAN_KEY not in model:
        model[_PLAN_KEY] = build_plan(model)
    if model[_PLAN_KEY] is not None:
        # The fast path, as for records: the frame's values are converted by the same functions
        # (stepml_tabular.columns) and the plan was checked against the pipeline when the model loaded.
        # Milliseconds of pandas and ColumnTransformer per request saved in the SageMaker container too.
        _check_columns(data, model)
        features: list[str] = model["feature_columns"]
        # Column by column: for one row 8x faster than data[features].to_dict("records").
        columns = [data[column].tolist() for column in features]
        # Equal lengths by construction (one frame's columns); no strict=, which Python 3.9 lacks.
        records = [dict(zip(features, values)) for values in zip(*columns)]  # noqa: B905
        return predict_records(model, records)
    frame = _prepare_frame(data, model)
    with threads(model, len(frame)):
        return _to_list(model["pipeline"].predict(frame), model)


def predict_records(bundle: dict[str, Any], records: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Predict for a list of ``{feature: value}`` records (the local endpoint's fast path when the model has
    a plan, the pipeline otherwise)."""
    if not records:
        raise ValueError("no records to predict")
    features: list[str] = bundle["feature_columns"]
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"row {index}: a record must be an object of feature: value, got {record!r:.100}")
        missing = [c for c in features if c not in record]
        if missing:
            raise ValueError(f"row {index}: missing feature column(s) {missing} (every row needs all of {features})")
    if _PLAN_KEY not in bundle:
        bundle[_PLAN_KEY] = build_plan(bundle)
    plan: Plan | None = bundle[_PLAN_KEY]
    if plan is None:
        return predict_fn(pd.DataFrame.from_records(list(records), columns=features), bundle)
    rows = plan_rows(plan, records)
    if plan.forest is not None and len(rows) <= FOREST_MAX_ROWS:
        return _to_list(plan.forest.predict(rows), bundle)
    if plan.linear is not None:
        return _to_list(plan.linear.predict(rows), bundle)
    with threads(bundle, len(rows)):
        return _to_list(plan.estimator.predict(rows), bundle)
