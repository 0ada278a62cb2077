"""SageMaker script-mode training: stepml's built-in tabular models on CSV channels.

The SageMaker training toolkit copies this folder into the container and runs
``python train.py --target species --problem_type multiclass_classification ...``. The contract it follows
(docs/architecture.md, "Training contract"):

* hyperparameters arrive as ``--name value`` arguments (all strings) and as JSON in ``SM_HPS``; arguments win.
  ``sagemaker_*`` names (sagemaker_program, sagemaker_submit_directory, ...) belong to the toolkit and are
  ignored; any other unknown name is an error. ``algorithm`` is ``auto`` (default), ``gradient-boosting``,
  ``linear`` or ``text``; each takes its own parameters (``stepml_tabular.estimators``).
* ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``, ``SM_CHANNEL_TEST``: each a directory holding one CSV, or
  several part files read in sorted name order as one table, each with the same header row, target column
  included, and optionally ``columns.json`` (the column roles Preprocess chose; the train channel's is
  used). Without it a column is numeric or categorical. With it and pyarrow installed the files are parsed
  by pyarrow straight into typed columns (``stepml_tabular.channels``), else by pandas; the same values.
* selection (algorithm, iterations, regularisation) uses train+validation only (cross-validation when
  small), the chosen model is refit on train+validation, and the test split is only predicted.
* writes ``model.joblib`` + ``metadata.json`` to ``SM_MODEL_DIR`` and ``metrics.json`` +
  ``test_predictions.csv`` to ``SM_OUTPUT_DATA_DIR``.
* on any error writes the reason to ``$SM_OUTPUT_DIR/failure`` and exits non-zero: SageMaker reports that
  file's content as the job's FailureReason.

The container copies only this folder (this file, ``inference.py`` and the ``stepml_tabular`` package) and
it must run on the SageMaker scikit-learn image 1.2-1 (Python 3.9, scikit-learn 1.2.1, pandas 1.1.3), hence
``from __future__ import annotations``.

Classification labels are treated as strings: a target coded 0/1 becomes the classes "0" and "1", and
integral floats are written without the ".0" ("1.0" -> "1"), so the same label reads the same from every
split. Predictions come back as those strings.
"""

from __future__ import annotations

import json
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

# stepml_tabular lives beside this file; `python train.py` puts this folder on sys.path, an import as
# ``training.train`` (tests) does not. The pickled model refers to it by this top-level name.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from stepml_tabular.channels import channel_csvs, read_split  # noqa: E402
from stepml_tabular.columns import (  # noqa: E402
    feature_kinds,
    prepare_features,
    read_columns_file,
)
from stepml_tabular.errors import HyperparameterError, TrainingDataError  # noqa: E402
from stepml_tabular.estimators import (  # noqa: E402
    BOOSTING_DEFAULTS,
    DEFAULT_ALGORITHM,
    PARAMETER_NAMES,
    check_classes,
    check_params,
    parse_number,
    refit_checked,
    select,
)
from stepml_tabular.lean import concat_rows, labels_of, predict_blocks  # noqa: E402
from stepml_tabular.metrics import PRIMARY_METRIC, PROBLEM_TYPES, check_finite, compute_metrics  # noqa: E402

__all__ = ["HyperparameterError", "TrainingDataError", "feature_kinds", "prepare_features"]

DEFAULT_PARAMS: dict[str, Any] = dict(BOOSTING_DEFAULTS)
# Up to this many rows, fit and predict on one OpenMP thread (see _one_thread_for_small_data).
SINGLE_THREAD_MAX_ROWS = 50_000
DEFAULT_SEED = 42
ALLOWED_HYPERPARAMETERS = ("target", "problem_type", "seed", "algorithm", *PARAMETER_NAMES)
CHANNELS = ("train", "validation", "test")
BUNDLE_FORMAT = 2


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


@dataclass(frozen=True)
class Hyperparameters:
    """Validated hyperparameters: what ``train`` needs besides the data."""

    target: str
    problem_type: str
    seed: int
    params: dict[str, Any]  # the estimator parameters given, parsed
    algorithm: str = DEFAULT_ALGORITHM


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
        seed = parse_number("seed", raw["seed"], int, minimum=0)
        if seed >= 2**32:  # numpy's RandomState accepts 0 <= seed < 2**32
            raise HyperparameterError(f"hyperparameter seed={raw['seed']!r} must be below 2**32")
    algorithm = raw.get("algorithm", DEFAULT_ALGORITHM).strip() or DEFAULT_ALGORITHM
    given = {k: v for k, v in raw.items() if k in PARAMETER_NAMES}
    checked = check_params(algorithm, problem_type, given)
    params = {k: checked[k] for k in given}  # train() fills in the defaults of the algorithm it fits
    return Hyperparameters(target=target, problem_type=problem_type, seed=seed, params=params, algorithm=algorithm)


