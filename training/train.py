"""SageMaker script-mode training: a scikit-learn gradient-boosting pipeline on tabular CSV channels.

The SageMaker training toolkit copies this folder into the container and runs
``python train.py --target species --problem_type multiclass_classification ...``. The contract it follows
(docs/architecture.md, "Training contract"):

* hyperparameters arrive as ``--name value`` arguments (all strings) and as JSON in ``SM_HPS``; arguments win.
  ``sagemaker_*`` names (sagemaker_program, sagemaker_submit_directory, ...) belong to the toolkit and are
  ignored; any other unknown name is an error.
* ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``, ``SM_CHANNEL_TEST``: each a directory holding exactly one
  CSV with a header row, target column included.
* writes ``model.joblib`` + ``metadata.json`` to ``SM_MODEL_DIR`` and ``metrics.json`` +
  ``test_predictions.csv`` to ``SM_OUTPUT_DATA_DIR``.
* on any error writes the reason to ``$SM_OUTPUT_DIR/failure`` and exits non-zero: SageMaker reports that
  file's content as the job's FailureReason.

The file is self-contained (the container copies only this folder) and must run on the SageMaker
scikit-learn images (Python 3.10, scikit-learn 1.2 or newer), hence ``from __future__ import annotations``.

Classification labels are treated as strings: a target coded 0/1 becomes the classes "0" and "1", and
integral floats are written without the ".0" ("1.0" -> "1"), so the same label reads the same from every
split. Predictions come back as those strings.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

PROBLEM_TYPES = ("binary_classification", "multiclass_classification", "regression")
PRIMARY_METRIC = {
    "binary_classification": "f1_macro",
    "multiclass_classification": "f1_macro",
    "regression": "r2",
}
# Defaults chosen for small tabular data: HistGradientBoosting's own defaults, spelled out so metadata.json
# records what was used.
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 100,
    "max_depth": None,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
}
# Beyond this many distinct values a categorical column's rare values share one one-hot column, so an
# ID-like column cannot blow the dense matrix HistGradientBoosting needs up to rows x distinct values.
MAX_CATEGORIES = 64
# Up to this many rows, fit and predict on one OpenMP thread (see _openmp_threads).
SINGLE_THREAD_MAX_ROWS = 50_000
DEFAULT_SEED = 42
ALLOWED_HYPERPARAMETERS = ("target", "problem_type", "seed", *DEFAULT_PARAMS)
CHANNELS = ("train", "validation", "test")
BUNDLE_FORMAT = 1


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown or has a bad value."""


class TrainingDataError(ValueError):
    """A channel or its CSV does not fit the contract (missing file, column, label, ...)."""


@dataclass
class TrainingOutcome:
    """What ``train`` produces: the model bundle, the metrics document and the test predictions."""

    bundle: dict[str, Any]
    metrics: dict[str, Any]
    test_predictions: pd.DataFrame = field(repr=False)


# --- hyperparameters ---------------------------------------------------------------------------------


def _unquote(value: str) -> str:
    # The SageMaker Python SDK JSON-encodes every hyperparameter ('"species"'); accept both spellings.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return _unquote(value)
    return json.dumps(value) if isinstance(value, bool) else str(value)


