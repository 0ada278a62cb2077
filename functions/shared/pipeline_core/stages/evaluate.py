"""Evaluate: read the training job's test metrics and predictions, decide the quality gate's inputs,
and write ``evaluation.json`` and ``report.html`` next to the model artifact.

The training script (``training/train.py``) writes ``metrics.json`` and ``test_predictions.csv`` to
``SM_OUTPUT_DATA_DIR``; SageMaker uploads that directory as ``output.tar.gz`` beside ``model.tar.gz``.
The test metrics are the evaluation (validation metrics were available to training, test ones were not).
No scikit-learn here: it lives in the training container, and the confusion matrix and ROC curve are a
few lines of numpy.

Once per execution: ``evaluation.json`` is written last and records the whole result, so an Evaluate retried
after it finished (its response lost, a timeout after the writes) returns that result instead of writing
again. The gate decision then stays the one the files show, even if the champion changed in between.

This gate decides whether the run goes on to deploy; the one that lets it deploy is made again by
AcquireDeployLease against the champion as it is once the run holds the deploy lease (``stages/gate.py``).
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from typing import Any

import numpy as np
import pandas as pd

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import utc_now
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import DatasetNotFoundError, EvaluationError
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    ProblemType,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages.gate import RESULT_FIELDS, decide_gate
from pipeline_core.stages.report import (
    ClassificationView,
    RegressionView,
    ReportInput,
    RocCurve,
    render_report,
    roc_curve,
)

PRIMARY_METRIC: dict[ProblemType, str] = {
    "binary_classification": "f1_macro",
    "multiclass_classification": "f1_macro",
    "regression": "r2",
}
DEFAULT_THRESHOLD: dict[str, float] = {"classification": 0.6, "regression": 0.3}
REQUIRED_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "precision_macro", "recall_macro"),
    "regression": ("r2", "rmse", "mae"),
}
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.csv"
_MODEL_SUFFIX = "/output/model.tar.gz"


def family(problem_type: ProblemType) -> str:
    """``classification`` or ``regression``."""
    return "regression" if problem_type == "regression" else "classification"


def output_data_uri(training: TrainingSummary) -> str:
    """Where SageMaker put SM_OUTPUT_DATA_DIR: ``…/<job>/output/output.tar.gz`` beside the model."""
    if training.OutputDataUri:
        return training.OutputDataUri
    return _job_prefix(training.ModelArtifacts) + "/output/output.tar.gz"


def evaluation_prefix(training: TrainingSummary) -> str:
    """``…/<job>/evaluation/``: the evaluation files live beside the job's ``output/``."""
    return _job_prefix(training.ModelArtifacts) + "/evaluation/"


def _job_prefix(model_artifacts: str) -> str:
    if not model_artifacts.startswith("s3://") or not model_artifacts.endswith(_MODEL_SUFFIX):
        raise EvaluationError(
            f"training.ModelArtifacts is {model_artifacts!r}; expected s3://…/<job>{_MODEL_SUFFIX}, "
            "the layout SageMaker uses under S3OutputPath"
        )
    return model_artifacts[: -len(_MODEL_SUFFIX)]


def read_training_output(archive: bytes, source: str) -> tuple[dict[str, Any], bytes]:
    """``metrics.json`` (parsed) and ``test_predictions.csv`` (bytes) from the job's output.tar.gz.

    Members are read in memory by base name (SageMaker may store them as ``./metrics.json``); nothing is
    extracted to disk, so a hostile archive cannot write outside a directory.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            found: dict[str, bytes] = {}
            for name in (METRICS_FILE, PREDICTIONS_FILE):
                member = members.get(name)
                handle = tar.extractfile(member) if member else None
                if handle is None:
                    raise EvaluationError(
                        f"{source} has no {name} (it holds {sorted(members) or 'no files'}); train.py must "
                        f"write {METRICS_FILE} and {PREDICTIONS_FILE} to SM_OUTPUT_DATA_DIR"
                    )
                found[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise EvaluationError(f"{source} is not a readable tar.gz archive: {error}") from error
    try:
        metrics = json.loads(found[METRICS_FILE])
    except ValueError as error:
        raise EvaluationError(f"{METRICS_FILE} in {source} is not valid JSON: {error}") from error
    if not isinstance(metrics, dict):
        raise EvaluationError(f"{METRICS_FILE} in {source} must be a JSON object, got {type(metrics).__name__}")
    return metrics, found[PREDICTIONS_FILE]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_test_metrics(metrics: dict[str, Any], problem_type: ProblemType) -> dict[str, float]:
    """The ``test`` metrics as floats; a missing, non-numeric or non-finite metric is an EvaluationError."""
    test = metrics.get("test")
    if not isinstance(test, dict):
        raise EvaluationError(f"{METRICS_FILE} has no 'test' object of metrics (keys: {sorted(metrics)})")
    missing = [name for name in REQUIRED_METRICS[family(problem_type)] if name not in test]
    if missing:
        raise EvaluationError(
            f"{METRICS_FILE} test metrics lack {', '.join(missing)} required for {problem_type} "
            f"(present: {', '.join(sorted(test)) or 'none'})"
        )
    checked: dict[str, float] = {}
    for name, value in test.items():
        number = _as_number(value)
        if number is None:
            raise EvaluationError(f"test metric {name} in {METRICS_FILE} is {value!r}, not a number")
        if not math.isfinite(number):
            # NaN would also be invalid JSON in the state data, and cannot be compared by the gate
            raise EvaluationError(f"test metric {name} in {METRICS_FILE} is {value!r}; it must be a finite number")
        checked[str(name)] = number
    return checked


def validation_metrics_of(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The ``validation`` metrics for the report; informative only, so non-finite ones become None."""
    validation = metrics.get("validation")
    if not isinstance(validation, dict):
        return {}
    result: dict[str, float | None] = {}
    for name, value in validation.items():
        number = _as_number(value)
        result[str(name)] = number if number is not None and math.isfinite(number) else None
    return result


