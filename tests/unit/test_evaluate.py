"""Evaluate: metrics read from a real training output, the quality gate, evaluation.json and report.html.

The training output is made here, not by training/train.py: a small HistGradientBoosting model is
trained on scikit-learn's bundled datasets and its metrics.json and test_predictions.csv are written in
the documented format, then packed as SageMaker packs SM_OUTPUT_DATA_DIR (output.tar.gz).
"""

from __future__ import annotations

import functools
import io
import json
import math
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import EvaluationError
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages.evaluate import evaluate
from sklearn import datasets, metrics
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

from functions.evaluate import app as evaluate_app
from tests.conftest import FakeAws


@dataclass(frozen=True)
class TrainedRun:
    """A small model's training output and the state data that leads to it."""

    dataset: str
    problem_type: str
    target: str
    labels: list[str]
    features: list[str]
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    n_train: int
    n_validation: int


def _split(frame: pd.DataFrame, target: str, stratify: bool) -> tuple[pd.DataFrame, ...]:
    strata = frame[target] if stratify else None
    rest, test = train_test_split(frame, test_size=0.25, random_state=7, stratify=strata)
    strata = rest[target] if stratify else None
    train, validation = train_test_split(rest, test_size=0.25, random_state=7, stratify=strata)
    return train, validation, test


def _classification_metrics(y: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None) -> dict[str, float]:
    scores = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "f1_macro": metrics.f1_score(y, predicted, average="macro"),
        "precision_macro": metrics.precision_score(y, predicted, average="macro", zero_division=0),
        "recall_macro": metrics.recall_score(y, predicted, average="macro"),
    }
    if proba is not None:
        scores["roc_auc"] = metrics.roc_auc_score(y, proba)
    return {name: float(value) for name, value in scores.items()}


@functools.cache
def trained(dataset: str, labels: tuple[str, ...] = (), target: str = "") -> TrainedRun:
    """Train on a bundled dataset and produce metrics.json and test_predictions.csv (cached per args)."""
    if dataset == "diabetes":
        bunch = datasets.load_diabetes(as_frame=True)
        target = target or "progression"
        frame = bunch.frame.rename(columns={"target": target})
        features = [c for c in frame.columns if c != target]
        train, validation, test = _split(frame, target, stratify=False)
        model = HistGradientBoostingRegressor(max_iter=40, random_state=0).fit(train[features], train[target])

        def scores(part: pd.DataFrame) -> dict[str, float]:
            predicted = model.predict(part[features])
            return {
                "r2": float(metrics.r2_score(part[target], predicted)),
                "rmse": float(math.sqrt(metrics.mean_squared_error(part[target], predicted))),
                "mae": float(metrics.mean_absolute_error(part[target], predicted)),
            }

        predictions = pd.DataFrame({"y_true": test[target].to_numpy(), "y_pred": model.predict(test[features])})
        problem_type, primary, class_labels = "regression", "r2", []
    else:
        bunch = datasets.load_iris(as_frame=True) if dataset == "iris" else datasets.load_breast_cancer(as_frame=True)
        target = target or "species"
        names = list(labels) or [str(name) for name in bunch.target_names]
        frame = bunch.frame.rename(columns={"target": target})
        frame[target] = [names[i] for i in frame[target]]
        features = [c for c in frame.columns if c != target]
        train, validation, test = _split(frame, target, stratify=True)
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train[features], train[target])
        binary = len(names) == 2

        def scores(part: pd.DataFrame) -> dict[str, float]:
            proba = model.predict_proba(part[features])[:, 1] if binary else None
            truth = (part[target] == model.classes_[1]).to_numpy() if binary else part[target].to_numpy()
            predicted = model.predict(part[features])
            if binary:
                predicted = predicted == model.classes_[1]
            return _classification_metrics(truth, predicted, proba)

        proba = model.predict_proba(test[features])
        predictions = pd.DataFrame({"y_true": test[target].to_numpy(), "y_pred": model.predict(test[features])})
        for index, label in enumerate(model.classes_):
            predictions[f"proba_{label}"] = proba[:, index]
        problem_type = "binary_classification" if binary else "multiclass_classification"
        primary, class_labels = "f1_macro", [str(c) for c in model.classes_]
    document = {
        "problem_type": problem_type,
        "primary_metric": primary,
        "validation": scores(validation),
        "test": scores(test),
        "n_train": len(train),
        "n_validation": len(validation),
        "n_test": len(test),
    }
    return TrainedRun(dataset, problem_type, target, class_labels, features, document, predictions,
                      len(train), len(validation))  # fmt: skip


