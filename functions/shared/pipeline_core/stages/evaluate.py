"""Evaluate: measure the trained model on the test split from its predictions, decide the quality gate's
inputs, and write ``evaluation.json`` and ``report.html`` next to the model artifact.

A trainer writes ``test_predictions.csv`` (``y_true``, ``y_pred`` and optionally ``proba_<label>``) and may
write ``metrics.json`` to ``SM_OUTPUT_DATA_DIR``; SageMaker uploads that directory as ``output.tar.gz`` beside
``model.tar.gz``. The gate's metrics are computed here from the predictions (``stages/metrics.py``), so every
trainer is measured the same way; a trainer's own ``validation`` metrics are kept for the report.
No scikit-learn here: it lives in the training container, and the metrics, confusion matrix and ROC curve
are a few lines of numpy.

Before gating, the run's identity (model name, target, problem type) is checked against the registry: a
model is never compared with a champion of another target or problem type (``stages/identity.py``).

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
    CodeLineage,
    DataProfile,
    EvaluationResult,
    IngestResult,
    ModelIdentity,
    PreprocessResult,
    ProblemType,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages.gate import RESULT_FIELDS, decide_gate, gate_threshold
from pipeline_core.stages.identity import check_identity
from pipeline_core.stages.job_layout import evaluation_prefix, output_data_uri
from pipeline_core.stages.lineage import code_lineage, column_rows, dropped_rows, feature_roles
from pipeline_core.stages.metrics import classification_metrics, regression_metrics, roc_auc
from pipeline_core.stages.report import (
    ClassificationView,
    ColumnTable,
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
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.csv"


def family(problem_type: ProblemType) -> str:
    """``classification`` or ``regression``."""
    return "regression" if problem_type == "regression" else "classification"


_CONTRACT = (
    f"a trainer must write {PREDICTIONS_FILE} (columns y_true, y_pred and optionally proba_<label>) to "
    f"SM_OUTPUT_DATA_DIR; {METRICS_FILE} is optional"
)


def read_training_output(archive: bytes, source: str) -> tuple[dict[str, Any] | None, bytes]:
    """``metrics.json`` (parsed; None if the trainer wrote none) and ``test_predictions.csv`` (bytes) from the
    job's output.tar.gz.

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
                if handle is not None:
                    found[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise EvaluationError(f"{source} is not a readable tar.gz archive: {error}") from error
    if PREDICTIONS_FILE not in found:
        raise EvaluationError(
            f"{source} has no {PREDICTIONS_FILE} (it holds {sorted(members) or 'no files'}); {_CONTRACT}"
        )
    if METRICS_FILE not in found:
        return None, found[PREDICTIONS_FILE]
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
            f"{PREDICTIONS_FILE} lacks column(s) {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))}); "
            + _CONTRACT
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
    scored = positive_scores(frame, labels)
    if scored is None:
        return None
    positive, scores = scored
    return roc_curve(frame["y_true"].to_numpy() == positive, scores, positive)


def positive_scores(frame: pd.DataFrame, labels: list[str]) -> tuple[str, np.ndarray] | None:
    """The positive class of a binary problem and its ``proba_<label>`` scores, if the trainer wrote them."""
    if len(labels) != 2:
        return None
    positive = sorted(labels)[1]
    if f"proba_{positive}" not in frame.columns:
        return None
    scores = pd.to_numeric(frame[f"proba_{positive}"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return positive, scores


def gate_metrics(frame: pd.DataFrame, problem_type: ProblemType, labels: list[str]) -> dict[str, float]:
    """The test metrics the gate uses, computed from the predictions (any trainer is measured alike)."""
    if family(problem_type) == "regression":
        return regression_metrics(frame["y_true"].to_numpy(dtype=float), frame["y_pred"].to_numpy(dtype=float))
    y_true, y_pred = frame["y_true"].to_numpy(dtype=object), frame["y_pred"].to_numpy(dtype=object)
    metrics = classification_metrics(y_true, y_pred)
    scored = positive_scores(frame, labels) if problem_type == "binary_classification" else None
    if scored is not None:
        auc = roc_auc(y_true == scored[0], scored[1])
        if auc is not None:
            metrics["roc_auc"] = auc
    return metrics


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


def trainer_findings(metrics: dict[str, Any]) -> tuple[str | None, list[str]]:
    """What a trainer's metrics.json says of its model: the model choice's reason (``selection.reason``) and
    its ``notes``; anything not text is left out (the file is the trainer's, any trainer's)."""
    selection = metrics.get("selection")
    reason = selection.get("reason") if isinstance(selection, dict) else None
    notes = metrics.get("notes")
    kept = [note for note in notes if isinstance(note, str)] if isinstance(notes, list) else []
    return (reason if isinstance(reason, str) else None), kept


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def earlier_result(store: ObjectStore, evaluation_uri: str, run_id: str, job: str) -> EvaluationResult | None:
    """The result an earlier attempt of this run recorded in ``evaluation.json``, if it finished."""
    try:
        document = json.loads(store.read_bytes(evaluation_uri))
        if document.get("run_id") != run_id or document.get("training_job_name") != job:
            return None
        gate = document["gate"]
        lineage = document.get("lineage")
        return EvaluationResult(
            metrics=document["metrics"],
            primary_metric=document["primary_metric"],
            **{name: gate[name] for name in RESULT_FIELDS},
            evaluation_uri=evaluation_uri,
            report_uri=document["report_uri"],
            lineage=CodeLineage.model_validate(lineage) if lineage else None,
            model_choice=document.get("model_choice"),
            trainer_notes=document.get("trainer_notes") or [],
        )
    except DatasetNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):  # pydantic's ValidationError is a ValueError
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
    reused: dict[str, str] | None = None,
) -> EvaluationResult:
    """Evaluate the trained model on the test split and write evaluation.json and report.html.

    ``reused``: the steps this run took from the step cache (step -> the run that made them), for the report.
    """
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
            f"training job {training.TrainingJobName} left no output data at {source}; {_CONTRACT}"
        ) from error
    raw_metrics, predictions_csv = read_training_output(archive, source)
    trainer_metrics = raw_metrics or {}
    model_choice, trainer_notes = trainer_findings(trainer_metrics)

    problem_type = data.problem_type
    primary = PRIMARY_METRIC[problem_type]
    declared = trainer_metrics.get("primary_metric")
    if declared is not None and declared != primary:
        raise EvaluationError(
            f"{METRICS_FILE} declares primary_metric {declared!r} but a {problem_type} model is gated on {primary}"
        )
    frame = read_predictions(predictions_csv, problem_type)
    declared_n_test = _int_or(trainer_metrics.get("n_test"), -1)
    if declared_n_test >= 0 and len(frame) != declared_n_test:
        raise EvaluationError(
            f"{PREDICTIONS_FILE} has {len(frame)} rows but {METRICS_FILE} says n_test = {declared_n_test}"
        )
    if declared_n_test < 0 and len(frame) != prep.n_test:
        raise EvaluationError(
            f"{PREDICTIONS_FILE} has {len(frame)} rows but the test split has {prep.n_test}: a trainer must "
            "predict every row of the test channel, in order"
        )
    n_test = len(frame)
    labels = class_labels(frame, data.class_labels) if family(problem_type) == "classification" else []
    test_metrics = gate_metrics(frame, problem_type, labels)
    validation_metrics = validation_metrics_of(trainer_metrics)

    threshold = gate_threshold(config.quality_threshold, problem_type)
    model_name = config.require_model_name()
    identity = ModelIdentity(model_name=model_name, target=data.target, problem_type=problem_type)
    # never compared with a champion that predicts another column or another kind of value
    check_identity(registry, identity, dataset=config.dataset)
    champion = registry.champion(model_name)
    gate = decide_gate(primary, test_metrics[primary], threshold, champion)
    lineage = code_lineage(config, training, store)
    columns = column_rows(data, prep)
    dropped = dropped_rows(data, prep)

    view: ClassificationView | RegressionView
    analysis: dict[str, Any]
    if family(problem_type) == "classification":
        matrix = confusion_matrix(frame, labels)
        view = ClassificationView(labels, matrix, binary_roc(frame, labels))
        analysis = {"confusion_matrix": {"labels": labels, "rows": "actual", "columns": "predicted",
                                         "counts": matrix.tolist()}}  # fmt: skip
    else:
        y_true, y_pred = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
        view = RegressionView(y_true, y_pred, residual_summary(y_true, y_pred))
        analysis = {"residuals": view.residual_summary}

    sizes = {
        "n_train": _int_or(trainer_metrics.get("n_train"), prep.n_train),
        "n_validation": _int_or(trainer_metrics.get("n_validation"), prep.n_validation),
        "n_test": n_test,
    }
    document = {
        "model_name": model_name,
        "identity": identity.model_dump(mode="json"),
        "run_id": config.run_id,
        "training_job_name": training.TrainingJobName,
        "model_artifact": training.ModelArtifacts,
        "problem_type": problem_type,
        "target": data.target,
        "feature_columns": prep.feature_columns,
        "column_roles": feature_roles(columns, prep.feature_columns),
        "columns": [row.to_json() for row in columns],
        "dropped_rows": dropped,
        "lineage": {
            **lineage.model_dump(mode="json"),
            "image": training.image,
            "hyperparameters": training.hyperparameters or prep.hyperparameters,
        },
        "dataset": {
            "uri": config.dataset,
            "raw_uri": ingest.raw_uri if ingest else None,
            "sha256": ingest.sha256 if ingest else None,
        },
        "sizes": sizes,
        "primary_metric": primary,
        "metrics": test_metrics,
        "validation_metrics": validation_metrics,
        # the gate's metrics are computed here; the trainer's own test figures, if it wrote any, for comparison
        "trainer_test_metrics": trainer_metrics.get("test") if isinstance(trainer_metrics.get("test"), dict) else None,
        "model_choice": model_choice,
        "trainer_notes": trainer_notes,
        "reused_steps": reused or {},
        "selection": trainer_metrics.get("selection") if isinstance(trainer_metrics.get("selection"), dict) else None,
        "gate": gate.result_fields(),
        **analysis,
        "report_uri": report_uri,
        "created_at": utc_now(),
    }
    summary = [
        ("model", model_name),
        ("run", config.run_id),
        ("training job", training.TrainingJobName),
        ("problem type", problem_type),
        ("target", data.target),
        ("features", ", ".join(prep.feature_columns)),
        ("dataset", config.dataset),
        ("dataset sha256", ingest.sha256 if ingest else "not passed to Evaluate"),
        ("rows train / validation / test", f"{sizes['n_train']} / {sizes['n_validation']} / {sizes['n_test']}"),
        ("model artifact", training.ModelArtifacts),
        ("trainer", lineage.trainer),
        (
            "trainer code",
            f"{lineage.code_uri or 'not recorded'} (sha256 {lineage.code_sha256 or '?'}"
            + (f", version {lineage.code_version_id})" if lineage.code_version_id else ")"),
        ),
        ("image", training.image or "not recorded"),
        ("model choice", model_choice or "not reported by the trainer"),
        *((("reused", ", ".join(f"{step} from run {run}" for step, run in reused.items())),) if reused else ()),
        *(("note", note) for note in trainer_notes),
    ]
    html = render_report(
        ReportInput(
            title=f"stepml evaluation: {model_name} ({training.TrainingJobName})",
            summary=summary,
            target=data.target,
            primary_metric=primary,
            test_metrics=test_metrics,
            validation_metrics=validation_metrics,
            passed=gate.passed,
            reason=gate.reason,
            view=view,
            columns=ColumnTable(columns, dropped),
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
        lineage=lineage,
        model_choice=model_choice,
        trainer_notes=trainer_notes,
        champion_training_job=champion.training_job_name if champion else None,
    )