# --- data --------------------------------------------------------------------------------------------


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
    labels = labels_of(series)  # one str per distinct label, shared by its rows
    missing = pd.isna(labels)
    if missing.any():
        rows = missing.nonzero()[0][:5].tolist()
        raise TrainingDataError(
            f"{split} split: target {target!r} is missing in {int(missing.sum())} row(s), first rows {rows}"
        )
    return labels


# --- training ----------------------------------------------------------------------------------------


def _one_thread_for_small_data(n_rows: int) -> AbstractContextManager[Any]:
    """One OpenMP and one BLAS thread for small data: thread start-up then costs more than it saves, and on
    a busy machine the spinning threads made a 100-row HistGradientBoosting fit 10x slower and a 96-row
    LogisticRegression fit (OpenBLAS, 2 threads) 8x slower. Larger data keeps every core."""
    if n_rows > SINGLE_THREAD_MAX_ROWS:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency, so always installed
    except ImportError:  # pragma: no cover
        return nullcontext()
    return threadpool_limits(limits=1)  # every API: OpenMP and BLAS


def _log(message: str) -> None:
    # stdout goes to CloudWatch Logs in SageMaker; flush so lines appear while the job runs.
    print(f"[train] {message}", flush=True)


def _feature_roles(
    train_df: pd.DataFrame, target: str, roles: dict[str, str] | None
) -> tuple[list[str], dict[str, str], list[str]]:
    """(feature columns, their roles, columns left out because they have no value in the train split)."""
    if roles:
        candidates = [str(c) for c in roles if c != target]
        absent = [c for c in candidates if c not in train_df.columns]
        if absent:
            raise TrainingDataError(f"columns.json names column(s) {absent} the train split does not have")
    else:
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
    kinds = {c: roles[c] for c in feature_columns} if roles else feature_kinds(train_df, feature_columns)
    return feature_columns, kinds, empty_columns


def _check_labels(y: dict[str, np.ndarray], target: str, problem_type: str) -> None:
    if problem_type == "regression":
        return
    train_labels = sorted(set(y["train"].tolist()))
    if len(train_labels) < 2:
        raise TrainingDataError(
            f"classification needs at least 2 classes in the train split; target {target!r} has only {train_labels}"
        )
    labels = sorted(set(y["train"].tolist()) | set(y["validation"].tolist()))
    if problem_type == "binary_classification" and len(labels) != 2:
        raise TrainingDataError(
            f"binary_classification needs exactly 2 classes in train+validation; target {target!r} has "
            f"{len(labels)}: {labels[:10]}"
        )
    check_classes(np.concatenate([y["train"], y["validation"]]), target)


def _metrics_line(name: str, metrics: dict[str, float]) -> str:
    # The line hyperparameter tuning's metric regexes read: "validation metrics: f1_macro=0.91230, ...".
    return f"{name} metrics: " + ", ".join(f"{k}={v:.5f}" for k, v in metrics.items())


def train(
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    target: str,
    problem_type: str,
    seed: int = DEFAULT_SEED,
    params: dict[str, Any] | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    roles: dict[str, str] | None = None,
) -> TrainingOutcome:
    """Choose and fit a model on train+validation (see ``stepml_tabular.estimators``), predict test."""
    splits = {"train": train_df, "validation": validation_df, "test": test_df}
    return train_splits(
        splits, target=target, problem_type=problem_type, seed=seed, params=params, algorithm=algorithm, roles=roles
    )