def pack(files: dict[str, bytes]) -> bytes:
    """A tar.gz holding ``files``, with the ``./`` member names SageMaker's upload uses."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def output_files(run: TrainedRun) -> dict[str, bytes]:
    return {
        "metrics.json": json.dumps(run.metrics).encode(),
        "test_predictions.csv": run.predictions.to_csv(index=False).encode(),
    }


def state_for(
    aws: FakeAws,
    run: TrainedRun,
    *,
    job: str = "stepml-run-1-0a1b2c3d",
    model_name: str = "iris",
    threshold: float | None = None,
    files: dict[str, bytes] | None = None,
    run_id: str = "run-1",
) -> dict[str, Any]:
    """The state data Evaluate and Register receive, with the job's output.tar.gz uploaded to S3."""
    aws.put(f"models/{job}/output/output.tar.gz", pack(files if files is not None else output_files(run)))
    aws.put(f"models/{job}/output/model.tar.gz", b"not read by Evaluate")
    bucket = aws.bucket
    config: dict[str, Any] = {
        "run_id": run_id,
        "dataset": f"s3://{bucket}/incoming/{run.dataset}.csv",
        "target": run.target,
        "problem_type": None,
        "model_name": model_name,
        "quality_threshold": threshold,
        "hyperparameters": {},
        "test_size": 0.25,
        "validation_size": 0.25,
        "seed": 7,
        "endpoint_poll_seconds": 1,
        "data_bucket": bucket,
        "training_job_name": job,
        "sagemaker_model_name": job,
        "endpoint_config_name": job,
        "endpoint_name": f"stepml-test-{model_name}-ep",
        "raw_prefix": f"s3://{bucket}/raw/{run_id}/",
        "processed_prefix": f"s3://{bucket}/processed/{run_id}/",
        "models_prefix": f"s3://{bucket}/models",
    }
    n_test = len(run.predictions)
    return {
        "config": config,
        "ingest": {
            "raw_uri": f"s3://{bucket}/raw/{run_id}/{run.dataset}.csv",
            "source_uri": config["dataset"],
            "sha256": "ab" * 32,
            "size_bytes": 1234,
            "format": "csv",
        },
        "data": {
            "n_rows": run.n_train + run.n_validation + n_test,
            "n_columns": len(run.features) + 1,
            "target": run.target,
            "target_chosen_by": "input",
            "problem_type": run.problem_type,
            "problem_type_chosen_by": "inferred",
            "problem_type_reason": "test",
            "class_labels": run.labels,
            "feature_columns": run.features,
            "columns": [],
        },
        "prep": {
            "train_uri": f"s3://{bucket}/processed/{run_id}/train/",
            "validation_uri": f"s3://{bucket}/processed/{run_id}/validation/",
            "test_uri": f"s3://{bucket}/processed/{run_id}/test/",
            "n_train": run.n_train,
            "n_validation": run.n_validation,
            "n_test": n_test,
            "feature_columns": run.features,
            "dropped_rows": 0,
            "hyperparameters": {},
        },
        "training": {
            "TrainingJobName": job,
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": f"s3://{bucket}/models/{job}/output/model.tar.gz",
        },
    }


def run_evaluate(aws: FakeAws, state: dict[str, Any]) -> EvaluationResult:
    return evaluate(
        RunConfig.model_validate(state["config"]),
        DataProfile.model_validate(state["data"]),
        PreprocessResult.model_validate(state["prep"]),
        TrainingSummary.model_validate(state["training"]),
        ingest=IngestResult.model_validate(state["ingest"]),
        store=ObjectStore(aws.s3),
        registry=ModelRegistry(aws.registry_table, aws.dynamodb),
    )