def parse_cli_hyperparameters(argv: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` pairs as a dict of strings."""
    result: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        # The toolkit writes one-letter names as "-n value", longer ones as "--name value".
        name = arg[2:] if arg.startswith("--") else arg[1:] if arg.startswith("-") else ""
        if not name or name.startswith("-"):
            raise HyperparameterError(f"unexpected argument {arg!r}: expected --name value pairs")
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
        else:
            raise HyperparameterError(f"hyperparameter {name!r} has no value")
        result[name.replace("-", "_")] = _unquote(value)
    return result


def merge_hyperparameters(cli: dict[str, str], sm_hps: str | None) -> dict[str, str]:
    """Hyperparameters from ``SM_HPS`` (JSON object) overridden by the command line ones."""
    merged: dict[str, str] = {}
    if sm_hps and sm_hps.strip():
        try:
            decoded = json.loads(sm_hps)
        except ValueError as exc:
            raise HyperparameterError(f"SM_HPS is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise HyperparameterError(f"SM_HPS must be a JSON object, got {type(decoded).__name__}")
        merged.update({str(k).replace("-", "_"): _as_text(v) for k, v in decoded.items()})
    merged.update(cli)
    return merged


def _parse_number(name: str, raw: str, kind: type, *, minimum: float, nullable: bool = False) -> Any:
    text = raw.strip()
    if nullable and text.lower() in ("none", "null", ""):
        return None
    number: float | int
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if kind is int and math.isfinite(number):
        # "100" and "100.0" (a JSON number that went through a float) are both accepted; "2.5" is not.
        number = int(number) if float(number).is_integer() else math.nan
    if math.isnan(number):
        allowed = " or None" if nullable else ""
        raise HyperparameterError(f"hyperparameter {name}={raw!r} is not a valid {kind.__name__}{allowed}")
    if not math.isfinite(number) or number < minimum:
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be a finite number >= {minimum}")
    return number


@dataclass(frozen=True)
class Hyperparameters:
    """Validated hyperparameters: what ``train`` needs besides the data."""

    target: str
    problem_type: str
    seed: int
    params: dict[str, Any]


def validate_hyperparameters(raw: dict[str, str]) -> Hyperparameters:
    """Check names and values; ``sagemaker_*`` names are the toolkit's and are ignored."""
    unknown = sorted(k for k in raw if k not in ALLOWED_HYPERPARAMETERS and not k.startswith("sagemaker_"))
    if unknown:
        raise HyperparameterError(f"unknown hyperparameter(s) {unknown}; allowed: {', '.join(ALLOWED_HYPERPARAMETERS)}")
    target = raw.get("target", "").strip()
    if not target:
        raise HyperparameterError("hyperparameter 'target' is required (the name of the target column)")
    problem_type = raw.get("problem_type", "").strip()
    if problem_type not in PROBLEM_TYPES:
        raise HyperparameterError(
            f"hyperparameter problem_type={problem_type!r} must be one of {', '.join(PROBLEM_TYPES)}"
        )
    seed = DEFAULT_SEED
    if "seed" in raw:
        seed = _parse_number("seed", raw["seed"], int, minimum=0)
        if seed >= 2**32:  # numpy's RandomState accepts 0 <= seed < 2**32
            raise HyperparameterError(f"hyperparameter seed={raw['seed']!r} must be below 2**32")
    params = dict(DEFAULT_PARAMS)
    for name, kind, minimum, nullable in (
        ("learning_rate", float, 0.0, False),
        ("max_iter", int, 1, False),
        ("max_depth", int, 1, True),
        ("max_leaf_nodes", int, 2, True),
        ("min_samples_leaf", int, 1, False),
        ("l2_regularization", float, 0.0, False),
    ):
        if name in raw:
            params[name] = _parse_number(name, raw[name], kind, minimum=minimum, nullable=nullable)
    if params["learning_rate"] <= 0:
        raise HyperparameterError(f"hyperparameter learning_rate={raw['learning_rate']!r} must be > 0")
    return Hyperparameters(target=target, problem_type=problem_type, seed=seed, params=params)


# --- data --------------------------------------------------------------------------------------------


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


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype))


def feature_kinds(frame: pd.DataFrame, feature_columns: list[str]) -> dict[str, str]:
    """``numeric`` for numeric dtypes, ``categorical`` for everything else (strings, booleans, mixed)."""
    return {c: "numeric" if _is_numeric(frame[c]) else "categorical" for c in feature_columns}


def prepare_features(
    frame: pd.DataFrame, feature_columns: list[str], kinds: dict[str, str], split: str
) -> pd.DataFrame:
    """The feature columns in training order and dtypes: numeric as float64, categorical as str objects."""
    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{split} split is missing feature column(s) {missing}")
    columns: dict[str, Any] = {}
    for column in feature_columns:
        series = frame[column]
        if kinds[column] == "numeric":
            converted = pd.to_numeric(series, errors="coerce")
            bad = converted.isna() & series.notna()
            if bad.any():
                row = bad.to_numpy().nonzero()[0][0]
                raise TrainingDataError(
                    f"{split} split: column {column!r} is numeric in the train split but row {row} "
                    f"holds {series.iloc[row]!r}"
                )
            columns[column] = converted.to_numpy(dtype="float64", na_value=np.nan)
        else:
            columns[column] = np.array([_as_label(v) for v in series.tolist()], dtype=object)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)), columns=feature_columns)


def prepare_target(frame: pd.DataFrame, target: str, problem_type: str, split: str) -> np.ndarray:
    """The target as str labels (classification) or float64 (regression); missing values are an error."""
    if target not in frame.columns:
        raise TrainingDataError(
            f"target column {target!r} is not in the {split} split; its columns are {list(frame.columns)}"
        )
    series = frame[target]
    if problem_type == "regression":
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            rows = bad.nonzero()[0][:5].tolist()
            raise TrainingDataError(
                f"{split} split: regression target {target!r} is missing or not numeric in "
                f"{int(bad.sum())} row(s), first rows {rows} (e.g. {series.iloc[rows[0]]!r})"
            )
        result: np.ndarray = values.to_numpy(dtype="float64")
        return result
    labels = np.array([_as_label(v) for v in series.tolist()], dtype=object)
    missing = pd.isna(labels)
    if missing.any():
        rows = missing.nonzero()[0][:5].tolist()
        raise TrainingDataError(
            f"{split} split: target {target!r} is missing in {int(missing.sum())} row(s), first rows {rows}"
        )
    return labels


# Early stopping on a held-out 15 % of the training rows: on small tabular data it stops well before
# max_iter (iris: 25 of 100 iterations) with equal or better test scores, and fewer trees make every
# prediction faster (a 1-row predict walks each tree once). Below this many rows the held-out part would
# be too small to judge by, so all max_iter iterations are used.
EARLY_STOPPING_MIN_ROWS = 50
EARLY_STOPPING = {"n_iter_no_change": 10, "validation_fraction": 0.15}


def build_pipeline(
    kinds: dict[str, str], problem_type: str, seed: int, params: dict[str, Any], n_train: int = 0
) -> Pipeline:
    """Imputation + one-hot encoding in a ColumnTransformer, then HistGradientBoosting."""
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", SimpleImputer(strategy="median"), numeric))
    if categorical:
        encoder = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                # Dense output: HistGradientBoosting does not take sparse input.
                (
                    "onehot",
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False, max_categories=MAX_CATEGORIES),
                ),
            ]
        )
        transformers.append(("categorical", encoder, categorical))
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    estimator_class = HistGradientBoostingRegressor if problem_type == "regression" else HistGradientBoostingClassifier
    estimator = estimator_class(
        random_state=seed, early_stopping=n_train >= EARLY_STOPPING_MIN_ROWS, **EARLY_STOPPING, **params
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


# --- metrics -----------------------------------------------------------------------------------------


def compute_metrics(
    problem_type: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[str]
) -> dict[str, float]:
    """The contract's metrics as plain floats."""
    if problem_type == "regression":
        return {
            "r2": float(r2_score(y_true, y_pred)),
            "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
        }
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # zero_division=0: a class never predicted scores 0 instead of raising a warning and NaN.
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if problem_type == "binary_classification" and proba is not None and set(y_true) == set(classes):
        positive = classes[1]
        metrics["roc_auc"] = float(roc_auc_score(y_true == positive, proba[:, 1]))
    return metrics


def _check_finite(metrics: dict[str, float], split: str, n_rows: int) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingDataError(
                f"metric {name} on the {split} split is {value} ({n_rows} row(s)); "
                "the split is too small or degenerate to evaluate"
            )


# --- training ----------------------------------------------------------------------------------------


def _openmp_threads(n_rows: int) -> AbstractContextManager[Any]:
    """One OpenMP thread for small data: HistGradientBoosting's thread start-up then costs more than it
    saves, and on a busy machine its spinning threads made a 100-row fit 10x slower. Larger data keeps
    every core."""
    if n_rows > SINGLE_THREAD_MAX_ROWS:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency, so always installed
    except ImportError:  # pragma: no cover
        return nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")


def _log(message: str) -> None:
    # stdout goes to CloudWatch Logs in SageMaker; flush so lines appear while the job runs.
    print(f"[train] {message}", flush=True)


def train(
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    target: str,
    problem_type: str,
    seed: int = DEFAULT_SEED,
    params: dict[str, Any] | None = None,
) -> TrainingOutcome:
    """Fit the pipeline on ``train_df``, score it on validation and test, return bundle and metrics."""
    if problem_type not in PROBLEM_TYPES:
        raise HyperparameterError(f"problem_type={problem_type!r} must be one of {', '.join(PROBLEM_TYPES)}")
    estimator_params = dict(DEFAULT_PARAMS)
    estimator_params.update(params or {})
    unknown = sorted(set(estimator_params) - set(DEFAULT_PARAMS))
    if unknown:
        raise HyperparameterError(f"unknown estimator parameter(s) {unknown}; allowed: {list(DEFAULT_PARAMS)}")
    splits = {"train": train_df, "validation": validation_df, "test": test_df}
    for name, frame in splits.items():
        if len(frame) == 0:
            raise TrainingDataError(f"the {name} split has no rows")

    y = {name: prepare_target(frame, target, problem_type, name) for name, frame in splits.items()}
    candidates = [str(c) for c in train_df.columns if c != target]
    # A column with no value in the train split carries nothing to learn; SimpleImputer would drop it
    # anyway (and warn on every prediction), so it is left out of the model and need not be sent to it.
    empty_columns = [c for c in candidates if train_df[c].isna().all()]
    if empty_columns:
        _log(f"ignoring column(s) with no value in the train split: {empty_columns}")
    feature_columns = [c for c in candidates if c not in empty_columns]
    if not feature_columns:
        raise TrainingDataError(
            f"the train split has no usable feature columns besides the target {target!r}"
            + (f" (all missing: {empty_columns})" if empty_columns else "")
        )
    kinds = feature_kinds(train_df, feature_columns)
    _log(
        f"problem_type={problem_type} target={target!r} rows train={len(train_df)} "
        f"validation={len(validation_df)} test={len(test_df)} features={len(feature_columns)} "
        f"(numeric={sum(k == 'numeric' for k in kinds.values())}, "
        f"categorical={sum(k == 'categorical' for k in kinds.values())})"
    )

    x = {name: prepare_features(frame, feature_columns, kinds, name) for name, frame in splits.items()}

    class_labels: list[str] = []
    if problem_type != "regression":
        class_labels = sorted(set(y["train"].tolist()))
        if len(class_labels) < 2:
            raise TrainingDataError(
                f"classification needs at least 2 classes in the train split; target {target!r} has only {class_labels}"
            )
        if problem_type == "binary_classification" and len(class_labels) != 2:
            raise TrainingDataError(
                f"binary_classification needs exactly 2 classes in the train split; target {target!r} has "
                f"{len(class_labels)}: {class_labels[:10]}"
            )

    pipeline = build_pipeline(kinds, problem_type, seed, estimator_params, n_train=len(train_df))
    with _openmp_threads(len(train_df)):
        pipeline.fit(x["train"], y["train"])
    model = pipeline.named_steps["model"]
    _log(f"fitted {type(model).__name__} with {model.n_iter_} iteration(s), params={estimator_params}")
    if class_labels:
        class_labels = [str(c) for c in model.classes_]

    scores: dict[str, dict[str, float]] = {}
    test_predictions = pd.DataFrame()
    for name in ("validation", "test"):
        with _openmp_threads(len(x[name])):
            y_pred = pipeline.predict(x[name])
            proba = pipeline.predict_proba(x[name]) if class_labels else None
        scores[name] = compute_metrics(problem_type, y[name], y_pred, proba, class_labels)
        _check_finite(scores[name], name, len(x[name]))
        _log(f"{name} metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in scores[name].items()))
        if name == "test":
            columns: dict[str, Any] = {"y_true": y[name], "y_pred": y_pred}
            if proba is not None:
                for index, label in enumerate(class_labels):
                    columns[f"proba_{label}"] = proba[:, index]
            test_predictions = pd.DataFrame(columns)

    metrics = {
        "problem_type": problem_type,
        "primary_metric": PRIMARY_METRIC[problem_type],
        "validation": scores["validation"],
        "test": scores["test"],
        "n_train": len(train_df),
        "n_validation": len(validation_df),
        "n_test": len(test_df),
    }
    bundle = {
        "format": BUNDLE_FORMAT,
        "pipeline": pipeline,
        "feature_columns": feature_columns,
        "feature_kinds": kinds,
        "target": target,
        "problem_type": problem_type,
        "class_labels": class_labels,
        "ignored_columns": empty_columns,
        "seed": seed,
        "params": estimator_params,
        "sklearn_version": sklearn.__version__,
    }
    return TrainingOutcome(bundle=bundle, metrics=metrics, test_predictions=test_predictions)


# --- script mode -------------------------------------------------------------------------------------


def _env_dir(name: str, default: str) -> Path:
    # The /opt/ml defaults are the SageMaker container contract, not a convenience.
    return Path(os.environ.get(name) or default)


def read_channel(name: str) -> pd.DataFrame:
    """The one CSV in channel ``name`` (``SM_CHANNEL_<NAME>``, default /opt/ml/input/data/<name>)."""
    variable = f"SM_CHANNEL_{name.upper()}"
    directory = _env_dir(variable, f"/opt/ml/input/data/{name}")
    if not directory.is_dir():
        raise TrainingDataError(f"channel {name!r}: directory {directory} ({variable}) does not exist")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    csvs = [p for p in files if p.suffix.lower() == ".csv"]
    if len(csvs) != 1:
        raise TrainingDataError(
            f"channel {name!r}: expected exactly one .csv file in {directory}, found "
            f"{[p.name for p in csvs] or 'none'} (all files: {[p.name for p in files]})"
        )
    try:
        frame = pd.read_csv(csvs[0])
    except (ValueError, UnicodeDecodeError) as exc:  # EmptyDataError and ParserError are ValueErrors
        raise TrainingDataError(f"channel {name!r}: cannot read {csvs[0].name} as CSV: {exc}") from exc
    _log(f"channel {name}: {csvs[0].name} {frame.shape[0]} rows x {frame.shape[1]} columns")
    return frame


def write_outputs(outcome: TrainingOutcome, model_dir: Path, output_data_dir: Path) -> None:
    """model.joblib + metadata.json to the model dir; metrics.json + test_predictions.csv to output data."""
    model_dir.mkdir(parents=True, exist_ok=True)
    output_data_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(outcome.bundle, model_dir / "model.joblib")
    metadata = {k: v for k, v in outcome.bundle.items() if k != "pipeline"}
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    (output_data_dir / "metrics.json").write_text(json.dumps(outcome.metrics, indent=2, sort_keys=True))
    outcome.test_predictions.to_csv(output_data_dir / "test_predictions.csv", index=False)


def write_failure(exc: BaseException) -> str:
    """Write the one-paragraph reason to ``$SM_OUTPUT_DIR/failure``; return it."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    try:
        output_dir = _env_dir("SM_OUTPUT_DIR", "/opt/ml/output")
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failure").write_text(reason)
    except OSError as write_error:  # the reason still reaches stderr and the logs
        print(f"[train] could not write the failure file: {write_error}", file=sys.stderr, flush=True)
    return reason


def main(argv: list[str] | None = None) -> int:
    """Script-mode entry point: 0 on success; on error the failure file, a line on stderr and 1."""
    try:
        cli = parse_cli_hyperparameters(sys.argv[1:] if argv is None else list(argv))
        hps = validate_hyperparameters(merge_hyperparameters(cli, os.environ.get("SM_HPS")))
        frames = {name: read_channel(name) for name in CHANNELS}
        outcome = train(
            frames["train"],
            frames["validation"],
            frames["test"],
            target=hps.target,
            problem_type=hps.problem_type,
            seed=hps.seed,
            params=hps.params,
        )
        model_dir = _env_dir("SM_MODEL_DIR", "/opt/ml/model")
        output_data_dir = _env_dir("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")
        write_outputs(outcome, model_dir, output_data_dir)
        _log(f"wrote model.joblib and metadata.json to {model_dir}, metrics.json and predictions to {output_data_dir}")
        return 0
    except Exception as exc:
        reason = write_failure(exc)
        print(f"[train] FAILED: {reason}", file=sys.stderr, flush=True)
        if not isinstance(exc, (HyperparameterError, TrainingDataError)):
            traceback.print_exc()  # an unexpected error: keep the stack in the logs
        return 1


if __name__ == "__main__":
    sys.exit(main())