def train_splits(
    splits: dict[str, pd.DataFrame],
    *,
    target: str,
    problem_type: str,
    seed: int = DEFAULT_SEED,
    params: dict[str, Any] | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    roles: dict[str, str] | None = None,
) -> TrainingOutcome:
    """``train`` on the ``train``, ``validation`` and ``test`` frames of ``splits``, which it empties once their
    features are made: a caller that holds no other reference (``main``) has the read tables freed before the
    model is fitted, so they are not in memory beside the feature matrix and the fit's own copies."""
    if problem_type not in PROBLEM_TYPES:
        raise HyperparameterError(f"problem_type={problem_type!r} must be one of {', '.join(PROBLEM_TYPES)}")
    estimator_params = check_params(algorithm, problem_type, dict(params or {}))
    for name in CHANNELS:
        if len(splits[name]) == 0:
            raise TrainingDataError(f"the {name} split has no rows")
    rows = {name: len(splits[name]) for name in CHANNELS}

    y = {name: prepare_target(splits[name], target, problem_type, name) for name in CHANNELS}
    feature_columns, kinds, empty_columns = _feature_roles(splits["train"], target, roles)
    counts = {role: sum(k == role for k in kinds.values()) for role in sorted(set(kinds.values()))}
    _log(
        f"problem_type={problem_type} target={target!r} algorithm={algorithm} rows train={rows['train']} "
        f"validation={rows['validation']} test={rows['test']} features={len(feature_columns)} "
        f"({', '.join(f'{role}={n}' for role, n in counts.items())})"
    )
    x = {name: prepare_features(splits[name], feature_columns, kinds, name) for name in CHANNELS}
    splits.clear()
    _check_labels(y, target, problem_type)

    x_all = concat_rows(x.pop("train"), x.pop("validation"))  # frees the two splits' columns as it goes
    y_all = np.concatenate([y["train"], y["validation"]])
    with _one_thread_for_small_data(len(x_all)):
        selection = select(x_all, y_all, rows["train"], kinds, problem_type, algorithm, estimator_params, seed)
        pipeline = refit_checked(x_all, y_all, kinds, problem_type, selection, estimator_params, seed)
    del x_all  # not needed past the refit: the test split's predictions are made without it
    chosen = selection.chosen
    _log(f"selection: {selection.reason}; {chosen.detail}")
    for note in selection.notes:
        _log(f"note: {note}")
    model = pipeline.named_steps["model"]
    class_labels = [str(c) for c in model.classes_] if problem_type != "regression" else []

    scores: dict[str, dict[str, float]] = {}
    scored_y = y_all[selection.folds.scored]
    scores["validation"] = compute_metrics(problem_type, scored_y, chosen.predictions, chosen.proba, class_labels)
    check_finite(scores["validation"], "validation", len(scored_y))
    _log(_metrics_line("validation", scores["validation"]))
    with _one_thread_for_small_data(len(x["test"])):
        y_pred = predict_blocks(pipeline.predict, x["test"])
        proba = predict_blocks(pipeline.predict_proba, x["test"]) if class_labels else None
    scores["test"] = compute_metrics(problem_type, y["test"], y_pred, proba, class_labels)
    check_finite(scores["test"], "test", len(x["test"]))
    _log(_metrics_line("test", scores["test"]))
    columns: dict[str, Any] = {"y_true": y["test"], "y_pred": y_pred}
    if proba is not None:
        for index, label in enumerate(class_labels):
            columns[f"proba_{label}"] = proba[:, index]

    chosen_params = dict(chosen.settings)
    if chosen.family == "gradient-boosting":
        chosen_params = {**{k: estimator_params[k] for k in BOOSTING_DEFAULTS}, **chosen.settings}
    metrics: dict[str, Any] = {
        "problem_type": problem_type,
        "primary_metric": PRIMARY_METRIC[problem_type],
        "validation": scores["validation"],
        "test": scores["test"],
        "selection": selection.report(problem_type),
        "n_train": rows["train"],
        "n_validation": rows["validation"],
        "n_test": rows["test"],
    }
    if selection.notes:
        metrics["notes"] = selection.notes
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
        "algorithm": chosen.family,
        "requested_algorithm": algorithm,
        "params": estimator_params,
        "chosen_params": chosen_params,
        "sklearn_version": sklearn.__version__,
    }
    return TrainingOutcome(bundle=bundle, metrics=metrics, test_predictions=pd.DataFrame(columns))


# --- script mode -------------------------------------------------------------------------------------


def _env_dir(name: str, default: str) -> Path:
    # The /opt/ml defaults are the SageMaker container contract, not a convenience.
    return Path(os.environ.get(name) or default)


def channel_dir(name: str) -> Path:
    """Channel ``name``'s directory (``SM_CHANNEL_<NAME>``, default /opt/ml/input/data/<name>)."""
    variable = f"SM_CHANNEL_{name.upper()}"
    directory = _env_dir(variable, f"/opt/ml/input/data/{name}")
    if not directory.is_dir():
        raise TrainingDataError(f"channel {name!r}: directory {directory} ({variable}) does not exist")
    return directory


def read_channel(name: str, roles: dict[str, str] | None = None) -> pd.DataFrame:
    """Channel ``name``'s CSV file(s) as one split (``stepml_tabular.channels``: several part files are read
    in sorted name order; with roles, pyarrow parses them straight into typed columns when installed)."""
    directory = channel_dir(name)
    paths = channel_csvs(directory, name)
    frame = read_split(paths, roles, name)
    files = paths[0].name if len(paths) == 1 else f"{len(paths)} files ({paths[0].name} ... {paths[-1].name})"
    _log(f"channel {name}: {files} {frame.shape[0]} rows x {frame.shape[1]} columns")
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
        columns = read_columns_file(channel_dir("train"))
        roles: dict[str, str] | None = columns["roles"] if columns else None
        _log(f"column roles: {roles}" if roles else "no columns.json: columns are numeric or categorical by dtype")
        frames = {name: read_channel(name, roles) for name in CHANNELS}
        outcome = train_splits(  # takes the frames: they are freed once the features are made
            frames,
            target=hps.target,
            problem_type=hps.problem_type,
            seed=hps.seed,
            params=hps.params,
            algorithm=hps.algorithm,
            roles=roles,
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