def read_predictions(data: bytes, problem_type: ProblemType) -> pd.DataFrame:
    """``test_predictions.csv`` with y_true/y_pred as strings (classification) or floats (regression)."""
    classification = family(problem_type) == "classification"
    dtypes = {"y_true": str, "y_pred": str} if classification else None
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=dtypes, keep_default_na=not classification)
    except (ValueError, pd.errors.ParserError) as error:
        raise EvaluationError(f"{PREDICTIONS_FILE} cannot be read as CSV: {error}") from error
    missing = [column for column in ("y_true", "y_pred") if column not in frame.columns]
    if missing:
        raise EvaluationError(
            f"{PREDICTIONS_FILE} lacks column(s) {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise EvaluationError(f"{PREDICTIONS_FILE} has no rows: the test split was empty")
    if not classification:
        for column in ("y_true", "y_pred"):
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                row = int(bad[0])
                raise EvaluationError(
                    f"{PREDICTIONS_FILE} column {column}, data row {row + 1} (line {row + 2}), is "
                    f"{frame[column].iloc[row]!r}, not a finite number"
                )
            frame[column] = values
    return frame


def class_labels(frame: pd.DataFrame, known: list[str]) -> list[str]:
    """The profile's class labels in their order, then any other label the predictions hold."""
    seen = set(frame["y_true"]).union(frame["y_pred"])
    return list(known) + sorted(seen.difference(known))


def confusion_matrix(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Counts with actual classes on rows and predicted ones on columns, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (frame["y_true"].map(index).to_numpy(), frame["y_pred"].map(index).to_numpy()), 1)
    return matrix


def binary_roc(frame: pd.DataFrame, labels: list[str]) -> RocCurve | None:
    """The ROC curve of the positive class, if scored: the second of the sorted labels, as scikit-learn
    orders ``classes_`` and as train.py picks the positive class for ``roc_auc``."""
    if len(labels) != 2:
        return None
    positive = sorted(labels)[1]
    if f"proba_{positive}" not in frame.columns:
        return None
    scores = pd.to_numeric(frame[f"proba_{positive}"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return roc_curve(frame["y_true"].to_numpy() == positive, scores, positive)


def residual_summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Residual (actual - predicted) statistics for evaluation.json and the report."""
    residuals = y_true - y_pred
    return {
        "mean": float(residuals.mean()),
        "std": float(residuals.std()),
        "median": float(np.median(residuals)),
        "p05": float(np.quantile(residuals, 0.05)),
        "p95": float(np.quantile(residuals, 0.95)),
        "max_abs": float(np.abs(residuals).max()),
    }


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def earlier_result(store: ObjectStore, evaluation_uri: str, run_id: str, job: str) -> EvaluationResult | None:
    """The result an earlier attempt of this run recorded in ``evaluation.json``, if it finished."""
    try:
        document = json.loads(store.read_bytes(evaluation_uri))
        if document.get("run_id") != run_id or document.get("training_job_name") != job:
            return None
        gate = document["gate"]
        return EvaluationResult(
            metrics=document["metrics"],
            primary_metric=document["primary_metric"],
            **{name: gate[name] for name in RESULT_FIELDS},
            evaluation_uri=evaluation_uri,
            report_uri=document["report_uri"],
        )
    except DatasetNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not a complete evaluation.json: evaluate again and replace it


def evaluate(
    config: RunConfig,
    data: DataProfile,
    prep: PreprocessResult,
    training: TrainingSummary,
    *,
    store: ObjectStore,
    registry: ModelRegistry,
    ingest: IngestResult | None = None,
) -> EvaluationResult:
    """Evaluate the trained model on the test split and write evaluation.json and report.html."""
    source = output_data_uri(training)
    prefix = evaluation_prefix(training)
    evaluation_uri, report_uri = prefix + "evaluation.json", prefix + "report.html"
    earlier = earlier_result(store, evaluation_uri, config.run_id, training.TrainingJobName)
    if earlier is not None:
        return earlier
    try:
        archive = store.read_bytes(source)
    except DatasetNotFoundError as error:
        raise EvaluationError(
            f"training job {training.TrainingJobName} left no output data at {source}; train.py must write "
            f"{METRICS_FILE} and {PREDICTIONS_FILE} to SM_OUTPUT_DATA_DIR"
        ) from error
    raw_metrics, predictions_csv = read_training_output(archive, source)

    problem_type = data.problem_type
    primary = PRIMARY_METRIC[problem_type]
    declared = raw_metrics.get("primary_metric")
    if declared is not None and declared != primary:
        raise EvaluationError(
            f"{METRICS_FILE} declares primary_metric {declared!r} but a {problem_type} model is gated on {primary}"
        )
    test_metrics = check_test_metrics(raw_metrics, problem_type)
    validation_metrics = validation_metrics_of(raw_metrics)
    frame = read_predictions(predictions_csv, problem_type)
    n_test = _int_or(raw_metrics.get("n_test"), prep.n_test)
    if len(frame) != n_test:
        raise EvaluationError(f"{PREDICTIONS_FILE} has {len(frame)} rows but {METRICS_FILE} says n_test = {n_test}")

    threshold = (
        config.quality_threshold if config.quality_threshold is not None else DEFAULT_THRESHOLD[family(problem_type)]
    )
    gate = decide_gate(primary, test_metrics[primary], threshold, registry.champion(config.model_name))

    view: ClassificationView | RegressionView
    analysis: dict[str, Any]
    if family(problem_type) == "classification":
        labels = class_labels(frame, data.class_labels)
        matrix = confusion_matrix(frame, labels)
        view = ClassificationView(labels, matrix, binary_roc(frame, labels))
        analysis = {"confusion_matrix": {"labels": labels, "rows": "actual", "columns": "predicted",
                                         "counts": matrix.tolist()}}  # fmt: skip
    else:
        y_true, y_pred = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
        view = RegressionView(y_true, y_pred, residual_summary(y_true, y_pred))
        analysis = {"residuals": view.residual_summary}

    sizes = {
        "n_train": _int_or(raw_metrics.get("n_train"), prep.n_train),
        "n_validation": _int_or(raw_metrics.get("n_validation"), prep.n_validation),
        "n_test": n_test,
    }
    document = {
        "model_name": config.model_name,
        "run_id": config.run_id,
        "training_job_name": training.TrainingJobName,
        "model_artifact": training.ModelArtifacts,
        "problem_type": problem_type,
        "target": data.target,
        "feature_columns": prep.feature_columns,
        "dataset": {
            "uri": config.dataset,
            "raw_uri": ingest.raw_uri if ingest else None,
            "sha256": ingest.sha256 if ingest else None,
        },
        "sizes": sizes,
        "primary_metric": primary,
        "metrics": test_metrics,
        "validation_metrics": validation_metrics,
        "gate": gate.result_fields(),
        **analysis,
        "report_uri": report_uri,
        "created_at": utc_now(),
    }
    summary = [
        ("model", config.model_name),
        ("run", config.run_id),
        ("training job", training.TrainingJobName),
        ("problem type", problem_type),
        ("target", data.target),
        ("features", ", ".join(prep.feature_columns)),
        ("dataset", config.dataset),
        ("dataset sha256", ingest.sha256 if ingest else "not passed to Evaluate"),
        ("rows train / validation / test", f"{sizes['n_train']} / {sizes['n_validation']} / {sizes['n_test']}"),
        ("model artifact", training.ModelArtifacts),
    ]
    html = render_report(
        ReportInput(
            title=f"stepml evaluation: {config.model_name} ({training.TrainingJobName})",
            summary=summary,
            target=data.target,
            primary_metric=primary,
            test_metrics=test_metrics,
            validation_metrics=validation_metrics,
            passed=gate.passed,
            reason=gate.reason,
            view=view,
        )
    )
    # The report first: evaluation.json is the record that the evaluation finished (see earlier_result).
    store.write_bytes(report_uri, html.encode(), "text/html; charset=utf-8")
    store.write_bytes(evaluation_uri, json.dumps(document, indent=2).encode(), "application/json")
    return EvaluationResult(
        metrics=test_metrics,
        primary_metric=primary,
        **gate.result_fields(),
        evaluation_uri=evaluation_uri,
        report_uri=report_uri,
    )