def champion_record(model_name: str, primary: str, value: float, execution: str = "earlier") -> dict[str, Any]:
    """A registry entry for an approved model that the new one is compared with."""
    return {
        "model_name": model_name,
        "status": "approved",
        "problem_type": "multiclass_classification",
        "target": "species",
        "feature_columns": ["a"],
        "metrics": {primary: value},
        "primary_metric": primary,
        "model_artifact": "s3://b/models/old/output/model.tar.gz",
        "dataset_uri": "s3://b/raw/old/iris.csv",
        "dataset_sha256": "cd" * 32,
        "training_job_name": "old",
        "endpoint_name": f"stepml-test-{model_name}-ep",
        "endpoint_config_name": "stepml-old-00000000",
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:stepml:{execution}",
        "evaluation_uri": "s3://b/models/old/evaluation/evaluation.json",
        "report_uri": "s3://b/models/old/evaluation/report.html",
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def agrees_with_quality_gate(result: EvaluationResult) -> bool:
    """What statemachine/pipeline.asl.json's QualityGate Choice decides from the same numbers."""
    return result.primary_value >= result.threshold and result.primary_value >= result.champion_value


# --- classification ---------------------------------------------------------------------------------


def test_iris_metrics_are_the_test_metrics_and_gate_passes_the_default_threshold(aws: FakeAws) -> None:
    run = trained("iris")
    state = state_for(aws, run)
    result = run_evaluate(aws, state)

    expected_f1 = metrics.f1_score(run.predictions["y_true"], run.predictions["y_pred"], average="macro")
    assert result.primary_metric == "f1_macro"
    assert result.primary_value == pytest.approx(expected_f1)
    # computed by Evaluate from test_predictions.csv, as scikit-learn computes them
    assert result.metrics == pytest.approx(run.metrics["test"], abs=1e-12)
    assert result.threshold == 0.6  # RunConfig had no threshold: the documented classification default
    assert result.champion_version is None and result.champion_value == result.threshold
    assert result.passed is True and agrees_with_quality_gate(result)
    assert "no earlier approved model" in result.reason

    prefix = "models/stepml-run-1-0a1b2c3d/evaluation/"
    assert result.evaluation_uri == f"s3://{aws.bucket}/{prefix}evaluation.json"
    assert result.report_uri == f"s3://{aws.bucket}/{prefix}report.html"
    document = json.loads(aws.get(prefix + "evaluation.json"))
    assert document["validation_metrics"] == pytest.approx(run.metrics["validation"])
    assert document["dataset"]["sha256"] == "ab" * 32
    assert document["sizes"] == {"n_train": run.n_train, "n_validation": run.n_validation, "n_test": 38}
    assert document["gate"]["passed"] is True
    cm = document["confusion_matrix"]
    assert cm["labels"] == run.labels
    assert (
        cm["counts"]
        == metrics.confusion_matrix(run.predictions["y_true"], run.predictions["y_pred"], labels=run.labels).tolist()
    )
    # the state data must stay JSON (no NaN) for Step Functions
    json.loads(json.dumps(result.model_dump(mode="json"), allow_nan=False))


def test_report_is_html_with_inline_plots(aws: FakeAws) -> None:
    state = state_for(aws, trained("iris"))
    run_evaluate(aws, state)
    head = aws.s3.head_object(Bucket=aws.bucket, Key="models/stepml-run-1-0a1b2c3d/evaluation/report.html")
    assert head["ContentType"].startswith("text/html")
    page = aws.get("models/stepml-run-1-0a1b2c3d/evaluation/report.html").decode()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') == 1  # confusion matrix; no ROC for 3 classes
    assert "f1_macro" in page and "setosa" in page
    assert "http://" not in page and "https://" not in page  # self-contained


@pytest.mark.parametrize("margin, passes", [(-0.01, True), (0.01, False)])
def test_gate_against_the_threshold(aws: FakeAws, margin: float, passes: bool) -> None:
    run = trained("iris")
    f1 = run.metrics["test"]["f1_macro"]
    result = run_evaluate(aws, state_for(aws, run, threshold=f1 + margin))
    assert result.threshold == pytest.approx(f1 + margin)
    assert result.passed is passes and agrees_with_quality_gate(result) is passes
    if not passes:
        assert "< threshold" in result.reason and "f1_macro" in result.reason


@pytest.mark.parametrize("margin, passes", [(-0.02, True), (0.0, True), (0.02, False)])
def test_gate_against_the_champion(aws: FakeAws, margin: float, passes: bool) -> None:
    run = trained("iris")
    f1 = run.metrics["test"]["f1_macro"]
    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    registry.register_model(champion_record("iris", "f1_macro", 0.5))
    registry.register_model({**champion_record("iris", "f1_macro", 0.1), "status": "rejected"})
    registry.register_model(champion_record("iris", "f1_macro", f1 + margin))
    registry.register_model({**champion_record("iris", "f1_macro", 0.99), "status": "rejected"})

    result = run_evaluate(aws, state_for(aws, run, threshold=0.5))
    assert result.champion_version == 3  # the newest approved version, not the newest one
    assert result.champion_value == pytest.approx(f1 + margin)
    assert result.passed is passes and agrees_with_quality_gate(result) is passes
    assert "champion v3" in result.reason
    if not passes:
        assert result.reason.startswith("rejected") and "< threshold" not in result.reason


def test_champion_measured_by_another_metric_is_not_compared(aws: FakeAws) -> None:
    ModelRegistry(aws.registry_table, aws.dynamodb).register_model(champion_record("iris", "r2", 5.0))
    result = run_evaluate(aws, state_for(aws, trained("iris"), threshold=0.5))
    assert result.champion_version is None and result.champion_value == 0.5
    assert result.passed is True and agrees_with_quality_gate(result)
    assert "not comparable" in result.reason


def test_binary_report_has_a_roc_curve(aws: FakeAws) -> None:
    run = trained("breast_cancer", labels=("malignant", "benign"), target="diagnosis")
    result = run_evaluate(aws, state_for(aws, run, model_name="cancer"))
    assert result.metrics["roc_auc"] == pytest.approx(run.metrics["test"]["roc_auc"])
    page = aws.get("models/stepml-run-1-0a1b2c3d/evaluation/report.html").decode()
    assert page.count('<img src="data:image/png;base64,') == 2
    assert 'alt="ROC curve"' in page


def test_hostile_names_are_escaped_in_the_report(aws: FakeAws) -> None:
    hostile_target = "<script>alert('target')</script>"
    run = trained("iris", labels=("<b>setosa</b>", "versi$color$", "virginica & co"), target=hostile_target)
    run_evaluate(aws, state_for(aws, run))
    page = aws.get("models/stepml-run-1-0a1b2c3d/evaluation/report.html").decode()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;target&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;setosa&lt;/b&gt;" in page and "virginica &amp; co" in page
    assert page.count('<img src="data:image/png;base64,') == 1


# --- regression -------------------------------------------------------------------------------------


def test_diabetes_regression(aws: FakeAws) -> None:
    run = trained("diabetes")
    result = run_evaluate(aws, state_for(aws, run, model_name="diabetes"))
    r2 = metrics.r2_score(run.predictions["y_true"], run.predictions["y_pred"])
    assert result.primary_metric == "r2" and result.primary_value == pytest.approx(r2)
    assert result.threshold == 0.3
    assert result.passed is (r2 >= 0.3) and agrees_with_quality_gate(result) is result.passed

    document = json.loads(aws.get("models/stepml-run-1-0a1b2c3d/evaluation/evaluation.json"))
    residuals = run.predictions["y_true"] - run.predictions["y_pred"]
    assert document["residuals"]["mean"] == pytest.approx(residuals.mean())
    assert document["residuals"]["max_abs"] == pytest.approx(residuals.abs().max())
    assert "confusion_matrix" not in document
    page = aws.get("models/stepml-run-1-0a1b2c3d/evaluation/report.html").decode()
    assert page.count('<img src="data:image/png;base64,') == 2
    assert 'alt="predicted vs actual"' in page and 'alt="residual histogram"' in page


# --- bad training output ----------------------------------------------------------------------------


def _with_test_metrics(run: TrainedRun, **changes: Any) -> dict[str, bytes]:
    document = json.loads(json.dumps(run.metrics))
    for name, value in changes.items():
        if value is None:
            document["test"].pop(name)
        else:
            document["test"][name] = value
    return {**output_files(run), "metrics.json": json.dumps(document).encode()}


@pytest.mark.parametrize("dataset", ["iris", "breast_cancer", "diabetes"])
def test_the_gate_metrics_are_computed_from_the_predictions_whatever_metrics_json_says(
    aws: FakeAws, dataset: str
) -> None:
    """A trainer cannot grade itself: bogus test figures in metrics.json change nothing, and a trainer
    that writes no metrics.json is measured the same way (metrics.json is optional)."""
    run = trained(dataset)
    name = "diabetes" if dataset == "diabetes" else "iris"
    bogus = _with_test_metrics(run, **{m: float("nan") for m in run.metrics["test"]})
    only_predictions = {"test_predictions.csv": output_files(run)["test_predictions.csv"]}
    results = [
        run_evaluate(aws, state_for(aws, run, model_name=name, job=f"stepml-{dataset}-{i}", files=files))
        for i, files in enumerate([output_files(run), bogus, only_predictions])
    ]
    for result in results:
        assert result.metrics == pytest.approx(run.metrics["test"], abs=1e-12)
        assert set(result.metrics) == set(run.metrics["test"])  # roc_auc for the binary one only
    document = json.loads(aws.get(f"models/stepml-{dataset}-2/evaluation/evaluation.json"))
    assert document["validation_metrics"] == {} and document["trainer_test_metrics"] is None


def test_the_trainers_model_choice_and_notes_reach_the_result_and_the_report(aws: FakeAws) -> None:
    """metrics.json's selection reason and notes (e.g. that a constant model is all the data supports) are
    shown to the user, not left in the training job's output; a retried Evaluate returns them too."""
    run = trained("iris")
    document = {
        **run.metrics,
        "selection": {"reason": "linear scored f1_macro=0.9500 vs gradient-boosting 0.9400 by 5-fold CV"},
        "notes": ["a constant model is all the data supports: ...", 7],
    }
    files = {**output_files(run), "metrics.json": json.dumps(document).encode()}
    state = state_for(aws, run, model_name="iris", job="stepml-iris-notes", files=files)

    result = run_evaluate(aws, state)

    assert result.model_choice == "linear scored f1_macro=0.9500 vs gradient-boosting 0.9400 by 5-fold CV"
    assert result.trainer_notes == ["a constant model is all the data supports: ..."]  # text only
    report = aws.get("models/stepml-iris-notes/evaluation/report.html").decode()
    assert "linear scored f1_macro=0.9500" in report and "a constant model is all the data supports" in report
    assert run_evaluate(aws, state) == result
    silent = state_for(aws, run, model_name="iris", job="stepml-iris-silent",
                       files={"test_predictions.csv": files["test_predictions.csv"]})  # fmt: skip
    assert (run_evaluate(aws, silent).model_choice, run_evaluate(aws, silent).trainer_notes) == (None, [])


def test_bad_training_output_is_an_evaluation_error_naming_what_is_wrong(aws: FakeAws) -> None:
    iris, diabetes = trained("iris"), trained("diabetes")
    short = {
        **output_files(diabetes),
        "test_predictions.csv": diabetes.predictions.head(10).to_csv(index=False).encode(),
    }
    frame = diabetes.predictions.astype({"y_pred": object})
    frame.loc[frame.index[4], "y_pred"] = "oops"
    non_numeric = {**output_files(diabetes), "test_predictions.csv": frame.to_csv(index=False).encode()}
    cases = [
        (iris, {"metrics.json": output_files(iris)["metrics.json"]}, "has no test_predictions.csv .* a trainer must"),
        (
            iris,
            {"test_predictions.csv": iris.predictions.rename(columns={"y_true": "label"}).to_csv().encode()},
            "lacks column.s. y_true .* a trainer must write test_predictions.csv .columns y_true, y_pred",
        ),
        (
            diabetes,
            {"test_predictions.csv": short["test_predictions.csv"]},
            "has 10 rows but the test split has 111: a trainer must predict every row",
        ),
        (diabetes, short, "has 10 rows but metrics.json says n_test = 111"),
        (diabetes, non_numeric, r"column y_pred, data row 5 \(line 6\), is 'oops'"),
        (iris, {**output_files(iris), "metrics.json": b"[1, 2]"}, "must be a JSON object"),
    ]
    for index, (run, files, message) in enumerate(cases):
        state = state_for(aws, run, job=f"stepml-bad-{index}", files=files)
        with pytest.raises(EvaluationError, match=message):
            run_evaluate(aws, state)

    state = state_for(aws, iris, job="stepml-corrupt")
    aws.put("models/stepml-corrupt/output/output.tar.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(EvaluationError, match=r"not a readable tar\.gz"):
        run_evaluate(aws, state)

    aws.s3.delete_object(Bucket=aws.bucket, Key="models/stepml-corrupt/output/output.tar.gz")
    with pytest.raises(EvaluationError, match=r"left no output data at s3://.*/stepml-corrupt/output/output\.tar\.gz"):
        run_evaluate(aws, state)

    state["training"]["ModelArtifacts"] = f"s3://{aws.bucket}/models/stepml-corrupt/model.joblib"
    with pytest.raises(EvaluationError, match=r"training\.ModelArtifacts is .*model\.joblib"):
        run_evaluate(aws, state)


# --- the handler ------------------------------------------------------------------------------------


@pytest.fixture
def metrics_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools' Metrics reads POWERTOOLS_METRICS_NAMESPACE when pipeline_core.observability is first
    imported, which in a test run is before the ``aws`` fixture sets it; a Lambda sets it before import."""
    from pipeline_core import observability

    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")


@pytest.mark.usefixtures("metrics_namespace")
def test_handler_takes_the_states_parameters(aws: FakeAws) -> None:
    state = state_for(aws, trained("iris"))
    event = {key: state[key] for key in ("config", "data", "prep", "training")}  # Evaluate's Parameters
    answer = evaluate_app.lambda_handler(event, None)
    result = EvaluationResult.model_validate(answer)
    assert result.passed is True and result.report_uri.endswith("/evaluation/report.html")
    document = json.loads(aws.get("models/stepml-run-1-0a1b2c3d/evaluation/evaluation.json"))
    assert document["dataset"]["sha256"] is None  # the ASL does not pass $.ingest to Evaluate (yet)


# --- retried after its writes ---------------------------------------------------------------------------


def test_a_retried_evaluate_returns_its_recorded_result_without_writing(aws: FakeAws) -> None:
    """Evaluate retried after it finished (its response lost) returns what evaluation.json records, even
    if a champion appeared in between: the files and the state must tell the same gate decision."""
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    state = state_for(aws, trained("iris"), threshold=0.5)
    first = run_evaluate(aws, state)
    assert first.passed and first.champion_version is None
    # another run registers a better champion before the retry
    ModelRegistry(aws.registry_table, aws.dynamodb).register_model(champion_record("iris", "f1_macro", 0.999))

    second = run_evaluate(aws, state)

    assert second == first
    for uri in (first.evaluation_uri, first.report_uri):
        key = uri.removeprefix(f"s3://{aws.bucket}/")
        versions = aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=key).get("Versions", [])
        assert len([v for v in versions if v["Key"] == key]) == 1, f"{uri} was written again"


def test_an_incomplete_evaluation_json_is_evaluated_again(aws: FakeAws) -> None:
    state = state_for(aws, trained("iris"), threshold=0.5)
    job = state["training"]["TrainingJobName"]
    aws.put(
        f"models/{job}/evaluation/evaluation.json", b'{"run_id": "run-1", "training_job_name": "' + job.encode() + b'"}'
    )
    result = run_evaluate(aws, state)
    assert result.passed and json.loads(aws.get(f"models/{job}/evaluation/evaluation.json"))["gate"]["passed"]
